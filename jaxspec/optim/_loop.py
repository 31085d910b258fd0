"""The minibatch loop around a train step: :func:`train_loop` and :func:`make_validation`.

Re-exported by :mod:`jaxspec.optim.train`; see its docstring for the step contract.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxspec.data._checks import check_key
from jaxspec.optim import _checkpoint


class Checkpoint(NamedTuple):
    """Where and how often :func:`train_loop` saves its state.

    Attributes
    ----------
    path : str or path-like
        The ``.npz`` file (its folder must exist).  If it exists when ``fit``
        starts, training resumes from it.
    every : int
        Save after every ``every`` epochs, and after the last one.
    """

    path: str | os.PathLike
    every: int = 1


class TrainResult(NamedTuple):
    """What :func:`train_loop` returns.

    Attributes
    ----------
    params, opt_state : pytrees
        After the last epoch run.
    history : dict of str to numpy array
        One row per epoch: the mean over the epoch's steps of each metric the
        step returns (``"loss"``, ``"grad_norm"``, aux metrics), and
        ``"val_loss"`` with validation.
    converged : bool
        True when early stopping fired: the validation loss did not improve
        for ``patience`` epochs.
    best_epoch : int or None
        Epoch (0-based) of the lowest validation loss; None without validation.
    best_params : pytree or None
        Params at ``best_epoch``; None without validation.
    """

    params: Any
    opt_state: Any
    history: dict[str, np.ndarray]
    converged: bool
    best_epoch: int | None
    best_params: Any


class Unpaired(NamedTuple):
    """Two datasets without a row-to-row pairing, trained on together (two domains of a GAN).

    :func:`train_loop` runs each epoch over a fresh permutation of ``first``
    (its rows set the epoch's length, ``len(first) // batch_size`` steps) and
    draws ``second``'s rows alongside from permutations of their own, a new one
    started whenever the last is used up (the authors' loop over two data
    loaders in Cycle-StarNet).  A step's batch is an ``Unpaired`` of
    ``batch_size`` rows of each.  :func:`make_validation` pairs row ``i`` of
    ``first`` with row ``i mod len(second)``.

    Attributes
    ----------
    first, second : pytrees of arrays
        Each with one leading (star) axis of its own length.
    """

    first: Any
    second: Any


def _n_rows(data, name: str) -> int:
    if isinstance(data, Unpaired):
        _n_rows(data.second, f"{name}.second")
        return _n_rows(data.first, f"{name}.first")
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError(f"{name}: expected a pytree of arrays, found no arrays")
    shapes = [np.shape(x) for x in leaves]
    if any(len(s) == 0 for s in shapes) or len({s[0] for s in shapes}) != 1:
        raise ValueError(f"{name}: every array needs the same leading (star) axis, found shapes {shapes}")
    return shapes[0][0]


def _take(tree, idx):
    """Rows ``idx`` (a slice or integer array) of every leaf: on device for jax leaves, else on the host
    (with ``np.take``, which gathers rows faster than fancy indexing; benchmarks/RESULTS.md)."""

    def one(x):
        if isinstance(x, jax.Array):
            return x[idx]
        return np.asarray(x[idx] if isinstance(idx, slice) else np.take(x, idx, axis=0))

    return jax.tree_util.tree_map(one, tree)


def validation_split(n: int, frac: float, key) -> tuple[np.ndarray, np.ndarray]:
    """Sorted rows ``(train, validation)`` of ``n``: a random ``frac`` held out (at least 1 when ``frac > 0``,
    at most ``n - 1``), drawn by ``jax.random.permutation(key, n)``."""
    n_val = min(max(round(frac * n), 1 if frac > 0 else 0), n - 1)
    order = np.asarray(jax.random.permutation(key, n))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def make_validation(loss_fn: Callable, data, *, batch_size: int, has_aux=False, key=None) -> Callable:
    """A ``validation(params) -> scalar`` for :func:`train_loop`: the mean of ``loss_fn`` over ``data``.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params, batch, key)`` as in :func:`make_train_step`, a mean over the batch.
    data : pytree of arrays, leading axis ``n_stars``, or :class:`Unpaired`
    batch_size : int
        Rows per evaluation; the last partial batch is evaluated too (and
        weighted by its size), compiling a second time.
    has_aux : bool
    key : jax.random key, optional
        Fixed, so the validation loss of given params is always the same;
        batch ``i`` gets ``fold_in(key, i)``.  Default ``jax.random.key(0)``.
    """
    n = _n_rows(data, "data")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, found {batch_size!r}")
    key = jax.random.key(0) if key is None else key
    evaluate = _evaluator(loss_fn, bool(has_aux))

    def validation(params):
        total = 0.0
        for i, start in enumerate(range(0, n, batch_size)):
            stop = min(start + batch_size, n)
            total = total + (stop - start) * evaluate(params, _rows(data, slice(start, stop)), key, np.int32(i))
        return total / n

    return validation


@functools.lru_cache(maxsize=16)
def _evaluator(loss_fn: Callable, has_aux: bool) -> Callable:
    """The compiled validation loss of one batch, shared by every validation of the same ``loss_fn``."""

    @jax.jit
    def evaluate(params, batch, key, i):
        out = loss_fn(params, batch, jax.random.fold_in(key, i))
        return out[0] if has_aux else out

    return evaluate


@functools.lru_cache(maxsize=16)
def _keyed(step: Callable) -> Callable:
    """``step`` taking ``(root, s)`` and folding the step key in inside the compiled call.

    An eager ``fold_in`` per step is a computation of its own that queues behind the
    running step, so the host could not gather the next batch meanwhile (the sVAE
    loop variants of benchmarks/RESULTS.md).
    """

    def keyed(params, opt_state, batch, root, s):
        return step(params, opt_state, batch, jax.random.fold_in(root, s))

    return jax.jit(keyed)


def _scanned(step: Callable, k: int) -> Callable:
    """``k`` steps in one compiled call (``lax.scan``); step ``s`` of the epoch gets ``fold_in(root, s)`` as before."""

    def many(params, opt_state, group, root, start):
        def body(carry, xs):
            batch, s = xs
            p, o, m = step(*carry, batch, jax.random.fold_in(root, s))
            return (p, o), m

        (params, opt_state), ms = jax.lax.scan(body, (params, opt_state), (group, start + jnp.arange(k)))
        return params, opt_state, ms

    return jax.jit(many)


def _rows(data, idx: slice):
    """Rows ``idx`` of ``data``; of an :class:`Unpaired`, ``second``'s rows ``idx`` modulo its length."""
    if not isinstance(data, Unpaired):
        return _take(data, idx)
    n2 = _n_rows(data.second, "data.second")
    return Unpaired(_take(data.first, idx), _take(data.second, np.arange(idx.start, idx.stop) % n2))


def _second_order(data, shuffle_key, need: int) -> np.ndarray | None:
    """``need`` rows of an :class:`Unpaired`'s ``second``: consecutive permutations ``fold_in(shuffle_key, 1 + j)``."""
    if not isinstance(data, Unpaired) or need == 0:
        return None
    n2 = _n_rows(data.second, "data.second")
    keys = [jax.random.fold_in(shuffle_key, 1 + j) for j in range(-(-need // n2))]
    perms = [np.asarray(jax.random.permutation(k, n2)) for k in keys]
    return np.concatenate(perms)[:need]


def _gather(data, order, order2, start: int, stop: int):
    if order2 is None:
        return _take(data, order[start:stop])
    return Unpaired(_take(data.first, order[start:stop]), _take(data.second, order2[start:stop]))


def _run_epoch(step, params, opt_state, data, epoch_key, batch_size: int, many=None, per_call: int = 1):
    """One pass over a fresh permutation; returns params, opt_state and the epoch means of the step metrics.

    With ``many`` (from :func:`_scanned`), groups of ``per_call`` batches are gathered at once
    and run in one call; the steps left over at the end of the epoch run one by one.
    """
    n = _n_rows(data, "data")
    shuffle_key, root = jax.random.split(epoch_key)
    order = np.asarray(jax.random.permutation(shuffle_key, n))
    n_steps, s, metrics = n // batch_size, 0, []
    order2 = _second_order(data, shuffle_key, n_steps * batch_size)
    keyed = _keyed(step) if hasattr(step, "lower") else None  # a sharded step places its own arguments
    while s < n_steps:
        if many is not None and s + per_call <= n_steps:
            rows = _gather(data, order, order2, s * batch_size, (s + per_call) * batch_size)
            group = jax.tree_util.tree_map(lambda a: a.reshape(per_call, batch_size, *a.shape[1:]), rows)
            params, opt_state, m = many(params, opt_state, group, root, s)
            s += per_call
        else:
            batch = _gather(data, order, order2, s * batch_size, (s + 1) * batch_size)
            if keyed is None:
                params, opt_state, m = step(params, opt_state, batch, jax.random.fold_in(root, s))
            else:
                params, opt_state, m = keyed(params, opt_state, batch, root, np.int32(s))
            m = jax.tree_util.tree_map(lambda v: v[None], m)
            s += 1
        metrics.append(m)
    host = jax.device_get(metrics)
    return params, opt_state, {k: np.concatenate([np.asarray(m[k]) for m in host]).mean(axis=0) for k in host[0]}


def _best(history: dict) -> int | None:
    val = history.get("val_loss")
    return None if not val else int(np.argmin(np.asarray(val)))


def train_loop(
    step: Callable,
    params,
    opt_state,
    data,
    *,
    key,
    epochs: int,
    batch_size: int,
    validation: Callable | None = None,
    patience: int | None = None,
    checkpoint: Checkpoint | None = None,
    steps_per_call: int = 1,
    progress: bool = True,
) -> TrainResult:
    r"""Train with ``step`` over shuffled minibatches of ``data``.

    Each epoch draws a permutation of the stars, ``shuffle, root =
    jax.random.split(jax.random.fold_in(key, epoch))``, and runs ``n_stars //
    batch_size`` steps; step ``s`` gets ``jax.random.fold_in(root, s)``.  The
    last partial batch is dropped (a fresh permutation each epoch means every
    star is used), which keeps one batch shape and one compilation.  Batches
    are gathered on the host from numpy leaves (memmaps included), so a
    survey never has to fit on the device; jax leaves are gathered on device.

    Parameters
    ----------
    step : callable
        From :func:`make_train_step` or :func:`make_multi_step`; its metrics
        must include ``"loss"``.
    params, opt_state : pytrees
        Initial values (``optimizer.init(params)`` or :func:`init_groups`).
    data : pytree of arrays, leading axis ``n_stars``, or :class:`Unpaired`
        E.g. a :class:`~jaxspec.Spectra` or ``(x, y)``; two domains without a
        pairing as an ``Unpaired``.
    key : jax.random key
        Everything random (order, step keys) derives from it.
    epochs : int
        Total number of epochs, counting those of a resumed checkpoint.
    batch_size : int
        Rows per step, ``1 <= batch_size <= n_stars`` (a multiple of the
        device count when the step has a mesh).
    validation : callable, optional
        ``validation(params) -> scalar`` after each epoch (e.g.
        :func:`make_validation`); recorded as ``history["val_loss"]``.
    patience : int, optional
        Early stopping (needs ``validation``): stop after ``patience`` epochs
        without a strictly lower validation loss than the best so far.
    checkpoint : Checkpoint, optional
        Save the state every ``checkpoint.every`` epochs (atomically) and
        resume from ``checkpoint.path`` if it exists.  A resumed run equals an
        uninterrupted one bit for bit (same device, same ``key`` and data).
    steps_per_call : int
        Run this many steps in one compiled call (a ``lax.scan`` over batches gathered
        together): the per-step dispatch and gather overhead is paid once per call, which
        can matter where a call costs more than the step (small networks on a GPU).  The
        same batches and step keys as one step per call (results equal to rounding).
        Only for a step without a mesh.  Whether it pays depends on the step and the
        device (for the scatter VAE on a CPU it did not; benchmarks/RESULTS.md).
    progress : bool
        ``tqdm`` bar over epochs with the losses.

    Returns
    -------
    TrainResult
        ``(params, opt_state, history, converged, best_epoch, best_params)``.

    Raises
    ------
    FloatingPointError
        When an epoch's training or validation loss is not finite.
    """
    n = _n_rows(data, "data")
    if not callable(step):
        raise TypeError(f"step: expected a callable, found {type(step).__name__}")
    if not isinstance(epochs, int | np.integer) or epochs < 0:
        raise ValueError(f"epochs: expected an int >= 0, found {epochs!r}")
    if not isinstance(batch_size, int | np.integer) or not 1 <= batch_size <= n:
        raise ValueError(f"batch_size: expected an int in [1, {n}] (n_stars), found {batch_size!r}")
    if isinstance(data, Unpaired) and batch_size > _n_rows(data.second, "data.second"):
        n2 = _n_rows(data.second, "data.second")
        raise ValueError(f"batch_size: expected at most {n2} (the rows of data.second), found {batch_size!r}")
    if patience is not None and (validation is None or not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience: expected an int >= 1 together with validation, found {patience!r}")
    if checkpoint is not None and (not isinstance(checkpoint, Checkpoint) or checkpoint.every < 1):
        raise TypeError(f"checkpoint: expected Checkpoint(path, every >= 1), found {checkpoint!r}")

    check_key(key)
    if isinstance(steps_per_call, bool) or not isinstance(steps_per_call, int | np.integer) or steps_per_call < 1:
        raise ValueError(f"steps_per_call: expected an int >= 1, found {steps_per_call!r}")
    if steps_per_call > 1 and not hasattr(step, "lower"):
        raise ValueError("steps_per_call: > 1 needs a jitted step without a mesh (make_train_step(..., mesh=None))")
    many = _scanned(step, int(steps_per_call)) if steps_per_call > 1 else None
    if checkpoint is not None and not Path(checkpoint.path).parent.is_dir():
        raise FileNotFoundError(f"checkpoint: folder {Path(checkpoint.path).parent} does not exist")

    info = {
        "key": _checkpoint.key_signature(key),
        "n_stars": int(n),
        "batch_size": int(batch_size),
        "validation": validation is not None,
    }
    history: dict[str, list] = {}
    start, best_params = 0, None
    path = None if checkpoint is None else Path(checkpoint.path)
    if path is not None and path.exists():
        state = _checkpoint.load(path, params=params, opt_state=opt_state, info=info)
        start, params, opt_state, best_params = state.epoch, state.params, state.opt_state, state.best_params
        history = {k: list(v) for k, v in state.history.items()}
    best_epoch = _best(history)
    converged = (
        patience is not None and best_epoch is not None and len(history["val_loss"]) - 1 - best_epoch >= patience
    )

    bar = tqdm(total=epochs, initial=start, desc="train", unit="epoch", disable=not progress)
    epoch = start
    while epoch < epochs and not converged:
        params, opt_state, row = _run_epoch(
            step, params, opt_state, data, jax.random.fold_in(key, epoch), batch_size, many, int(steps_per_call)
        )
        if "loss" not in row:
            raise ValueError(f"step: its metrics must include 'loss', found {sorted(row)}")
        if not np.all(np.isfinite(row["loss"])):
            raise FloatingPointError(f"train_loop: training loss is {row['loss']} in epoch {epoch}")
        if validation is not None:
            row["val_loss"] = np.asarray(jax.device_get(validation(params)))
            if not np.isfinite(row["val_loss"]):
                raise FloatingPointError(f"train_loop: validation loss is {row['val_loss']} after epoch {epoch}")
            if best_epoch is None or row["val_loss"] < history["val_loss"][best_epoch]:
                best_epoch, best_params = epoch, params
            elif patience is not None and epoch - best_epoch >= patience:
                converged = True
        for k, v in row.items():
            history.setdefault(k, []).append(v)
        epoch += 1
        bar.update(1)
        bar.set_postfix({k: f"{float(row[k]):.4g}" for k in ("loss", "val_loss") if k in row})
        if path is not None and (epoch % checkpoint.every == 0 or epoch == epochs or converged):
            hist = {k: np.stack(v) for k, v in history.items()}
            _checkpoint.save(
                path, epoch=epoch, params=params, opt_state=opt_state, best_params=best_params, history=hist, info=info
            )
    bar.close()
    history_arrays = {k: np.stack(v) for k, v in history.items()}
    return TrainResult(params, opt_state, history_arrays, bool(converged), best_epoch, best_params)
