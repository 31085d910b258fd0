"""Data parallelism: one mesh axis over stars/batch, on one host or many.

jaxspec scales the way JAX does: ``jax.jit`` over arrays laid out with a
``NamedSharding`` on a one-axis ``Mesh`` (axis ``"data"`` = stars or batch
rows).  Parameters are replicated; XLA inserts the reductions.

Several hosts (JAX's multi-controller runtime; no scheduler of our own)::

    # on every host, same script:
    from jaxspec.optim import sharding
    sharding.initialize()          # reads JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID
    mesh = sharding.data_mesh()    # all devices of all processes
    local = my_rows_of_the_survey  # each process loads its own slice of stars
    batch = sharding.global_batch(local, mesh)
    # ... then call fit_latents / a train step exactly as on one machine.

On one machine ``initialize`` is not needed and ``data_mesh()`` spans the local
devices (for CPU tests: ``XLA_FLAGS=--xla_force_host_platform_device_count=4``).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = [
    "AXIS",
    "batch_sharding",
    "data_mesh",
    "global_batch",
    "initialize",
    "pad_rows",
    "replicate",
    "replicated",
    "shard_batch",
]

AXIS = "data"


def initialize(
    coordinator_address: str | None = None, num_processes: int | None = None, process_id: int | None = None
) -> None:
    """Start JAX's distributed runtime (``jax.distributed.initialize``) once per process.

    Arguments default to ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process
    0), ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; on a cluster manager JAX
    supports (SLURM, ...) they may all be omitted.  Calling it again in the
    same process does nothing.
    """
    if jax.distributed.is_initialized():
        return
    env = os.environ
    coordinator_address = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
    if num_processes is None and "JAX_NUM_PROCESSES" in env:
        num_processes = int(env["JAX_NUM_PROCESSES"])
    if process_id is None and "JAX_PROCESS_ID" in env:
        process_id = int(env["JAX_PROCESS_ID"])
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def data_mesh(devices=None) -> Mesh:
    """A one-axis mesh (axis ``"data"``) over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices: expected at least one device, found none")
    return Mesh(np.asarray(devices), (AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh's ``"data"`` axis, other axes whole."""
    return NamedSharding(mesh, P(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """The same full array on every device of the mesh (parameters)."""
    return NamedSharding(mesh, P())


def replicate(tree, mesh: Mesh):
    """Place ``tree`` (parameters, optimiser state, keys) whole on every device of ``mesh``.

    With several processes, every process passes the same values; host-local
    arrays and keys become global replicated arrays.
    """
    rep = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, rep)

    def one(x):
        if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(rep, x.ndim):
            return x
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        return jax.make_array_from_process_local_data(rep, np.asarray(x))

    return jax.tree_util.tree_map(one, tree)


def pad_rows(tree, multiple: int):
    """Pad every leaf's leading axis to a multiple of ``multiple`` by repeating its last row.

    Returns ``(padded_tree, n)`` with ``n`` the original number of rows.
    Repeating a real row (not zeros) keeps padded problems well posed; callers
    drop the padded results.
    """
    if int(multiple) < 1:
        raise ValueError(f"multiple: expected an integer >= 1, found {multiple!r}")
    leaves = _rows(tree)
    n = int(np.shape(leaves[0])[0])
    for leaf in leaves:
        if np.shape(leaf)[0] != n:
            raise ValueError(f"tree: leaves disagree on the leading (star) axis: {n} vs {np.shape(leaf)[0]}")
    extra = (-n) % multiple
    if extra == 0:
        return tree, n

    def pad(x):
        xp = jnp if isinstance(x, jax.Array) else np
        return xp.concatenate([x, xp.repeat(x[-1:], extra, axis=0)])

    return jax.tree_util.tree_map(pad, tree), n


def _rows(tree) -> list:
    """The leaves of ``tree``, each checked to have a leading (star) axis."""
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        raise ValueError("tree: expected at least one array")
    if any(np.ndim(leaf) == 0 for leaf in leaves):
        raise ValueError("tree: every leaf needs a leading (star) axis, found a scalar")
    return leaves


def _check_divisible(tree, size: int, what: str) -> None:
    for leaf in _rows(tree):
        if np.shape(leaf)[0] % size:
            raise ValueError(
                f"tree: leading axis {np.shape(leaf)[0]} is not a multiple of the {size} {what}; pad_rows first"
            )


def shard_batch(tree, mesh: Mesh):
    """Place a host batch (leading axis divisible by the mesh size) split over ``"data"``.

    With several processes every process must pass the same full host array;
    to give each process only its own rows use :func:`global_batch`.
    """
    _check_divisible(tree, mesh.devices.size, "devices")
    return jax.device_put(tree, batch_sharding(mesh))


def global_batch(local_tree, mesh: Mesh):
    """Assemble a global batch from each process's local rows (``jax.make_array_from_process_local_data``).

    Every process passes its own rows (same count on every process, divisible
    by its local device count); the result is one global array sharded over
    ``"data"`` whose leading axis is the concatenation in process order.
    """
    _check_divisible(local_tree, jax.local_device_count(), "local devices")
    sharding = batch_sharding(mesh)
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_tree)
