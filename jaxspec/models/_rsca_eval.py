r"""RSCA evaluation and its data-driven masks (de Mijolla & Ness 2021, sec. 4, apps. A-B).

Public names are re-exported by :mod:`jaxspec.models.rsca`; import them from there.

Doppelganger rate of cluster ``c`` with members :math:`m` and field stars :math:`f`:

.. math:: \mathrm{DR}_c = \frac{\#\{(m, f) \text{ matched}: d(m, f) < \mathrm{median}_{m < m'} d(m, m')\}}
    {\#\{(m, f) \text{ matched}\}},

"matched" meaning every nuisance differs by less than its tolerance (paper:
:math:`|\Delta\mathrm{RV}| < 5` km/s, :math:`|\Delta A_K| < 0.05`).  The global rate is
:math:`\sum_c n_c \mathrm{DR}_c / \sum_c n_c` over clusters with a defined rate
(at least two members and one matched pair).  Leave-one-cluster-out refits steps 2-4
without the scored cluster; the step-1 PPCA is held fixed (see
:func:`leave_one_cluster_out_rate`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxspec.models import ppca
from jaxspec.models.rsca import (
    RSCAMetric,
    _as_features,
    _as_ids,
    _flux_and_mask,
    fit_from_features,
)

_CHUNK = 4096  # field stars per distance block: chunk * n_members * K float64


class DoppelgangerResult(NamedTuple):
    """rate : global (size-weighted) rate; per_cluster : ``(C,)`` (NaN where undefined);
    sizes : ``(C,)`` members; clusters : ``(C,)`` ids (sorted); n_pairs : ``(C,)`` matched pairs."""

    rate: float
    per_cluster: np.ndarray
    sizes: np.ndarray
    clusters: np.ndarray
    n_pairs: np.ndarray


class TopNTable(NamedTuple):
    """n_dims : ``(L,)``; rates : ``(L,)`` global rates; per_cluster : ``(L, C)``."""

    n_dims: np.ndarray
    rates: np.ndarray
    per_cluster: np.ndarray


class InterstellarMask(NamedTuple):
    """mask : bool ``(D,)`` (True = censor); residual : ``(D,)`` mean residual of the
    high-extinction stars (NaN where none is observed); n_low, n_high : stars used."""

    mask: np.ndarray
    residual: np.ndarray
    n_low: int
    n_high: int


class NuisanceRemoval(NamedTuple):
    r"""features : ``(N, K)`` cleaned, :math:`\bar x + (x - \bar x) P`; projector : ``P`` ``(K, K)``;
    mean : :math:`\bar x` ``(K,)``; directions : ``(n_dims, K)`` removed feature-space directions."""

    features: np.ndarray
    projector: np.ndarray
    mean: np.ndarray
    directions: np.ndarray


def _nuisances(nf, nc, tol, n_field, n_clust):
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


def _counts(field, members, nf, nm, tol, ns):
    """For each prefix length n in ``ns``: matched pairs closer than the members' median distance."""
    m = members.shape[0]
    iu = np.triu_indices(m, 1)
    intra = np.sqrt(np.cumsum((members[:, None] - members[None]) ** 2, axis=-1)[iu][:, ns - 1])
    med = np.median(intra, axis=0)
    hits, n_pairs = np.zeros(len(ns), np.int64), 0
    for a in range(0, field.shape[0], _CHUNK):
        diff = field[a : a + _CHUNK, None, :] - members[None]
        d = np.sqrt(np.cumsum(diff**2, axis=-1)[..., ns - 1])
        ok = np.ones(d.shape[:2], bool)
        if nf is not None:
            ok = np.all(np.abs(nf[a : a + _CHUNK, None, :] - nm[None]) < tol, axis=-1)
        hits += np.sum((d < med) & ok[..., None], axis=(0, 1))
        n_pairs += int(ok.sum())
    return hits, n_pairs


def _summarise(hits, n_pairs, sizes, clusters) -> DoppelgangerResult:
    with np.errstate(invalid="ignore", divide="ignore"):
        per = np.where((n_pairs > 0) & (sizes > 1), hits / np.maximum(n_pairs, 1), np.nan)
    ok = np.isfinite(per)
    rate = float(np.sum(sizes[ok] * per[ok]) / np.sum(sizes[ok])) if ok.any() else float("nan")
    return DoppelgangerResult(rate, per, sizes, clusters, n_pairs)


def doppelganger_rate(
    emb_field, emb_clusters, cluster_ids, *, nuisance_field=None, nuisance_clusters=None, tolerances=None
) -> DoppelgangerResult:
    r"""Doppelganger rate in a fixed embedding (module docstring for the definition).

    Parameters
    ----------
    emb_field : ``(N_pop, K)``; emb_clusters : ``(N_clust, K)``
        Field and cluster stars in the studied representation (Euclidean distance).
    cluster_ids : int ``(N_clust,)``
    nuisance_field : ``(N_pop, Q)`` or ``(N_pop,)``; nuisance_clusters : ``(N_clust, Q)``; tolerances : ``(Q,)``
        Pairs count only when ``|nuisance_f - nuisance_m| < tolerances`` for every column.

    Returns
    -------
    DoppelgangerResult
        Strict ``<`` the median intra-cluster distance; singletons get NaN.
    """
    f = _as_features(emb_field, "emb_field")
    c = _as_features(emb_clusters, "emb_clusters")
    if c.shape[1] != f.shape[1]:
        raise ValueError(f"emb_clusters: expected {f.shape[1]} dimensions like emb_field, found {c.shape[1]}")
    ids = _as_ids(cluster_ids, c.shape[0])
    nf, nc, tol = _nuisances(nuisance_field, nuisance_clusters, tolerances, f.shape[0], c.shape[0])
    clusters = np.unique(ids)
    hits, pairs, sizes = [], [], []
    ns = np.array([f.shape[1]])
    for cl in clusters:
        rows = ids == cl
        sizes.append(int(rows.sum()))
        h, p = (
            (np.zeros(1, np.int64), 0)
            if rows.sum() < 2
            else _counts(f, c[rows], nf, None if nc is None else nc[rows], tol, ns)
        )
        hits.append(h[0])
        pairs.append(p)
    return _summarise(np.array(hits), np.array(pairs), np.array(sizes), clusters)


def _loo(field_feats, cluster_feats, cluster_ids, nuis, ns_req):
    zp = _as_features(field_feats, "field_feats")
    zc = _as_features(cluster_feats, "cluster_feats")
    ids = _as_ids(cluster_ids, zc.shape[0])
    k = zp.shape[1]
    ns = np.array([k] if ns_req is None else ns_req, dtype=np.int64).reshape(-1)
    if ns.size == 0 or ns.min() < 1 or ns.max() > k:
        raise ValueError(f"n_dims: expected values in 1..{k}, found {ns.tolist()}")
    nf, nc, tol = _nuisances(*nuis, zp.shape[0], zc.shape[0])
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
        hits[i], pairs[i] = _counts(
            (zp - metric.mean) @ a, (zc[rows] - metric.mean) @ a, nf, None if nc is None else nc[rows], tol, ns
        )
    return ns, [_summarise(hits[:, j], pairs, sizes, clusters) for j in range(len(ns))]


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


def interstellar_mask(
    spectra, a_k, *, key, low: float = 0.005, high: float = 0.5, n_components: int = 30, threshold: float = 0.01
) -> InterstellarMask:
    r"""Data-driven interstellar-band mask (paper Appendix A).

    PPCA with ``n_components`` on stars with :math:`A_K <` ``low``; every star with
    :math:`A_K >` ``high`` is projected (posterior mean on its observed pixels) and
    reconstructed, :math:`\hat x = \mu + W E[z]`; the per-pixel mean of
    :math:`x - \hat x` over high-extinction stars observing that pixel is the residual,
    and pixels with residual ``< -threshold`` (absorption) are masked.  The paper
    then picks the regions by eye; this returns the pixels.

    Parameters
    ----------
    spectra : Spectra or array ``(N, D)`` (NaN / ``ivar == 0`` = missing)
    a_k : ``(N,)`` extinction, mag
    key : jax.random key for the PPCA
    low, high : float; n_components : int; threshold : float > 0
    """
    flux, miss = _flux_and_mask(spectra, None, None, "spectra")
    a_k = np.asarray(a_k, dtype=np.float64)
    if a_k.shape != (flux.shape[0],):
        raise ValueError(f"a_k: expected shape ({flux.shape[0]},), found {a_k.shape}")
    if not (low < high and threshold > 0):
        raise ValueError(
            f"low, high, threshold: expected low < high and threshold > 0, found {low}, {high}, {threshold}"
        )
    lo, hi = a_k < low, a_k > high
    if lo.sum() <= n_components or hi.sum() == 0:
        raise ValueError(
            f"a_k: need more than {n_components} stars below low and one above high, found {lo.sum()}, {hi.sum()}"
        )
    res = ppca.fit_ppca(flux[lo], n_components, mask=miss[lo], key=key, progress=False)
    z = ppca.transform(res, flux[hi], mask=miss[hi])
    r = np.where(miss[hi], 0.0, flux[hi] - (res.mean + np.asarray(z) @ np.asarray(res.loadings).T))
    n_obs = np.sum(~miss[hi], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        resid = np.where(n_obs > 0, r.sum(axis=0) / n_obs, np.nan)
    return InterstellarMask(np.nan_to_num(resid, nan=0.0) < -threshold, resid, int(lo.sum()), int(hi.sum()))


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
    x = _as_features(features, "features")
    g = _as_ids(groups, x.shape[0], "groups")
    k = x.shape[1]
    if not 1 <= int(n_dims) < k:
        raise ValueError(f"n_dims: expected 1 <= n_dims < {k}, found {n_dims}")
    sel = g >= 0
    metric: RSCAMetric = fit_from_features(x, x[sel], g[sel])
    fwd = metric.sphere @ metric.rotation
    inv = np.linalg.inv(fwd)
    keep = np.ones(k)
    drop = metric.order[: int(n_dims)]
    keep[drop] = 0.0
    proj = fwd @ (keep[:, None] * inv)
    return NuisanceRemoval(metric.mean + (x - metric.mean) @ proj, proj, metric.mean, inv[drop])
