"""The mock stars of :mod:`jaxspec.data.mock`: labels, nuisances and label noise, one star at a time.

Each draw is a function of one key (``fold_in(key, i)`` for star ``i``), vmapped by
``_map_stars``.  Labels come in ``LABEL_NAMES`` order; :class:`Noise` sets the SNR
range, sky level and label errors, and :func:`_check` validates it with the other
arguments the generators share.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.data._grids import CHIP_RANGES
from jaxspec.data._mock_star import _F32, _map_stars, _Star
from jaxspec.data.containers import Labels

LABEL_NAMES = ("TEFF", "LOGG", "FE_H", "C_FE", "N_FE", "O_FE", "MG_FE", "AL_FE", "SI_FE", "CA_FE", "MN_FE", "NI_FE")
LABEL_ERRORS = (40.0, 0.04, 0.01, 0.02, 0.03, 0.025, 0.015, 0.025, 0.015, 0.02, 0.02, 0.02)  # at SNR 100


class Noise(NamedTuple):
    """How mock data are degraded (shared by :func:`survey`, :func:`open_clusters`, :func:`domains`).

    Attributes
    ----------
    snr : float or (float, float)
        Per-star continuum signal-to-noise per pixel: fixed, or log-uniform in a range.
    bad_pixel_frac : float in [0, 0.5)
        Expected fraction of dead pixels per star (flux 0, ``ivar`` 0).
    sky : float >= 0
        Scale of sky-line residuals (spikes with inflated errors); 0 turns them off.
    label_error_scale : float > 0
        Multiplies the label errors (``LABEL_ERRORS`` at SNR 100, growing as SNR drops).
    missing_label_frac : float in [0, 1)
        Fraction of observed labels missing (NaN in, ``ivar`` 0 in the container).
    """

    snr: float | tuple[float, float] = (30.0, 300.0)
    bad_pixel_frac: float = 0.005
    sky: float = 1.0
    label_error_scale: float = 1.0
    missing_label_frac: float = 0.05


def _check(n_stars, noise, n_pix: int, chunk_size: int, name: str = "n_stars") -> tuple[Noise, tuple[float, float]]:
    """Validate the common arguments; returns the noise settings and the SNR range."""
    if not isinstance(n_stars, int | np.integer) or n_stars < 1:
        raise ValueError(f"{name}: expected a positive integer, found {n_stars!r}")
    if n_pix not in CHIP_RANGES:
        raise ValueError(f"n_pix: expected one of {sorted(CHIP_RANGES)}, found {n_pix!r}")
    if not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive integer, found {chunk_size!r}")
    noise = Noise() if noise is None else noise
    if not isinstance(noise, Noise):
        raise TypeError(f"noise: expected a mock.Noise, found {type(noise).__name__}")
    snr = np.atleast_1d(np.asarray(noise.snr, np.float64))
    if snr.shape not in ((1,), (2,)) or not np.all(np.isfinite(snr) & (snr > 0)) or snr[0] > snr[-1]:
        raise ValueError(f"noise.snr: expected a positive number or a range (lo, hi), found {noise.snr!r}")
    for field, lo, hi in (("bad_pixel_frac", 0, 0.5), ("missing_label_frac", 0, 1), ("sky", 0, np.inf)):
        v = getattr(noise, field)
        if not lo <= v < hi:
            raise ValueError(f"noise.{field}: expected a number in [{lo}, {hi}), found {v!r}")
    if not noise.label_error_scale > 0:
        raise ValueError(f"noise.label_error_scale: expected > 0, found {noise.label_error_scale!r}")
    return noise, (float(snr[0]), float(snr[-1]))


def _check_clusters(n_clusters, n_members, n_field, abundance_spread) -> np.ndarray:
    """Validate the arguments only ``open_clusters`` takes; returns the members per cluster ``(n_clusters,)``."""
    if not isinstance(n_clusters, int | np.integer) or n_clusters < 1:
        raise ValueError(f"n_clusters: expected a positive integer, found {n_clusters!r}")
    members = np.asarray(n_members)
    if members.ndim > 1 or (members.ndim == 1 and members.size != n_clusters):
        raise ValueError(f"n_members: expected an int or {n_clusters} ints (one per cluster), found {n_members!r}")
    members = np.broadcast_to(members, (n_clusters,))
    if not np.issubdtype(members.dtype, np.integer) or np.any(members < 1):
        raise ValueError(f"n_members: expected positive integers, found {n_members!r}")
    if not isinstance(n_field, int | np.integer) or n_field < 0:
        raise ValueError(f"n_field: expected an integer >= 0, found {n_field!r}")
    if not abundance_spread >= 0:
        raise ValueError(f"abundance_spread: expected >= 0 dex, found {abundance_spread!r}")
    return members


# -- populations, written for one star -----------------------------------------------------
def _draws(key, n_normal: int, n_uniform: int = 0) -> tuple[jax.Array, jax.Array]:
    """Standard normals ``(n_normal,)`` and uniforms in (0, 1) ``(n_uniform,)`` from one threefry call.

    (Each separate ``jax.random`` call adds about 0.25 s of XLA compilation on CPU.)
    """
    z = jax.random.normal(key, (n_normal + n_uniform,), _F32)
    return z[:n_normal], jnp.clip(jax.scipy.special.ndtr(z[n_normal:]), 1e-7, 1.0 - 1e-7)


def _chemistry(z: jax.Array, u: jax.Array, dwarf) -> jax.Array:
    """[Fe/H] and nine [X/Fe] ``(10,)`` from standard normals ``z (12,)`` and uniforms ``u (2,)``."""
    feh = jnp.clip(jnp.where(u[0] < 0.15, -0.65 + 0.35 * z[0], 0.2 * z[0]), -2.2, 0.55)
    high = u[1] < 0.75 * jax.nn.sigmoid(-(feh + 0.3) / 0.12)  # thick disc: old, metal-poor, alpha-rich
    a_high = 0.30 - 0.18 * jnp.clip((feh + 0.6) / 0.7, 0.0, 1.0)
    alpha = jnp.where(high, a_high, jnp.clip(0.03 - 0.12 * feh, -0.05, 0.2)) + 0.025 * z[1]
    mass = jnp.clip(jnp.where(high, 0.95 + 0.08 * z[2], 1.3 * jnp.exp(0.3 * z[2])), 0.8, 3.0)
    c_minus_n = jnp.where(dwarf, 0.05 * z[3], -0.15 - 0.5 * (mass - 1.0) + 0.08 * z[3])  # first dredge-up
    cn = 0.08 + 0.2 * alpha + 0.04 * z[4]
    x_fe = [
        cn + c_minus_n / 2,
        cn - c_minus_n / 2,
        0.9 * alpha + 0.02 + 0.03 * z[5],
        alpha + 0.02 * z[6],
        0.9 * alpha - 0.02 + 0.05 * z[7],
        0.75 * alpha + 0.02 + 0.025 * z[8],
        0.6 * alpha + 0.025 * z[9],
        -0.02 + 0.25 * feh - 0.35 * alpha + 0.03 * z[10],
        0.02 + 0.15 * alpha + 0.05 * feh + 0.025 * z[11],
    ]
    return jnp.stack([feh, *x_fe])


def _hr(z: jax.Array, u: jax.Array, feh, dwarf) -> jax.Array:
    """Teff, logg, vbroad ``(3,)``: red giant branch or clump, or main sequence; ``z (3,)``, ``u (3,)``."""
    clump = u[0] < 0.3
    logg_g = jnp.where(clump, 2.45 + 0.08 * z[0], 3.6 - 3.0 * u[1] ** 1.3)
    teff_g = jnp.where(clump, 4780.0 - 250.0 * feh, 4650.0 + 330.0 * (logg_g - 2.5) - 280.0 * feh) + 65.0 * z[1]
    teff_d = 4000.0 + 2500.0 * u[1]
    logg_d = 4.65 - 0.25 * ((teff_d - 4000.0) / 2500.0) ** 2 + 0.08 * z[0]
    logg = jnp.where(dwarf, logg_d, logg_g)
    vbroad = jnp.where(
        dwarf,
        jnp.minimum(3.0 - 3.0 * jnp.log(u[2]), 17.0),
        4.0 + 1.2 * jnp.clip(3.0 - logg, 0.0, 3.0) + 0.8 * jnp.abs(z[2]),
    )
    return jnp.stack([jnp.where(dwarf, teff_d, jnp.clip(teff_g, 3500.0, 5500.0)), logg, vbroad])


def _nuisance(z, u, vbroad, snr_range, sky_scale, rv=None, a_k=None) -> _Star:
    """Field rv (km/s, sigma 35), A_K (mag, exponential, mean 0.12), log-uniform SNR, sky level."""
    snr = jnp.exp(jnp.log(snr_range[0]) + u[0] * jnp.log(snr_range[1] / snr_range[0]))
    rv = jnp.clip(35.0 * z[0], -240.0, 240.0) if rv is None else rv
    a_k = jnp.minimum(-0.12 * jnp.log(u[1]), 1.2) if a_k is None else a_k
    sky = sky_scale * 0.1 * jnp.sqrt(100.0 / snr) * (0.5 + u[2])
    return _Star(vbroad, a_k, rv, jnp.ones((), _F32), snr, sky, jnp.zeros(2, _F32), jnp.zeros((), _F32))


def _field_star(key, dwarf_frac, snr_range, sky_scale):
    """True labels ``(12,)`` and nuisances of one field star."""
    z, u = _draws(key, 16, 9)
    dwarf = u[5] < dwarf_frac
    chem = _chemistry(z[:12], u[:2], dwarf)
    teff, logg, vbroad = _hr(z[12:15], u[2:5], chem[0], dwarf)
    return jnp.concatenate([jnp.stack([teff, logg]), chem]), _nuisance(z[15:], u[6:], vbroad, snr_range, sky_scale)


def _cluster(key):
    """Shared chemistry ``(10,)`` (a giant's), rv (km/s) and A_K (mag) of one open cluster."""
    z, u = _draws(key, 13, 3)
    rv, a_k = jnp.clip(35.0 * z[12], -230.0, 230.0), jnp.minimum(-0.15 * jnp.log(u[2]), 1.0)
    return _chemistry(z[:12], u[:2], False), rv, a_k


def _member(key, chem, rv, a_k, spread, snr_range, sky_scale):
    """One cluster member: the cluster's abundances (+ ``spread`` dex), own Teff and logg."""
    z, u = _draws(key, 15, 6)
    chem = chem + spread * z[:10]
    teff, logg, vbroad = _hr(z[10:13], u[:3], chem[0], False)
    rv, a_k = rv + z[13], jnp.maximum(a_k + 0.02 * z[14], 0.0)
    star = _nuisance(z[14:], u[3:], vbroad, snr_range, sky_scale, rv=rv, a_k=a_k)
    return jnp.concatenate([jnp.stack([teff, logg]), chem]), star


def _instrument(key, star: _Star) -> _Star:
    """The observed domain's instrument: broader LSF, continuum tilt, telluric residuals."""
    z, _ = _draws(key, 4)
    return star._replace(
        lsf=jnp.maximum(1.2 + 0.05 * z[0], 1.0), tilt=jnp.stack([0.02 * z[1], 0.01 * z[2]]), telluric=0.15 + 0.1 * z[3]
    )


# -- label noise ---------------------------------------------------------------------------
def _label_noise(key, true, snr, base, scale, missing_frac):
    """Observed labels (NaN = missing) and their errors, growing as SNR drops."""
    err = scale * base * (0.5 + 50.0 / snr)
    z, u = _draws(key, true.size, true.size)
    values, missing = true + err * z, u < missing_frac
    return jnp.where(missing, jnp.nan, values), err


def _labels(key, true, snr, noise: Noise, names=LABEL_NAMES) -> tuple[Labels, Labels]:
    """(observed, true) ``Labels``; the true ones carry the observed errors as ``ivar``."""
    base = np.array([LABEL_ERRORS[LABEL_NAMES.index(n)] for n in names], np.float32)
    shared = (base, noise.label_error_scale, noise.missing_label_frac)
    values, err = _map_stars(_label_noise, key, len(true), (true, snr), shared)
    return Labels(values, err=err, names=names), Labels(true, err=err, names=names)
