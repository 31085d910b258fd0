"""Training checkpoints for :func:`jaxspec.optim.train_loop`: one ``.npz``, written atomically, never pickled.

A checkpoint holds the flattened leaves of ``params``, ``opt_state`` and (with
validation) ``best_params``, each entry named by its position and checked on
load against the path string, shape and dtype of the pytree the caller passes;
the per-epoch history; and a JSON entry ``__checkpoint__`` with the epoch
reached, the run's key data and the data sizes.  The pytree *structure* never
comes from the file: it is the caller's, so loading can never run code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxspec.io import read_npz, write_npz

FORMAT = "jaxspec-train-checkpoint"
FORMAT_VERSION = 1
_META_KEY = "__checkpoint__"


class State(NamedTuple):
    """What :func:`load` returns: the saved training state, rebuilt on the caller's structures."""

    epoch: int
    params: Any
    opt_state: Any
    best_params: Any
    history: dict[str, np.ndarray]


def key_signature(key) -> dict:
    """JSON description of a PRNG key (implementation and raw bits), to check a resume uses the same key."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return {"impl": str(jax.random.key_impl(key)), "data": np.asarray(jax.random.key_data(key)).tolist()}
    return {"impl": "raw", "data": np.asarray(key).tolist()}


def _flatten(tree, prefix: str, arrays: dict[str, np.ndarray]) -> list[str]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    paths = []
    for i, (path, leaf) in enumerate(leaves):
        arrays[f"{prefix}/{i}"] = np.asarray(jax.device_get(leaf))
        paths.append(jax.tree_util.keystr(path))
    return paths


def save(path: Path, *, epoch: int, params, opt_state, best_params, history: dict, info: dict) -> None:
    """Write a checkpoint to ``path`` atomically (temporary file in the same folder, then ``os.replace``)."""
    arrays: dict[str, np.ndarray] = {}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "epoch": int(epoch),
        "info": info,
        "paths": {
            "params": _flatten(params, "params", arrays),
            "opt_state": _flatten(opt_state, "opt_state", arrays),
            "best_params": None if best_params is None else _flatten(best_params, "best_params", arrays),
        },
        "history": sorted(history),
    }
    for name, values in history.items():
        arrays[f"history/{name}"] = np.asarray(values)
    write_npz(path, {_META_KEY: np.array(json.dumps(meta)), **arrays})


def _unflatten(like, prefix: str, saved_paths: list[str], arrays: dict, where: str):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    if len(leaves) != len(saved_paths):
        raise ValueError(
            f"{where}: {prefix} has {len(saved_paths)} leaves in the file, {len(leaves)} in the given tree"
        )
    out = []
    for i, ((path, leaf), saved) in enumerate(zip(leaves, saved_paths, strict=True)):
        name = jax.tree_util.keystr(path)
        arr = arrays.get(f"{prefix}/{i}")
        if arr is None:
            raise ValueError(f"{where}: entry {prefix}/{i} is missing")
        if name != saved:
            raise ValueError(f"{where}: {prefix} leaf {i} is {saved!r} in the file, {name!r} in the given tree")
        shape, dtype = np.shape(leaf), np.dtype(leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype)
        if arr.shape != shape or arr.dtype != dtype:
            raise ValueError(
                f"{where}: {prefix}{name} is {arr.dtype}{list(arr.shape)} in the file, "
                f"{dtype}{list(shape)} in the given tree"
            )
        out.append(arr)
    return jax.tree_util.tree_unflatten(treedef, out)


def load(path: Path, *, params, opt_state, info: dict) -> State:
    """Read a checkpoint written by :func:`save`, rebuilt on the structures of ``params``/``opt_state``.

    Raises ``ValueError`` (naming the file) for pickled or malformed content, a
    leaf whose path, shape or dtype differs from the given trees, or ``info``
    (key, data size, batch size) that differs from this run's.
    """
    where = f"checkpoint {path}"
    try:
        arrays = read_npz(path)
    except ValueError as exc:
        raise ValueError(f"checkpoint {exc}") from None
    try:
        meta = json.loads(str(arrays.pop(_META_KEY)))
    except (KeyError, json.JSONDecodeError):
        raise ValueError(f"{where}: no valid {_META_KEY} entry; not a jaxspec training checkpoint") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{where}: not a {FORMAT!r} file of version {FORMAT_VERSION}")
    for k, v in info.items():
        if meta["info"].get(k) != v:
            raise ValueError(f"{where}: was written by a run with {k}={meta['info'].get(k)!r}; this run has {v!r}")
    paths = meta["paths"]
    best = paths["best_params"]
    return State(
        epoch=int(meta["epoch"]),
        params=_unflatten(params, "params", paths["params"], arrays, where),
        opt_state=_unflatten(opt_state, "opt_state", paths["opt_state"], arrays, where),
        best_params=None if best is None else _unflatten(params, "best_params", best, arrays, where),
        history={name: arrays[f"history/{name}"] for name in meta["history"]},
    )
