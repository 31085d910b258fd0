"""One chunked, padded map over the stars: bounded memory and one compilation for any number of stars.

Used by :func:`jaxspec.optim.fit_latents`, :func:`jaxspec.optim.solvers.weighted_lstsq`
and the families' batch verbs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxspec.optim.sharding import _rows, pad_rows, shard_batch

__all__ = ["map_chunks"]


def map_chunks(
    fn: Callable,
    rows,
    *args,
    chunk_size: int,
    mesh: Mesh | None = None,
    to_host: bool = False,
    progress: bool = False,
    desc: str | None = None,
):
    """``fn(chunk, *args)`` over fixed-size chunks of ``rows`` (every leaf's leading axis), concatenated.

    Each chunk has exactly ``chunk_size`` rows (rounded up to a multiple of
    the mesh's devices), the last one padded by repeating its last row
    (:func:`jaxspec.optim.sharding.pad_rows`), so a jitted ``fn`` compiles once;
    padded rows are dropped from the result.  A host (numpy) leaf is copied
    to the device one chunk at a time, so a memory-mapped survey never has
    to fit on the device.

    Parameters
    ----------
    fn : callable
        ``fn(chunk, *args) -> pytree`` whose leaves have the chunk's leading axis.
    rows : pytree of arrays ``(n, ...)``
    *args
        Passed to every call unchanged (parameters, flags).
    chunk_size : int
        Rows per call (at most ``n``, rounded up to a multiple of the devices).
    mesh : jax.sharding.Mesh, optional
        Split each chunk over its ``"data"`` axis.
    to_host : bool
        Copy each chunk's result to host numpy before the next chunk, and
        concatenate on the host (device memory stays one chunk's worth).
    progress : bool
    desc : str, optional
        Progress bar label.

    Returns
    -------
    pytree
        ``fn``'s output for all ``n`` rows (jax arrays; numpy with ``to_host``).
    """
    n = int(np.shape(_rows(rows)[0])[0])
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an int >= 1, found {chunk_size!r}")
    size = 1 if mesh is None else mesh.devices.size
    chunk = math.ceil(min(int(chunk_size), n) / size) * size
    parts = []
    for start in tqdm(range(0, n, chunk), disable=not progress, desc=desc, unit="chunk"):
        part, k = pad_rows(jax.tree_util.tree_map(lambda x, start=start: x[start : start + chunk], rows), chunk)
        if mesh is not None:
            part = shard_batch(part, mesh)
        out = fn(part, *args)
        out = jax.tree_util.tree_map(lambda x, k=k: x[:k], jax.device_get(out) if to_host else out)
        parts.append(out)
    concat = np.concatenate if to_host else jnp.concatenate
    return jax.tree_util.tree_map(lambda *xs: concat(xs), *parts)
