r"""RSCA evaluation: leave-one-cluster-out doppelganger rates, the top-N table (de Mijolla &
Ness 2021, sec. 4 and Table 1) and the nuisance-hyperplane removal of Appendix B.

Public names are re-exported by :mod:`jaxspec.models.rsca`; import them from there.  The
rate itself is :func:`jaxspec.models.rsca.doppelganger_rate`.  Leave-one-cluster-out refits
steps 2-4 without the scored cluster; the step-1 PPCA is held fixed (see
:func:`leave_one_cluster_out_rate`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxspec.data._checks import check_int, finite_2d, int_ids
from jaxspec.models.rsca._doppelganger import (
    DoppelgangerResult,
    check_nuisances,
    doppelganger_counts,
    summarise_doppelgangers,
)
from jaxspec.models.rsca._metric import Metric, fit_from_features


class TopNTable(NamedTuple):
    """n_dims : ``(L,)``; rates : ``(L,)`` global rates; per_cluster : ``(L, C)``."""

    n_dims: np.ndarray
    rates: np.ndarray
    per_cluster: np.ndarray


class NuisanceRemoval(NamedTuple):
    r"""features : ``(N, K)`` cleaned, :math:`\bar x + (x - \bar x) P`; projector : ``P`` ``(K, K)``;
    mean : :math:`\bar x` ``(K,)``; directions : ``(n_dims, K)`` removed feature-space directions."""

    features: np.ndarray
    projector: np.ndarray
    mean: np.ndarray
    directions: np.ndarray


def _loo(field_feats, cluster_feats, cluster_ids, nuis, ns_req):
    zp = finite_2d(field_feats, "field_feats")
    zc = finite_2d(cluster_feats, "cluster_feats")
    ids = int_ids(cluster_ids, zc.shape[0], "cluster_ids")
    k = zp.shape[1]
    raw = np.asarray([k] if ns_req is None else ns_req).reshape(-1)
    if raw.size and raw.dtype.kind not in "iu":  # 2.5 must not become 2
        raise TypeError(f"n_dims: expected ints, found {raw.tolist()}")
    ns = raw.astype(np.int64)
    if ns.size == 0 or ns.min() < 1 or ns.max() > k:
        raise ValueError(f"n_dims: expected values in 1..{k}, found {ns.tolist()}")
    nf, nc, tol = check_nuisances(*nuis, zp.shape[0], zc.shape[0])
    clusters = np.unique(ids)
    hits = np.zeros((len(clusters), len(ns)), np.int64)
    pairs, sizes = np.zeros(len(clusters), np.int64), np.zeros(len(clusters), np.int64)
    for i, cl in enumerate(clusters):
        rows = ids == cl
        sizes[i] = rows.sum()
        if sizes[i] < 2:
            continue
        metric = fit_from_features(zp, zc[~rows], ids[~rows])
        cols = metric.order
        a = metric.matrix[:, cols]
        hits[i], pairs[i] = doppelganger_counts(
            (zp - metric.mean) @ a, (zc[rows] - metric.mean) @ a, nf, None if nc is None else nc[rows], tol, ns
        )
    return ns, [summarise_doppelgangers(hits[:, j], pairs, sizes, clusters) for j in range(len(ns))]


def leave_one_cluster_out_rate(
    field_feats,
    cluster_feats,
    cluster_ids,
    *,
    nuisance_field=None,
    nuisance_clusters=None,
    tolerances=None,
    n_dims: int | None = None,
) -> DoppelgangerResult:
    r"""Cross-validated doppelganger rate: each cluster scored by RSCA steps 2-4 fitted without it.

    For each cluster ``c`` with two or more members, :func:`fit_from_features` is
    refitted on the field and every other cluster, the field and ``c``'s members are
    embedded with that metric (keeping its ``n_dims`` most discriminating dimensions,
    default all) and :func:`doppelganger_rate`'s count is taken.  The step-1 PPCA is
    *not* refitted: it is fitted on the field alone, without labels or cluster
    membership, so holding it fixed leaks nothing about ``c`` (the paper refits the
    whole pipeline).  On abundance labels instead of latents this is the paper's
    abundance baseline.

    Parameters
    ----------
    field_feats : ``(N_pop, K)``; cluster_feats : ``(N_clust, K)``; cluster_ids : int ``(N_clust,)``
    nuisance_field, nuisance_clusters, tolerances
        As in :func:`doppelganger_rate`.
    n_dims : int, optional
        Keep the ``n_dims`` dimensions with the smallest ``sigma_clust`` of each fold.

    Returns
    -------
    DoppelgangerResult
    """
    nuis = (nuisance_field, nuisance_clusters, tolerances)
    return _loo(field_feats, cluster_feats, cluster_ids, nuis, None if n_dims is None else [n_dims])[1][0]


def top_n_table(
    field_feats,
    cluster_feats,
    cluster_ids,
    *,
    nuisance_field=None,
    nuisance_clusters=None,
    tolerances=None,
    n_dims=None,
) -> TopNTable:
    """Leave-one-cluster-out rates keeping the N most strongly scaled dimensions (paper Table 1).

    ``n_dims`` : sequence of ints (default ``1..K``); one pass over the pairs serves all N.
    Other arguments as in :func:`leave_one_cluster_out_rate`.
    """
    k = np.asarray(field_feats).shape[-1]
    req = list(range(1, k + 1)) if n_dims is None else list(n_dims)
    ns, res = _loo(field_feats, cluster_feats, cluster_ids, (nuisance_field, nuisance_clusters, tolerances), req)
    return TopNTable(ns, np.array([r.rate for r in res]), np.stack([r.per_cluster for r in res]))


def remove_nuisance_hyperplane(features, groups, *, n_dims: int) -> NuisanceRemoval:
    r"""Remove a nuisance hyperplane learned from groups of stars (paper Appendix B).

    RSCA steps 2-4 are fitted with ``groups`` (e.g. stars binned in radial velocity,
    ``np.floor(rv / 5)``) in place of open clusters; the ``n_dims`` dimensions along
    which groups are tightest span the nuisance hyperplane.  In the sphered,
    reparametrised coordinates :math:`r = (x - \bar x) S R` they are zeroed and the
    result mapped back: :math:`x' = \bar x + (x - \bar x) P`,
    :math:`P = S R\,\mathrm{diag}(\mathrm{keep})\,R^\top S^{-1}` (an oblique projection;
    the field variance outside the hyperplane is untouched).

    Parameters
    ----------
    features : ``(N, K)``
        All stars (the field), e.g. PPCA latents.
    groups : int ``(N,)``
        Group of each star; ``-1`` = in no group.
    n_dims : int
        Dimension of the removed hyperplane, ``1 <= n_dims < K``.
    """
    x = finite_2d(features, "features")
    g = int_ids(groups, x.shape[0], "groups")
    k = x.shape[1]
    n_dims = check_int(n_dims, "n_dims", minimum=1, maximum=k - 1)
    sel = g >= 0
    metric: Metric = fit_from_features(x, x[sel], g[sel])
    fwd = metric.sphere @ metric.rotation
    inv = np.linalg.inv(fwd)
    keep = np.ones(k)
    drop = metric.order[: int(n_dims)]
    keep[drop] = 0.0
    proj = fwd @ (keep[:, None] * inv)
    return NuisanceRemoval(metric.mean + (x - metric.mean) @ proj, proj, metric.mean, inv[drop])
