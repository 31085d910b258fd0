r"""The Doppler shift of an emulator spectrum on a chipped grid, for :mod:`jaxspec.models.payne._fit_labels`.

A rest-frame spectrum seen at velocity :math:`v` is the rest-frame flux at
:math:`\lambda / D(v)`, :math:`D = \sqrt{(1 + v/c)/(1 - v/c)}`, linearly
interpolated within each chip (never across a chip gap).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "C_KMS",
    "RV_MAX",
    "LogChips",
    "chip_taps",
    "doppler_offset",
    "log_chips",
    "scan_chi2",
    "shift_log_chips",
    "shift_spectrum",
    "stencil",
    "tap_weights",
]

#: The speed of light in km/s.
C_KMS = 299792.458
#: The radial velocity's bound, km/s (The Payne's fitter: +-5 km/s; spectra are assumed near rest frame).
RV_MAX = 5.0


def doppler_offset(v):
    r""":math:`1 - 1/D(v)` to full relative precision (no cancellation for :math:`|v| \ll c`).

    :math:`1/D = \sqrt{(1-\beta)/(1+\beta)}`; with :math:`a = 1/D^2`,
    :math:`1 - \sqrt a = (1 - a)/(1 + \sqrt a)` and :math:`1 - a = 2\beta/(1+\beta)`.
    """
    beta = v / C_KMS
    return (2.0 * beta / (1.0 + beta)) / (1.0 + jnp.sqrt((1.0 - beta) / (1.0 + beta)))


def stencil(wavelength: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the wavelength offsets ``(L, 2K+1)`` of its neighbours within its chip and their indices.

    Built in float64 on the host so that the offsets (fractions of an Angstrom)
    keep full precision in float32; neighbours in another chip (across a gap
    wider than 1.5 times the local log-spacing) or beyond the grid get
    offsets of +-1e30 and never carry weight.
    """
    w = np.asarray(wavelength, np.float64)
    n = w.shape[0]
    dlog = np.diff(np.log(w))
    if n < 2:
        return np.zeros((n, 1), dtype), np.zeros((n, 1), np.int32)
    med = np.median(dlog)
    chip = np.concatenate([[0], np.cumsum(dlog > 1.5 * med)])
    # the largest shift in units of the smallest spacing, plus one neighbour each side
    shift = (w * float(doppler_offset(np.float64(RV_MAX)))).max()
    k = math.ceil(shift / np.diff(w).min()) + 1
    ks = np.arange(-k, k + 1)
    idx = np.arange(n)[:, None] + ks[None, :]
    inside = (idx >= 0) & (idx < n)
    safe = np.clip(idx, 0, n - 1)
    valid = inside & (chip[safe] == chip[:, None])
    offs = np.where(valid, w[safe] - w[:, None], np.where(ks[None, :] < 0, -1e30, 1e30))
    return offs.astype(dtype), np.where(valid, safe, np.arange(n)[:, None]).astype(np.int32)


def shift_spectrum(flux, wavelength, offsets, index, v):
    r"""Rest-frame ``flux`` ``(L,)`` seen at velocity ``v``: linear interpolation at :math:`\lambda/D(v)`.

    The query point of pixel ``i`` is :math:`\lambda_i - \lambda_i (1 - 1/D)`,
    located among its neighbours of the same chip (:func:`stencil`).  A
    query beyond the first or last pixel of its chip takes that pixel's value
    (constant extrapolation, as ``np.interp`` does at the ends of a grid; it
    never interpolates across a chip gap).
    """
    d = -wavelength * doppler_offset(v)
    lo = jnp.min(jnp.where(offsets > -1e29, offsets, 0.0), axis=1)
    hi = jnp.max(jnp.where(offsets < 1e29, offsets, 0.0), axis=1)
    d = jnp.clip(d, lo, hi)
    width = offsets.shape[1]
    left = jnp.clip(jnp.sum(offsets <= d[:, None], axis=1) - 1, 0, width - 2)
    a = jnp.take_along_axis(offsets, left[:, None], axis=1)[:, 0]
    b = jnp.take_along_axis(offsets, left[:, None] + 1, axis=1)[:, 0]
    ia = jnp.take_along_axis(index, left[:, None], axis=1)[:, 0]
    ib = jnp.take_along_axis(index, left[:, None] + 1, axis=1)[:, 0]
    t = jnp.clip((d - a) / (b - a), 0.0, 1.0)
    return (1.0 - t) * flux[ia] + t * flux[ib]


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class LogChips:
    r"""A grid uniform in :math:`\ln\lambda` within each chip (static: hashable, no arrays).

    Attributes
    ----------
    bounds : tuple of (int, int)
        Each chip's first pixel and one past its last.
    dln : tuple of float
        Each chip's spacing in :math:`\ln\lambda`.
    taps : int
        ``K``: a shift of at most :data:`RV_MAX` moves a query by less than
        ``K`` pixels.
    """

    bounds: tuple
    dln: tuple
    taps: int


def log_chips(wavelength, *, rtol: float = 1e-7) -> LogChips | None:
    r"""The chips of a grid uniform in :math:`\ln\lambda` within each chip (APOGEE's), else None.

    Chips are split where the spacing exceeds 1.5 times the median; a chip
    is uniform when every :math:`\Delta\ln\lambda` is within ``rtol`` of its
    median (float64).  Chips of one pixel make the grid non-uniform (None).
    """
    w = np.asarray(wavelength, np.float64)
    if w.ndim != 1 or w.shape[0] < 2:
        return None
    dlog = np.diff(np.log(w))
    cut = np.flatnonzero(dlog > 1.5 * np.median(dlog)) + 1
    edges = np.concatenate([[0], cut, [w.shape[0]]])
    bounds, dln = [], []
    for a, b in itertools.pairwise(edges):
        if b - a < 2:
            return None
        d = dlog[a : b - 1]
        med = float(np.median(d))
        if np.max(np.abs(d - med)) > rtol * med:
            return None
        bounds.append((int(a), int(b)))
        dln.append(med)
    taps = math.floor(math.atanh(RV_MAX / C_KMS) / min(dln)) + 1
    return LogChips(tuple(bounds), tuple(dln), taps)


def tap_weights(chips: LogChips, v):
    r"""Per chip, the weights ``(C, 2K+1)`` of the neighbours ``-K..K`` for velocity ``v``, and their ``d/dv``.

    Pixel ``i`` of a chip of spacing :math:`\delta` looks up the rest frame at
    :math:`\lambda_i / D`, a fractional index :math:`i + q` with
    :math:`q = -\ln D / \delta = -\operatorname{artanh}(v/c) / \delta`, the
    same for every pixel of the chip.  Interpolation is linear in
    :math:`\lambda` as ``np.interp`` is: between the neighbours
    :math:`j_0 = \lfloor q\rfloor` and :math:`j_0 + 1`, the weight of the
    right one is :math:`t = \operatorname{expm1}((q - j_0)\delta) /
    \operatorname{expm1}(\delta)`.  ``|v|`` is clipped to :data:`RV_MAX`.
    """
    v = jnp.clip(v, -RV_MAX, RV_MAX)
    beta = v / C_KMS
    dbeta = 1.0 / (C_KMS * (1.0 - beta * beta))  # d artanh(v/c) / dv
    j = jnp.arange(-chips.taps, chips.taps + 1)
    dln = jnp.asarray(chips.dln, v.dtype)[:, None]
    q = -jnp.arctanh(beta) / dln
    j0 = jnp.floor(q)
    frac = q - j0
    t = jnp.expm1(frac * dln) / jnp.expm1(dln)
    dt_dv = -jnp.exp(frac * dln) / jnp.expm1(dln) * dbeta
    left, right = j == j0, j == j0 + 1
    weights = jnp.where(left, 1.0 - t, 0.0) + jnp.where(right, t, 0.0)
    return weights, jnp.where(left, -dt_dv, 0.0) + jnp.where(right, dt_dv, 0.0)


def chip_taps(rows, chips: LogChips) -> list:
    """Per chip, the rows ``(R, L)`` moved by ``-K..K`` pixels: ``(2K+1, R, n_chip)``, ends repeated."""
    k = chips.taps
    out = []
    for a, b in chips.bounds:
        seg = rows[:, a:b]
        pad = jnp.concatenate([jnp.repeat(seg[:, :1], k, axis=1), seg, jnp.repeat(seg[:, -1:], k, axis=1)], axis=1)
        out.append(jnp.stack([pad[:, k + j : k + j + b - a] for j in range(-k, k + 1)]))
    return out


def shift_log_chips(rows, chips: LogChips, v):
    r"""Rows ``(R, L)`` of rest-frame spectra seen at velocity ``v``, and ``d row_0 / dv`` ``(L,)``.

    Linear interpolation at :math:`\lambda / D(v)` with :func:`tap_weights`,
    the same two weights at every pixel of a chip; queries beyond a chip's
    end take its end value (the chip is padded with it; no interpolation
    across a gap).  Rows are moved by static slices, so this costs a few
    vector passes per row.
    """
    weights, slopes = tap_weights(chips, v)
    weights, slopes = weights.astype(rows.dtype), slopes.astype(rows.dtype)
    k = chips.taps
    out, slope = [], []
    for c, (a, b) in enumerate(chips.bounds):
        seg = rows[:, a:b]
        pad = jnp.concatenate([jnp.repeat(seg[:, :1], k, axis=1), seg, jnp.repeat(seg[:, -1:], k, axis=1)], axis=1)
        acc, dacc = jnp.zeros_like(seg), jnp.zeros_like(seg[0])
        for i in range(2 * k + 1):  # one fused pass per tap: no (2K+1, R, n) stack
            tap = pad[:, i : i + b - a]
            acc = acc + weights[c, i] * tap
            dacc = dacc + slopes[c, i] * tap[0]
        out.append(acc)
        slope.append(dacc)
    return jnp.concatenate(out, axis=1), jnp.concatenate(slope)


def scan_chi2(spectrum, chips: LogChips, flux, ivar, velocities):
    r""":math:`\sum_l w_l (f_l - S(v)\,\tilde f_l)^2` of a rest-frame ``spectrum`` ``(L,)`` at each velocity.

    With the taps :math:`T_j` of each chip (:func:`chip_taps`) the shifted
    spectrum is :math:`\sum_j a_j(v) T_j = T_0 + \sum_j a_j D_j`,
    :math:`D_j = T_j - T_0` (the weights sum to 1), so with
    :math:`r = f - T_0`,
    :math:`\chi^2(v) = \sum w r^2 - 2 a^\top b + a^\top B a`,
    :math:`b_j = \sum w r D_j`, :math:`B_{jk} = \sum w D_j D_k`: the moments
    cost a few passes over the pixels, each velocity a few dozen flops.
    Expanding about the unshifted residual keeps float32 accurate (the
    terms are of the size of :math:`\chi^2`, not of :math:`\sum w f^2`).
    """
    k = chips.taps
    total = jnp.zeros((), spectrum.dtype)
    moments = []
    for (a, b), taps in zip(chips.bounds, chip_taps(spectrum[None], chips), strict=True):
        diff = taps[:, 0] - taps[k, 0]  # D_j, (2K+1, n_chip); row K is 0
        w = ivar[a:b]
        r = flux[a:b] - spectrum[a:b]
        total = total + jnp.sum(w * r * r)
        moments.append((diff @ (w * r), (diff * w) @ diff.T))

    def one(v):
        weights = tap_weights(chips, v)[0].astype(spectrum.dtype)
        return total + sum(a @ (bb @ a) - 2.0 * a @ bv for a, (bv, bb) in zip(weights, moments, strict=True))

    return jax.vmap(one)(jnp.asarray(velocities, spectrum.dtype))
