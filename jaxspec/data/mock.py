r"""Built-in mock data: APOGEE-like spectra and labels, open clusters, two domains, Gaia XP.

The embedded default for demos, tests and benchmarks.  Everything is a pure function
of an explicit ``jax.random`` key (and of this source: the line list is fixed, see
:func:`line_list`).  Spectra are written for one star (:func:`spectrum`), vmapped and
generated in fixed-shape chunks, so 100,000 spectra take well under a minute on two
CPU cores and memory stays near the size of the result.

The spectral model, per star, on the 7514-pixel APOGEE log-lambda grid:

.. math::
    \log_{10} W_l = \log_{10} W_{0,l} + \sum_X a_{lX} [X/H] + t_l (\theta - \theta_0)
                    + g_l (\log g - 2.5), \qquad \theta = 5040\,\mathrm{K} / T_\mathrm{eff}

    \tau(\lambda) = \sum_l W_l \left[(1 - \eta_l)\, G_\sigma(\lambda - \lambda_l)
                    + \eta_l\, L_\gamma(\lambda - \lambda_l)\right], \qquad
    \eta_l = \frac{\eta_{0,l} g'}{1 + \eta_{0,l} g'}, \quad g' = 10^{0.4 (\log g - 2.5)}

    F = \left[1 - D\,(1 - e^{-\tau})\right] e^{-A_K \tau_\mathrm{DIB}(\lambda (1 + v_r / c))}

with :math:`\theta_0 = 5040/4500`, :math:`\log_{10} W` softly capped at 1.2, the
residual-flux floor :math:`1 - D = 0.2`, area-normalised Gaussian and Lorentzian
profiles in pixels, and :math:`\sigma^2 = \sigma_\mathrm{inst}^2 + (v_\mathrm{broad} /
4.14\,\mathrm{km\,s^{-1}})^2`.

What is physical and what is not
--------------------------------
Physical in spirit (qualitative trends right, numbers not calibrated):

* about 490 lines, each tied to an element; strong lines near real APOGEE Mg, Al, Si,
  Ca, Mn, Ni, C I, CO band-head and Brackett positions; C and N act only through
  molecules (CN needs both, CO traces C, OH traces O and weakens when C locks O in CO),
  so C, N and O are partly degenerate as in ASPCAP;
* Boltzmann/Saha-like temperature sensitivities (neutral metal lines weaken with
  Teff, molecules strongly so, Brackett lines strengthen), pressure: molecules
  strengthen and damping wings grow with logg;
* saturation (exp(-tau) with a residual-flux floor) gives a curve of growth; equivalent
  widths survive instrumental and macroturbulent broadening;
* a giant-branch (optionally dwarf) population with high/low-alpha sequences,
  correlated abundances and mass-dependent [C/N]; photon noise with per-star SNR;
* diffuse interstellar bands (15273 A and a weaker one at 15653 A) whose depth scales
  with A_K and which sit at ``-rv`` in the star's rest frame (spectra are rest-frame,
  like aspcapStar), so rv and A_K leave the imprint RSCA must ignore.

Not physical: no radiative transfer or model atmosphere; line strengths and
sensitivities, sky and telluric positions are invented (drawn from a fixed hash);
sky-line and telluric residuals stay at fixed pixels whatever the rv; broadening is a
convex mixture of five Gaussian widths plus one Lorentzian wing; profiles are cut 32
pixels from the centre; noise normals are drawn from 16 random bits (|z| < 4.42); the
XP model is a blackbody with a dozen smooth bands on linear-dispersion Hermite bases,
not Gaia's calibrated passbands.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.data._grids import CHIP_RANGES
from jaxspec.data._linelist import LineList, line_list
from jaxspec.data._mock_mendis import (
    MENDIS_CLASSES,
    MENDIS_LABELS,
    MockMendis,
    PixelSpecies,
    mendis,
    mendis_grid,
    mendis_species,
)
from jaxspec.data._mock_population import (
    LABEL_ERRORS,
    LABEL_NAMES,
    Noise,
    _check,
    _check_clusters,
    _cluster,
    _field_star,
    _instrument,
    _labels,
    _member,
)
from jaxspec.data._mock_star import _F32, _arrays, _drop, _generate, _map_stars, _spectra, _spectrum
from jaxspec.data._mock_star import _chunk as _chunk  # tests count its compilations
from jaxspec.data._mock_xp import MockXP, gaia_xp
from jaxspec.data.containers import Labels, Spectra

__all__ = [
    "LABEL_ERRORS",
    "LABEL_NAMES",
    "MENDIS_CLASSES",
    "MENDIS_LABELS",
    "SYNTHETIC_ERR",
    "LineList",
    "MockClusters",
    "MockDomains",
    "MockMendis",
    "MockSurvey",
    "MockXP",
    "Noise",
    "PixelSpecies",
    "domains",
    "gaia_xp",
    "line_list",
    "mendis",
    "mendis_grid",
    "mendis_species",
    "open_clusters",
    "spectrum",
    "survey",
]

SYNTHETIC_ERR = 0.005  # nominal error given to the noise-free synthetic domain


class MockSurvey(NamedTuple):
    """Result of :func:`survey`: host arrays, ``(n,)`` per-star nuisances.

    ``spectra`` (noisy, rest frame), ``labels`` (observed: noise, NaN -> missing),
    ``true_labels`` (exact values, the observed errors as ``ivar``), ``snr``, ``rv``
    (km/s), ``a_k`` (mag), ``vbroad`` (km/s, Gaussian sigma of macro+micro+rotation),
    ``model_flux`` (noise-free ``(n, n_pix)``, only with ``keep_model=True``).
    """

    spectra: Spectra
    labels: Labels
    true_labels: Labels
    snr: np.ndarray
    rv: np.ndarray
    a_k: np.ndarray
    vbroad: np.ndarray
    model_flux: np.ndarray | None = None


class MockClusters(NamedTuple):
    """Result of :func:`open_clusters`: as :class:`MockSurvey` plus ``cluster_id`` (-1 = field)."""

    spectra: Spectra
    labels: Labels
    true_labels: Labels
    cluster_id: np.ndarray
    snr: np.ndarray
    rv: np.ndarray
    a_k: np.ndarray
    vbroad: np.ndarray


class MockDomains(NamedTuple):
    """Result of :func:`domains`.

    ``synthetic`` (noise-free, lines dropped, nominal ``ivar = 1/SYNTHETIC_ERR**2``),
    ``observed`` (all lines, broader LSF, continuum tilt, tellurics, DIB, noise),
    ``labels`` (true labels of the synthetic stars), ``observed_labels`` (noisy labels
    of the observed stars: the same stars when paired), ``dropped_lines`` (indices into
    :func:`line_list`), ``dropped_mask`` ``(n_pix,)`` (pixels where the dropped lines
    change a reference K giant by more than 0.005).
    """

    synthetic: Spectra
    observed: Spectra
    labels: Labels
    observed_labels: Labels
    dropped_lines: np.ndarray
    dropped_mask: np.ndarray


def spectrum(labels, *, vbroad=5.0, a_k=0.0, rv=0.0, lsf=1.0, keep=None, n_pix: int = 7514) -> jax.Array:
    """Noise-free, continuum-normalised mock spectrum of ONE star (pure, jittable, vmappable).

    Parameters
    ----------
    labels : array ``(12,)``
        ``LABEL_NAMES`` order: Teff (K), logg (dex), [Fe/H], then nine [X/Fe] (dex).
        Meant for Teff 3000-8000 K, logg 0-5.5, abundances -3 to +1 dex.
    vbroad : float
        Gaussian sigma of macroturbulence, microturbulence and rotation, km/s (up to
        about 20; wider profiles are clipped to the widest basis width).
    a_k : float
        Extinction A_K (mag): depth of the diffuse interstellar bands.
    rv : float
        Radial velocity, km/s, ``|rv| < 250``: shifts the DIBs (ISM frame) against the
        rest-frame star.
    lsf : float
        Instrumental width in units of APOGEE's (sigma 1.36 pixels).
    keep : array ``(n_lines,)``, optional
        Multiplies each line's strength (0 drops a line); default all 1.
    n_pix : {7514, 7214}
        Grid (``apogee_wavelength(n_pix)``).

    Returns
    -------
    jax.Array ``(n_pix,)`` float32, in ``(0, 1]``.  See the module docstring for the model.

    Examples
    --------
    >>> f = spectrum([4500.0, 2.5, 0.0] + [0.0] * 9)
    >>> f.shape, bool(f.max() <= 1.0), round(float(jnp.median(f)), 1)
    ((7514,), True, 1.0)
    """
    if n_pix not in CHIP_RANGES:
        raise ValueError(f"n_pix: expected one of {sorted(CHIP_RANGES)}, found {n_pix!r}")
    labels = jnp.asarray(labels, _F32)
    if labels.shape != (len(LABEL_NAMES),):
        raise ValueError(f"labels: expected shape ({len(LABEL_NAMES)},) in LABEL_NAMES order, found {labels.shape}")
    m = _arrays(n_pix)
    keep = jnp.ones(m.logw0.shape, _F32) if keep is None else jnp.asarray(keep, _F32)
    if keep.shape != m.logw0.shape:
        raise ValueError(f"keep: expected shape {m.logw0.shape} (one weight per line), found {keep.shape}")
    return _spectrum(m, labels, *(jnp.asarray(v, _F32) for v in (vbroad, a_k, rv, lsf)), keep, n_pix=n_pix)


# -- public generators ---------------------------------------------------------------------
def survey(
    key,
    n_stars: int,
    *,
    noise: Noise | None = None,
    dwarf_frac: float = 0.0,
    n_pix: int = 7514,
    chunk_size: int = 1024,
    keep_model: bool = False,
    progress: bool = True,
) -> MockSurvey:
    """A mock APOGEE field survey: noisy rest-frame spectra, 12 labels, nuisances.

    Parameters
    ----------
    key : jax.random key
    n_stars : int
    noise : Noise, optional
        SNR range, dead pixels, sky residuals, label errors, missing labels
        (default ``Noise()``).
    dwarf_frac : float in [0, 1]
        Fraction of main-sequence stars (Teff 4000-6500 K, logg ~4.3-4.7, faster
        rotation); the rest are red giants and clump stars (Teff 3500-5500 K, logg 0.6-3.6).
    n_pix : {7514, 7214}
    chunk_size : int
        Stars per compiled chunk.  Peak memory is the result (8 bytes per pixel in
        float32: flux and ivar) plus about 0.5 GB at the default 1024.
    keep_model : bool
        Also return the noise-free flux (more host memory).
    progress : bool
        Progress bar over chunks.

    Returns
    -------
    MockSurvey
        ``spectra`` ``(n_stars, n_pix)`` on ``apogee_wavelength(n_pix)``, labels, nuisances.

    Examples
    --------
    >>> s = survey(jax.random.key(0), 4, progress=False)
    >>> s.spectra.flux.shape, s.labels.names[:3]
    ((4, 7514), ('TEFF', 'LOGG', 'FE_H'))
    """
    noise, snr_range = _check(n_stars, noise, n_pix, chunk_size)
    if not 0.0 <= dwarf_frac <= 1.0:
        raise ValueError(f"dwarf_frac: expected a number in [0, 1], found {dwarf_frac!r}")
    k_pop, k_spec, k_lab = jax.random.split(key, 3)
    true, star = _map_stars(_field_star, k_pop, n_stars, shared=(dwarf_frac, snr_range, noise.sky))
    flux, ivar, *model = _generate(
        k_spec,
        true,
        star,
        bad_frac=noise.bad_pixel_frac,
        keep_model=keep_model,
        n_pix=n_pix,
        chunk_size=chunk_size,
        progress=progress,
    )
    labels, true_labels = _labels(k_lab, true, star.snr, noise)
    nuisances = [np.asarray(a, np.float64) for a in (star.snr, star.rv, star.a_k, star.vbroad)]
    return MockSurvey(_spectra(flux, ivar, n_pix), labels, true_labels, *nuisances, *model)


def open_clusters(
    key,
    n_clusters: int = 10,
    n_members: int | Sequence[int] = 20,
    n_field: int = 500,
    *,
    abundance_spread: float = 0.01,
    noise: Noise | None = None,
    n_pix: int = 7514,
    chunk_size: int = 1024,
    progress: bool = True,
) -> MockClusters:
    """Open-cluster giants (shared abundances, rv and A_K) followed by field giants.

    Members of a cluster share [Fe/H] and every [X/Fe] (each perturbed by
    ``abundance_spread`` dex; 0 = identical), rv (within 1 km/s) and A_K (within
    0.02 mag); Teff and logg differ (giant branch and clump at the cluster metallicity).
    The field is as in :func:`survey` with ``dwarf_frac=0``.

    Parameters
    ----------
    key : jax.random key
    n_clusters : int >= 1
    n_members : int or sequence of ``n_clusters`` ints >= 1
    n_field : int >= 0
    abundance_spread : float >= 0
        Intra-cluster scatter of each abundance label, dex.
    noise, n_pix, chunk_size, progress
        As in :func:`survey`.

    Returns
    -------
    MockClusters
        Members first, cluster by cluster, then the field (``cluster_id == -1``).

    Examples
    --------
    >>> c = open_clusters(jax.random.key(0), 2, 3, 4, progress=False)
    >>> c.cluster_id.tolist()
    [0, 0, 0, 1, 1, 1, -1, -1, -1, -1]
    """
    members = _check_clusters(n_clusters, n_members, n_field, abundance_spread)
    n_mem = int(members.sum())
    noise, snr_range = _check(n_mem + int(n_field), noise, n_pix, chunk_size, name="n_members + n_field")
    k_cl, k_mem, k_field, k_spec, k_lab = jax.random.split(key, 5)
    cluster_id = np.repeat(np.arange(n_clusters), members)
    chem, rv, a_k = (a[cluster_id] for a in _map_stars(_cluster, k_cl, n_clusters))
    shared = (abundance_spread, snr_range, noise.sky)
    true, star = _map_stars(_member, k_mem, n_mem, (chem, rv, a_k), shared)
    if n_field:
        field = _map_stars(_field_star, k_field, int(n_field), shared=(0.0, snr_range, noise.sky))
        true, star = jax.tree.map(lambda a, b: np.concatenate([a, b]), (true, star), field)
        cluster_id = np.concatenate([cluster_id, np.full(int(n_field), -1)])
    flux, ivar = _generate(
        k_spec, true, star, bad_frac=noise.bad_pixel_frac, n_pix=n_pix, chunk_size=chunk_size, progress=progress
    )
    labels, true_labels = _labels(k_lab, true, star.snr, noise)
    nuisances = [np.asarray(a, np.float64) for a in (star.snr, star.rv, star.a_k, star.vbroad)]
    return MockClusters(_spectra(flux, ivar, n_pix), labels, true_labels, cluster_id, *nuisances)


def domains(
    key,
    n_stars: int,
    *,
    paired: bool = True,
    drop=0.3,
    noise: Noise | None = None,
    abundance_scatter: float = 0.0,
    n_pix: int = 7514,
    chunk_size: int = 1024,
    progress: bool = True,
) -> MockDomains:
    """Two domains for Cycle-StarNet: clean "synthetic" spectra and "observed" ones.

    Synthetic: noise-free, APOGEE LSF, no ISM, lines in ``drop`` removed.  Observed: all
    lines, an LSF 20% broader and growing 15% across the grid, a continuum tilt
    (about 2%), telluric residuals, the DIB, sky lines, noise and dead pixels.

    Parameters
    ----------
    key : jax.random key
    n_stars : int
        Stars per domain.
    paired : bool
        True: both domains show the same stars.  False: independent label draws.
    drop : float, sequence of str, sequence of int, or None
        A fraction of the strong lines (drawn from ``key``; 0.3 as in O'Briain et
        al. 2021), element names (``"MG"``: every line tied to Mg, ``"N"``: the CN
        lines), species (``"CO"``, ``"Fe I"``), or line indices into :func:`line_list`.
    abundance_scatter : float >= 0
        Independent Gaussian scatter (dex) added to every star's nine [X/Fe] in both
        domains.  The field population's [X/Fe] follow [Fe/H] and [alpha/Fe] with only
        0.025-0.075 dex of their own; the measured labels of a survey catalogue (the
        paper's Kurucz domains were computed from APOGEE-Payne labels) vary more
        independently, which is what lets a line's response to its own element be
        learned from data.  0 (the default) leaves the draws unchanged.
    noise, n_pix, chunk_size, progress
        As in :func:`survey` (giants only).

    Returns
    -------
    MockDomains
    """
    noise, snr_range = _check(n_stars, noise, n_pix, chunk_size)
    if not (isinstance(abundance_scatter, int | float | np.floating) and 0 <= abundance_scatter < np.inf):
        raise ValueError(f"abundance_scatter: expected a finite number >= 0 (dex), found {abundance_scatter!r}")
    k_drop, k_syn, k_obs, k_inst, k_spec, k_lab = jax.random.split(key, 6)
    dropped = _drop(drop, k_drop)
    keep = np.ones(line_list().wavelength.size, np.float32)
    keep[dropped] = 0.0

    def field(k):
        true, star = _map_stars(_field_star, k, n_stars, shared=(0.0, snr_range, noise.sky))
        if abundance_scatter > 0:  # its own stream: the default draws stay as they were
            z = jax.random.normal(jax.random.fold_in(k, 7), (n_stars, true.shape[1] - 3), _F32)
            true = true.copy()
            true[:, 3:] += abundance_scatter * np.asarray(z)
        return true, star

    true, star = field(k_syn)
    (model,) = _generate(
        k_spec, true, star, keep=keep, observe=False, n_pix=n_pix, chunk_size=chunk_size, progress=progress
    )
    true_obs, star_obs = (true, star) if paired else field(k_obs)
    star_obs = _map_stars(_instrument, k_inst, n_stars, (star_obs,))
    flux, ivar = _generate(
        jax.random.fold_in(k_spec, 1),
        true_obs,
        star_obs,
        bad_frac=noise.bad_pixel_frac,
        instrument=True,
        n_pix=n_pix,
        chunk_size=chunk_size,
        progress=progress,
    )
    observed_labels = _labels(k_lab, true_obs, star_obs.snr, noise)[0]
    ref = jnp.array([4750.0, 2.5] + [0.0] * 10, _F32)
    mask = np.abs(np.asarray(spectrum(ref, n_pix=n_pix) - spectrum(ref, keep=keep, n_pix=n_pix))) > 0.005
    synthetic = _spectra(model, np.full(model.shape, SYNTHETIC_ERR**-2, model.dtype), n_pix)
    labels = Labels(true, err=np.broadcast_to(np.asarray(LABEL_ERRORS, np.float32), true.shape), names=LABEL_NAMES)
    return MockDomains(synthetic, _spectra(flux, ivar, n_pix), labels, observed_labels, dropped, mask)
