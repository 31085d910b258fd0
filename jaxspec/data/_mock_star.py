"""The one-star spectrum model of :mod:`jaxspec.data.mock` and its generation drivers.

The model (equations in :mod:`jaxspec.data.mock`) is written for one star on the line
list's device arrays (:class:`_Arrays`).  :func:`_generate` vmaps it, with noise, over
fixed-shape jitted chunks of stars; :func:`_map_stars` vmaps any per-star draw.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxspec.data import _linelist as _ll
from jaxspec.data._grids import DLOGLAM, apogee_wavelength
from jaxspec.data._linelist import ELEMENTS, line_list
from jaxspec.data.containers import Spectra, _Static, default_float

_C_KMS = 299792.458
_DV_PIX = _C_KMS * math.log(10.0) * DLOGLAM  # 4.14 km/s per pixel
_D_MAX, _LOGW_CAP = 0.8, 1.2
_LSF_TILT = 0.15  # the observed domain's LSF widens by this fraction from grid centre to red end
_F32 = jnp.float32


class _Star(NamedTuple):
    """Per-star nuisances of the batch path, each ``(n,)`` (``tilt`` ``(n, 2)``)."""

    vbroad: jax.Array
    a_k: jax.Array
    rv: jax.Array
    lsf: jax.Array
    snr: jax.Array
    sky: jax.Array
    tilt: jax.Array
    telluric: jax.Array


class _Arrays(NamedTuple):
    """The line list and its tables on one grid, as device arrays (arguments of the jitted code)."""

    logw0: jax.Array
    tsens: jax.Array
    gsens: jax.Array
    eta0: jax.Array
    abund: jax.Array
    select: jax.Array
    profiles: jax.Array
    block_x: jax.Array
    dib: jax.Array
    sky: jax.Array
    telluric: jax.Array
    err_shape: jax.Array


@functools.cache
def _arrays(n_pix: int) -> _Arrays:
    ll, t = line_list(), _ll.tables(n_pix)
    fields = (ll.log_strength, ll.teff_sensitivity, ll.logg_sensitivity, ll.damping, ll.abundance_weights)
    fields += (t.select, t.profiles, t.block_x, t.dib, t.sky, t.telluric, t.err_shape)
    with jax.ensure_compile_time_eval():  # concrete arrays even when first asked for inside a jit trace (cached)
        return _Arrays(*(jnp.asarray(a, jnp.int32 if a.dtype.kind == "i" else _F32) for a in fields))


# -- the model of one star -----------------------------------------------------------------
def _strengths(labels: jax.Array, m: _Arrays) -> tuple[jax.Array, jax.Array]:
    teff, logg, feh = labels[0], labels[1], labels[2]
    x_h = jnp.concatenate([feh[None], labels[3:] + feh])  # [X/H] in ELEMENTS order
    logw = m.logw0 + m.abund @ x_h + m.tsens * (5040.0 / teff - 5040.0 / 4500.0) + m.gsens * (logg - 2.5)
    logw = _LOGW_CAP - 0.3 * jax.nn.softplus((_LOGW_CAP - logw) / 0.3)
    eta = m.eta0 * 10.0 ** (0.4 * (logg - 2.5))
    return 10.0**logw, eta / (1.0 + eta)


def _stellar(labels, vbroad, lsf, keep, m: _Arrays, n_pix: int, lsf_tilt: float = 0.0) -> jax.Array:
    """Noise-free stellar flux ``(n_pix,)``: block-sparse sum of line profiles, then exp(-tau)."""
    w, eta = _strengths(labels, m)
    w = w * keep
    wg = jnp.append(w * (1.0 - eta), 0.0)[m.select]  # (blocks, M); the appended 0 fills empty slots
    wl = jnp.append(w * eta, 0.0)[m.select]
    sigma = jnp.sqrt((_ll.SIGMA_INST * lsf * (1.0 + lsf_tilt * m.block_x)) ** 2 + (vbroad / _DV_PIX) ** 2)
    k = len(_ll.SIGMA_BASIS)
    u = jnp.clip(jnp.log(sigma / _ll.SIGMA_BASIS[0]) / math.log(_ll.SIGMA_BASIS[1] / _ll.SIGMA_BASIS[0]), 0, k - 1)
    c = jax.nn.relu(1.0 - jnp.abs(u[:, None] - jnp.arange(k, dtype=_F32)))  # convex weights over widths
    coef = jnp.concatenate([wg[..., None] * c[:, None, :], wl[..., None]], axis=-1)
    tau = jnp.einsum("bmk,bmkp->bp", coef, m.profiles).reshape(-1)[:n_pix]
    return 1.0 - _D_MAX * (1.0 - jnp.exp(-tau))


def _ism(flux: jax.Array, a_k, rv, m: _Arrays, n_pix: int) -> jax.Array:
    """``flux`` times the DIB absorption, the ISM seen at ``-rv`` km/s from the star's rest frame."""
    s = jnp.log10(1.0 + rv / _C_KMS) / DLOGLAM  # the ISM feature moves by -s pixels
    i0 = jnp.floor(s)
    f, i0 = s - i0, i0.astype(jnp.int32)
    for start, full, length in _ll.dib_windows(n_pix):  # exp only inside the windows, 1 elsewhere
        seg = jax.lax.dynamic_slice_in_dim(m.dib, full + _ll.MARGIN + i0, length + 1)
        window = jnp.exp(-a_k * ((1.0 - f) * seg[:-1] + f * seg[1:]))
        flux = flux * jnp.pad(window, (start, n_pix - start - length), constant_values=1.0)
    return flux


@functools.partial(jax.jit, static_argnames="n_pix")
def _spectrum(m: _Arrays, labels, vbroad, a_k, rv, lsf, keep, *, n_pix: int) -> jax.Array:
    return _ism(_stellar(labels, vbroad, lsf, keep, m, n_pix), a_k, rv, m, n_pix)


def _drop(drop, key) -> np.ndarray:
    """Indices of the lines to drop from the synthetic domain (see :func:`domains`)."""
    ll = line_list()
    if drop is None:
        return np.zeros(0, int)
    if isinstance(drop, float | np.floating):
        if not 0.0 <= drop <= 1.0:
            raise ValueError(f"drop: expected a fraction in [0, 1], found {drop!r}")
        ref = np.asarray(_strengths(jnp.array([4750.0, 2.5] + [0.0] * 10, _F32), _arrays(7514))[0])
        strong = np.flatnonzero(ref > 0.5)  # about 0.08 deep or more in a K giant
        pick = np.asarray(jax.random.permutation(key, strong.size))[: round(drop * strong.size)]
        return np.sort(strong[pick])
    items = [drop] if isinstance(drop, str) else list(drop) if np.ndim(drop) == 1 else None
    if items and all(isinstance(d, str) for d in items):
        unknown = [d for d in items if d.upper() not in ELEMENTS and d not in set(ll.species)]
        if unknown:
            species = sorted(set(ll.species))
            raise ValueError(f"drop: unknown element/species {unknown}; elements {ELEMENTS}, species {species}")
        return np.flatnonzero(np.isin(ll.element, [d.upper() for d in items]) | np.isin(ll.species, items))
    if items is None or not all(isinstance(i, int | np.integer) and 0 <= i < ll.wavelength.size for i in items):
        raise ValueError(
            f"drop: expected None, a fraction, element/species names or line indices in "
            f"[0, {ll.wavelength.size}), found {drop!r}"
        )
    return np.unique(np.asarray(items, dtype=int))


# -- many stars: noise, chunks, per-star draws ---------------------------------------------
def _observe(key, clean, star: _Star, bad_frac, m: _Arrays, n_pix: int, n_bad_max: int, instrument: bool):
    """One star: ISM (and with ``instrument`` tellurics and tilt), noise, sky residuals, dead pixels.

    Random numbers come from one ``bits`` call, 16 bits each (half the threefry work of
    ``jax.random.normal``; normals are then bounded, |z| < 4.42).
    """
    true = _ism(clean, star.a_k, star.rv, m, n_pix)
    if instrument:
        x = jnp.linspace(-1.0, 1.0, n_pix, dtype=_F32)
        true = true * jnp.exp(-star.telluric * m.telluric) * (1.0 + star.tilt[0] * x + star.tilt[1] * (x * x - 1 / 3))
    half = (n_pix + 1) // 2
    words = jax.random.bits(key, (half + 1 + n_bad_max,), jnp.uint32)
    u = (jnp.stack([words >> 16, words & 0xFFFF], axis=1).reshape(-1).astype(_F32) + 0.5) / 65536.0
    z = jnp.sqrt(2.0) * jax.lax.erf_inv(2.0 * u[:n_pix] - 1.0)
    extra = u[2 * half :]  # sky offset, then dead-pixel hits and positions
    sky = star.sky * m.sky
    var = m.err_shape**2 * jnp.maximum(true, 0.05) / star.snr**2 + sky**2
    inv_err = jax.lax.rsqrt(var)
    flux = true + var * inv_err * z + 0.5 * sky * jnp.sqrt(2.0) * jax.lax.erf_inv(2.0 * extra[0] - 1.0)
    hit = extra[2 : 2 + n_bad_max] < bad_frac * n_pix / n_bad_max  # about Poisson(bad_frac * n_pix) hits
    where = (extra[2 + n_bad_max :] * n_pix).astype(jnp.int32)
    bad = jnp.zeros(n_pix, bool).at[where].max(hit)
    return jnp.where(bad, 0.0, flux), jnp.where(bad, 0.0, inv_err**2), true


@functools.partial(jax.jit, static_argnames=("n_pix", "n_bad_max", "instrument", "observe", "keep_model"))
def _chunk(m, key, index, labels, star, keep, bad_frac, *, n_pix, n_bad_max, instrument, observe, keep_model):
    def one(i, lab, st):
        clean = _stellar(lab, st.vbroad, st.lsf, keep, m, n_pix, _LSF_TILT if instrument else 0.0)
        if not observe:
            return (clean,)
        flux, ivar, model = _observe(jax.random.fold_in(key, i), clean, st, bad_frac, m, n_pix, n_bad_max, instrument)
        return (flux, ivar, model) if keep_model else (flux, ivar)

    return jax.vmap(one)(index, labels, star)


def _generate(
    key,
    labels,
    star: _Star,
    *,
    keep=None,
    bad_frac=0.0,
    observe=True,
    keep_model=False,
    instrument=False,
    n_pix=7514,
    chunk_size=1024,
    progress=True,
) -> list[np.ndarray]:
    """Chunked driver: fixed-shape jitted chunks copied into preallocated host arrays.

    Star ``i`` uses ``fold_in(key, i)``: results do not depend on ``chunk_size``.
    Returns ``[flux, ivar]`` (``observe``; plus the noise-free ``model`` with ``keep_model``)
    or ``[model]``, each ``(n, n_pix)``.
    """
    m, n = _arrays(n_pix), labels.shape[0]
    keep = jnp.ones(m.logw0.shape, _F32) if keep is None else jnp.asarray(keep, _F32)
    lam = bad_frac * n_pix
    static = {
        "n_pix": n_pix,
        "n_bad_max": math.ceil(lam + 6 * math.sqrt(lam) + 1),
        "instrument": instrument,
        "observe": observe,
        "keep_model": keep_model,
    }
    size = chunk_size if n >= chunk_size else min(chunk_size, _bucket(n))
    outs = [np.empty((n, n_pix), default_float()) for _ in range(1 + observe + (observe and keep_model))]
    pending, starts = None, range(0, n, size)
    for start in tqdm(starts, desc="mock spectra", unit="chunk", disable=not progress or len(starts) == 1):
        idx = np.minimum(np.arange(start, start + size), n - 1)  # the last chunk repeats its last star
        part = jax.tree.map(lambda a, idx=idx: a[idx], (labels, star))
        res = _chunk(m, key, idx.astype(np.int32), *part, keep, bad_frac, **static)
        if pending is not None:  # copy the previous chunk while this one computes
            _copy(outs, *pending)
        pending = (res, start, min(size, n - start))
    _copy(outs, *pending)
    return outs


def _copy(outs, res, start, count):
    for out, r in zip(outs, res, strict=True):
        out[start : start + count] = np.asarray(r)[:count]


def _spectra(flux: np.ndarray, ivar: np.ndarray, n_pix: int) -> Spectra:
    # finite and valid by construction; Spectra(...) would validate in float64 (~20 GB at 100k stars)
    return Spectra._make(flux, ivar, _Static(apogee_wavelength(n_pix)))


def _bucket(n: int) -> int:
    """Padded batch size: powers of two from 64, so a handful of shapes compile."""
    return max(64, 1 << (int(n) - 1).bit_length())


@functools.partial(jax.jit, static_argnums=(0, 2))
def _vmap_stars(fn, key, size, mapped, shared):
    return jax.vmap(lambda i, mp: fn(jax.random.fold_in(key, i), *mp, *shared))(jnp.arange(size), mapped)


def _map_stars(fn, key, n: int, mapped=(), shared=()):
    """``fn(fold_in(key, i), *mapped[i], *shared)`` for stars ``i < n``, as host numpy arrays."""
    size = _bucket(n)
    idx = np.minimum(np.arange(size), n - 1)
    mapped = jax.tree.map(lambda a: np.asarray(a)[idx], mapped)
    return jax.tree.map(lambda a: np.asarray(a)[:n], _vmap_stars(fn, key, size, mapped, shared))
