"""The scatter-VAE model, its training and evaluation; the equations are in the package docstring."""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxspec import io
from jaxspec.data.containers import default_float
from jaxspec.models.scatter_vae._data import SVAEBatch, SVAEStats, _g_flux, check_batch, preprocess
from jaxspec.models.scatter_vae._net import (
    SVAEConfig,
    SVAEParams,
    batch_loss,
    check_config,
    decode_star,
    encode_star,
    fit_terms,
    graphdefs,
    init_params,
    kl_term,
    make_optimizer,
)
from jaxspec.optim import train
from jaxspec.optim.train import make_train_step, make_validation


@io.register("svae.Model", family="svae")
@dataclasses.dataclass(frozen=True)
class SVAEModel:
    """A trained scatter VAE (immutable; save with ``jaxspec.io.save``).

    Attributes
    ----------
    config : SVAEConfig
    stats : SVAEStats
        Standardisation of the G-flux-normalised coefficients (training set).
    params : SVAEParams
        Weights as numpy arrays.
    """

    config: SVAEConfig
    stats: SVAEStats
    params: SVAEParams


class SVAEFit(NamedTuple):
    """Result of :func:`fit`: the ``model``, the per-epoch ``history`` (``"loss"``, ``"chi2"``, ``"penalty"``,
    ``"kl"``, ``"grad_norm"``, ``"val_loss"``), ``converged`` (early stopping fired) and ``best_epoch``."""

    model: SVAEModel
    history: dict
    converged: bool
    best_epoch: int | None


class Reconstruction(NamedTuple):
    """Posterior-mean reconstruction: ``coefficients`` and ``scatter`` ``(n, 110)`` e-/s, latent ``z`` ``(n, n_z)``."""

    coefficients: np.ndarray
    scatter: np.ndarray
    z: np.ndarray


def _check_model(model) -> SVAEModel:
    if not isinstance(model, SVAEModel):
        raise TypeError(f"model: expected an SVAEModel (from scatter_vae.fit or io.load), found {type(model).__name__}")
    return dataclasses.replace(model, config=check_config(model.config))  # hidden as a tuple: a static jit argument


def _device_params(model: SVAEModel) -> SVAEParams:
    return jax.tree_util.tree_map(jnp.asarray, model.params)


# -- training -------------------------------------------------------------------------------------


def _split(batch: SVAEBatch, validation_frac: float, key, shuffle: bool):
    n = batch.x.shape[0]
    if not 0 <= validation_frac < 1:
        raise ValueError(f"validation_frac: expected a value in [0, 1), found {validation_frac!r}")
    n_val = min(max(round(validation_frac * n), 1 if validation_frac > 0 else 0), n - 1)
    if shuffle:
        order = np.asarray(jax.random.permutation(key, n))
        batch = SVAEBatch(*(None if a is None else a[order] for a in batch))
    cut = n - n_val
    head = SVAEBatch(*(None if a is None else a[:cut] for a in batch))
    tail = SVAEBatch(*(None if a is None else a[cut:] for a in batch)) if n_val else None
    return head, tail


def fit(
    data,
    *,
    key: jax.Array,
    config: SVAEConfig = SVAEConfig(),  # noqa: B008
    g_flux=None,
    stats: SVAEStats | None = None,
    validation_frac: float = 0.1,
    mesh=None,
    progress: bool = True,
) -> SVAEFit:
    r"""Train a scatter VAE (module equation) with SGD + momentum on minibatches.

    Parameters
    ----------
    data : XPSpectra, MockXP, tuple ``(coefficients, errors)`` or SVAEBatch
        Training stars, coefficients and errors in e-/s.  An already
        standardised :class:`SVAEBatch` (e.g. of ``numpy.memmap`` leaves, filled
        chunk by chunk with :func:`preprocess`) streams from the host; it
        needs ``stats`` and is split in order (validation = its last rows).
    key : jax.random key
        Validation split, initial weights, minibatch order, reparametrisation draws.
    config : SVAEConfig
    g_flux : array ``(n,)``, optional
        ``phot_g_mean_flux`` in e-/s if ``data`` lacks it.
    stats : SVAEStats, optional
        Only with an SVAEBatch; otherwise computed from ``data``.
    validation_frac : float in [0, 1)
        Stars held out (at random) for ``history["val_loss"]`` (mean loss,
        fixed draws); the returned weights are those of the best validation
        epoch.  0: no validation, last epoch's weights.
    mesh : jax.sharding.Mesh, optional
        Data parallelism over ``"data"`` (:func:`jaxspec.optim.sharding.data_mesh`);
        the batch size is rounded down to a multiple of the device count.
    progress : bool

    Returns
    -------
    SVAEFit
    """
    config = check_config(config)
    if isinstance(data, SVAEBatch):
        if stats is None:
            raise ValueError("stats: expected the SVAEStats of a preprocessed SVAEBatch, found None")
        batch, shuffle = check_batch(data), False
    else:
        if stats is not None:
            raise ValueError("stats: only for an SVAEBatch; for raw data fit computes them")
        batch, stats = preprocess(data, g_flux, covariance=config.full_covariance)
        shuffle = True
    if config.full_covariance and batch.cov is None:
        raise ValueError("data: config.full_covariance needs an SVAEBatch with cov (preprocess(..., covariance=True))")
    if batch.x.shape[0] < 2:
        raise ValueError(f"data: expected at least 2 stars, found {batch.x.shape[0]}")
    train_set, val_set = _split(batch, validation_frac, jax.random.fold_in(key, 0), shuffle)
    n_train = train_set.x.shape[0]
    size = 1 if mesh is None else mesh.devices.size
    batch_size = min(int(config.batch_size), n_train)
    batch_size -= batch_size % size
    if batch_size == 0:
        raise ValueError(f"data: {n_train} training stars are fewer than the {size} devices of the mesh")
    optimizer = make_optimizer(config, n_train // batch_size)
    params = init_params(jax.random.fold_in(key, 1), config)
    loss_fn = batch_loss(config)
    step = make_train_step(loss_fn, optimizer, has_aux=True, mesh=mesh)
    validation = None
    if val_set is not None:
        validation = make_validation(
            loss_fn, val_set, batch_size=batch_size, has_aux=True, key=jax.random.fold_in(key, 3)
        )
    result = train.train_loop(
        step,
        params,
        optimizer.init(params),
        train_set,
        key=jax.random.fold_in(key, 2),
        epochs=int(config.epochs),
        batch_size=batch_size,
        validation=validation,
        patience=config.patience,
        progress=progress,
    )
    best = result.params if result.best_params is None else result.best_params
    model = SVAEModel(config, stats, jax.tree_util.tree_map(np.asarray, best))
    return SVAEFit(model, result.history, result.converged, result.best_epoch)


# -- evaluation -----------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0)
def _posterior(config: SVAEConfig, params: SVAEParams, batch: SVAEBatch) -> dict:
    """Per star at :math:`z = \\mu`: latents, reconstruction, scatter and the fit terms."""
    gd = graphdefs(config, batch.x.dtype)

    def one(star):
        mu, logvar = encode_star(gd, params, star.x)
        x_hat, s = decode_star(gd, params, mu)
        chi2, logdet, n_used = fit_terms(star.x, star.sigma, star.mask, x_hat, s, star.cov)
        return {
            "mu": mu,
            "logvar": logvar,
            "x_hat": x_hat,
            "scatter": s,
            "chi2": chi2,
            "logdet": logdet,
            "n_used": n_used,
            "kl": kl_term(mu, logvar),
        }

    return jax.vmap(one)(batch)


@functools.partial(jax.jit, static_argnums=0)
def _encoded(config: SVAEConfig, params: SVAEParams, batch: SVAEBatch) -> dict:
    """Per star: the encoder's posterior only (what :func:`encode` returns; no decoding)."""
    gd = graphdefs(config, batch.x.dtype)
    mu, logvar = jax.vmap(lambda x: encode_star(gd, params, x))(batch.x)
    return {"mu": mu, "logvar": logvar}


def _chunk_size(chunk_size) -> int:
    if not isinstance(chunk_size, int | np.integer) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected a positive int, found {chunk_size!r}")
    return int(chunk_size)


def _evaluate(model: SVAEModel, batch: SVAEBatch, chunk_size: int, progress: bool, desc: str, fn=None) -> dict:
    """``fn`` (default :func:`_posterior`) over fixed-size chunks (the last one padded by repeating its last star)."""
    fn = _posterior if fn is None else fn
    chunk_size = _chunk_size(chunk_size)
    params, n = _device_params(model), batch.x.shape[0]
    parts = []
    for start in tqdm(range(0, n, chunk_size), desc=desc, unit="chunk", disable=not progress):
        stop = min(start + chunk_size, n)
        idx = np.minimum(np.arange(start, start + chunk_size), stop - 1)
        chunk = SVAEBatch(*(None if a is None else np.asarray(a[idx]) for a in batch))
        out = jax.device_get(fn(model.config, params, chunk))
        parts.append({k: v[: stop - start] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def encode(model: SVAEModel, data, g_flux=None, *, chunk_size: int = 8192, progress: bool = True):
    r"""Posterior :math:`q(z|x)` of each star: ``(mu, logvar)``, each ``(n, n_z)`` numpy.

    ``data`` and ``g_flux`` as in :func:`preprocess` (standardised with the
    model's stats), or an :class:`SVAEBatch`.  Stars go through in chunks of
    ``chunk_size`` (the last padded, so one compilation serves all).
    """
    model = _check_model(model)
    batch = _batch(model, data, g_flux, covariance=False)
    out = _evaluate(model, batch, chunk_size, progress, "encode", fn=_encoded)
    return out["mu"], out["logvar"]


def _batch(model: SVAEModel, data, g_flux, *, covariance: bool) -> SVAEBatch:
    if isinstance(data, SVAEBatch):
        check_batch(data)
        if covariance and data.cov is None:
            raise ValueError("data: this full-covariance model needs an SVAEBatch with cov")
        return data if covariance else data._replace(cov=None)
    return preprocess(data, g_flux, stats=model.stats, covariance=covariance)[0]


def decode(model: SVAEModel, z) -> tuple[np.ndarray, np.ndarray]:
    r"""Decoded mean :math:`\hat x` and scatter :math:`s`, each ``(n, 110)`` standardised, of ``z`` ``(n, n_z)``."""
    model = _check_model(model)
    z = np.asarray(z, default_float())
    if z.ndim != 2 or z.shape[1] != model.config.latent_dim or not np.all(np.isfinite(z)):
        raise ValueError(f"z: expected finite values of shape (n, {model.config.latent_dim}), found {z.shape}")
    x_hat, s = _decode(model.config, _device_params(model), jnp.asarray(z))
    return np.asarray(x_hat), np.asarray(s)


@functools.partial(jax.jit, static_argnums=0)
def _decode(config: SVAEConfig, params: SVAEParams, z):
    gd = graphdefs(config, z.dtype)
    return jax.vmap(lambda zi: decode_star(gd, params, zi))(z)


def reconstruct(model: SVAEModel, data, g_flux=None, *, chunk_size: int = 1024, progress: bool = True):
    r"""Posterior-mean reconstruction in e-/s: :math:`(g (d \hat x + c),\ g d s)` at :math:`z = \mu`.

    Returns
    -------
    Reconstruction
        ``coefficients``, ``scatter`` ``(n, 110)`` e-/s and ``z`` ``(n, n_z)``.
    """
    model = _check_model(model)
    batch, _ = preprocess(data, g_flux, stats=model.stats)
    g = _g_flux(data, g_flux, batch.x.shape[0])[:, None]
    out = _evaluate(model, batch, chunk_size, progress, "reconstruct")
    center, scale = np.asarray(model.stats.center), np.asarray(model.stats.scale)
    coef = g * (out["x_hat"].astype(np.float64) * scale + center)
    return Reconstruction(coef, g * out["scatter"].astype(np.float64) * scale, out["mu"])


def sample(model: SVAEModel, key: jax.Array, n: int) -> Reconstruction:
    r"""``n`` spectra from the prior :math:`z \sim \mathcal{N}(0, I)`, in G-flux-normalised units.

    ``coefficients`` is the decoded mean :math:`d \hat x + c` and ``scatter``
    :math:`d s` (coefficients / G flux; multiply by a ``phot_g_mean_flux`` for
    e-/s); add ``scatter * normal`` for a noisy draw.
    """
    model = _check_model(model)
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: expected a positive int, found {n!r}")
    z = np.asarray(jax.random.normal(key, (int(n), model.config.latent_dim), default_float()))
    x_hat, s = decode(model, z)
    center, scale = np.asarray(model.stats.center), np.asarray(model.stats.scale)
    return Reconstruction(x_hat.astype(np.float64) * scale + center, s.astype(np.float64) * scale, z)


def anomaly_score(
    model: SVAEModel, data, g_flux=None, *, kind: str = "elbo", chunk_size: int = 1024, progress: bool = True
) -> np.ndarray:
    r"""Per-star outlier score ``(n,)`` at the posterior mean :math:`z = \mu`; large = unusual.

    ``kind="elbo"`` (default): the loss of the module equation at
    :math:`z = \mu` (reduced :math:`\chi^2`, log-variance penalty and KL
    term; a negative ELBO per coefficient up to constants).
    ``kind="chi2"``: the reduced :math:`\chi^2 = \frac1N r^\top V^{-1} r`
    alone (:math:`V = \mathrm{diag}(\sigma_x^2 + s^2)`, or the full
    covariance plus :math:`s^2` for a ``full_covariance`` model, which then
    needs an XPSpectra).  The scatter decoder inflates :math:`s` for unusual
    stars, which hides them from this :math:`\chi^2`; the penalty term of
    ``"elbo"`` charges for that inflation.  On the mock's CEMP-like outliers
    (3000 stars, 30 epochs) the ROC AUC was 0.94 for ``"elbo"`` and 0.49 for
    ``"chi2"``.
    """
    model = _check_model(model)
    if kind not in ("chi2", "elbo"):
        raise ValueError(f"kind: expected 'elbo' or 'chi2', found {kind!r}")
    batch = _batch(model, data, g_flux, covariance=model.config.full_covariance)
    out = _evaluate(model, batch, chunk_size, progress, "anomaly_score")
    n_used = np.maximum(out["n_used"], 1.0)
    if kind == "chi2":
        return out["chi2"] / n_used
    return 0.5 * (out["chi2"] + out["logdet"]) / n_used + out["kl"]


def normalised_residuals(
    model: SVAEModel, data, g_flux=None, *, chunk_size: int = 1024, progress: bool = True
) -> np.ndarray:
    r""":math:`(x - \hat x) / \sqrt{\sigma_x^2 + s^2}` ``(n, 110)`` at :math:`z = \mu`; NaN where masked.

    Diagonal errors only (also for a ``full_covariance`` model); the paper's Fig. 2.
    """
    model = _check_model(model)
    batch = _batch(model, data, g_flux, covariance=False)
    out = _evaluate(model, batch, chunk_size, progress, "residuals")
    x, sigma, mask = (np.asarray(a) for a in batch[:3])
    res = (x - out["x_hat"]) / np.sqrt(np.square(sigma) + np.square(out["scatter"]))
    return np.where(mask, res, np.nan)
