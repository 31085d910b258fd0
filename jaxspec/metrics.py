"""Numbers that judge a model: label bias/RMSE, reduced chi-square, pull widths, doppelganger rates, ROC AUC.

They take numpy/JAX arrays or ``Labels``/``Spectra`` and return numpy arrays (host code, not for ``jit``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxspec.data._checks import finite_2d, first_bad, int_ids, real_array
from jaxspec.data.containers import Labels, Spectra

__all__ = [
    "BiasRMSE",
    "DoppelgangerResult",
    "bias_rmse",
    "calibration",
    "doppelganger_rate",
    "mean_error",
    "reduced_chi2",
    "roc_auc",
]


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


class DoppelgangerResult(NamedTuple):
    """rate : global (size-weighted) rate; per_cluster : ``(C,)`` (NaN where undefined);
    sizes : ``(C,)`` members; clusters : ``(C,)`` ids (sorted); n_pairs : ``(C,)`` matched pairs."""

    rate: float
    per_cluster: np.ndarray
    sizes: np.ndarray
    clusters: np.ndarray
    n_pairs: np.ndarray


_PAIR_BLOCK = 1 << 21  # (field star, member, prefix) distances per block: 16 MB of float64


def check_nuisances(nf, nc, tol, n_field: int, n_clust: int):
    """Validated ``(N_pop, Q)``, ``(N_clust, Q)``, ``(Q,)`` float64, or three None."""
    given = [a is not None for a in (nf, nc, tol)]
    if not any(given):
        return None, None, None
    if not all(given):
        raise ValueError("nuisance_field, nuisance_clusters, tolerances: give all three or none")
    nf = np.asarray(nf, dtype=np.float64).reshape(n_field, -1)
    nc = np.asarray(nc, dtype=np.float64).reshape(n_clust, -1)
    tol = np.atleast_1d(np.asarray(tol, dtype=np.float64))
    if nf.shape[1] != nc.shape[1] or tol.shape != (nf.shape[1],):
        raise ValueError(
            f"tolerances: expected one per nuisance column ({nf.shape[1]} field, {nc.shape[1]} cluster), "
            f"found shape {tol.shape}"
        )
    if not (np.all(np.isfinite(nf)) and np.all(np.isfinite(nc)) and np.all(tol > 0)):
        raise ValueError("nuisance_field, nuisance_clusters, tolerances: expected finite values and tolerances > 0")
    return nf, nc, tol


def _prefix_sq(a: np.ndarray, ns: np.ndarray) -> np.ndarray:
    """``(n, L)``: squared norm of each row over its first ``ns[l]`` columns."""
    return np.cumsum(a * a, axis=1)[:, ns - 1]


def _close_pairs(field, members, ns, med, ok):
    r"""Hits ``(L,)``: pairs (``ok`` ``(n, m)``) closer than ``med[l]`` over the first ``ns[l]`` dimensions.

    Squared distances come from one matmul, :math:`|f|^2 + |c|^2 - 2 f \cdot c`, with the
    prefix sums folded into the member matrix; pairs within rounding of the threshold
    are recomputed from the differences so that ties (``d == med``, not a hit) are exact.
    """
    m, k, n_l = members.shape[0], members.shape[1], len(ns)
    upto = np.arange(k)[:, None] < ns[None, :]  # (K, L)
    cmat = (members.T[:, :, None] * upto[:, None, :]).reshape(k, m * n_l)  # (K, m L)
    c2, med2 = _prefix_sq(members, ns), med**2
    hits = np.zeros(n_l, np.int64)
    rows = max(1, _PAIR_BLOCK // (m * n_l))
    for a in range(0, field.shape[0], rows):
        f, use = field[a : a + rows], ok[a : a + rows, :, None]
        f2 = _prefix_sq(f, ns)
        scale = f2[:, None, :] + c2[None]
        d2 = scale - 2.0 * (f @ cmat).reshape(-1, m, n_l)
        near = use & (np.abs(d2 - med2) <= 1e-9 * (scale + med2))
        hit = use & (d2 < med2) & ~near
        if near.any():
            i, j, ll = np.nonzero(near)
            diff = np.where(np.arange(k)[None] < ns[ll, None], f[i] - members[j], 0.0)
            exact = np.sqrt(np.sum(diff**2, axis=1)) < med[ll]
            np.add.at(hits, ll, exact)
        hits += hit.sum(axis=(0, 1))
    return hits


def doppelganger_counts(field, members, nf, nm, tol, ns) -> tuple[np.ndarray, int]:
    """One cluster: hits ``(L,)`` for each prefix length ``ns`` and the number of matched pairs.

    field ``(N_pop, K)``, members ``(m, K)`` (``m >= 2``) float64; ``nf``, ``nm``, ``tol``
    validated nuisances or None; ``ns`` int ``(L,)`` in ``1..K``.
    """
    iu = np.triu_indices(members.shape[0], 1)
    intra = np.cumsum((members[:, None] - members[None]) ** 2, axis=-1)[iu][:, ns - 1]
    med = np.median(np.sqrt(intra), axis=0)
    ok = np.ones((field.shape[0], members.shape[0]), bool)
    for q in range(0 if nf is None else nf.shape[1]):  # column by column, dropping unmatched field stars
        ok &= np.abs(nf[:, q, None] - nm[None, :, q]) < tol[q]
        keep = ok.any(axis=1)
        field, ok, nf = field[keep], ok[keep], nf[keep]
    return _close_pairs(field, members, ns, med, ok), int(ok.sum())


def summarise_doppelgangers(hits, n_pairs, sizes, clusters) -> DoppelgangerResult:
    """Per-cluster rates ``hits / n_pairs`` (NaN for singletons or no pair) and their size-weighted mean."""
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where((n_pairs > 0) & (sizes > 1), hits / np.maximum(n_pairs, 1), np.nan)
    ok = np.isfinite(per)
    rate = float(np.sum(sizes[ok] * per[ok]) / np.sum(sizes[ok])) if ok.any() else float("nan")
    return DoppelgangerResult(rate, per, sizes, clusters, n_pairs)


def doppelganger_rate(
    emb_field, emb_clusters, cluster_ids, *, nuisance_field=None, nuisance_clusters=None, tolerances=None
) -> DoppelgangerResult:
    r"""Doppelganger rate of open clusters in a fixed embedding (de Mijolla & Ness 2021, sec. 4).

    For cluster ``c`` with members :math:`m` and field stars :math:`f`:

    .. math:: \mathrm{DR}_c = \frac{\#\{(m, f) \text{ matched}: d(m, f) < \mathrm{median}_{m < m'} d(m, m')\}}
        {\#\{(m, f) \text{ matched}\}},

    "matched" meaning every nuisance differs by less than its tolerance (paper:
    :math:`|\Delta\mathrm{RV}| < 5` km/s, :math:`|\Delta A_K| < 0.05` mag), ``d`` the
    Euclidean distance.  The global rate is :math:`\sum_c n_c \mathrm{DR}_c / \sum_c n_c`
    over clusters with a defined rate (two members or more and a matched pair).  For
    the cross-validated rate of an RSCA metric see
    :func:`jaxspec.models.rsca.leave_one_cluster_out_rate`.

    Parameters
    ----------
    emb_field : ``(N_pop, K)``; emb_clusters : ``(N_clust, K)``
        Field and cluster stars in the studied representation.
    cluster_ids : int ``(N_clust,)``
        Any integers (gaps allowed).
    nuisance_field : ``(N_pop, Q)`` or ``(N_pop,)``; nuisance_clusters : ``(N_clust, Q)``; tolerances : ``(Q,)``
        Pairs count only when ``|nuisance_f - nuisance_m| < tolerances`` for every column.

    Returns
    -------
    DoppelgangerResult
        Strict ``<`` the median intra-cluster distance; singletons get NaN.

    Examples
    --------
    >>> r = doppelganger_rate(np.array([[0.5], [9.0]]), np.array([[0.0], [1.0]]), np.array([0, 0]))
    >>> r.rate, r.n_pairs.tolist()
    (0.5, [4])
    """
    f = finite_2d(emb_field, "emb_field")
    c = finite_2d(emb_clusters, "emb_clusters")
    if c.shape[1] != f.shape[1]:
        raise ValueError(f"emb_clusters: expected {f.shape[1]} dimensions like emb_field, found {c.shape[1]}")
    ids = int_ids(cluster_ids, c.shape[0], "cluster_ids")
    nf, nc, tol = check_nuisances(nuisance_field, nuisance_clusters, tolerances, f.shape[0], c.shape[0])
    clusters = np.unique(ids)
    hits, pairs = np.zeros(len(clusters), np.int64), np.zeros(len(clusters), np.int64)
    sizes = np.array([np.sum(ids == cl) for cl in clusters])
    ns = np.array([f.shape[1]])
    for i, cl in enumerate(clusters):
        rows = ids == cl
        if sizes[i] > 1:
            h, pairs[i] = doppelganger_counts(f, c[rows], nf, None if nc is None else nc[rows], tol, ns)
            hits[i] = h[0]
    return summarise_doppelgangers(hits, pairs, sizes, clusters)


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
