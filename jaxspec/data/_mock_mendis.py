r"""The training set and outlier classes of Ciuca & Ting (2022, "Mendis"), from the mock's spectral model.

The paper's training set: 20,000 Kurucz spectra, Teff uniform in 4300-4500 K,
logg in 1.9-2.2, every abundance [X/H] uniform in -0.1 to 0.05 dex except
nitrogen in 0 to 0.15, convolved to APOGEE's resolution, stored at one pixel
per resolution element (2405 pixels), degraded to SNR 300, with labels
(Teff, logg, [Fe/H]) given with 25 K, 0.1 dex and 0.01 dex errors.  Its
outlier classes: CEMP stars ([Fe/H] -2 to -1.5, [C/Fe] 1 to 2), fast rotators
(broadening > 20 km/s) and stripped stars (Teff 4500-7000 K, logg 4.5-6).

Here the spectra come from :func:`jaxspec.data.mock.spectrum` on the 7214-pixel
APOGEE grid, binned by three within each chip (973 + 800 + 631 = 2404 pixels;
the partial bin at the red end of a chip is dropped), with Gaussian noise of
standard deviation ``1 / snr`` added per binned pixel.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxspec.data._checks import check_int, check_key
from jaxspec.data._grids import CHIP_RANGES, apogee_wavelength
from jaxspec.data._linelist import ELEMENTS, line_list
from jaxspec.data._mock_star import _F32, _arrays, _spectrum
from jaxspec.data.containers import Labels, Spectra

__all__ = [
    "MENDIS_BIN",
    "MENDIS_CLASSES",
    "MENDIS_LABELS",
    "MockMendis",
    "PixelSpecies",
    "mendis",
    "mendis_grid",
    "mendis_species",
]

#: APOGEE pixels per Mendis pixel (one pixel per resolution element).
MENDIS_BIN = 3
#: The labels of ``x = (S, y)``, with the paper's errors.
MENDIS_LABELS = (("TEFF", 25.0), ("LOGG", 0.1), ("FE_H", 0.01))
_ALL_LABELS = ("TEFF", "LOGG", "FE_H", *(f"{e}_FE" for e in ELEMENTS[1:]))
_TRAIN = {"teff": (4300.0, 4500.0), "logg": (1.9, 2.2), "x_h": (-0.1, 0.05), "n_h": (0.0, 0.15), "vbroad": (5.0, 5.0)}

#: Ranges of each class (uniform draws; a class changes some of the training ranges).  ``x_h``: every [X/H]
#: but N (``n_h``); ``fe_h`` and ``c_fe`` replace the draws of [Fe/H] and [C/Fe] where given; ``vbroad`` in km/s.
#: The ``*_mild`` classes are harder variants, closer to the training box, set where the paper's classes
#: are too easy (ROC AUC 1 for the flow and for a PPCA baseline alike) and the two differ (issue 16).
MENDIS_CLASSES: dict[str, dict] = {
    "training": _TRAIN,
    "cemp": {**_TRAIN, "fe_h": (-2.0, -1.5), "c_fe": (1.0, 2.0)},
    "fast_rotator": {**_TRAIN, "vbroad": (20.0, 30.0)},
    "stripped": {**_TRAIN, "teff": (4500.0, 7000.0), "logg": (4.5, 6.0)},
    "cemp_mild": {**_TRAIN, "fe_h": (-0.2, -0.12), "c_fe": (0.08, 0.15)},
    "fast_rotator_mild": {**_TRAIN, "vbroad": (5.2, 5.5)},
    "stripped_mild": {**_TRAIN, "teff": (4500.0, 4700.0), "logg": (2.3, 2.6)},
}


class MockMendis(NamedTuple):
    """Result of :func:`mendis`.

    ``spectra`` ``(n, 2404)`` on :func:`mendis_grid` (SNR ``snr``, ``ivar = snr**2``);
    ``labels``: Teff, logg, [Fe/H] with the paper's errors (``MENDIS_LABELS``);
    ``true_labels``: the exact 12 labels of :data:`jaxspec.data.mock.LABEL_NAMES`;
    ``vbroad`` ``(n,)`` km/s; ``model_flux`` ``(n, 2404)``: the noise-free spectra.
    """

    spectra: Spectra
    labels: Labels
    true_labels: Labels
    vbroad: np.ndarray
    model_flux: np.ndarray


def _bins() -> list[tuple[int, int]]:
    """``(start, n_bins)`` per chip in the 7214-pixel grid."""
    out, start = [], 0
    for a, b in CHIP_RANGES[7214]:
        out.append((start, (b - a) // MENDIS_BIN))
        start += b - a
    return out


def _binned(x: np.ndarray | jax.Array, xp=np):
    """Means of consecutive triples within each chip along the last axis of a 7214-pixel array."""
    parts = []
    for start, n in _bins():
        block = x[..., start : start + n * MENDIS_BIN]
        parts.append(block.reshape(*block.shape[:-1], n, MENDIS_BIN).mean(axis=-1))
    return xp.concatenate(parts, axis=-1)


def mendis_grid() -> np.ndarray:
    """The 2404 vacuum wavelengths (Angstrom) of the binned grid: each the mean of its three APOGEE pixels."""
    return _binned(apogee_wavelength(7214))


def _draw(key, ranges: dict) -> tuple[jax.Array, jax.Array]:
    """The 12 true labels and vbroad of one star of a class."""
    k = jax.random.split(key, 6)
    u = lambda kk, lo_hi, shape=(): jax.random.uniform(kk, shape, jnp.float32, *lo_hi)  # noqa: E731
    x_h = u(k[0], ranges["x_h"], (len(ELEMENTS),))
    x_h = x_h.at[ELEMENTS.index("N")].set(u(k[1], ranges["n_h"]))
    if "fe_h" in ranges:  # a metal-poor class: [Fe/H] drawn, every other [X/H] moves with it
        feh = u(k[2], ranges["fe_h"])
        x_h = jnp.concatenate([feh[None], x_h[1:] + feh])
    feh = x_h[0]
    x_fe = x_h[1:] - feh
    if "c_fe" in ranges:
        x_fe = x_fe.at[ELEMENTS.index("C") - 1].set(u(k[3], ranges["c_fe"]))
    labels = jnp.concatenate([jnp.stack([u(k[4], ranges["teff"]), u(k[5], ranges["logg"]), feh]), x_fe])
    vbroad = u(jax.random.fold_in(key, 7), ranges["vbroad"])
    return labels, vbroad


def _chunk_fn(ranges: dict):
    m = _arrays(7214)
    keep, zero, one_ = jnp.ones(m.logw0.shape, _F32), jnp.zeros((), _F32), jnp.ones((), _F32)

    def one(key, snr):
        labels, vbroad = _draw(jax.random.fold_in(key, 0), ranges)
        clean = _binned(_spectrum(m, labels, vbroad, zero, zero, one_, keep, n_pix=7214), jnp)
        noisy = clean + jax.random.normal(jax.random.fold_in(key, 1), clean.shape) / snr
        return labels, vbroad, clean, noisy

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


def mendis(
    key,
    n_stars: int = 20_000,
    *,
    kind: str = "training",
    snr: float = 300.0,
    chunk_size: int = 1024,
    progress: bool = True,
) -> MockMendis:
    """Stars of the Mendis paper's training set or of one of its outlier classes (module docstring).

    Parameters
    ----------
    key : jax.random key
        Star ``i`` draws from ``fold_in(key, i)``: the same stars whatever ``chunk_size``.
    n_stars : int
    kind : str
        A key of :data:`MENDIS_CLASSES`: ``"training"`` (the paper's training
        box), ``"cemp"``, ``"fast_rotator"``, ``"stripped"`` (the paper's
        outlier classes), or a harder ``"*_mild"`` variant.
    snr : float
        Continuum signal-to-noise per binned pixel (the paper: 300).
    chunk_size : int
    progress : bool

    Returns
    -------
    MockMendis

    What the mock cannot represent: its spectra come from the mock's line list
    and strength laws, not Kurucz atmospheres and radiative transfer (see
    :mod:`jaxspec.data.mock`), so line shapes, blends and the temperature and
    gravity sensitivities are only qualitatively right; broadening wider than
    about 22 km/s is clipped to the mock's widest profile (the fast rotators
    of 20-30 km/s all look like about 22 km/s); the mock is meant for logg up
    to 5.5, so stripped stars up to logg 6 extrapolate its gravity laws; the
    noise is Gaussian and white with no masked pixels, sky or tellurics;
    training stars have one broadening (5 km/s), as synthetic spectra do.
    """
    check_key(key)
    n_stars = check_int(n_stars, "n_stars", minimum=1)
    chunk_size = check_int(chunk_size, "chunk_size", minimum=1)
    if kind not in MENDIS_CLASSES:
        raise ValueError(f"kind: expected one of {sorted(MENDIS_CLASSES)}, found {kind!r}")
    if not (isinstance(snr, int | float) and np.isfinite(snr) and snr > 0):
        raise ValueError(f"snr: expected a positive number, found {snr!r}")
    fn = _chunk_fn(MENDIS_CLASSES[kind])
    key, label_key = jax.random.split(key)
    chunk = min(chunk_size, n_stars)
    outs = []
    for start in tqdm(range(0, n_stars, chunk), disable=not progress, desc="mock.mendis", unit="chunk"):
        idx = np.minimum(np.arange(start, start + chunk), n_stars - 1)
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
        res = jax.device_get(fn(keys, np.float32(snr)))
        outs.append([np.asarray(a)[: min(chunk, n_stars - start)] for a in res])
    true, vbroad, clean, noisy = (np.concatenate(parts) for parts in zip(*outs, strict=True))
    grid = mendis_grid()
    spectra = Spectra(noisy, np.full(noisy.shape, float(snr) ** 2), grid)
    names, errors = zip(*MENDIS_LABELS, strict=True)
    err = np.asarray(errors)
    noise = np.asarray(jax.random.normal(label_key, (n_stars, len(names))), np.float64)
    observed = true[:, :3].astype(np.float64) + err * noise
    labels = Labels(observed, err=np.broadcast_to(err, observed.shape), names=names)
    true_labels = Labels(true.astype(np.float64), np.ones(true.shape), names=_ALL_LABELS)
    return MockMendis(spectra, labels, true_labels, vbroad.astype(np.float64), clean)


class PixelSpecies(NamedTuple):
    """Result of :func:`mendis_species`, per pixel of :func:`mendis_grid` ``(2404,)``.

    ``species``: the species (``"Fe I"``, ``"CN"``, ``"CO"``, ...) whose lines
    absorb most at the pixel, ``""`` where no species reaches ``min_depth``;
    ``element``: its element (C for CO, N for CN, O for OH; ``""`` for H I or
    none); ``share``: its fraction of the summed absorption of all species;
    ``depth``: ``(n_species, 2404)``, the absorption of each species of
    ``names``.
    """

    species: np.ndarray
    element: np.ndarray
    share: np.ndarray
    depth: np.ndarray
    names: tuple


def mendis_species(min_depth: float = 2e-3) -> PixelSpecies:
    r"""Which species of the mock line list shapes each pixel of the Mendis grid, at the training box's centre.

    The depth of species :math:`s` at a pixel is :math:`f_{-s} - f`: the
    noise-free binned spectrum without that species' lines less the full
    one, for the star at the centre of the training box (Teff 4400 K, logg
    2.05, every [X/H] -0.025 except [N/H] 0.075, 5 km/s).  A pixel belongs to
    the species of largest depth when that depth is at least ``min_depth``
    (continuum units).  For the purity of correlation-graph components
    (:func:`jaxspec.models.flows.correlation_graph`).
    """
    if not (isinstance(min_depth, int | float) and np.isfinite(min_depth) and min_depth >= 0):
        raise ValueError(f"min_depth: expected a number >= 0, found {min_depth!r}")
    lines = line_list()
    names = tuple(dict.fromkeys(lines.species.tolist()))
    x_h = np.full(len(ELEMENTS), -0.025)
    x_h[ELEMENTS.index("N")] = 0.075
    labels = jnp.asarray(np.r_[4400.0, 2.05, x_h[0], x_h[1:] - x_h[0]], _F32)
    m = _arrays(7214)
    zero, one_ = jnp.zeros((), _F32), jnp.ones((), _F32)
    keeps = np.ones((len(names) + 1, lines.species.size), np.float32)
    for i, name in enumerate(names):
        keeps[i + 1, lines.species == name] = 0.0
    flux = jax.vmap(lambda keep: _spectrum(m, labels, jnp.float32(5.0), zero, zero, one_, keep, n_pix=7214))(
        jnp.asarray(keeps)
    )
    binned = np.asarray(_binned(np.asarray(flux, np.float64)))
    depth = np.maximum(binned[1:] - binned[0], 0.0)
    best = np.argmax(depth, axis=0)
    strongest = depth[best, np.arange(depth.shape[1])]
    has = strongest >= min_depth
    element_of = {name: str(lines.element[lines.species == name][0]) for name in names}
    species = np.where(has, np.asarray(names)[best], "")
    element = np.array([element_of[s] if s else "" for s in species])
    share = np.where(has, strongest / np.maximum(depth.sum(axis=0), 1e-300), 0.0)
    return PixelSpecies(species, element, share, depth, names)
