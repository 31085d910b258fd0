r"""The doppelganger rate of open clusters in an embedding (de Mijolla & Ness 2021, sec. 4) and its kernels.

Re-exported by :mod:`jaxspec.models.rsca`; :mod:`jaxspec.models.rsca._eval`
uses the kernels for the leave-one-cluster-out rate and the top-N table.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxspec.data._checks import finite_2d, int_ids

__all__ = ["DoppelgangerResult", "doppelganger_rate"]


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
