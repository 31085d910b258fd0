r"""Observed spectra moved to the stellar rest frame on their own wavelength grid.

A star receding at :math:`v` (km/s, positive away) shows at :math:`\lambda` the
rest-frame flux of :math:`\lambda / D`, :math:`D = \sqrt{(1+v/c)/(1-v/c)}`; so
the rest-frame spectrum at :math:`\lambda_i` is the observed one at
:math:`\lambda_i D`, linearly interpolated (as The Payne's ``doppler_shift``).
Use it to bring visit spectra, whose velocities a survey pipeline has already
measured (APOGEE's ``VHELIO``), near the rest frame before a fitter whose RV is
bounded (:func:`jaxspec.models.payne.fit_labels`, :math:`\pm 5` km/s).
"""

from __future__ import annotations

import numpy as np

from jaxspec.data.containers import Spectra

__all__ = ["C_KMS", "chips", "to_rest_frame"]

#: The speed of light in km/s.
C_KMS = 299792.458


def chips(wavelength) -> np.ndarray:
    """Chip index ``(L,)`` of each pixel: a new chip wherever the log-spacing exceeds 1.5 times its median."""
    w = np.asarray(wavelength, np.float64)
    if w.shape[0] < 2:
        return np.zeros(w.shape[0], np.int64)
    dlog = np.diff(np.log(w))
    return np.concatenate([[0], np.cumsum(dlog > 1.5 * np.median(dlog))])


def to_rest_frame(spectra: Spectra, rv) -> Spectra:
    r"""``spectra`` seen from the rest frame of stars receding at ``rv`` km/s, on the same grid.

    Flux is interpolated linearly in wavelength at :math:`\lambda_i D(v)`
    between the two observed pixels around it, and the variance propagated,
    :math:`\sigma^2 = (1-t)^2\sigma_a^2 + t^2\sigma_b^2` (the correlation this
    interpolation puts between neighbouring pixels is not kept).  A pixel is
    masked (``ivar`` 0, flux 1) where a neighbour it draws on is masked, or
    where :math:`\lambda_i D` falls outside its chip (never interpolated
    across a gap between detectors).

    Parameters
    ----------
    spectra : Spectra ``(n, L)``
        With a wavelength grid (vacuum or air: the factor is the same).
    rv : float or array ``(n,)``
        Radial velocities, km/s, positive away from the observer, finite and
        below the speed of light.

    Returns
    -------
    Spectra ``(n, L)``, the same grid and dtype.

    Raises
    ------
    TypeError, ValueError
        ``spectra`` not a ``Spectra`` or without a grid; ``rv`` of the wrong
        shape, non-finite, or :math:`|v| \ge c`.
    """
    if not isinstance(spectra, Spectra):
        raise TypeError(f"spectra: expected a Spectra, found {type(spectra).__name__}")
    if spectra.wavelength is None:
        raise ValueError("spectra: expected a wavelength grid (spectra.wavelength is None), found none")
    n = spectra.n_stars
    v = np.asarray(rv, np.float64)
    if v.ndim == 0:
        v = np.full(n, float(v))
    if v.shape != (n,):
        raise ValueError(f"rv: expected a number or shape ({n},), found shape {np.shape(rv)}")
    if not np.all(np.isfinite(v)) or np.any(np.abs(v) >= C_KMS):
        raise ValueError(f"rv: expected finite velocities below c = {C_KMS} km/s, found {v[~(np.abs(v) < C_KMS)]}")
    wave = np.asarray(spectra.wavelength, np.float64)
    chip = chips(wave)
    beta = v / C_KMS
    query = wave[None, :] * np.sqrt((1.0 + beta) / (1.0 - beta))[:, None]  # (n, L)
    right = np.clip(np.searchsorted(wave, query, side="right"), 1, wave.shape[0] - 1)
    left = right - 1
    t = (query - wave[left]) / (wave[right] - wave[left])
    t = np.clip(t, 0.0, 1.0)
    # both neighbours that carry weight lie in the pixel's own chip (none across a gap) and the query on the grid
    own = chip[None, :]
    inside = (query >= wave[0]) & (query <= wave[-1])
    inside &= ((chip[left] == own) | (t == 1.0)) & ((chip[right] == own) | (t == 0.0))
    flux, ivar = np.asarray(spectra.flux, np.float64), np.asarray(spectra.ivar, np.float64)
    rows = np.arange(n)[:, None]
    fa, fb, wa, wb = flux[rows, left], flux[rows, right], ivar[rows, left], ivar[rows, right]
    # a neighbour of zero weight may be masked: only a neighbour that carries weight must be measured
    ok = inside & ((wa > 0) | (t == 1.0)) & ((wb > 0) | (t == 0.0))
    var = np.where(t < 1.0, (1.0 - t) ** 2 / np.where(wa > 0, wa, 1.0), 0.0) + np.where(
        t > 0.0, t**2 / np.where(wb > 0, wb, 1.0), 0.0
    )
    new_ivar = np.where(ok & (var > 0), 1.0 / np.where(var > 0, var, 1.0), 0.0)
    new_flux = np.where(ok, (1.0 - t) * np.where(wa > 0, fa, 0.0) + t * np.where(wb > 0, fb, 0.0), 1.0)
    dtype = np.asarray(spectra.flux).dtype
    return Spectra(new_flux.astype(dtype), new_ivar.astype(dtype), spectra.wavelength, dtype=dtype)
