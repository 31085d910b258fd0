"""Numbers that judge a model: label bias/RMSE, reduced chi-square, pull widths, doppelganger rates, ROC AUC.

They take numpy/JAX arrays or ``Labels``/``Spectra`` and return numpy arrays (host code, not for ``jit``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxspec.data._checks import first_bad, real_array
from jaxspec.data.containers import Labels, Spectra

_MOVED = {"DoppelgangerResult": "jaxspec.models.rsca", "doppelganger_rate": "jaxspec.models.rsca"}

__all__ = [
    "BiasRMSE",
    "bias_rmse",
    "calibration",
    "mean_error",
    "reduced_chi2",
    "robust_sigma",
    "roc_auc",
    "roc_curve",
]

#: :math:`1/\Phi^{-1}(3/4)`: the median absolute deviation of a Gaussian times this is its sigma.
MAD_TO_SIGMA = 1.4826


class BiasRMSE(NamedTuple):
    """Per-label comparison: ``bias``, ``rmse`` (label units) and ``n`` (entries used), each ``(n_labels,)``."""

    bias: np.ndarray
    rmse: np.ndarray
    n: np.ndarray


def _array2d(x, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    a = real_array(x, name)
    if a.ndim != 2 or (shape is not None and a.shape != shape):
        want = f"shape {shape}" if shape else "a 2-D array (n_stars, n_columns)"
        raise ValueError(f"{name}: expected {want}, found shape {a.shape}")
    return a.astype(np.float64)


def _finite_where(use: np.ndarray, where: str, **arrays: np.ndarray) -> None:
    for name, a in arrays.items():
        if (bad := use & ~np.isfinite(a)).any():
            raise ValueError(f"{name}: expected finite values where {where}, found NaN or inf {first_bad(bad)}")


def _ivar(x, shape: tuple[int, ...] | None = None) -> np.ndarray:
    w = _array2d(x.ivar if isinstance(x, Labels) else x, "ivar", shape)
    if not np.all(w >= 0) or np.isposinf(w).any():
        raise ValueError("ivar: expected finite values >= 0, found a negative, NaN or inf one")
    return w


def _column_mean(x: np.ndarray, use: np.ndarray, min_count: int = 1) -> np.ndarray:
    """Mean of ``x`` over the used entries of each column; NaN with fewer than ``min_count``."""
    n = use.sum(axis=0)
    return np.where(n >= min_count, np.where(use, x, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)


def _labels_pair(pred, truth, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``pred``, ``truth`` as float64 ``(n, M)`` and the boolean ``(n, M)`` of entries to use."""
    if isinstance(pred, Labels) and isinstance(truth, Labels) and pred.names != truth.names:
        if missing := [n for n in pred.names if n not in truth.names]:
            raise ValueError(f"truth: expected the labels {list(pred.names)} of pred, found no {missing}")
        truth = truth.select(pred.names)
    p, t = (_array2d(x.values if isinstance(x, Labels) else x, n) for x, n in ((pred, "pred"), (truth, "truth")))
    t = _array2d(t, "truth", p.shape)
    use = np.ones(p.shape, bool)
    for x in (pred, truth):
        use &= np.asarray(x.ivar) > 0 if isinstance(x, Labels) else True  # missing labels never count
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != bool:
            raise TypeError(f"mask: expected a boolean array (True = use), found dtype {m.dtype}")
        if m.shape != p.shape:
            raise ValueError(f"mask: expected shape {p.shape}, found {m.shape}")
        use = use & m
    _finite_where(use, "used", pred=p, truth=t)
    return p, t, use


def bias_rmse(pred, truth, *, mask=None) -> BiasRMSE:
    r"""Bias and root-mean-square error of predicted labels, one per label.

    .. math:: b_m = \langle p_{nm} - t_{nm} \rangle_n, \quad \mathrm{RMSE}_m^2 = \langle (p_{nm} - t_{nm})^2 \rangle_n

    Parameters
    ----------
    pred, truth : array ``(n_stars, n_labels)`` or Labels
        Predicted and reference labels (physical units).  Missing entries (``ivar == 0``)
        of ``Labels`` are skipped; two ``Labels`` are matched by name (``truth`` to ``pred``).
    mask : bool array ``(n_stars, n_labels)``, optional
        ``True`` marks entries to USE (unlike the containers' ``mask``, which marks bad ones).

    Returns
    -------
    BiasRMSE
        ``bias``, ``rmse`` (label units; NaN without entries), ``n`` (count), each ``(n_labels,)``.

    Examples
    --------
    >>> r = bias_rmse(np.array([[1.0, 2.0], [3.0, 2.0]]), np.array([[0.0, 2.0], [2.0, 4.0]]))
    >>> r.bias.tolist(), r.rmse.tolist(), r.n.tolist()
    ([1.0, -1.0], [1.0, 1.4142135623730951], [2, 2])
    """
    p, t, use = _labels_pair(pred, truth, mask)
    d = np.where(use, p, 0.0) - np.where(use, t, 0.0)  # zero unused entries first: inf - inf would warn
    return BiasRMSE(_column_mean(d, use), np.sqrt(_column_mean(d**2, use)), use.sum(axis=0))


def reduced_chi2(data, ivar=None, model=None, *, n_params: int = 0) -> np.ndarray:
    r"""Reduced chi-square of a model spectrum, one per star.

    .. math:: \chi^2_{r,n} = \sum_\lambda w_{n\lambda} (d_{n\lambda} - m_{n\lambda})^2 / (N_n - n_\mathrm{params})

    with ``w = ivar`` and ``N_n`` the pixels with ``ivar > 0``: with ``n_params=0``, the
    Lux paper's chi-square per pixel (its Fig. 4).

    Parameters
    ----------
    data : array ``(n_stars, n_pix)`` or Spectra
        Observed flux; for ``Spectra`` the inverse variance comes from it (leave ``ivar`` None).
    ivar : array ``(n_stars, n_pix)``, optional
        Inverse variance, ``>= 0`` (flux units ``**-2``); 0 = masked.
    model : array ``(n_stars, n_pix)`` or Spectra
        Model flux on the same grid.
    n_params : int
        Fitted parameters per star, subtracted from the degrees of freedom.

    Returns
    -------
    numpy array ``(n_stars,)``
        ``inf`` where the degrees of freedom are ``<= 0``.

    Examples
    --------
    >>> d = np.array([[1.0, 2.0, 3.0]])
    >>> reduced_chi2(d, np.array([[4.0, 1.0, 0.0]]), d + 0.5).tolist()
    [0.625]
    """
    if isinstance(data, Spectra):
        if ivar is not None:
            raise TypeError("ivar: expected None when data is Spectra (its ivar is used), found an array")
        data, ivar = data.flux, data.ivar
    if ivar is None or model is None:
        raise TypeError(f"{'ivar' if ivar is None else 'model'}: required, found None")
    d = _array2d(data, "data")
    w, m = _ivar(ivar, d.shape), _array2d(model.flux if isinstance(model, Spectra) else model, "model", d.shape)
    if isinstance(n_params, bool) or not isinstance(n_params, int | np.integer) or n_params < 0:
        raise ValueError(f"n_params: expected an int >= 0, found {n_params!r}")
    _finite_where(good := w > 0, "ivar > 0", data=d, model=m)
    chi2 = (np.where(good, w, 0.0) * (np.where(good, d, 0.0) - np.where(good, m, 0.0)) ** 2).sum(axis=1)
    dof = good.sum(axis=1) - n_params
    return np.where(dof > 0, chi2 / np.maximum(dof, 1), np.inf)


def calibration(pred, truth, sigma=None) -> np.ndarray:
    r"""Width of the pulls :math:`(p - t)/\sigma` per label: 1 means well-calibrated errors.

    Parameters
    ----------
    pred, truth : array ``(n_stars, n_labels)`` or Labels
        Predicted and reference labels, as in :func:`bias_rmse`.
    sigma : array ``(n_stars, n_labels)``, optional
        1-sigma error of ``pred - truth`` (default ``pred.err`` for ``Labels``; for noisy
        references pass ``sqrt(sigma_pred**2 + sigma_truth**2)``).  Non-finite or ``<= 0``: skipped.

    Returns
    -------
    numpy array ``(n_labels,)``
        Standard deviation of the pulls over stars; NaN for a label with fewer than two entries.

    Examples
    --------
    >>> calibration(np.array([[1.0], [-1.0]]), np.zeros((2, 1)), np.full((2, 1), 0.5)).tolist()
    [2.0]
    """
    if sigma is None and not isinstance(pred, Labels):
        raise TypeError("sigma: required unless pred is Labels (then pred.err is used), found None")
    p, t, use = _labels_pair(pred, truth, None)
    s = _array2d(np.asarray(pred.err) if sigma is None else sigma, "sigma", p.shape)
    use &= np.isfinite(s) & (s > 0)
    pull = (np.where(use, p, 0.0) - np.where(use, t, 0.0)) / np.where(use, s, 1.0)
    return np.sqrt(_column_mean((pull - _column_mean(pull, use)) ** 2, use, min_count=2))


def mean_error(ivar) -> np.ndarray:
    r"""Mean 1-sigma error per column, :math:`\langle 1/\sqrt{\mathrm{ivar}} \rangle` over ``ivar > 0``.

    Parameters
    ----------
    ivar : array ``(n_stars, n_labels)`` or Labels
        Inverse variances (label units ``**-2``); 0 = missing, skipped.

    Returns
    -------
    numpy array ``(n_labels,)``
        Label units; NaN for a column with no measured entry.

    Examples
    --------
    >>> mean_error(np.array([[4.0, 0.0], [1.0, 0.0]])).tolist()
    [0.75, nan]
    """
    good = (w := _ivar(ivar)) > 0
    return _column_mean(1.0 / np.sqrt(np.where(good, w, 1.0)), good)


def robust_sigma(x, axis=None):
    r"""The robust standard deviation :math:`1.4826\,\mathrm{median}|x - \mathrm{median}(x)|` along ``axis``.

    Equal to the standard deviation for Gaussian data, and unmoved by a few outliers.

    Examples
    --------
    >>> float(robust_sigma(np.array([-1.0, 0.0, 1.0, 100.0])))
    1.4826
    """
    x = np.asarray(x, np.float64)
    return MAD_TO_SIGMA * np.median(np.abs(x - np.median(x, axis=axis, keepdims=True)), axis=axis)


def roc_auc(score, positive) -> float:
    r"""Area under the ROC curve: :math:`P(\text{score of a positive} > \text{score of a negative})`, ties 1/2.

    Mann-Whitney statistic from average ranks.  ``score`` ``(n,)`` finite
    (large = anomalous), ``positive`` bool ``(n,)`` with both classes present.

    Examples
    --------
    >>> roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True]))
    0.75
    """
    s = np.asarray(score, np.float64)
    y = np.asarray(positive)
    if s.ndim != 1 or y.shape != s.shape or y.dtype != bool:
        raise ValueError(f"score, positive: expected shape (n,) each, positive bool; found {s.shape}, {y.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("score: expected finite values, found NaN or inf")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"positive: expected both classes, found {n_pos} positive and {n_neg} negative")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # rank (0-based) of the first element of each tied group
    ranks = (first + (counts + 1) / 2.0)[inverse]  # 1-based average ranks
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(score, positive) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates ``(fpr, tpr)`` of every threshold on ``score``, from (0, 0) to (1, 1).

    A star is called positive when its score is at least the threshold; tied
    scores move together (a diagonal step), so the trapezoidal area under the
    curve equals :func:`roc_auc`.  Same inputs as :func:`roc_auc`.

    Examples
    --------
    >>> fpr, tpr = roc_curve(np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True]))
    >>> fpr.tolist(), tpr.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    roc_auc(score, positive)  # the checks
    s = np.asarray(score, np.float64)
    y = np.asarray(positive)
    values, inverse = np.unique(-s, return_inverse=True)  # thresholds from the highest score down
    tp = np.bincount(inverse, weights=y, minlength=values.size)
    fp = np.bincount(inverse, weights=~y, minlength=values.size)
    tpr = np.r_[0.0, np.cumsum(tp)] / y.sum()
    fpr = np.r_[0.0, np.cumsum(fp)] / (~y).sum()
    return fpr, tpr


def __getattr__(name: str):
    """Deprecated names that moved to a model family (removed in the next release)."""
    if name in _MOVED:
        import importlib
        import warnings

        warnings.warn(f"jaxspec.metrics.{name} moved to {_MOVED[name]}.{name}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
