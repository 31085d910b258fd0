r"""Jit-compiled, data-parallel train steps and the minibatch loop around them.

The step follows the optax contract::

    step(params, opt_state, batch, key) -> (params, opt_state, metrics)

compiled once per batch shape; the loss, the optimiser and every flag are
closed over, never traced.  :func:`make_train_step` builds it from one loss,
:func:`make_multi_step` from several parameter groups updated one after the
other inside the same compiled step (generator then critic), and :func:`fit`
loops a step over shuffled minibatches with validation, early stopping and
checkpoints that resume bit for bit.

With a ``mesh`` (:func:`jaxspec.optim.sharding.data_mesh`) the batch is split
over the ``"data"`` axis and params and optimiser state are replicated; XLA
inserts the gradient all-reduce.  On one device this changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxspec.optim._loop import Checkpoint, TrainResult, Unpaired, make_validation, train_loop, validation_split
from jaxspec.optim.sharding import batch_sharding, replicate, replicated

__all__ = [
    "Checkpoint",
    "Group",
    "TrainResult",
    "Unpaired",
    "init_groups",
    "make_multi_step",
    "make_train_step",
    "make_validation",
    "train_loop",
    "validation_split",
]


class Group(NamedTuple):
    """One parameter group of :func:`make_multi_step`.

    Attributes
    ----------
    name : str
        Field of the params NamedTuple/dataclass (or key of a params dict)
        holding this group's parameters.
    loss_fn : callable
        ``loss_fn(params, batch, key)`` of the *whole* params pytree, returning
        a scalar, or ``(scalar, dict_of_metrics)`` when ``has_aux``; only this
        group's field is differentiated and updated.
    optimizer : optax.GradientTransformation
    has_aux : bool
    passes : bool
        Hand values to the next group: the loss returns ``(scalar, (metrics, handoff))``
        (``has_aux`` must be True) and the next group's loss is called as
        ``loss_fn(params, batch, key, handoff)`` with ``handoff`` under
        ``jax.lax.stop_gradient``.  A GAN's critic step so reuses the generator's outputs
        of the same step (computed before the generator's update) instead of running the
        generator again.
    """

    name: str
    loss_fn: Callable
    optimizer: optax.GradientTransformation
    has_aux: bool = False
    passes: bool = False


def _check_optimizer(optimizer, name: str) -> None:
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(f"{name}: expected an optax.GradientTransformation, found {type(optimizer).__name__}")


def _value_and_grad(loss_fn: Callable, has_aux: bool, name: str) -> Callable:
    """``(loss, aux), grads`` of ``loss_fn`` with respect to its first argument, checking the loss is a scalar."""

    def wrapped(*args):
        out = loss_fn(*args)
        loss, aux = out if has_aux else (out, {})
        if jnp.ndim(loss) != 0:
            raise ValueError(f"{name}: expected a scalar loss, found shape {jnp.shape(loss)}")
        if not isinstance(aux, dict):
            raise TypeError(f"{name}: with has_aux=True, expected (loss, dict), found aux {type(aux).__name__}")
        return loss, aux

    return jax.value_and_grad(wrapped, has_aux=True)


def _jit(step: Callable, mesh) -> Callable:
    """Jit ``step``; with a mesh, place params/opt_state/key replicated and the batch split over ``"data"``."""
    if mesh is None:
        return jax.jit(step)
    rep, split, size = replicated(mesh), batch_sharding(mesh), mesh.devices.size
    compiled = jax.jit(step, out_shardings=rep)

    def sharded_step(params, opt_state, batch, key):
        for leaf in jax.tree_util.tree_leaves(batch):
            if np.shape(leaf)[0] % size:
                raise ValueError(f"batch: leading axis {np.shape(leaf)[0]} is not a multiple of the {size} devices")
        params, opt_state, key = replicate((params, opt_state, key), mesh)
        return compiled(params, opt_state, jax.device_put(batch, split), key)

    return sharded_step


def make_train_step(loss_fn: Callable, optimizer: optax.GradientTransformation, *, has_aux=False, mesh=None):
    r"""A jitted optimiser step on one loss.

    Parameters
    ----------
    loss_fn : callable
        ``loss_fn(params, batch, key) -> loss``, a scalar (e.g. the mean
        negative log-likelihood of the batch), or ``-> (loss, metrics)`` with
        ``has_aux=True`` (``metrics`` a dict of arrays).
    optimizer : optax.GradientTransformation
    has_aux : bool
    mesh : jax.sharding.Mesh, optional
        Data parallelism: the batch's leading axis (a multiple of the mesh
        size) is split over ``"data"``, params and optimiser state replicated.

    Returns
    -------
    step : callable
        ``step(params, opt_state, batch, key) -> (params, opt_state, metrics)``
        with ``metrics = {"loss": ..., **aux, "grad_norm": ...}``
        (``grad_norm`` is the global L2 norm of the gradient), taken at the
        params *before* the update.  Compiled once per batch shape and dtype.

    Examples
    --------
    >>> import jax, jax.numpy as jnp, optax
    >>> step = make_train_step(lambda p, b, k: jnp.sum((p - b) ** 2), optax.sgd(0.25))
    >>> p, s, m = step(jnp.zeros(2), optax.sgd(0.25).init(jnp.zeros(2)), jnp.ones((2,)), jax.random.key(0))
    >>> p.tolist(), float(m["loss"]), float(m["grad_norm"])
    ([0.5, 0.5], 2.0, 2.83)
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a callable, found {type(loss_fn).__name__}")
    _check_optimizer(optimizer, "optimizer")
    value_and_grad = _value_and_grad(loss_fn, has_aux, "loss_fn")

    def step(params, opt_state, batch, key):
        (loss, aux), grads = value_and_grad(params, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads)}

    return _jit(step, mesh)


def _get(params, name: str):
    if isinstance(params, dict):
        if name not in params:
            raise ValueError(f"groups: params dict has no key {name!r}; it has {sorted(params)}")
        return params[name]
    if not hasattr(params, name):
        raise ValueError(f"groups: params of type {type(params).__name__} has no field {name!r}")
    return getattr(params, name)


def _set(params, name: str, value):
    if isinstance(params, dict):
        return {**params, name: value}
    if hasattr(params, "_replace"):
        return params._replace(**{name: value})
    if dataclasses.is_dataclass(params):
        return dataclasses.replace(params, **{name: value})
    raise TypeError(f"params: expected a NamedTuple, dataclass or dict of groups, found {type(params).__name__}")


_HANDOFF = "__handoff__"


def init_groups(groups: Sequence[Group], params) -> tuple:
    """The optimiser state for :func:`make_multi_step`: one state per group, in group order."""
    return tuple(g.optimizer.init(_get(params, g.name)) for g in groups)


def make_multi_step(groups: Sequence[Group], *, mesh=None):
    r"""A jitted step that updates several parameter groups in a fixed order (e.g. generator, then critic).

    Group ``i`` takes one optimiser step on its own loss, evaluated at the
    params as left by groups ``0..i-1`` of the *same* step:

    .. math::
        \theta_A' = \theta_A - \mathrm{opt}_A(\nabla_A L_A(\theta_A, \theta_B)), \qquad
        \theta_B' = \theta_B - \mathrm{opt}_B(\nabla_B L_B(\theta_A', \theta_B)).

    Parameters
    ----------
    groups : sequence of Group
        Distinct ``name``\ s, each a field (or dict key) of the params pytree.
    mesh : jax.sharding.Mesh, optional
        As in :func:`make_train_step`.

    Returns
    -------
    step : callable
        ``step(params, opt_state, batch, key) -> (params, opt_state, metrics)``
        with ``opt_state`` from :func:`init_groups` (a tuple, one per group);
        group ``i``'s loss gets ``jax.random.fold_in(key, i)``.  ``metrics``
        holds ``"<name>/loss"``, ``"<name>/grad_norm"``, ``"<name>/<aux>"``
        for each group, and ``"loss"``: the first group's loss.
    """
    groups = tuple(groups)
    if not groups:
        raise ValueError("groups: expected at least one Group, found none")
    for i, g in enumerate(groups):
        if not isinstance(g, Group):
            raise TypeError(f"groups[{i}]: expected a Group, found {type(g).__name__}")
        _check_optimizer(g.optimizer, f"groups[{i}].optimizer")
        if g.passes and not g.has_aux:
            raise ValueError(
                f"groups[{i}]: passes=True needs has_aux=True (the loss returns (loss, (metrics, handoff)))"
            )
    if groups[-1].passes:
        raise ValueError("groups: the last group has no next group to pass to (passes=True)")
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise ValueError(f"groups: names must be distinct, found {names}")

    def step(params, opt_state, batch, key):
        if len(opt_state) != len(groups):
            raise ValueError(f"opt_state: expected {len(groups)} states (init_groups), found {len(opt_state)}")
        metrics, states, handoff = {}, [], ()
        for i, g in enumerate(groups):
            sub = _get(params, g.name)

            def group_loss(p, params=params, g=g, i=i, extra=handoff):
                out = g.loss_fn(_set(params, g.name, p), batch, jax.random.fold_in(key, i), *extra)
                if not g.passes:
                    return out
                loss, (aux, passed) = out
                return loss, {**aux, _HANDOFF: passed}

            (loss, aux), grads = _value_and_grad(group_loss, g.has_aux, f"groups[{i}].loss_fn")(sub)
            handoff = (jax.lax.stop_gradient(aux.pop(_HANDOFF)),) if g.passes else ()
            updates, state = g.optimizer.update(grads, opt_state[i], sub)
            params = _set(params, g.name, optax.apply_updates(sub, updates))
            states.append(state)
            metrics.update({f"{g.name}/loss": loss, **{f"{g.name}/{k}": v for k, v in aux.items()}})
            metrics[f"{g.name}/grad_norm"] = optax.tree.norm(grads)
        return params, tuple(states), {"loss": metrics[f"{groups[0].name}/loss"], **metrics}

    return _jit(step, mesh)
