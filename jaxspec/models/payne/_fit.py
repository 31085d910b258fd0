r"""Training a single-network Payne emulator on a synthetic grid through the engine's train step and loop.

The network (:func:`~jaxspec.models.payne.decode_scaled`, one star, ``vmap``-ed)
maps scaled labels :math:`s \in [-\tfrac12, \tfrac12]^M` to the flux of all
``L`` pixels.  On a batch :math:`B` of training spectra :math:`f_n` with
measured-pixel masks :math:`m_{nl}` (``ivar > 0``) the loss is the mean
residual over the measured entries,

.. math::

    \mathcal{L}_1 = \frac{\sum_{n \in B} \sum_l m_{nl}\, |f_{nl} - \mathrm{NN}(s_n)_l|}
                         {\sum_{n \in B} \sum_l m_{nl}}, \qquad
    \mathcal{L}_2 = \frac{\sum_{n \in B} \sum_l m_{nl}\, (f_{nl} - \mathrm{NN}(s_n)_l)^2}
                         {\sum_{n \in B} \sum_l m_{nl}},

which is PyTorch's ``L1Loss`` / ``MSELoss`` (The Payne's) when nothing is
masked.  The parameters are the model's own pytree, a tuple of
:class:`~jaxspec.models.payne.Layer` in (out, in) layout, so training and
prediction evaluate the same function.
"""

from __future__ import annotations

import itertools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxspec.data._checks import check_key
from jaxspec.data.containers import Labels, Spectra, default_float
from jaxspec.models._common import (
    FitResult,
    check_finite_measured,
    check_label_columns,
    check_measured,
    check_stars,
    on_device,
)
from jaxspec.models.payne._config import Config
from jaxspec.models.payne._model import Layer, Model, one_star
from jaxspec.optim.train import make_train_step, make_validation, train_loop, validation_split
from jaxspec.typing import Key

__all__ = ["batch_loss", "fit", "init_params", "make_optimizer"]


def init_params(key: Key, sizes: tuple, dtype=None) -> tuple:
    r"""Initial weights of the network ``sizes[0] -> ... -> sizes[-1]``: PyTorch's ``nn.Linear`` default.

    Weights and biases of a layer with ``n_in`` inputs are uniform on
    :math:`[-1/\sqrt{n_\mathrm{in}}, 1/\sqrt{n_\mathrm{in}}]` (how the
    reference's network starts); layer ``i`` draws from ``fold_in(key, i)``.
    Returns a tuple of :class:`Layer` in (out, in) layout, default float dtype.
    """
    dtype = default_float() if dtype is None else dtype
    layers = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        kw, kb = jax.random.split(jax.random.fold_in(key, i))
        bound = 1.0 / np.sqrt(n_in)
        w = jax.random.uniform(kw, (n_out, n_in), dtype, -bound, bound)
        layers.append(Layer(w, jax.random.uniform(kb, (n_out,), dtype, -bound, bound)))
    return tuple(layers)


def batch_loss(kind: str = "l1"):
    r"""``loss_fn(params, batch, key)`` for ``make_train_step``: the module's loss, ``kind`` "l1" or "l2".

    ``batch`` is ``(s, flux, mask)``: scaled labels ``(B, M)``, flux
    ``(B, L)`` (any finite value where masked) and the measured-pixel mask
    ``(B, L)`` bool.  ``key`` is not used (the loss is deterministic).  A
    batch with nothing measured has loss 0.
    """
    if kind not in ("l1", "l2"):
        raise ValueError(f"kind: expected 'l1' or 'l2', found {kind!r}")

    def loss_fn(params, batch, key):
        del key
        s, flux, mask = batch
        r = jnp.where(mask, jax.vmap(one_star, in_axes=(None, 0))(params, s) - flux, 0.0)
        total = jnp.sum(jnp.abs(r) if kind == "l1" else jnp.square(r))
        return total / jnp.maximum(jnp.sum(mask, dtype=r.dtype), 1.0)

    return loss_fn


def make_optimizer(config: Config = Config()) -> optax.GradientTransformation:  # noqa: B008 - frozen
    """The gradient times ``config.loss_scale``, then RAdam (or Adam) at ``config.learning_rate``.

    Scaling the gradient is scaling the loss (The Payne trains on ``1e4 * L1``), with the loss itself kept
    in flux units for the history.
    """
    opt = optax.radam if config.optimizer == "radam" else optax.adam
    return optax.chain(optax.scale(float(config.loss_scale)), opt(float(config.learning_rate)))


def _training_set(spectra, labels) -> tuple:
    """Checked arrays of the usable stars: labels ``(n, M)`` float64, flux ``(n, L)``, mask ``(n, L)``, rows used."""
    if not isinstance(spectra, Spectra):
        raise TypeError(f"spectra: expected Spectra (flux of the synthetic grid), found {type(spectra).__name__}")
    if not isinstance(labels, Labels):
        raise TypeError(
            f"labels: expected Labels (their names become the emulator's inputs), found {type(labels).__name__}"
        )
    check_stars(spectra.n_stars, "spectra")
    if labels.n_stars != spectra.n_stars:
        raise ValueError(f"labels: expected {spectra.n_stars} stars (as spectra), found {labels.n_stars}")
    check_finite_measured(spectra.flux, spectra.ivar, "spectra")
    check_finite_measured(labels.values, labels.ivar, "labels")
    check_measured(spectra.ivar, "spectra")
    check_label_columns(labels.ivar, labels.names)
    mask = np.asarray(spectra.ivar) > 0
    complete = np.all(np.asarray(labels.ivar) > 0, axis=1)
    used = np.flatnonzero(complete & mask.any(axis=1))
    if used.size < 2:
        raise ValueError(f"labels: expected at least 2 stars with every label and a measured pixel, found {used.size}")
    values = np.asarray(labels.values, np.float64)[used]
    flat = np.ptp(values, axis=0) == 0
    if flat.any():
        j = int(np.flatnonzero(flat)[0])
        raise ValueError(
            f"labels: expected every label to vary over the training stars (x_min < x_max), "
            f"found {labels.names[j]!r} equal to {float(values[0, j])!r} in all {used.size}"
        )
    if not complete.all():
        warnings.warn(
            f"labels: {int((~complete).sum())} of {labels.n_stars} stars miss a label (ivar == 0) and are left "
            "out of training (the emulator needs every label of a star)",
            UserWarning,
            stacklevel=3,
        )
    dtype = default_float()
    flux = np.where(mask[used], np.asarray(spectra.flux)[used], 0.0).astype(dtype)
    return values, flux, mask[used], used


def _output_layer(layer: Layer, flux: np.ndarray, mask: np.ndarray) -> Layer:
    """The last layer started at the training set's mean spectrum: bias = the mean measured flux per pixel.

    The reference starts the bias near 0, and at a learning rate of 1e-4 the network spends its first
    thousands of steps learning the continuum level.  A pixel measured in no training star gets bias 1
    (the continuum) and a zero weight row; its gradient is 0, so it stays there.
    """
    counts = mask.sum(axis=0)
    seen = counts > 0
    mean = np.where(seen, np.where(mask, flux, 0.0).sum(axis=0, dtype=np.float64) / np.maximum(counts, 1), 1.0)
    dtype = layer.b.dtype
    return Layer(jnp.where(jnp.asarray(seen)[:, None], layer.w, 0.0), jnp.asarray(mean, dtype))


def _every(validation, every: int, epochs: int):
    """``validation`` after epochs ``0, every, 2 every, ...`` and the last; between them its last value again.

    :func:`train_loop` calls it once after each epoch, in order, and keeps the params of a *strictly* lower
    value than the best so far, so a repeated value never displaces the best: the best weights are chosen
    among the evaluated epochs only.
    """
    calls, last = itertools.count(), [None]

    def validate(params):
        epoch = next(calls)
        if epoch % every == 0 or epoch == epochs - 1:
            last[0] = validation(params)
        return last[0]

    return validate


def fit(
    spectra: Spectra,
    labels: Labels,
    *,
    key: Key,
    config: Config = Config(),  # noqa: B008 - a frozen dataclass
    progress: bool = True,
) -> FitResult:
    r"""Train a single-network Payne emulator on the spectra of a synthetic grid and their labels.

    Labels are scaled to the box of the training labels,
    :math:`s = (y - x_{\min})/(x_{\max} - x_{\min}) - 1/2` with
    :math:`x_{\min}, x_{\max}` the smallest and largest value of each label
    over all the usable stars given (validation stars included, so the box
    is the grid's); the network ``M -> config.hidden -> L`` (LeakyReLU 0.01
    after every hidden layer, linear output) is trained on the module's
    :math:`\mathcal{L}_1` (or :math:`\mathcal{L}_2`) with RAdam on minibatches
    (:func:`jaxspec.optim.train.make_train_step` and
    :func:`~jaxspec.optim.train.train_loop`), validated every
    ``config.validate_every`` epochs on a held-out random
    ``config.validation_frac`` of the stars, and the weights of the lowest
    validation loss are kept.

    Parameters
    ----------
    spectra : Spectra ``(N, L)``
        Continuum-normalised flux of the grid.  ``ivar`` only masks:
        entries with ``ivar > 0`` count equally (a synthetic grid has no
        noise, and a weight would let a spectrum's nominal S/N steer the
        emulator), ``ivar == 0`` ones not at all.  A star with no measured
        pixel is left out; a pixel measured in no star predicts 1.
    labels : Labels ``(N, M)``
        Physical units; their ``names`` (in this order) become the
        emulator's inputs.  Only ``ivar > 0`` is read (grid labels are
        exact).  A star missing any label is left out with a
        ``UserWarning`` (the emulator needs every label of a star).
    key : jax.random key
        The validation split (``fold_in(key, 0)``), the initial weights
        (``1``, PyTorch's ``nn.Linear`` default, the output bias at the
        training set's mean spectrum) and the minibatch order (``2``).
    config : Config
    progress : bool
        A progress bar over epochs with the losses.

    Returns
    -------
    FitResult
        ``model``: a :class:`~jaxspec.models.payne.Model` of
        ``file_format == "network"`` with ``config``, the labels' names and
        the spectra's wavelength grid (:func:`save_payne_format` writes the
        Payne file, ``jaxspec.io.save`` the model).  ``history``: per epoch
        ``"loss"`` (the mean training loss, flux units, unscaled) and
        ``"grad_norm"``; per validation ``"val_loss"`` (the loss over all
        validation spectra) and ``"val_epoch"``.  ``converged``: False (a
        fixed number of epochs).  ``aux``: ``"best_epoch"`` (the epoch whose
        weights the model has; None without validation),
        ``"train_index"`` and ``"validation_index"`` (rows of the input).

    Raises
    ------
    TypeError, ValueError
        Naming the argument: ``spectra`` or ``labels`` not the containers,
        zero stars, lengths that differ, every pixel masked, NaN where
        ``ivar > 0``, a label measured for no star, fewer than 2 usable
        stars, a label with one value only; a bad ``key`` or ``config``.
    FloatingPointError
        The training or validation loss became non-finite.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config: expected a payne.Config, found {type(config).__name__}")
    check_key(key)
    values, flux, mask, used = _training_set(spectra, labels)
    x_min, x_max = values.min(axis=0), values.max(axis=0)
    s = ((values - x_min) / (x_max - x_min) - 0.5).astype(flux.dtype)
    train, val = validation_split(used.size, float(config.validation_frac), jax.random.fold_in(key, 0))

    sizes = (values.shape[1], *config.hidden, flux.shape[1])
    params = init_params(jax.random.fold_in(key, 1), sizes, flux.dtype)
    params = (*params[:-1], _output_layer(params[-1], flux[train], mask[train]))
    optimizer = make_optimizer(config)
    loss_fn = batch_loss(config.loss)
    batch_size = min(int(config.batch_size), train.size)
    epochs, every = int(config.epochs), int(config.validate_every)
    validation = None
    if val.size:
        data = (s[val], flux[val], mask[val])
        validation = _every(make_validation(loss_fn, data, batch_size=batch_size), every, epochs)
    result = train_loop(
        make_train_step(loss_fn, optimizer),
        params,
        optimizer.init(params),
        (s[train], flux[train], mask[train]),
        key=jax.random.fold_in(key, 2),
        epochs=epochs,
        batch_size=batch_size,
        validation=validation,
        progress=progress,
    )
    history = dict(result.history)
    if validation is not None:
        rows = np.array([e for e in range(len(history["loss"])) if e % every == 0 or e == epochs - 1])
        history.update(val_loss=history["val_loss"][rows], val_epoch=rows)
    best = result.params if result.best_params is None else result.best_params
    model = Model(best, x_min, x_max, tuple(labels.names), spectra.wavelength, config)
    aux = {"best_epoch": result.best_epoch, "train_index": used[train], "validation_index": used[val]}
    return FitResult(on_device(model), history, False, aux)
