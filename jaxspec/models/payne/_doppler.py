r"""The Doppler shift of an emulator spectrum on a chipped grid, for :mod:`jaxspec.models.payne._fit_labels`.

A rest-frame spectrum seen at velocity :math:`v` is the rest-frame flux at
:math:`\lambda / D(v)`, :math:`D = \sqrt{(1 + v/c)/(1 - v/c)}`, linearly
interpolated within each chip (never across a chip gap).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

__all__ = ["C_KMS", "RV_MAX", "doppler_offset", "shift_spectrum", "stencil"]

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
