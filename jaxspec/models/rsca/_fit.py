"""RSCA fitting (steps 1-4) and the map of new spectra to the metric space; see the package docstring."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from jaxspec import io
from jaxspec.data._checks import check_float, check_int, check_key, int_ids
from jaxspec.data.containers import Spectra
from jaxspec.models import ppca
from jaxspec.models._common import (
    CHUNK_SIZE,
    FitResult,
    check_shapes,
    check_stars,
    model_dataclass,
    on_device,
    static,
)
from jaxspec.models.rsca._metric import Metric, embed, fit_from_features
from jaxspec.typing import Key

__all__ = ["Config", "InterstellarMask", "Model", "fit", "interstellar_mask", "transform"]


@io.register("rsca.Config", arrays={})
@dataclasses.dataclass(frozen=True)
class Config:
    """How :func:`fit` builds the metric.  Defaults: the paper's (de Mijolla & Ness 2021, sec. 3).

    Attributes
    ----------
    n_components : int
        ``K``, dimensions kept (paper: 30).
    ppca_components : int or None
        Fit this many PPCA components (``>= K``) and keep the first ``K``
        (paper: 60; None: ``K``).
    max_err : float or None
        With ``Spectra`` input, pixels with flux error above this are missing
        (``ivar < 1 / max_err^2``; paper: 0.05); None: only ``ivar == 0``.
    ppca_max_iter, ppca_tol : int, float
        EM updates at most and the relative log-likelihood change to stop at
        (:class:`jaxspec.models.ppca.Config`).
    """

    n_components: int = 30
    ppca_components: int | None = None
    max_err: float | None = 0.05
    ppca_max_iter: int = 100
    ppca_tol: float = 1e-5

    def __post_init__(self):
        check_int(self.n_components, "config.n_components", minimum=1)
        if self.ppca_components is not None:
            check_int(self.ppca_components, "config.ppca_components", minimum=self.n_components)
        if self.max_err is not None:
            check_float(self.max_err, "config.max_err", low=0.0, open_low=True)
        check_int(self.ppca_max_iter, "config.ppca_max_iter", minimum=0)
        check_float(self.ppca_tol, "config.ppca_tol", low=0.0, open_low=True)

    @property
    def ppca(self) -> ppca.Config:
        """The step-1 PPCA's configuration."""
        p = self.n_components if self.ppca_components is None else self.ppca_components
        return ppca.Config(n_components=p, max_iter=self.ppca_max_iter, tol=self.ppca_tol)


def _upgrade(fields: dict, version: int) -> dict:
    """Layout 1 (jaxspec 0.1) held the PPCA's arrays and the scalars beside the metric."""
    loadings = fields["ppca_loadings"]
    p = int(np.shape(loadings)[1])
    k = int(fields["n_components"])
    config = Config(n_components=k, ppca_components=p, max_err=fields["max_err"])
    noise = np.asarray(fields["ppca_noise_variance"], np.float64)
    step1 = ppca.Model(fields["ppca_mean"], loadings, noise, None, config.ppca)
    return {"ppca": step1, "metric": fields["metric"], "pixel_mask": fields["pixel_mask"], "config": config}


@io.register("rsca.Model", family="rsca", version=2, upgrade=_upgrade, arrays={"pixel_mask": io.Array(1, kind="b")})
@model_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    r"""A trained RSCA model: spectra -> metric space (immutable; a JAX pytree; save with ``jaxspec.io.save``).

    Attributes
    ----------
    ppca : jaxspec.models.ppca.Model
        Step 1, fitted on the field (``P = ppca_components >= K``; latents are the
        posterior means under all ``P`` components, of which the first ``K`` are kept).
    metric : Metric
        Steps 2-4 (float64).
    pixel_mask : bool ``(D,)`` (static)
        Pixels censored for every star (``True``; e.g. interstellar bands).
    config : Config (static)
    """

    ppca: ppca.Model
    metric: Metric
    pixel_mask: np.ndarray = static()
    config: Config = static(default=Config())

    def __post_init__(self):
        if not isinstance(self.ppca, ppca.Model) or not isinstance(self.metric, Metric):
            raise TypeError(
                f"rsca.Model: expected a ppca.Model and a Metric, found {type(self.ppca).__name__}, "
                f"{type(self.metric).__name__}"
            )
        if not isinstance(self.config, Config):
            raise TypeError(f"config: expected an rsca.Config, found {type(self.config).__name__}")
        d = np.shape(self.ppca.mean)[0]
        if np.shape(self.pixel_mask) != (d,) or np.asarray(self.pixel_mask).dtype != bool:
            raise ValueError(f"pixel_mask: expected a bool array ({d},), found {np.shape(self.pixel_mask)}")
        k = self.config.n_components
        if self.ppca.n_components < k:
            raise ValueError(
                f"rsca.Model: expected a step-1 PPCA of at least {k} components, found {self.ppca.n_components}"
            )
        square = ("sphere", "rotation")
        expected = {n: (v, (k, k) if n in square else (k,)) for n, v in self.metric._asdict().items()}
        check_shapes("rsca.Model", **{f"metric.{n}": e for n, e in expected.items()})

    @property
    def n_components(self) -> int:
        return self.config.n_components


class InterstellarMask(NamedTuple):
    """mask : bool ``(D,)`` (True = censor); residual : ``(D,)`` mean residual of the
    high-extinction stars (NaN where none is observed); n_low, n_high : stars used."""

    mask: np.ndarray
    residual: np.ndarray
    n_low: int
    n_high: int


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
        flux = spectra if isinstance(spectra, np.ndarray) else np.asarray(spectra)
        if flux.ndim != 2:
            raise ValueError(f"{name}: expected a Spectra or a 2-D array (n_stars, n_pix), found shape {flux.shape}")
        if lazy:
            return flux, None if pixel_mask is None else np.broadcast_to(pixel_mask, flux.shape)
        miss = np.zeros(flux.shape, dtype=bool)
    miss = miss | ~np.isfinite(flux)
    if pixel_mask is not None:
        miss = miss | pixel_mask[None, :]
    return flux, miss


def _shape(spectra) -> tuple:
    """The shape ``(n_stars, n_pix)`` of a Spectra or array (a ``TypeError`` naming ``spectra`` for anything else)."""
    shape = spectra.flux.shape if isinstance(spectra, Spectra) else getattr(spectra, "shape", None)
    if shape is None:
        raise TypeError(f"spectra: expected Spectra or a 2-D array (n_stars, n_pix), found {type(spectra).__name__}")
    if len(shape) != 2:
        raise ValueError(f"spectra: expected Spectra or a 2-D array (n_stars, n_pix), found shape {tuple(shape)}")
    return tuple(shape)


def _rows(x, rows: np.ndarray):
    """Rows of ``x`` (int indices, sorted): a view when they are one contiguous block (a memory map
    stays a memory map), else a copy."""
    if rows.size and rows[-1] - rows[0] + 1 == rows.size:
        return x[rows[0] : rows[-1] + 1]
    return x[rows]


def _select(spectra, rows: np.ndarray):
    if isinstance(spectra, Spectra):
        return spectra[rows]
    return _rows(spectra, rows)


def _latents(step1: ppca.Model, config: Config, pixel_mask, spectra, *, chunk_size=CHUNK_SIZE, progress=False):
    """The first ``K`` step-1 posterior latents ``(N, K)`` float64 of ``spectra`` (censored as in the fit)."""
    shape, d = _shape(spectra), np.shape(pixel_mask)[0]
    check_stars(shape[0], "spectra")
    if len(shape) == 2 and shape[1] != d:
        raise ValueError(f"spectra: expected {d} pixels as in the fit, found {shape[1]}")
    flux, miss = _flux_and_mask(spectra, config.max_err, np.asarray(pixel_mask), "spectra")
    z = ppca.encode(step1, flux, mask=miss, chunk_size=chunk_size, progress=progress)
    return np.asarray(z, dtype=np.float64)[:, : config.n_components]


def fit(
    spectra,
    cluster_ids,
    *,
    key: Key,
    config: Config = Config(),
    pixel_mask=None,
    progress: bool = True,
) -> FitResult:
    r"""Fit RSCA (steps 1-4) on field stars and open-cluster members.

    Parameters
    ----------
    spectra : Spectra or array ``(N, D)``
        Every star, field and clusters (NaN = missing; a ``Spectra``'s pixels with
        error above ``config.max_err`` are missing too).  A memory-mapped array
        is read in place when its field rows form one contiguous block (members
        first or last); other layouts copy the field rows.
    cluster_ids : int ``(N,)``
        The open cluster of each star, ``-1`` for a field star (as
        :func:`jaxspec.data.mock.open_clusters` encodes it).  The field alone
        defines the PPCA and the sphering; clusters with one member do not
        inform steps 3-4.
    key : jax.random key
        Seeds the PPCA initialisation.
    config : Config
        ``K``, the PPCA's size and iterations, the error cut.
    pixel_mask : bool ``(D,)``, optional
        Pixels missing for every star (``True``), e.g. from :func:`interstellar_mask`.
    progress : bool

    Returns
    -------
    FitResult
        ``model``; ``history["log_likelihood"]`` and ``converged`` of the PPCA's
        EM; ``aux``: the step-1 latents of the field ``"field_feats"``
        ``(N_field, K)`` and of the members ``"cluster_feats"`` ``(N_members, K)``
        with their ids ``"member_ids"`` (for :func:`fit_from_features`,
        :func:`leave_one_cluster_out_rate` and :func:`top_n_table` without
        refitting the PPCA), and the row indices ``"field_rows"``, ``"member_rows"``.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config: expected an rsca.Config, found {type(config).__name__}")
    check_key(key)
    n_stars = check_stars(_shape(spectra)[0], "spectra")
    ids = int_ids(cluster_ids, n_stars, "cluster_ids")
    field_rows, member_rows = np.flatnonzero(ids < 0), np.flatnonzero(ids >= 0)
    if field_rows.size == 0 or member_rows.size == 0:
        raise ValueError(
            f"cluster_ids: expected field stars (-1) and cluster members (>= 0), found {field_rows.size} and "
            f"{member_rows.size}"
        )
    if pixel_mask is not None:
        pixel_mask = np.asarray(pixel_mask)
        if pixel_mask.dtype != np.bool_:
            raise TypeError(f"pixel_mask: expected a boolean array, found dtype {pixel_mask.dtype}")
    flux, miss = _flux_and_mask(_select(spectra, field_rows), config.max_err, pixel_mask, "spectra", lazy=True)
    step1 = ppca.fit(flux, key=key, config=config.ppca, mask=miss, progress=progress)
    d = flux.shape[1]
    k = config.n_components
    mask = np.zeros(d, bool) if pixel_mask is None else pixel_mask
    zp = np.asarray(step1.aux["latents"], dtype=np.float64)[:, :k]
    zc = _latents(step1.model, config, mask, _select(spectra, member_rows))
    model = on_device(Model(step1.model, fit_from_features(zp, zc, ids[member_rows]), mask, config))
    aux = {
        "field_feats": zp,
        "cluster_feats": zc,
        "member_ids": ids[member_rows],
        "field_rows": field_rows,
        "member_rows": member_rows,
    }
    return FitResult(model, step1.history, step1.converged, aux)


def transform(
    model: Model, spectra, n_dims: int | None = None, *, chunk_size: int = CHUNK_SIZE, progress: bool = True
) -> np.ndarray:
    """Spectra ``(N, D)`` (Spectra or array, NaN = missing) -> metric space ``(N, K)`` (or the ``n_dims``
    most discriminating dimensions, sorted): the step-1 posterior latents, then :func:`embed`.

    Finite: a star with no observed pixel gets the step-1 prior mean (latents 0) embedded.  Zero stars or a
    pixel count other than the fit's are a ``ValueError`` naming ``spectra``."""
    if not isinstance(model, Model):
        raise TypeError(f"model: expected an rsca.Model, found {type(model).__name__}")
    if n_dims is not None:
        check_int(n_dims, "n_dims", minimum=1, maximum=model.n_components)
    z = _latents(model.ppca, model.config, model.pixel_mask, spectra, chunk_size=chunk_size, progress=progress)
    return embed(model.metric, z, n_dims)


def interstellar_mask(
    spectra,
    a_k,
    *,
    key: Key,
    low: float = 0.005,
    high: float = 0.5,
    n_components: int = 30,
    threshold: float = 0.01,
    progress: bool = True,
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
    progress : bool
    """
    check_key(key)
    check_int(n_components, "n_components", minimum=1)
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
    config = ppca.Config(n_components=n_components)
    res = ppca.fit(flux[lo], key=key, config=config, mask=miss[lo], progress=progress)
    z = ppca.encode(res.model, flux[hi], mask=miss[hi], progress=progress)
    r = np.where(miss[hi], 0.0, flux[hi] - np.asarray(ppca.decode(res.model, z), np.float64))
    n_obs = np.sum(~miss[hi], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        resid = np.where(n_obs > 0, r.sum(axis=0) / n_obs, np.nan)
    return InterstellarMask(np.nan_to_num(resid, nan=0.0) < -threshold, resid, int(lo.sum()), int(hi.sum()))
