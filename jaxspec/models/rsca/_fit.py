"""RSCA fitting (steps 1-4) and the map of new spectra to the metric space; see the package docstring."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from jaxspec import io
from jaxspec.data.containers import Spectra
from jaxspec.models import ppca
from jaxspec.models.rsca._metric import RSCAMetric, embed, fit_from_features


@io.register("rsca.Model", family="rsca")
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


class InterstellarMask(NamedTuple):
    """mask : bool ``(D,)`` (True = censor); residual : ``(D,)`` mean residual of the
    high-extinction stars (NaN where none is observed); n_low, n_high : stars used."""

    mask: np.ndarray
    residual: np.ndarray
    n_low: int
    n_high: int


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


def _flux_and_mask(spectra, max_err, pixel_mask, name, *, lazy=False):
    """Flux ``(N, D)`` and its missing mask: non-finite, ``ivar == 0``, error > max_err, pixel_mask.

    ``lazy``: for a plain array, leave the non-finite entries to the PPCA (which finds them
    in its own pass) instead of scanning the data here; the mask is then ``None`` or the
    broadcast ``pixel_mask``.
    """
    n_pix = spectra.n_pix if isinstance(spectra, Spectra) else np.shape(spectra)[-1]
    if pixel_mask is not None and pixel_mask.shape != (n_pix,):
        raise ValueError(f"pixel_mask: expected shape ({n_pix},), found {pixel_mask.shape}")
    if isinstance(spectra, Spectra):
        flux, ivar = np.asarray(spectra.flux), np.asarray(spectra.ivar)
        miss = ivar <= 0 if max_err is None else ivar < 1.0 / float(max_err) ** 2
    else:
        flux = np.asarray(spectra)
        if flux.ndim != 2:
            raise ValueError(f"{name}: expected a Spectra or a 2-D array (n_stars, n_pix), found shape {flux.shape}")
        if lazy:
            return flux, None if pixel_mask is None else np.broadcast_to(pixel_mask, flux.shape)
        miss = np.zeros(flux.shape, dtype=bool)
    miss = miss | ~np.isfinite(flux)
    if pixel_mask is not None:
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
    flux, miss = _flux_and_mask(field, max_err, pixel_mask, "field", lazy=True)
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
