r"""The Payne's per-star label fitter, re-implemented in numpy/scipy for ``bench_payne.py`` (not part of the package).

The Payne (Ting, Conroy, Rix & Cargile 2019; github.com/tingyuansen/The_Payne,
MIT) is not on PyPI, so the benchmark runs this re-implementation of its
algorithm, written from ``The_Payne/fitting.py`` (``fit_normalized_spectrum_single_star_model``),
``spectral_model.py`` (``get_spectrum_from_neural_net``) and ``utils.py``
(``doppler_shift``) of commit 610ff91 (the current release):

* parameters: the ``M`` scaled labels :math:`s = (y - x_{\min})/(x_{\max} - x_{\min}) - 1/2`
  and, last, the radial velocity in km/s itself (not scaled);
* start ``p0 = zeros(M + 1)``: the centre of the label box at zero velocity
  (``fitting.py`` line 49);
* bounds ``[-0.5, 0.5]`` for every scaled label and ``[-5, 5]`` km/s for the
  velocity (lines 52-56);
* ``scipy.optimize.curve_fit(fit_func, xdata=[], ydata=spectrum, sigma=err, p0=p0,
  bounds=bounds, ftol=5e-4, xtol=5e-4, absolute_sigma=True, method="trf")``
  (lines 30 and 59-60): trust-region reflective least squares with scipy's
  default 2-point finite-difference Jacobian;
* masked pixels get an error of 999 (line 33; the reference writes into the
  caller's error array, this copy does not);
* results: labels unscaled, :math:`y = (s + 1/2)(x_{\max} - x_{\min}) + x_{\min}`;
  errors :math:`\sqrt{\mathrm{diag}\,C}` with the labels' scaled by
  :math:`x_{\max} - x_{\min}` and the velocity's as they are (lines 61-66);
* the forward model: the single network (two or more layers, ``w (out, in)``,
  LeakyReLU ``z (z > 0) + 0.01 z (z < 0)``, ``np.einsum("ij,j->i", ...)`` as
  ``spectral_model.py`` evaluates it), or the 2019 per-pixel network
  :math:`f_l = w^{(1)}_l \cdot \sigma(W^{(0)}_l s + b^{(0)}_l) + b^{(1)}_l`
  (``np.einsum("ijk,k->ij")`` and ``("ij,ij->i")``, the form of the 2019 code);
* the Doppler shift: the rest-frame model interpolated with ``np.interp`` at
  :math:`\lambda \sqrt{(1 - v/c)/(1 + v/c)}` on the full grid.

One star at a time, as the reference fits.  Beyond the reference, each fit
reports its wall time, the number of model evaluations inside ``curve_fit``
(finite-difference ones included), its chi2 over the unmasked pixels and
whether ``curve_fit`` succeeded (it raises ``RuntimeError`` when
``least_squares`` stops at its evaluation cap; the star is then returned as
not converged with NaN results instead of stopping the run).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

__all__ = [
    "C_KMS",
    "MASKED_ERR",
    "RV_BOUND",
    "TOL",
    "Emulator",
    "Fits",
    "StarFit",
    "doppler_shift",
    "fit_star",
    "fit_stars",
    "from_arrays",
    "load",
    "spectrum",
]

#: The speed of light, km/s (``utils.doppler_shift``).
C_KMS = 2.99792458e5
#: ``ftol`` and ``xtol`` of ``curve_fit`` (``fitting.py``: ``tol = 5e-4``).
TOL = 5e-4
#: The error given to masked pixels (``spec_err[mask] = 999.``).
MASKED_ERR = 999.0
#: The velocity's bound, km/s.
RV_BOUND = 5.0


class Emulator(NamedTuple):
    """A Payne emulator's arrays as the reference uses them.

    ``kind`` is ``"per_pixel"`` (``weights = (w0 (L, H, M), b0 (L, H), w1 (L, H), b1 (L,))``)
    or ``"network"`` (``weights`` a tuple of ``(w (out, in), b (out,))`` per layer).
    """

    kind: str
    weights: tuple
    x_min: np.ndarray
    x_max: np.ndarray

    @property
    def n_labels(self) -> int:
        return int(self.x_min.shape[0])


def from_arrays(arrays: Mapping) -> Emulator:
    """The emulator of a Payne ``.npz``'s arrays (``w_array_i``, ``b_array_i``, ``x_min``, ``x_max``)."""
    x_min, x_max = np.asarray(arrays["x_min"]), np.asarray(arrays["x_max"])
    if np.ndim(arrays["w_array_0"]) == 3:
        weights = tuple(np.asarray(arrays[k]) for k in ("w_array_0", "b_array_0", "w_array_1", "b_array_1"))
        return Emulator("per_pixel", weights, x_min, x_max)
    k = 0
    while f"w_array_{k}" in arrays:
        k += 1
    layers = tuple((np.asarray(arrays[f"w_array_{i}"]), np.asarray(arrays[f"b_array_{i}"])) for i in range(k))
    return Emulator("network", layers, x_min, x_max)


def load(path: str | os.PathLike) -> Emulator:
    """Read a Payne ``.npz`` of either format."""
    with np.load(path) as d:
        return from_arrays({k: d[k] for k in d.files})


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _leaky_relu(z):
    return z * (z > 0) + 0.01 * z * (z < 0)


def spectrum(em: Emulator, scaled_labels) -> np.ndarray:
    """The rest-frame normalised spectrum ``(L,)`` of one star's scaled labels ``(M,)``."""
    s = np.asarray(scaled_labels)
    if em.kind == "per_pixel":
        w0, b0, w1, b1 = em.weights
        inside = np.einsum("ijk,k->ij", w0, s) + b0
        return np.einsum("ij,ij->i", w1, _sigmoid(inside)) + b1
    x = s
    for w, b in em.weights[:-1]:
        x = _leaky_relu(np.einsum("ij,j->i", w, x) + b)
    w, b = em.weights[-1]
    return np.einsum("ij,j->i", w, x) + b


def doppler_shift(wavelength, flux, dv):
    """The rest-frame ``flux`` seen at velocity ``dv`` km/s (positive: receding), ``np.interp`` on the grid."""
    doppler_factor = np.sqrt((1 - dv / C_KMS) / (1 + dv / C_KMS))
    return np.interp(wavelength * doppler_factor, wavelength, flux)


class StarFit(NamedTuple):
    """One star's fit: physical ``labels (M,)``, ``rv`` km/s, their 1-sigma errors, ``chi2`` over the
    unmasked pixels, ``n_eval`` model evaluations inside ``curve_fit``, ``seconds`` of wall time (the
    reference's whole function: mask, fit, errors, best-fit model), ``converged`` (``curve_fit`` returned)."""

    labels: np.ndarray
    rv: float
    label_err: np.ndarray
    rv_err: float
    chi2: float
    n_eval: int
    seconds: float
    converged: bool


def fit_star(em: Emulator, wavelength, spec, err, mask=None, p0=None) -> StarFit:
    """Fit one continuum-normalised spectrum ``(L,)`` with errors ``err (L,)``; ``mask (L,)`` True = omit."""
    t0 = time.perf_counter()
    spec = np.asarray(spec, np.float64)
    err = np.array(err, np.float64)  # a copy: the reference writes 999 into the caller's array
    omit = np.zeros(spec.shape, bool) if mask is None else np.asarray(mask, bool)
    err[omit] = MASKED_ERR
    num = em.n_labels + 1
    calls = [0]

    def fit_func(dummy_variable, *params):
        calls[0] += 1
        flux = spectrum(em, params[:-1])
        return doppler_shift(wavelength, flux, params[-1])

    if p0 is None:
        p0 = np.zeros(num)
    bounds = np.zeros((2, num))
    bounds[0, :] = -0.5
    bounds[1, :] = 0.5
    bounds[0, -1] = -RV_BOUND
    bounds[1, -1] = RV_BOUND
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # pcov of inf when J is singular: reported as is
            popt, pcov = curve_fit(
                fit_func,
                xdata=[],
                ydata=spec,
                sigma=err,
                p0=p0,
                bounds=bounds,
                ftol=TOL,
                xtol=TOL,
                absolute_sigma=True,
                method="trf",
            )
        converged = True
    except RuntimeError:  # "Optimal parameters not found": least_squares hit max_nfev
        popt, pcov, converged = np.full(num, np.nan), np.full((num, num), np.nan), False
    n_eval = calls[0]
    pstd = np.sqrt(np.diag(pcov))
    chi2 = np.nan
    if converged:
        model_spec = fit_func([], *popt)
        chi2 = float(np.sum(np.square((spec - model_spec) / err)[~omit]))
    width = em.x_max - em.x_min
    labels = (popt[:-1] + 0.5) * width + em.x_min
    label_err = pstd[:-1] * width
    seconds = time.perf_counter() - t0
    return StarFit(labels, float(popt[-1]), label_err, float(pstd[-1]), chi2, n_eval, seconds, converged)


class Fits(NamedTuple):
    """:class:`StarFit` of ``n`` stars stacked: ``labels (n, M)``, ``rv (n,)``, ... ``converged (n,)``."""

    labels: np.ndarray
    rv: np.ndarray
    label_err: np.ndarray
    rv_err: np.ndarray
    chi2: np.ndarray
    n_eval: np.ndarray
    seconds: np.ndarray
    converged: np.ndarray


def fit_stars(em: Emulator, wavelength, flux, err, mask=None, *, progress: bool = False) -> Fits:
    """:func:`fit_star` on each row of ``flux (n, L)`` in turn (``err``, ``mask``: ``(n, L)`` or ``(L,)``)."""
    flux = np.atleast_2d(flux)
    n = flux.shape[0]
    err = np.broadcast_to(err, flux.shape)
    mask = None if mask is None else np.broadcast_to(np.asarray(mask, bool), flux.shape)
    fits = []
    for i in range(n):
        fits.append(fit_star(em, wavelength, flux[i], err[i], None if mask is None else mask[i]))
        if progress and (i + 1) % max(1, n // 10) == 0:
            print(f"  reference: {i + 1}/{n} stars, {sum(f.seconds for f in fits):.3g} s", flush=True)
    return Fits(*(np.array(v) for v in zip(*fits, strict=True)))
