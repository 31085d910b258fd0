r"""RSCA: Relevant Scaled Component Analysis (de Mijolla & Ness 2021).

A linear metric in which the Euclidean distance between two stars measures how
likely they are to be chemical siblings.  Spectra ``X`` ``(N, D)`` go through
four linear steps:

1. **Compress**: probabilistic PCA with missing data (:mod:`jaxspec.models.ppca`)
   fitted on the field; every star gets its posterior-mean latents
   :math:`z = E[z \mid x_\mathrm{obs}]` (the first ``K`` of ``ppca_components``).
2. **Sphere** (PCA whitening): :math:`s = (z - \bar z_\mathrm{pop}) E \Lambda^{-1/2}`
   with :math:`\mathrm{Cov}(z_\mathrm{pop}) = E \Lambda E^\top`, so the field has
   identity covariance.
3. **Reparametrise**: :math:`r = s R`, ``R`` the eigenvectors of the covariance of
   the cluster-centred members (each minus its own cluster mean), so the
   within-cluster covariance is diagonal while the field's stays ``I``.
4. **Rescale**: :math:`y_k = r_k / \alpha_k` with
   :math:`\alpha_k = \sigma_k \sigma_\mathrm{pop} / \sqrt{\sigma_\mathrm{pop}^2 - \sigma_k^2}`,
   :math:`\sigma_\mathrm{pop} = 1`, and the pooled within-cluster spread
   :math:`\sigma_k^2 = \sum_c (n_c - 1)\,(1.4826\,\mathrm{MAD}_{ck})^2 / \sum_c (n_c - 1)`
   over clusters with :math:`n_c > 1` (clipped to :math:`[10^{-6}, 1 - 10^{-6}]`).

Then :math:`-\tfrac12 |y - y'|^2` is, up to a constant, the log ratio of the
probabilities that a pair is from one cluster and that it is not (paper eq. 5).
Steps 2-4 are ``K x K`` float64 linear algebra (:func:`fit_from_features`); the
composed map :math:`y = (z - \bar z_\mathrm{pop})\,A`,
:math:`A = E \Lambda^{-1/2} R\,\mathrm{diag}(1/\alpha)`, is stored in
:class:`RSCAMetric`.  Evaluation (doppelganger rate with leave-one-cluster-out,
the top-N table, the interstellar mask, Appendix B's nuisance-hyperplane
removal) lives in :mod:`jaxspec.models._rsca_eval` and is re-exported here.
The doppelganger rate belongs with :mod:`jaxspec.metrics` in the architecture;
it is defined here until it moves.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from jaxspec import io
from jaxspec.data.containers import Spectra
from jaxspec.models import ppca

__all__ = [
    "DoppelgangerResult",
    "InterstellarMask",
    "NuisanceRemoval",
    "RSCAFit",
    "RSCAMetric",
    "RSCAModel",
    "TopNTable",
    "doppelganger_rate",
    "embed",
    "fit",
    "fit_from_features",
    "interstellar_mask",
    "leave_one_cluster_out_rate",
    "pooled_sigma",
    "remove_nuisance_hyperplane",
    "scale_factor",
    "top_n_table",
    "transform",
]

MAD_TO_SIGMA = 1.4826  # 1 / Phi^{-1}(3/4): MAD of a Gaussian times this is its sigma
SIGMA_CLIP = 1e-6  # sigma_clust is clipped to [SIGMA_CLIP, 1 - SIGMA_CLIP]


@io.register()
class RSCAMetric(NamedTuple):
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


@io.register("rsca")
@dataclasses.dataclass(frozen=True)
class RSCAModel:
    r"""A trained RSCA model: spectra -> metric space (immutable; ``jaxspec.io.save``).

    Attributes
    ----------
    ppca_mean : ``(D,)``; ppca_loadings : ``(D, P)``; ppca_noise_variance : float
        The step-1 PPCA (``P = ppca_components >= K``; latents are the posterior
        means under all ``P`` components, of which the first ``K`` are kept).
    n_components : int
        ``K``.
    metric : RSCAMetric
        Steps 2-4.
    max_err : float or None
        Pixels with flux error above this (``ivar < 1 / max_err^2``) are missing.
    pixel_mask : bool ``(D,)``
        Pixels censored for every star (``True``; e.g. interstellar bands).
    """

    ppca_mean: np.ndarray
    ppca_loadings: np.ndarray
    ppca_noise_variance: float
    n_components: int
    metric: RSCAMetric
    max_err: float | None
    pixel_mask: np.ndarray


class RSCAFit(NamedTuple):
    """Result of :func:`fit`: the model, the step-1 latents of the field ``(N_pop, K)`` and
    of the clusters ``(N_clust, K)`` (for :func:`fit_from_features` and
    :func:`leave_one_cluster_out_rate` without refitting the PPCA), and the PPCA's
    log-likelihood history and convergence flag."""

    model: RSCAModel
    field_feats: np.ndarray
    cluster_feats: np.ndarray
    log_likelihood: np.ndarray
    converged: bool


def _as_features(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (n_stars, n_features), found shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: found {int(np.sum(~np.isfinite(x)))} non-finite values")
    return x


def _as_ids(ids, n: int, name: str = "cluster_ids") -> np.ndarray:
    ids = np.asarray(ids)
    if ids.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), one id per cluster star, found {ids.shape}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer ids, found dtype {ids.dtype}")
    return ids


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
        x = r[g]
        mad = np.median(np.abs(x - np.median(x, axis=0)), axis=0)
        num += (g.size - 1) * (MAD_TO_SIGMA * mad) ** 2
    return np.sqrt(num / sum(g.size - 1 for g in groups))


def scale_factor(sigma_clust, sigma_pop: float = 1.0) -> np.ndarray:
    r""":math:`\alpha = \sigma_c \sigma_p / \sqrt{\sigma_p^2 - \sigma_c^2}` (paper eq. 4)."""
    sigma_clust = np.asarray(sigma_clust, dtype=np.float64)
    return sigma_clust * sigma_pop / np.sqrt(sigma_pop**2 - sigma_clust**2)


def fit_from_features(field_feats, cluster_feats, cluster_ids) -> RSCAMetric:
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
    RSCAMetric
        ``embed(metric, field_feats)`` has identity covariance (``ddof=1``) and the
        cluster-centred members a diagonal one.
    """
    zp = _as_features(field_feats, "field_feats")
    zc = _as_features(cluster_feats, "cluster_feats")
    k = zp.shape[1]
    if zc.shape[1] != k:
        raise ValueError(f"cluster_feats: expected {k} features like field_feats, found {zc.shape[1]}")
    if zp.shape[0] <= k:
        raise ValueError(f"field_feats: need more stars than features ({k}) to sphere, found {zp.shape[0]}")
    ids = _as_ids(cluster_ids, zc.shape[0])
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
    return RSCAMetric(mean, sphere, rot, sigma, scale_factor(sigma))


def embed(metric: RSCAMetric, feats, n_dims: int | None = None) -> np.ndarray:
    """Features ``(N, K)`` -> metric space ``(N, K)``, or the ``n_dims`` most discriminating dims (sorted)."""
    if not isinstance(metric, RSCAMetric):
        raise TypeError(f"metric: expected an RSCAMetric, found {type(metric).__name__}")
    x = _as_features(feats, "feats")
    if x.shape[1] != metric.mean.shape[0]:
        raise ValueError(f"feats: expected {metric.mean.shape[0]} features, found {x.shape[1]}")
    y = (x - metric.mean) @ metric.matrix
    if n_dims is None:
        return y
    if not 1 <= int(n_dims) <= y.shape[1]:
        raise ValueError(f"n_dims: expected 1 <= n_dims <= {y.shape[1]}, found {n_dims}")
    return y[:, metric.order[: int(n_dims)]]


def _flux_and_mask(spectra, max_err, pixel_mask, name):
    """Flux ``(N, D)`` and its missing mask: non-finite, ``ivar == 0``, error > max_err, pixel_mask."""
    if isinstance(spectra, Spectra):
        flux, ivar = np.asarray(spectra.flux), np.asarray(spectra.ivar)
        miss = ivar <= 0 if max_err is None else ivar < 1.0 / float(max_err) ** 2
    else:
        flux = np.asarray(spectra)
        if flux.ndim != 2:
            raise ValueError(f"{name}: expected a Spectra or a 2-D array (n_stars, n_pix), found shape {flux.shape}")
        miss = np.zeros(flux.shape, dtype=bool)
    miss = miss | ~np.isfinite(flux)
    if pixel_mask is not None:
        if pixel_mask.shape != (flux.shape[1],):
            raise ValueError(f"pixel_mask: expected shape ({flux.shape[1]},), found {pixel_mask.shape}")
        miss = miss | pixel_mask[None, :]
    return flux, miss


def _latents(model: RSCAModel, spectra, name: str) -> np.ndarray:
    flux, miss = _flux_and_mask(spectra, model.max_err, model.pixel_mask, name)
    p = model.ppca_loadings.shape[1]
    res = ppca.PPCAResult(
        model.ppca_mean, model.ppca_loadings, None, None, model.ppca_noise_variance, None, None, 0, True, None
    )
    return np.asarray(ppca.transform(res, flux, mask=miss), dtype=np.float64)[:, : min(model.n_components, p)]


def fit(
    field,
    clusters,
    cluster_ids,
    *,
    n_components: int = 30,
    key,
    ppca_components: int | None = None,
    max_err: float | None = 0.05,
    pixel_mask=None,
    ppca_kwargs: dict | None = None,
) -> RSCAFit:
    r"""Fit RSCA (steps 1-4) on field and open-cluster spectra.

    Parameters
    ----------
    field : Spectra or array ``(N_pop, D)``
        Field spectra (NaN = missing); they alone define the PPCA and the sphering.
    clusters : Spectra or array ``(N_clust, D)``
        Open-cluster members.
    cluster_ids : int ``(N_clust,)``
    n_components : int
        ``K``, dimensions kept (paper: 30).
    key : jax.random key
        Seeds the PPCA initialisation.
    ppca_components : int, optional
        Fit this many PPCA components (``>= K``) and keep the first ``K`` (paper: 60).
    max_err : float or None
        With ``Spectra`` input, pixels with flux error above this are missing (paper: 0.05).
    pixel_mask : bool ``(D,)``, optional
        Pixels missing for every star (``True``), e.g. from :func:`interstellar_mask`.
    ppca_kwargs : dict, optional
        ``max_iter``, ``tol``, ``chunk_size``, ``progress`` of :func:`~jaxspec.models.ppca.fit_ppca`.

    Returns
    -------
    RSCAFit
        ``model`` and the step-1 latents ``field_feats``, ``cluster_feats``.
    """
    k = int(n_components)
    p = k if ppca_components is None else int(ppca_components)
    if p < k:
        raise ValueError(f"ppca_components: expected >= n_components = {k}, found {p}")
    kwargs = dict(ppca_kwargs or {})
    bad = set(kwargs) - {"max_iter", "tol", "chunk_size", "progress"}
    if bad:
        raise ValueError(f"ppca_kwargs: unknown keys {sorted(bad)}")
    if pixel_mask is not None:
        pixel_mask = np.asarray(pixel_mask)
        if pixel_mask.dtype != np.bool_:
            raise TypeError(f"pixel_mask: expected a boolean array, found dtype {pixel_mask.dtype}")
    flux, miss = _flux_and_mask(field, max_err, pixel_mask, "field")
    res = ppca.fit_ppca(flux, p, mask=miss, key=key, **kwargs)
    d = flux.shape[1]
    model_stub = RSCAModel(
        np.asarray(res.mean),
        np.asarray(res.loadings),
        float(res.noise_variance),
        k,
        None,
        max_err,
        np.zeros(d, bool) if pixel_mask is None else pixel_mask,
    )
    zp = np.asarray(res.latents, dtype=np.float64)[:, :k]
    zc = _latents(model_stub, clusters, "clusters")
    metric = fit_from_features(zp, zc, cluster_ids)
    model = dataclasses.replace(model_stub, metric=metric)
    return RSCAFit(model, zp, zc, np.asarray(res.log_likelihood), bool(res.converged))


def transform(model: RSCAModel, spectra, n_dims: int | None = None) -> np.ndarray:
    """Spectra ``(N, D)`` (Spectra or array, NaN = missing) -> metric space ``(N, K)`` (or ``n_dims``)."""
    if not isinstance(model, RSCAModel):
        raise TypeError(f"model: expected an RSCAModel, found {type(model).__name__}")
    return embed(model.metric, _latents(model, spectra, "spectra"), n_dims)


from jaxspec.models._rsca_eval import (  # noqa: E402  (re-exported; it imports the above)
    DoppelgangerResult,
    InterstellarMask,
    NuisanceRemoval,
    TopNTable,
    doppelganger_rate,
    interstellar_mask,
    leave_one_cluster_out_rate,
    remove_nuisance_hyperplane,
    top_n_table,
)
