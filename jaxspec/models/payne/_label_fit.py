r"""What The Payne's fitters return, assembled from per-star fits in the scaled parameters.

:func:`label_fit` turns each star's best-fit scaled labels and velocity
:math:`\theta = (s[, v])` and their covariance into a :class:`LabelFit` in
physical units, with the flags every fitter of this emulator gives (The
Payne's :func:`~jaxspec.models.payne.fit_labels` and Cycle-StarNet's, which
fits through the same emulator); :func:`as_prediction` makes the contract's
``LabelPrediction`` of it; :func:`apply_mask` is the fitters' ``mask``
argument.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxspec.data.containers import Labels
from jaxspec.models._common import LabelPrediction
from jaxspec.models.payne._doppler import RV_MAX
from jaxspec.models.payne._model import Model

__all__ = ["ON_BOUND", "LabelFit", "apply_mask", "as_prediction", "label_fit"]

#: A fraction of the half-width of the box within which a parameter counts as on its bound
#: (``|s| > 0.499`` for labels, ``|v| > 4.99`` km/s for the RV).
ON_BOUND = 0.998


class LabelFit(NamedTuple):
    r"""What :func:`fit_labels` returns (``n`` stars, ``M`` labels).

    Attributes
    ----------
    labels : Labels
        Best-fit labels in physical units (``model.label_names``); ``ivar``
        ``1 / diag(covariance)``.  A star with no measured pixel, or a
        non-finite fit, has every label missing (``ivar`` 0, the container's
        placeholder 0, never NaN); a finite fit that did not meet the
        tolerance keeps its values and errors and is ``flagged``.
    covariance : array ``(n, M, M)``
        Laplace covariance of the labels, physical units; ``inf`` diagonal
        where undefined (no data, non-finite fit).
    rv : array ``(n,)``
        Radial velocity, km/s (0 where not fitted or for a placeholder star).
    rv_err : array ``(n,)``
        Its Laplace 1-sigma error, km/s; 0 with ``rv=False`` (the RV is held at
        0, not measured), ``inf`` where the covariance is undefined.
    chi2 : array ``(n,)``
        :math:`\sum_l w_l (f_l - \tilde f_l)^2` at the fit (0 with no data).
    reduced_chi2 : array ``(n,)``
        ``chi2 / (n_good - n_params)``, ``n_params = M + rv``; ``inf`` when
        ``n_good <= n_params``.
    converged : bool array ``(n,)``
        The solver met its tolerance and the fit is finite.
    on_bound : bool array ``(n,)``
        A label within 0.1% of the box's half-width of its bound
        (:math:`|s| > 0.499`), or the RV :math:`|v| > 4.99` km/s: the fit
        wants to leave the box and its covariance is not a posterior width.
    flagged : bool array ``(n,)``
        Not converged, no measured pixel, a non-finite fit, or an undefined
        covariance (:math:`J^\top W J` singular to working precision: some
        label or the RV is not constrained by the measured pixels).
    continuum : array ``(n, L)`` or None
        With ``continuum=d``: each star's fitted continuum, the per-chip
        polynomial the emulator's spectrum was multiplied by (1 for a
        placeholder star); None otherwise.
    """

    labels: Labels
    covariance: np.ndarray
    rv: np.ndarray
    rv_err: np.ndarray
    chi2: np.ndarray
    reduced_chi2: np.ndarray
    converged: np.ndarray
    on_bound: np.ndarray
    flagged: np.ndarray
    continuum: np.ndarray | None = None


def apply_mask(ivar, mask) -> np.ndarray:
    """``ivar`` ``(n, L)`` with the pixels of a bool ``mask`` (``(L,)`` or ``(n, L)``, True = exclude) set to 0.

    A new array: the caller's is never edited.  A mask of another dtype or shape is a ``ValueError``
    naming ``mask``.
    """
    ivar = np.asarray(ivar)
    if mask is None:
        return ivar
    m = np.asarray(mask)
    if m.dtype != np.bool_ or m.shape not in ((ivar.shape[1],), ivar.shape):
        raise ValueError(
            f"mask: expected a bool array of shape ({ivar.shape[1]},) or {ivar.shape} (True = exclude), "
            f"found {m.dtype} {m.shape}"
        )
    return np.where(m, 0.0, ivar)


def label_fit(
    model: Model, theta, cov, chi2, reduced, converged, n_good, *, rv: bool, dtype, continuum=None
) -> LabelFit:
    r"""A :class:`LabelFit` of per-star fits in the scaled parameters :math:`\theta = (s[, v])`.

    Parameters
    ----------
    model : Model
        The emulator the labels are scaled by (box, names).
    theta : array ``(n, P)``
        Best-fit scaled labels (and, with ``rv``, the velocity in km/s as the last column).
    cov : array ``(n, P, P)``
        Their Laplace covariance.
    chi2, reduced : arrays ``(n,)``
    converged : bool array ``(n,)``
    n_good : int array ``(n,)``
        Measured pixels of each star.
    rv : bool
    dtype
        Of the returned arrays.
    continuum : array ``(n, L)``, optional
        Each star's fitted continuum (1 is given to a placeholder star).

    Returns
    -------
    LabelFit
        A star with no measured pixel or a non-finite fit gets placeholders (labels missing, an
        ``inf`` covariance diagonal, chi2 0 without data) and is flagged; so is an undefined
        covariance or an unconverged fit.
    """
    m = model.n_labels
    theta, cov = np.asarray(theta, np.float64), np.asarray(cov, np.float64)
    chi2 = np.asarray(chi2, np.float64)
    n, p = theta.shape
    finite = np.all(np.isfinite(theta), axis=1) & np.isfinite(chi2)
    placeholder = (n_good == 0) | ~finite
    theta = np.where(placeholder[:, None], 0.0, theta)
    undefined = placeholder | ~np.all(np.isfinite(cov), axis=(1, 2))
    cov = np.where(undefined[:, None, None], np.diag(np.full(p, np.inf)), cov)
    flagged = undefined | ~np.asarray(converged)
    chi2 = np.where(n_good == 0, 0.0, chi2)

    lo, hi = np.asarray(model.x_min, np.float64), np.asarray(model.x_max, np.float64)
    width = hi - lo
    values = (theta[:, :m] + 0.5) * width + lo
    lcov = cov[:, :m, :m] * (width[:, None] * width[None, :])
    var = np.diagonal(lcov, axis1=1, axis2=2)
    good_var = np.isfinite(var) & (var > 0) & ~placeholder[:, None]
    label_ivar = np.where(good_var, 1.0 / np.where(good_var, var, 1.0), 0.0)
    labels = Labels(values, ivar=label_ivar, names=model.label_names, dtype=dtype)
    on_bound = np.any(np.abs(theta[:, :m]) > 0.5 * ON_BOUND, axis=1)
    if rv:
        velocity = np.where(placeholder, 0.0, theta[:, m])
        rv_err = np.sqrt(cov[:, m, m])
        on_bound |= np.abs(velocity) > RV_MAX * ON_BOUND
    else:
        velocity, rv_err = np.zeros(n), np.zeros(n)
    return LabelFit(
        labels,
        lcov.astype(dtype),
        velocity.astype(dtype),
        rv_err.astype(dtype),
        chi2.astype(dtype),
        np.asarray(reduced).astype(dtype),
        np.asarray(converged) & ~placeholder,
        on_bound & ~placeholder,
        flagged,
        None if continuum is None else np.where(placeholder[:, None], 1.0, continuum).astype(dtype),
    )


def as_prediction(fit: LabelFit) -> LabelPrediction:
    """The contract's :class:`~jaxspec.models._common.LabelPrediction` of a fit: a flagged star has its
    labels missing (``ivar`` 0) and an ``inf`` covariance diagonal; ``z`` None (the labels are the inputs)."""
    flagged = fit.flagged
    m = fit.labels.values.shape[1]
    cov = np.where(flagged[:, None, None], np.diag(np.full(m, np.inf)), fit.covariance)
    ivar = np.where(flagged[:, None], 0.0, np.asarray(fit.labels.ivar))
    labels = Labels(fit.labels.values, ivar=ivar, names=fit.labels.names, dtype=fit.labels.values.dtype)
    return LabelPrediction(labels, cov, None, fit.reduced_chi2, flagged)
