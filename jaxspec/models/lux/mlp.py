r"""Lux with one nonlinear output: a small residual MLP in place of ``A`` or ``B``.

The next step named by Horta et al. (2025): keep a trained linear Lux model
(:mod:`jaxspec.models.lux`) and replace the linear map of ONE output by

.. math::

    g(z) = C z + \mathrm{MLP}\bigl((z - \mu_z) / \sigma_z\bigr),

``C`` starting at that output's Lux matrix (``A`` ``(M, P)``, standardised
labels, for ``output="labels"``; ``B`` ``(L, P)``, flux, for
``output="spectra"``) and the MLP (Flax NNX, ``tanh`` hidden layers) with a
zero last layer, so :math:`g(z) = C z` exactly before training.  ``C`` and the
MLP are trained with :func:`jaxspec.optim.make_train_step` and
:func:`jaxspec.optim.train_loop` (Adam) on the weighted chi2 of that output,
:math:`L = \frac1N \sum_{n,i} w_{ni} (y_{ni} - g(z_n)_i)^2`, ``w`` the
standardised label inverse variances or :math:`1/(\sigma^2 + s^2)` with the
Lux pixel scatter ``s`` (0 = missing/masked); :math:`\mu_z, \sigma_z` are the
training latents' mean and standard deviation.  Test step: latents from the
fluxes with the Omega prior, linear (``output="labels"``) or Gauss-Newton
through :math:`g` (``output="spectra"``), then the label map.

Simplifications
---------------
- Only the chosen output is retrained; the other output's matrix, the scatter
  ``s`` and the latents are those of the linear fit (no joint re-training).
- ``output="labels"`` trains on the training stars' latents **inferred from
  their fluxes alone** (:func:`jaxspec.models.lux.encode`, the test-step
  map), not the joint label+flux latents of ``lux.fit``: those carry label
  directions the fluxes cannot inform, and a network trained on them learns to
  read the labels back and does not generalise.  ``output="spectra"`` trains
  on the ``lux.fit`` latents.
- No per-label wavelength masks (``label_masks``); the linear model's
  calibrated ``label_scatter`` is not applied (Laplace label errors only).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxspec import io
from jaxspec.data._checks import check_choice, check_float, check_int, check_key
from jaxspec.data.containers import Labels, Spectra, default_float
from jaxspec.models import lux
from jaxspec.models._common import (
    CHUNK_SIZE,
    FitResult,
    LabelPrediction,
    check_label_columns,
    check_last_axis,
    check_measured,
    check_shapes,
    check_tree_shapes,
    model_dataclass,
    on_device,
    static,
)
from jaxspec.models.lux._predict import as_outputs, check_labels
from jaxspec.optim.latents import FitOptions, GaussianPrior, LatentFit, fit_latents
from jaxspec.optim.scatter import flux_weights_np
from jaxspec.optim.train import make_train_step, train_loop
from jaxspec.typing import Flux, Key, LabelValues, Latents

__all__ = ["OUTPUTS", "Config", "Model", "Params", "decode", "encode", "fit", "predict_labels"]

OUTPUTS = ("labels", "spectra")


class _ResidualMLP(nnx.Module):
    """``tanh`` hidden layers and a zero-initialised linear read-out (so the residual is 0 at init)."""

    def __init__(self, n_in: int, hidden: tuple, n_out: int, *, dtype: str, rngs: nnx.Rngs):
        sizes = (n_in, *hidden)
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            setattr(self, f"hidden_{i}", nnx.Linear(a, b, param_dtype=dtype, rngs=rngs))
        zeros = nnx.initializers.zeros
        self.out = nnx.Linear(sizes[-1], n_out, kernel_init=zeros, param_dtype=dtype, rngs=rngs)
        self.n_hidden = len(hidden)

    def __call__(self, x):
        for i in range(self.n_hidden):
            x = jnp.tanh(getattr(self, f"hidden_{i}")(x))
        return self.out(x)


@functools.lru_cache(maxsize=32)
def _graphdef(n_in: int, hidden: tuple, n_out: int, dtype: str):
    """The NNX graph definition for these sizes (shape-only construction; equal for equal sizes)."""
    abstract = nnx.eval_shape(lambda: _ResidualMLP(n_in, hidden, n_out, dtype=dtype, rngs=nnx.Rngs(0)))
    return nnx.split(abstract)[0]


@functools.lru_cache(maxsize=32)
def _net_shapes(n_in: int, hidden: tuple, n_out: int, dtype: str) -> dict:
    """The shapes of the MLP's weights for these sizes (``jax.ShapeDtypeStruct`` leaves; nothing allocated)."""
    build = lambda: nnx.to_pure_dict(nnx.state(_ResidualMLP(n_in, hidden, n_out, dtype=dtype, rngs=nnx.Rngs(0))))  # noqa: E731
    return jax.eval_shape(build)


@io.register("lux.mlp.Config", arrays={})
@dataclasses.dataclass(frozen=True)
class Config:
    """How :func:`fit` trains the MLP output.

    Attributes
    ----------
    output : {"labels", "spectra"}
        The output whose linear map (``A`` or ``B``) becomes :math:`g`.
    hidden : tuple of int
        Hidden layer widths (``tanh``).
    epochs : int
        Passes over the training stars (0 gives the linear model in MLP form).
    learning_rate : float
        Adam step size.
    batch_size : int or None
        Stars per step (None: ``min(128, N)``).
    """

    output: str = "labels"
    hidden: tuple = (64, 64)
    epochs: int = 300
    learning_rate: float = 1e-3
    batch_size: int | None = None

    def __post_init__(self):
        check_choice(self.output, "config.output", OUTPUTS)
        ok = isinstance(self.hidden, Sequence) and not isinstance(self.hidden, str) and len(self.hidden) > 0
        if not ok:
            raise ValueError(f"config.hidden: expected a non-empty sequence of positive ints, found {self.hidden!r}")
        for i, h in enumerate(self.hidden):
            check_int(h, f"config.hidden[{i}]", minimum=1)
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        check_int(self.epochs, "config.epochs", minimum=0)
        check_float(self.learning_rate, "config.learning_rate", low=0.0, open_low=True)
        if self.batch_size is not None:
            check_int(self.batch_size, "config.batch_size", minimum=1)


@io.register("lux.mlp.Params", arrays={"skip": io.Array(2), "net": io.Array((1, 2), nested=True)})
class Params(NamedTuple):
    r"""Trained parameters of :math:`g`: ``skip`` ``(n_out, P)`` (the matrix ``C``) and ``net``.

    ``net`` is the MLP's NNX state as a nested dict of arrays
    (``{"hidden_0": {"kernel": (P, H0), "bias": (H0,)}, ..., "out": {...}}``).
    """

    skip: jax.Array
    net: dict


def _upgrade(fields: dict, version: int) -> dict:
    """Layout 1 (jaxspec 0.1) kept ``output`` and ``hidden`` beside the arrays; layout 2 a whole config."""
    fields = dict(fields)
    fields["config"] = Config(output=fields.pop("output"), hidden=tuple(fields.pop("hidden")))
    return fields


@io.register(
    "lux.mlp.Model",
    family="lux_mlp",
    version=2,
    upgrade=_upgrade,
    arrays={"z_center": io.Array(1), "z_scale": io.Array(1)},
)
@model_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """Lux with one output nonlinear (immutable; a JAX pytree; save with ``jaxspec.io.save``).

    Attributes
    ----------
    lux : lux.Model
        The linear model (its other output, scatter, label scaler, grids, Omega).
    params : Params
    z_center, z_scale : arrays ``(P,)``
        Standardisation of the MLP input (training latents' mean and standard deviation).
    config : Config (static)
        ``config.output`` is the output the MLP computes.
    """

    lux: lux.Model
    params: Params
    z_center: jax.Array
    z_scale: jax.Array
    config: Config = static(default=Config())

    def __post_init__(self):
        if not isinstance(self.lux, lux.Model):
            raise TypeError(f"lux: expected a lux.Model, found {type(self.lux).__name__}")
        if not isinstance(self.config, Config):
            raise TypeError(f"config: expected a lux.mlp.Config, found {type(self.config).__name__}")
        if not isinstance(self.params, Params):
            raise TypeError(f"params: expected lux.mlp.Params, found {type(self.params).__name__}")
        p = self.lux.n_latents
        n_out = len(self.lux.label_names) if self.config.output == "labels" else sum(self.lux.n_pix)
        check_shapes(
            "lux.mlp.Model",
            z_center=(self.z_center, (p,)),
            z_scale=(self.z_scale, (p,)),
            **{"params.skip": (self.params.skip, (n_out, p))},
        )
        dtype = np.dtype(self.params.skip.dtype).name
        check_tree_shapes(
            "lux.mlp.Model", "params.net", self.params.net, _net_shapes(p, self.config.hidden, n_out, dtype)
        )

    @property
    def output(self) -> str:
        return self.config.output

    @property
    def graphdef(self):
        n_out, p = np.shape(self.params.skip)
        dtype = np.dtype(self.params.skip.dtype).name
        return _graphdef(int(p), self.config.hidden, int(n_out), dtype)


def _g(graphdef, params: Params, center, scale, z):
    """:math:`g(z) = C z + \\mathrm{MLP}((z - \\mu)/\\sigma)` for ``z`` ``(..., P)``."""
    net = nnx.merge(graphdef, params.net)
    return z @ params.skip.T + net((z - center) / scale)


@functools.partial(jax.jit, static_argnums=0)
def _g_and_jacobian(graphdef, params: Params, center, scale, z):
    r"""``g(z)`` ``(n, n_out)`` and :math:`\partial g/\partial z` ``(n, n_out, P)`` per star."""
    one = functools.partial(_g, graphdef, params, center, scale)
    return jax.vmap(one)(z), jax.vmap(jax.jacfwd(one))(z)


@functools.lru_cache(maxsize=32)
def _decoder(graphdef):
    """One star's decoder for ``fit_latents`` (one function object per graph: compiled once per shape)."""

    def decode(args, z):
        params, center, scale = args
        return _g(graphdef, params, center, scale, z)

    return decode


def _check_model(model) -> None:
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a lux.mlp.Model, found {type(model).__name__}")


# -- training --------------------------------------------------------------------------


def fit(
    spectra: Spectra | Sequence[Spectra],
    labels: Labels,
    *,
    key: Key,
    base: FitResult,
    config: Config = Config(),
    progress: bool = True,
) -> FitResult:
    r"""Replace one output of a trained linear Lux model by :math:`g(z) = C z + \mathrm{MLP}(z)` (module docstring).

    Parameters
    ----------
    spectra : Spectra ``(N, L)`` or a sequence (one per spectral output)
        Training spectra on the model's grids.
    labels : Labels ``(N, M)``
        Training labels (physical units; ``ivar == 0`` = missing).
    key : jax.random key
        MLP initialisation, minibatch order.
    base : FitResult
        From :func:`jaxspec.models.lux.fit` on the same ``spectra`` and ``labels``
        (its model and training latents ``aux["z"]``).
    config : Config
        The output, widths, epochs, learning rate and batch size.
    progress : bool

    Returns
    -------
    FitResult
        ``model``; ``history`` (one row per epoch: ``"loss"``,
        ``"chi2_per_obs"``, ``"grad_norm"``); ``converged``: False (a fixed
        number of epochs, no stopping tolerance); ``aux["z"]``: the training
        latents the MLP saw ``(N, P)``.
    """
    if not (isinstance(base, FitResult) and isinstance(base.model, lux.Model) and "z" in base.aux):
        raise TypeError(f"base: expected the FitResult of lux.fit, found {type(base).__name__}")
    if not isinstance(config, Config):
        raise TypeError(f"config: expected a lux.mlp.Config, found {type(config).__name__}")
    check_key(key)
    linear = base.model
    if linear.label_masks is not None:
        raise ValueError("base: models trained with label_masks are not supported by the MLP variant")
    labels = check_labels(labels, linear)
    n = labels.n_stars
    if np.shape(base.aux["z"])[0] != n:
        raise ValueError(f"labels: expected {np.shape(base.aux['z'])[0]} stars as in base.aux['z'], found {n}")
    flux, ivar, _ = as_outputs(spectra, n, linear)
    check_measured(ivar, "spectra")
    if config.output == "labels":
        check_label_columns(labels.ivar, labels.names)
    dtype = default_float()

    if config.output == "labels":
        std = linear.label_scaler.transform(labels)
        y, w = np.asarray(std.values, dtype), np.asarray(std.ivar, dtype)
        z = np.asarray(lux.encode(linear, spectra, omega=linear.omega, progress=False).z, dtype)
        skip = np.asarray(linear.params.A, dtype)
    else:
        y = flux
        w = flux_weights_np(ivar, linear.params.ln_s).astype(dtype, copy=False)
        z = np.asarray(base.aux["z"], dtype)
        skip = np.asarray(linear.params.B, dtype)
    center = z.mean(axis=0)
    sd = z.std(axis=0)
    scale = np.where(sd > 1e-6 * max(float(sd.max()), 1e-30), sd, 1.0).astype(dtype)

    n_out, p = skip.shape
    net = _ResidualMLP(
        p, config.hidden, n_out, dtype=np.dtype(dtype).name, rngs=nnx.Rngs(params=jax.random.fold_in(key, 0))
    )
    graphdef, state = nnx.split(net)
    params = Params(jnp.asarray(skip), jax.tree_util.tree_map(jnp.asarray, nnx.to_pure_dict(state)))
    center_j, scale_j = jnp.asarray(center), jnp.asarray(scale)
    n_obs = max(float(np.count_nonzero(w > 0)) / n, 1.0)  # measured outputs per star, for a readable metric

    def loss_fn(params, batch, key):
        z_b, y_b, w_b = batch
        chi2 = jnp.sum(w_b * jnp.square(y_b - _g(graphdef, params, center_j, scale_j, z_b)), axis=1)
        loss = jnp.mean(chi2)
        return loss, {"chi2_per_obs": loss / n_obs}

    optimizer = optax.adam(config.learning_rate)
    step = make_train_step(loss_fn, optimizer, has_aux=True)
    batch_size = min(128, n) if config.batch_size is None else config.batch_size
    result = train_loop(
        step,
        params,
        optimizer.init(params),
        (z, y, w),
        key=jax.random.fold_in(key, 1),
        epochs=config.epochs,
        batch_size=batch_size,
        progress=progress,
    )
    model = Model(linear, result.params, center, scale, config)
    return FitResult(on_device(model), result.history, bool(result.converged), {"z": z})


# -- test step -------------------------------------------------------------------------


def decode(model: Model, z: Latents) -> LabelValues | Flux:
    r"""The MLP output :math:`g(z)` for latents ``z`` ``(..., P)``: a pure function of the model pytree.

    Returns ``(..., M)`` labels in physical units (``output="labels"``) or
    ``(..., L)`` model fluxes (``output="spectra"``).  ``jax.jit``,
    ``jax.vmap`` and ``jax.grad`` go through it.
    """
    dtype = model.params.skip.dtype
    z = jnp.asarray(check_last_axis(z, model.lux.n_latents, "z"), dtype)
    out = _g(model.graphdef, model.params, jnp.asarray(model.z_center, dtype), jnp.asarray(model.z_scale, dtype), z)
    if model.config.output == "spectra":
        return out
    scaler = model.lux.label_scaler
    return out * jnp.asarray(scaler.scale, dtype) + jnp.asarray(scaler.center, dtype)


def _omega(model: Model, omega) -> float:
    omega = model.lux.omega if omega is None else float(omega)
    if not (np.isfinite(omega) and omega >= 0):
        raise ValueError(f"omega: expected a finite value >= 0, found {omega!r}")
    return omega


def encode(
    model: Model,
    spectra: Spectra | Sequence,
    *,
    omega: float | None = None,
    covariance: bool = False,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
) -> LatentFit:
    r"""Latents of new stars from their spectra, minimising the flux chi2 plus :math:`\Omega\lVert z\rVert^2`.

    ``output="labels"``: the fluxes are linear in ``z`` (:math:`f = Bz`), so
    this is :func:`jaxspec.models.lux.encode`.  ``output="spectra"``:
    :math:`f = g(z)` is nonlinear; :func:`jaxspec.optim.fit_latents` with
    ``method="dense_gauss_newton"`` (Gauss-Newton with adaptive damping; the
    undamped ``"gauss_newton"`` stalls on some stars in float32) from the
    linear-Lux latents, weights :math:`1/(\sigma^2 + s^2)` and the L2 prior
    :meth:`jaxspec.optim.GaussianPrior.l2`.  ``omega`` defaults to the model's
    training :math:`\Omega` (note: :func:`jaxspec.models.lux.predict_labels`
    defaults to 0, the paper's unpenalised test step; pass ``omega=0`` for that).
    """
    _check_model(model)
    omega = _omega(model, omega)
    if model.output == "labels":
        return lux.encode(
            model.lux, spectra, omega=omega, covariance=covariance, chunk_size=chunk_size, progress=progress
        )
    z_lin = lux.encode(model.lux, spectra, omega=omega, chunk_size=chunk_size, progress=False)
    flux, ivar, _ = as_outputs(spectra, None, model.lux)
    w = flux_weights_np(ivar, model.lux.params.ln_s)
    p = model.lux.n_latents
    prior = GaussianPrior.l2(omega, p) if omega > 0 else None
    params = (model.params, model.z_center, model.z_scale)
    return fit_latents(
        _decoder(model.graphdef),
        jax.tree_util.tree_map(jnp.asarray, params),
        (flux, w),
        np.asarray(z_lin.z),
        prior=prior,
        method="dense_gauss_newton",
        options=FitOptions(chunk_size=chunk_size),
        covariance=covariance,
        progress=progress,
    )


def predict_labels(
    model: Model,
    spectra: Spectra | Sequence,
    *,
    omega: float | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
) -> LabelPrediction:
    r"""Labels of new stars from their spectra: :math:`\hat z` by :func:`encode`, then the label map.

    :math:`\hat\ell = g(\hat z)` (``output="labels"``) or :math:`A\hat z`
    (``output="spectra"``), in physical units.  The covariance is
    :math:`J \Sigma_z J^\top` with :math:`J = \partial\hat\ell/\partial z` at
    :math:`\hat z` and :math:`\Sigma_z` the Laplace latent covariance (no
    calibrated label scatter: ``model.lux.label_scatter`` belongs to ``A z``); flagged
    stars (no measured pixel, failed fit) get the scaler centre and ``ivar = 0``.
    ``omega``: as in :func:`encode` (default: the model's).
    """
    fit_ = encode(model, spectra, omega=omega, covariance=True, chunk_size=chunk_size, progress=progress)
    z = np.asarray(fit_.z, default_float())
    scale = np.asarray(model.lux.label_scaler.scale, np.float64)
    if model.output == "labels":
        params = jax.tree_util.tree_map(jnp.asarray, (model.params, model.z_center, model.z_scale))
        values, jac = (np.asarray(x, np.float64) for x in _g_and_jacobian(model.graphdef, *params, z))
        values = model.lux.label_scaler.inverse(values)
    else:
        a = np.asarray(model.lux.params.A, np.float64)
        jac = np.broadcast_to(a, (len(z), *a.shape))
        values = model.lux.label_scaler.inverse(z.astype(np.float64) @ a.T)
    cov_z = np.asarray(fit_.covariance, np.float64)
    bad = ~np.all(np.isfinite(cov_z), axis=(1, 2)) | ~np.all(np.isfinite(jac), axis=(1, 2))
    cov_z, jac = np.where(bad[:, None, None], 0.0, cov_z), np.where(bad[:, None, None], 0.0, jac)
    cov = np.einsum("nmp,npq,nkq->nmk", jac, cov_z, jac) * scale[:, None] * scale
    flagged = ~np.asarray(fit_.converged) | bad | ~np.all(np.isfinite(values), axis=1)
    var = np.diagonal(cov, axis1=1, axis2=2)
    ivar = np.where(flagged[:, None] | ~(var > 0), 0.0, 1.0 / np.where(var > 0, var, 1.0))
    values = np.where(flagged[:, None], np.asarray(model.lux.label_scaler.center), values)
    cov = np.where(flagged[:, None, None], np.diag(np.full(len(model.lux.label_names), np.inf)), cov)
    dtype = default_float()
    labels = Labels._make(values.astype(dtype), ivar.astype(dtype), model.lux.label_names)
    return LabelPrediction(labels, cov, z, np.asarray(fit_.reduced_chi2), flagged)
