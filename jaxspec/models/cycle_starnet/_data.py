r"""Spectra to the networks' inputs: crop, one global normalisation, the distance weights.

For an observed pixel with inverse variance :math:`\iota` the error is
:math:`e = \max(\iota^{-1/2}, e_{floor})` and the pixel is masked when
:math:`\iota = 0` or :math:`e > e_{max}` (the authors' 0.005 and 0.05);
every synthetic pixel with :math:`\iota > 0` has the error
``config.synthetic_err``.  The weight of the distance is :math:`w = m / (e /
\sigma)`.  A pixel with :math:`\iota = 0` enters the networks at the
normalised mean, 0 (its flux is unknown); a measured one at
:math:`(f - \mu) / \sigma`.
"""

from __future__ import annotations

import numpy as np

from jaxspec.data.containers import Spectra, default_float
from jaxspec.models._common import check_finite_measured, check_grid, check_stars

__all__ = ["check_spectra", "inputs", "normalisation", "weights"]


def check_spectra(spectra, n_pix: int, wavelength, name: str) -> Spectra:
    """Refuse what is not a ``Spectra`` of ``n_pix`` pixels on ``wavelength`` (when both have a grid)."""
    if not isinstance(spectra, Spectra):
        raise TypeError(f"{name}: expected a Spectra, found {type(spectra).__name__}")
    check_stars(spectra.n_stars, name)
    if spectra.n_pix != n_pix:
        raise ValueError(
            f"{name}: expected {n_pix} pixels (the model's grid), found {spectra.n_pix}; "
            "resample the spectra onto the model's grid first"
        )
    check_grid(spectra.wavelength, wavelength, name)
    check_finite_measured(spectra.flux, spectra.ivar, name)
    return spectra


def normalisation(spectra: Spectra, kept: slice) -> tuple[float, float]:
    """:math:`(\\mu, \\sigma)` of the measured flux of ``spectra`` within ``kept`` (float64 sums)."""
    flux, good = np.asarray(spectra.flux)[:, kept], np.asarray(spectra.ivar)[:, kept] > 0
    values = flux[good].astype(np.float64)
    if values.size < 2:
        raise ValueError("synthetic: expected measured pixels to normalise by, found fewer than 2")
    std = float(values.std())
    if not std > 0:
        raise ValueError("synthetic: expected flux that varies, found one value everywhere (standard deviation 0)")
    return float(values.mean()), std


def inputs(spectra: Spectra, kept: slice, norm) -> np.ndarray:
    """The networks' input ``(n, n_net)``: :math:`(f - \\mu)/\\sigma` where measured, 0 where not."""
    mean, std = (float(v) for v in np.asarray(norm, np.float64))
    flux, ivar = np.asarray(spectra.flux)[:, kept], np.asarray(spectra.ivar)[:, kept]
    return np.where(ivar > 0, (flux - mean) / std, 0.0).astype(default_float())


def weights(spectra: Spectra, kept: slice, norm, config, *, observed: bool) -> np.ndarray:
    """The distance weights ``(n, n_net)``: mask over the normalised error (module docstring)."""
    std = float(np.asarray(norm, np.float64)[1])
    ivar = np.asarray(spectra.ivar, np.float64)[:, kept]
    good = ivar > 0
    if not observed:
        return np.where(good, std / config.synthetic_err, 0.0).astype(default_float())
    err = np.maximum(1.0 / np.sqrt(np.where(good, ivar, 1.0)), config.err_floor)
    good &= err <= config.err_max
    return np.where(good, std / err, 0.0).astype(default_float())
