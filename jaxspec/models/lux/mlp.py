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
  their fluxes alone** (:func:`jaxspec.models.lux.infer_latents`, the test-step
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
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxspec import io
from jaxspec.data.containers import Labels, Spectra, default_float
from jaxspec.models import lux
from jaxspec.models.lux._predict import as_outputs, check_labels
from jaxspec.optim.latents import FitOptions, GaussianPrior, LatentFit, fit_latents
from jaxspec.optim.scatter import flux_weights_np
from jaxspec.optim.train import make_train_step, train_loop

__all__ = [
    "OUTPUTS",
    "LuxMLPFit",
    "LuxMLPModel",
    "MLPParams",
    "decode_output",
    "fit_mlp_output",
    "infer_latents_mlp",
    "predict_labels_mlp",
]

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


@io.register("lux.mlp.Params")
class MLPParams(NamedTuple):
    r"""Trained parameters of :math:`g`: ``skip`` ``(n_out, P)`` (the matrix ``C``) and ``net``.

    ``net`` is the MLP's NNX state as a nested dict of arrays
    (``{"hidden_0": {"kernel": (P, H0), "bias": (H0,)}, ..., "out": {...}}``).
    """

    skip: np.ndarray
    net: dict


@io.register("lux.mlp.Model", family="lux_mlp")
@dataclasses.dataclass(frozen=True)
class LuxMLPModel:
    """Lux with one output nonlinear (immutable; save with ``jaxspec.io.save``).

    Attributes
    ----------
    lux : LuxModel
        The linear model (its other output, scatter, label scaler, grids, Omega).
    output : {"labels", "spectra"}
        The output computed by the MLP.
    params : MLPParams
    hidden : tuple of int
        Hidden layer widths.
    z_center, z_scale : arrays ``(P,)``
        Standardisation of the MLP input (training latents' mean and standard deviation).
    """

    lux: lux.LuxModel
    output: str
    params: MLPParams
    hidden: tuple
    z_center: np.ndarray
    z_scale: np.ndarray

    @property
    def graphdef(self):
        n_out, p = np.shape(self.params.skip)
        dtype = np.dtype(self.params.skip.dtype).name
        return _graphdef(int(p), tuple(int(h) for h in self.hidden), int(n_out), dtype)


class LuxMLPFit(NamedTuple):
    """Result of :func:`fit_mlp_output`: the ``model``, the training latents ``z`` ``(N, P)`` used, and
    ``history`` (one row per epoch: ``"loss"``, ``"chi2_per_obs"``, ``"grad_norm"``)."""

    model: LuxMLPModel
    z: np.ndarray
    history: dict


def _g(graphdef, params: MLPParams, center, scale, z):
    """:math:`g(z) = C z + \\mathrm{MLP}((z - \\mu)/\\sigma)` for ``z`` ``(..., P)``."""
    net = nnx.merge(graphdef, params.net)
    return z @ params.skip.T + net((z - center) / scale)


_g_jit = jax.jit(_g, static_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _g_and_jacobian(graphdef, params: MLPParams, center, scale, z):
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


# -- input checks ----------------------------------------------------------------------


def _check_hidden(hidden) -> tuple:
    ok = isinstance(hidden, Sequence) and len(hidden) > 0
    ok = ok and all(isinstance(h, int | np.integer) and not isinstance(h, bool) and h >= 1 for h in hidden)
    if not ok:
        raise ValueError(f"hidden: expected a non-empty sequence of positive ints (layer widths), found {hidden!r}")
    return tuple(int(h) for h in hidden)


def _check_model(model) -> None:
    if not isinstance(model, LuxMLPModel):
        raise TypeError(f"model: expected a LuxMLPModel, found {type(model).__name__}")


# -- training --------------------------------------------------------------------------


def fit_mlp_output(
    lux_fit: lux.LuxFit,
    labels: Labels,
    spectra: Spectra | Sequence[Spectra],
    *,
    key: jax.Array,
    output: str = "labels",
    hidden: Sequence[int] = (64, 64),
    epochs: int = 300,
    learning_rate: float = 1e-3,
    batch_size: int | None = None,
    progress: bool = True,
) -> LuxMLPFit:
    r"""Replace one output of a trained linear Lux model by :math:`g(z) = C z + \mathrm{MLP}(z)` (module docstring).

    Parameters
    ----------
    lux_fit : LuxFit
        From :func:`jaxspec.models.lux.fit` on the same ``labels`` and ``spectra``.
    labels : Labels ``(N, M)``
        Training labels (physical units; ``ivar == 0`` = missing).
    spectra : Spectra ``(N, L)`` or a sequence (one per spectral output)
        Training spectra on the model's grids.
    key : jax.random key
        MLP initialisation, minibatch order.
    output : {"labels", "spectra"}
        The output whose linear map (``A`` or ``B``) becomes :math:`g`.
    hidden : sequence of int
        Hidden layer widths (``tanh``).
    epochs : int
        Passes over the training stars (``epochs=0`` returns the linear model in MLP form).
    learning_rate : float
        Adam step size.
    batch_size : int, optional
        Stars per step (default ``min(128, N)``).
    progress : bool

    Returns
    -------
    LuxMLPFit
        ``model``, the training latents ``z`` the MLP saw, and the loss ``history``.
    """
    if not isinstance(lux_fit, lux.LuxFit):
        raise TypeError(f"lux_fit: expected a LuxFit (from lux.fit), found {type(lux_fit).__name__}")
    base = lux_fit.model
    if output not in OUTPUTS:
        raise ValueError(f"output: expected one of {OUTPUTS}, found {output!r}")
    if base.label_masks is not None:
        raise ValueError("lux_fit: models trained with label_masks are not supported by the MLP variant")
    hidden = _check_hidden(hidden)
    if isinstance(learning_rate, bool) or not (isinstance(learning_rate, numbers.Real) and 0 < learning_rate < np.inf):
        raise ValueError(f"learning_rate: expected a finite value > 0, found {learning_rate!r}")
    labels = check_labels(labels, base)
    n = labels.n_stars
    if np.shape(lux_fit.z)[0] != n:
        raise ValueError(f"labels: expected {np.shape(lux_fit.z)[0]} stars as in lux_fit.z, found {n}")
    flux, ivar, _ = as_outputs(spectra, n, base)
    dtype = default_float()

    if output == "labels":
        std = base.label_scaler.transform(labels)
        y, w = np.asarray(std.values, dtype), np.asarray(std.ivar, dtype)
        z = np.asarray(lux.infer_latents(base, spectra=spectra, omega=base.omega, progress=False).z, dtype)
        skip = np.asarray(base.params.A, dtype)
    else:
        y = flux
        w = flux_weights_np(ivar, base.params.ln_s).astype(dtype, copy=False)
        z = np.asarray(lux_fit.z, dtype)
        skip = np.asarray(base.params.B, dtype)
    center = z.mean(axis=0)
    sd = z.std(axis=0)
    scale = np.where(sd > 1e-6 * max(float(sd.max()), 1e-30), sd, 1.0).astype(dtype)

    n_out, p = skip.shape
    net = _ResidualMLP(p, hidden, n_out, dtype=np.dtype(dtype).name, rngs=nnx.Rngs(params=jax.random.fold_in(key, 0)))
    graphdef, state = nnx.split(net)
    params = MLPParams(jnp.asarray(skip), jax.tree_util.tree_map(jnp.asarray, nnx.to_pure_dict(state)))
    center_j, scale_j = jnp.asarray(center), jnp.asarray(scale)
    n_obs = max(float(np.count_nonzero(w > 0)) / n, 1.0)  # measured outputs per star, for a readable metric

    def loss_fn(params, batch, key):
        z_b, y_b, w_b = batch
        chi2 = jnp.sum(w_b * jnp.square(y_b - _g(graphdef, params, center_j, scale_j, z_b)), axis=1)
        loss = jnp.mean(chi2)
        return loss, {"chi2_per_obs": loss / n_obs}

    optimizer = optax.adam(learning_rate)
    step = make_train_step(loss_fn, optimizer, has_aux=True)
    batch_size = min(128, n) if batch_size is None else batch_size
    result = train_loop(
        step,
        params,
        optimizer.init(params),
        (z, y, w),
        key=jax.random.fold_in(key, 1),
        epochs=epochs,
        batch_size=batch_size,
        progress=progress,
    )
    trained = jax.tree_util.tree_map(np.asarray, result.params)
    model = LuxMLPModel(base, output, trained, hidden, center, scale)
    return LuxMLPFit(model, z, result.history)


# -- test step -------------------------------------------------------------------------


def decode_output(model: LuxMLPModel, z) -> np.ndarray:
    r"""The MLP output :math:`g(z)` for latents ``z`` ``(n, P)``.

    Returns ``(n, M)`` labels in physical units (``output="labels"``) or
    ``(n, L)`` model fluxes (``output="spectra"``).
    """
    _check_model(model)
    z = np.asarray(z, default_float())
    if z.ndim != 2 or z.shape[1] != model.lux.n_latents:
        raise ValueError(f"z: expected shape (n, {model.lux.n_latents}), found {z.shape}")
    params = jax.tree_util.tree_map(jnp.asarray, model.params)
    out = np.asarray(_g_jit(model.graphdef, params, jnp.asarray(model.z_center), jnp.asarray(model.z_scale), z))
    return model.lux.label_scaler.inverse(out) if model.output == "labels" else out


def _omega(model: LuxMLPModel, omega) -> float:
    omega = model.lux.omega if omega is None else float(omega)
    if not (np.isfinite(omega) and omega >= 0):
        raise ValueError(f"omega: expected a finite value >= 0, found {omega!r}")
    return omega


def infer_latents_mlp(
    model: LuxMLPModel,
    spectra: Spectra | Sequence,
    *,
    omega: float | None = None,
    covariance: bool = False,
    progress: bool = True,
) -> LatentFit:
    r"""Latents of new stars from their spectra, minimising the flux chi2 plus :math:`\Omega\lVert z\rVert^2`.

    ``output="labels"``: the fluxes are linear in ``z`` (:math:`f = Bz`), so
    this is :func:`jaxspec.models.lux.infer_latents`.  ``output="spectra"``:
    :math:`f = g(z)` is nonlinear; :func:`jaxspec.optim.fit_latents` with
    ``method="dense_gauss_newton"`` (Gauss-Newton with adaptive damping; the
    undamped ``"gauss_newton"`` stalls on some stars in float32) from the
    linear-Lux latents, weights
    :math:`1/(\sigma^2 + s^2)` and the Gaussian prior of precision
    :math:`2\Omega I`.  ``omega`` defaults to the model's training
    :math:`\Omega` (note: :func:`jaxspec.models.lux.predict_labels` defaults
    to 0, the paper's unpenalised test step; pass ``omega=0`` for that).
    """
    _check_model(model)
    omega = _omega(model, omega)
    if model.output == "labels":
        return lux.infer_latents(model.lux, spectra=spectra, omega=omega, covariance=covariance, progress=progress)
    z_lin = lux.infer_latents(model.lux, spectra=spectra, omega=omega, progress=False)
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
        options=FitOptions(chunk_size=1024),
        covariance=covariance,
        progress=progress,
    )


def predict_labels_mlp(
    model: LuxMLPModel, spectra: Spectra | Sequence, *, omega: float | None = None, progress: bool = True
) -> lux.LabelPrediction:
    r"""Labels of new stars from their spectra: :math:`\hat z` by :func:`infer_latents_mlp`, then the label map.

    :math:`\hat\ell = g(\hat z)` (``output="labels"``) or :math:`A\hat z`
    (``output="spectra"``), in physical units.  The covariance is
    :math:`J \Sigma_z J^\top` with :math:`J = \partial\hat\ell/\partial z` at
    :math:`\hat z` and :math:`\Sigma_z` the Laplace latent covariance (no
    calibrated label scatter: ``model.lux.label_scatter`` belongs to ``A z``); flagged
    stars (no measured pixel, failed fit) get the scaler centre and ``ivar = 0``.
    ``omega``: as in :func:`infer_latents_mlp` (default: the model's).

    Returns
    -------
    jaxspec.models.lux.LabelPrediction
    """
    fit_ = infer_latents_mlp(model, spectra, omega=omega, covariance=True, progress=progress)
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
    return lux.LabelPrediction(labels, cov, z, np.asarray(fit_.reduced_chi2), flagged)
