r"""Training a Mendis flow by maximum likelihood through the engine's train step and loop.

The loss of a minibatch ``B`` is the mean negative log-likelihood per star,

.. math::

    \mathcal L = -\frac{1}{|B|} \sum_{n \in B} \log p(x_n)
               = -\frac{1}{|B|} \sum_{n \in B} \log p_u(u_n) + \sum_d \log s_d

(nats per star, in the data's units; :mod:`jaxspec.models.flows._model`),
minimised by Adam with the reference's L2 weight decay added to the gradient.

**Masked pixels and missing labels.** A flow is a density of complete vectors:
it has no closed-form marginal over a subset of dimensions, so a masked entry
cannot simply be left out of :math:`\log p`.  During training each masked
entry of a star is *imputed by a fresh draw from its training marginal*,
:math:`u_d \sim \mathcal N(0, 1)` in standardised units (the per-pixel mean and
standard deviation of the stars that measure it), a new draw at every step.
The flow therefore learns the density of spectra whose masked pixels carry no
information about the rest, rather than a spike at a fill value (which a flow
would learn to make infinitely likely); a masked value never enters the loss
as a placeholder and never as NaN.  At evaluation
(:func:`~jaxspec.models.flows.log_prob`) a masked entry is set to its training
mean, the centre of that marginal: it then costs about what a typical value
costs, and the score of a star depends only on what is measured, up to the
flow's (learnt) coupling between pixels.  Stars with many masked pixels are
therefore scored less sharply.  A star with no measured pixel is left out of
training.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxspec.data._checks import check_key
from jaxspec.data.containers import Labels, Spectra, default_float
from jaxspec.models._common import (
    FitResult,
    _key,
    check_finite_measured,
    check_label_columns,
    check_measured,
    check_stars,
    on_device,
)
from jaxspec.models.flows._config import Config
from jaxspec.models.flows._flow import init_actnorm, init_blocks, init_whitening
from jaxspec.models.flows._model import Model, flow_specs, log_density_standard
from jaxspec.optim.train import Checkpoint, make_train_step, make_validation, train_loop, validation_split
from jaxspec.typing import Key

__all__ = ["batch_loss", "data_vectors", "fit", "make_optimizer", "with_params"]


def data_vectors(spectra: Spectra, labels: Labels, names: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``x (n, L + M)`` float64 (spectrum, then labels; finite, placeholders where masked) and ``measured (n, L + M)``.

    ``names``: the labels' order (default: ``labels.names``).  Checks types,
    star counts and that every measured value is finite.
    """
    if not isinstance(spectra, Spectra):
        raise TypeError(f"spectra: expected Spectra, found {type(spectra).__name__}")
    if not isinstance(labels, Labels):
        raise TypeError(f"labels: expected Labels (the y of x = (S, y)), found {type(labels).__name__}")
    check_stars(spectra.n_stars, "spectra")
    if labels.n_stars != spectra.n_stars:
        raise ValueError(f"labels: expected {spectra.n_stars} stars (as spectra), found {labels.n_stars}")
    if names is not None and tuple(labels.names) != names:
        if set(names) - set(labels.names):
            raise ValueError(f"labels: expected the model's labels {list(names)}, found {list(labels.names)}")
        labels = labels.select(names)
    check_finite_measured(spectra.flux, spectra.ivar, "spectra")
    check_finite_measured(labels.values, labels.ivar, "labels")
    measured = np.concatenate([np.asarray(spectra.ivar) > 0, np.asarray(labels.ivar) > 0], axis=1)
    x = np.concatenate([np.asarray(spectra.flux, np.float64), np.asarray(labels.values, np.float64)], axis=1)
    return np.where(measured, x, 0.0), measured


def _statistics(x: np.ndarray, measured: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation over the measured entries (0 and 1 where there are none;
    a standard deviation of 0 becomes 1)."""
    count = measured.sum(axis=0)
    mean = np.where(count > 0, x.sum(axis=0) / np.maximum(count, 1), 0.0)
    var = np.where(measured, np.square(x - mean), 0.0).sum(axis=0) / np.maximum(count, 1)
    std = np.sqrt(var)
    return mean, np.where((count > 0) & (std > 0), std, 1.0)


def with_params(model: Model, params, label_params) -> Model:
    """``model`` with other flow weights, unchecked: for traced weights inside a fit."""
    new = object.__new__(Model)
    for field in dataclasses.fields(Model):
        object.__setattr__(new, field.name, getattr(model, field.name))
    object.__setattr__(new, "params", params)
    object.__setattr__(new, "label_params", label_params)
    return new


def batch_loss(template: Model):
    """``loss_fn(params, batch, key)`` for :func:`~jaxspec.optim.train.make_train_step`: the standardised loss.

    ``params = (params, label_params)``; ``batch = (u, measured)``: standardised
    vectors ``(B, D)`` and their measured mask; masked entries are drawn from
    ``N(0, 1)`` with ``key`` (module docstring).  Returns ``(loss, {})`` with
    the loss :math:`-\\langle \\log p_u(u) \\rangle` in standardised units (the
    module equation without its constant :math:`\\sum_d \\log s_d`, which
    :func:`fit` adds to the history).  Only ``template``'s shapes, specs and
    LU permutations are used, never its weights.
    """
    skeleton = with_params(template, None, None)  # keeps no weights alive in the step cache

    def loss_fn(params, batch, key):
        u, measured = batch
        u = jnp.where(measured, u, jax.random.normal(key, u.shape, u.dtype))
        return -jnp.mean(log_density_standard(with_params(skeleton, *params), u)), {}

    return loss_fn


_STEPS: dict = {}  # (specs, LU permutations and signs, optimiser, mesh, dtype) -> (step, loss_fn)


def _step(template: Model, config: Config, mesh) -> tuple:
    """The compiled train step and its loss for ``template``'s flow, shared by every fit of the same shape.

    A step depends on the flow's specs and fixed LU permutations, the optimiser
    settings and the mesh, not on the data or the weights: refitting with the
    same key and sizes (a resumed or repeated fit, another epoch count) reuses
    the compilation.  The last 8 are kept.
    """
    signature = (
        template.specs,
        _key(template.fixed),
        _key(template.label_fixed),
        float(config.learning_rate),
        float(config.weight_decay),
        mesh,
        np.dtype(template.center.dtype).name,
    )
    if signature not in _STEPS:
        loss_fn = batch_loss(template)
        _STEPS[signature] = (make_train_step(loss_fn, make_optimizer(config), has_aux=True, mesh=mesh), loss_fn)
        while len(_STEPS) > 8:
            _STEPS.pop(next(iter(_STEPS)))
    return _STEPS[signature]


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """The reference's optimiser: the gradient plus ``weight_decay * params``, then Adam at ``learning_rate``."""
    return optax.chain(optax.add_decayed_weights(float(config.weight_decay)), optax.adam(float(config.learning_rate)))


def _initial(key, config: Config, u: np.ndarray, names: tuple, wavelength, center, spread, data=None) -> Model:
    """The untrained model: mixings, identity couplings, ActNorms set from the batch ``u`` (masked = 0).

    With ``config.init == "whiten"`` the first mixing of each flow whitens
    ``data`` (the standardised training vectors, :func:`~jaxspec.models.flows._flow.init_whitening`);
    otherwise every mixing is a random rotation.
    """
    n_pix = u.shape[1] - len(names)
    main, labels = flow_specs(config, n_pix, len(names))
    dtype = u.dtype
    whiten = config.init == "whiten" and data is not None

    def start(spec, params, fixed, batch, rows, context=None):
        params = init_actnorm(params, fixed, spec, batch, context)
        if whiten:
            params, fixed = init_whitening(params, fixed, spec, rows)
            params = init_actnorm(params, fixed, spec, batch, context)
        return params, fixed

    params, fixed = init_blocks(jax.random.fold_in(key, 0), main, dtype)
    if labels is None:
        params, fixed = start(main, params, fixed, u, data)
        label_params = label_fixed = None
    else:
        label_params, label_fixed = init_blocks(jax.random.fold_in(key, 1), labels, dtype)
        label_rows = None if data is None else data[:, n_pix:]
        label_params, label_fixed = start(labels, label_params, label_fixed, u[:, n_pix:], label_rows)
        rows = None if data is None else data[:, :n_pix]
        params, fixed = start(main, params, fixed, u[:, :n_pix], rows, u[:, n_pix:])
    as_numpy = lambda f: None if f is None else type(f)(*(np.asarray(a) for a in f))  # noqa: E731
    return Model(
        params,
        label_params,
        jnp.asarray(center, dtype),
        jnp.asarray(spread, dtype),
        fixed=as_numpy(fixed),
        label_fixed=as_numpy(label_fixed),
        label_names=names,
        wavelength=wavelength,
        config=config,
    )


def fit(
    spectra: Spectra,
    labels: Labels,
    *,
    key: Key,
    config: Config = Config(),  # noqa: B008 - a frozen dataclass
    mesh=None,
    checkpoint: Checkpoint | None = None,
    progress: bool = True,
) -> FitResult:
    r"""Train a Mendis flow of ``x = (S, y)`` on spectra and their labels by maximum likelihood.

    Parameters
    ----------
    spectra : Spectra ``(n, L)``
        Continuum-normalised training spectra; masked pixels (``ivar == 0``)
        are imputed as the module docstring says, ``ivar`` is not otherwise
        used (the flow models the spectra as observed, noise included, as the
        paper does).
    labels : Labels ``(n, M)``
        The ``y`` of each star (missing values imputed like masked pixels).
    key : jax.random key
        Validation split, initial weights, minibatch order, imputation draws.
    config : Config
    mesh : jax.sharding.Mesh, optional
        Data parallelism over ``"data"`` (:func:`jaxspec.optim.sharding.data_mesh`);
        the batch size is rounded down to a multiple of the device count.
    checkpoint : jaxspec.optim.train.Checkpoint, optional
        Save the training state every ``checkpoint.every`` epochs and resume
        from ``checkpoint.path`` if it exists (a resumed fit equals an
        uninterrupted one bit for bit).
    progress : bool

    Returns
    -------
    FitResult
        ``model``; ``history`` per epoch: ``"loss"`` (mean negative
        log-likelihood per star, nats, data units), ``"nll_std"`` (the same in
        standardised units), ``"grad_norm"``, ``"val_loss"`` with validation;
        ``converged``: early stopping fired; ``aux``: ``"best_epoch"``,
        ``"train_rows"`` and ``"validation_rows"`` (indices into the stars given).
    """
    if not isinstance(config, Config):
        raise TypeError(f"config: expected a flows.Config, found {type(config).__name__}")
    check_key(key)
    x, measured = data_vectors(spectra, labels)
    names = tuple(labels.names)
    n_pix = spectra.n_pix
    check_measured(spectra.ivar, "spectra")
    check_label_columns(labels.ivar, names)
    main, _ = flow_specs(config, n_pix, len(names))
    if config.kind == "structured" and len(names) < 2:
        raise ValueError(f"labels: config.kind = 'structured' needs at least 2 labels, found {len(names)}")
    if main.dim % main.mixed:
        raise ValueError(f"config.channels: expected a divisor of the {main.dim} mixed dimensions, found {main.mixed}")
    used = np.flatnonzero(measured[:, :n_pix].any(axis=1))
    if used.size < 2:
        raise ValueError(f"spectra: expected at least 2 stars with a measured pixel, found {used.size}")
    train_rows, val_rows = validation_split(used.size, config.validation_frac, jax.random.fold_in(key, 0))
    train_rows, val_rows = used[train_rows], used[val_rows]
    center, spread = _statistics(x[train_rows], measured[train_rows])
    dtype = default_float()
    u = np.where(measured, (x - center) / spread, 0.0).astype(dtype)

    size = 1 if mesh is None else mesh.devices.size
    batch_size = min(int(config.batch_size), train_rows.size)
    batch_size -= batch_size % size
    if batch_size == 0:
        raise ValueError(f"spectra: {train_rows.size} training stars are fewer than the {size} devices of the mesh")
    first = np.asarray(jax.random.choice(jax.random.fold_in(key, 1), train_rows, (batch_size,), replace=False))
    template = _initial(
        jax.random.fold_in(key, 2), config, u[first], names, spectra.wavelength, center, spread, u[train_rows]
    )

    step, loss_fn = _step(template, config, mesh)
    optimizer = make_optimizer(config)
    params = (template.params, template.label_params)
    validation = None
    if val_rows.size:
        val_set = (u[val_rows], measured[val_rows])
        validation = make_validation(
            loss_fn, val_set, batch_size=batch_size, has_aux=True, key=jax.random.fold_in(key, 3)
        )
    result = train_loop(
        step,
        params,
        optimizer.init(params),
        (u[train_rows], measured[train_rows]),
        key=jax.random.fold_in(key, 4),
        epochs=int(config.epochs),
        batch_size=batch_size,
        validation=validation,
        patience=config.patience,
        checkpoint=checkpoint,
        progress=progress,
    )
    best = result.params if result.best_params is None else result.best_params
    model = on_device(dataclasses.replace(template, params=best[0], label_params=best[1]))
    offset = float(np.sum(np.log(spread)))
    history = {"loss": result.history["loss"] + offset, "nll_std": result.history["loss"]}
    history.update({k: v + offset if k == "val_loss" else v for k, v in result.history.items() if k != "loss"})
    aux = {"best_epoch": result.best_epoch, "train_rows": train_rows, "validation_rows": val_rows}
    return FitResult(model, history, bool(result.converged), aux)
