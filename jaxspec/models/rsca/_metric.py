r"""RSCA steps 2-4 on features: sphere, reparametrise, rescale (de Mijolla & Ness 2021, sec. 3).

Public names are re-exported by :mod:`jaxspec.models.rsca`; import them from there.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec import io
from jaxspec.data._checks import check_int, finite_2d, int_ids
from jaxspec.metrics import robust_sigma
from jaxspec.typing import Latents

SIGMA_CLIP = 1e-6  # sigma_clust is clipped to [SIGMA_CLIP, 1 - SIGMA_CLIP]


@io.register(
    "rsca.Metric",
    arrays={
        "mean": io.Array(1),
        "sphere": io.Array(2),
        "rotation": io.Array(2),
        "sigma_clust": io.Array(1),
        "scale": io.Array(1),
    },
)
class Metric(NamedTuple):
    r"""Steps 2-4 of RSCA as arrays (float64).

    mean : ``(K,)`` field mean of the features; sphere : ``(K, K)``
    :math:`E \Lambda^{-1/2}`; rotation : ``(K, K)`` ``R`` (orthogonal, columns sorted by
    decreasing within-cluster variance); sigma_clust : ``(K,)`` pooled within-cluster
    spread :math:`\sigma_k` per output dimension (after clipping); scale : ``(K,)``
    :math:`\alpha_k`.  The embedding is ``(x - mean) @ sphere @ rotation / scale``.
    """

    mean: np.ndarray
    sphere: np.ndarray
    rotation: np.ndarray
    sigma_clust: np.ndarray
    scale: np.ndarray

    @property
    def matrix(self) -> np.ndarray:
        """The composed ``(K, K)`` map ``A``: ``y = (x - mean) @ A``."""
        return self.sphere @ self.rotation / self.scale[None, :]

    @property
    def order(self) -> np.ndarray:
        """Output dimensions from most to least discriminating (ascending ``sigma_clust``)."""
        return np.argsort(self.sigma_clust, kind="stable")


def _within_cluster(feats: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Members minus their own cluster mean, clusters with >1 member only, and those clusters' rows."""
    groups = [np.flatnonzero(ids == c) for c in np.unique(ids)]
    groups = [g for g in groups if g.size > 1]
    if not groups:
        raise ValueError("cluster_ids: need at least one cluster with more than one member")
    centred = np.concatenate([feats[g] - feats[g].mean(axis=0) for g in groups])
    return centred, groups


def pooled_sigma(r: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    r"""Pooled robust within-cluster spread per column, before clipping.

    .. math:: \sigma_k^2 = \frac{\sum_c (n_c - 1)\,(1.4826\,\mathrm{median}_i |r_{ik} -
       \mathrm{median}_i r_{ik}|)^2}{\sum_c (n_c - 1)}

    r : ``(N, K)`` features; groups : row indices of each cluster (``n_c > 1``).
    """
    num = np.zeros(r.shape[1])
    for g in groups:
        num += (g.size - 1) * robust_sigma(r[g], axis=0) ** 2
    return np.sqrt(num / sum(g.size - 1 for g in groups))


def scale_factor(sigma_clust, sigma_pop: float = 1.0) -> np.ndarray:
    r""":math:`\alpha = \sigma_c \sigma_p / \sqrt{\sigma_p^2 - \sigma_c^2}` (paper eq. 4)."""
    sigma_clust = np.asarray(sigma_clust, dtype=np.float64)
    return sigma_clust * sigma_pop / np.sqrt(sigma_pop**2 - sigma_clust**2)


def fit_from_features(field_feats, cluster_feats, cluster_ids) -> Metric:
    r"""Fit steps 2-4 (sphere, reparametrise, rescale) on features.

    Parameters
    ----------
    field_feats : ``(N_pop, K)``
        Field features (PPCA latents, or abundance labels for the baseline).
    cluster_feats : ``(N_clust, K)``
        Cluster members in the same feature space.
    cluster_ids : int ``(N_clust,)``
        Cluster of each member; clusters with one member do not inform steps 3-4.

    Returns
    -------
    Metric
        ``embed(metric, field_feats)`` has identity covariance (``ddof=1``) and the
        cluster-centred members a diagonal one.
    """
    zp = finite_2d(field_feats, "field_feats")
    zc = finite_2d(cluster_feats, "cluster_feats")
    k = zp.shape[1]
    if zc.shape[1] != k:
        raise ValueError(f"cluster_feats: expected {k} features like field_feats, found {zc.shape[1]}")
    if zp.shape[0] <= k:
        raise ValueError(f"field_feats: need more stars than features ({k}) to sphere, found {zp.shape[0]}")
    ids = int_ids(cluster_ids, zc.shape[0], "cluster_ids")
    mean = zp.mean(axis=0)
    lam, vec = np.linalg.eigh(np.cov(zp, rowvar=False).reshape(k, k))
    if not lam[0] > 1e-12 * max(lam[-1], 0.0):
        raise ValueError(f"field_feats: the field covariance is singular (eigenvalues {lam[0]:.3g} .. {lam[-1]:.3g})")
    lam, vec = lam[::-1], vec[:, ::-1]
    sphere = vec / np.sqrt(lam)[None, :]
    centred, groups = _within_cluster((zc - mean) @ sphere, ids)
    _, rot = np.linalg.eigh(centred.T @ centred / max(centred.shape[0] - len(groups), 1))
    rot = rot[:, ::-1]
    rot = rot * np.where(rot[np.argmax(np.abs(rot), axis=0), np.arange(k)] < 0, -1.0, 1.0)  # fixed signs
    sigma = np.clip(pooled_sigma((zc - mean) @ sphere @ rot, groups), SIGMA_CLIP, 1.0 - SIGMA_CLIP)
    return Metric(mean, sphere, rot, sigma, scale_factor(sigma))


def embed(metric, feats: Latents, n_dims: int | None = None) -> Latents:
    r"""Features ``(N, K)`` -> metric space ``(N, K)``: :math:`y = (x - \bar x) A`, or the ``n_dims`` most
    discriminating dimensions (sorted).

    ``metric``: a :class:`Metric` or an RSCA model (its ``metric``).  On numpy
    input the features are checked and the map is applied in float64.  On
    jax arrays (as inside ``jax.jit``, ``jax.vmap`` or ``jax.grad`` of a model)
    it is a pure function of the metric and the features, any leading batch
    axes, in their precision; ``n_dims`` then needs concrete ``sigma_clust``.
    """
    metric = getattr(metric, "metric", metric)
    if not isinstance(metric, Metric):
        raise TypeError(f"metric: expected a Metric or an rsca.Model, found {type(metric).__name__}")
    if isinstance(feats, jax.Array) or any(isinstance(a, jax.core.Tracer) for a in metric):
        k = np.shape(metric.mean)[0]
        if np.shape(feats)[-1:] != (k,):
            raise ValueError(f"feats: expected {k} features, found shape {np.shape(feats)}")
        x = jnp.asarray(feats)
        y = (
            (x - jnp.asarray(metric.mean, x.dtype))
            @ (jnp.asarray(metric.sphere, x.dtype) @ jnp.asarray(metric.rotation, x.dtype))
            / jnp.asarray(metric.scale, x.dtype)
        )
        return y if n_dims is None else y[..., np.argsort(np.asarray(metric.sigma_clust), kind="stable")[:n_dims]]
    metric = Metric(*(np.asarray(a, np.float64) for a in metric))
    x = finite_2d(feats, "feats")
    if x.shape[1] != metric.mean.shape[0]:
        raise ValueError(f"feats: expected {metric.mean.shape[0]} features, found {x.shape[1]}")
    y = (x - metric.mean) @ metric.matrix
    if n_dims is None:
        return y
    return y[:, metric.order[: check_int(n_dims, "n_dims", minimum=1, maximum=y.shape[1])]]
