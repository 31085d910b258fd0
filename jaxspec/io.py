"""Saving and loading trained models: one ``.npz`` with JSON metadata, never pickle.

A model file is a NumPy ``.npz`` archive.  Every array of the model is one
entry, stored with its exact dtype; the entry ``__metadata__`` is a JSON
document with the file format version, the jaxspec and jax versions, the
model family, a timestamp, any user metadata, and the model's structure (which
registered classes, which fields, which scalars such as config values, label
names or flags).  ``load`` opens the archive with ``allow_pickle=False``,
refuses object arrays, a missing or malformed ``__metadata__`` and unknown
families or classes, and rebuilds the model from registered classes only, so
loading a file can never run code from the file.

Model families make their classes loadable with :func:`register`::

    @jaxspec.io.register("lux")           # a top-level model family
    @dataclasses.dataclass(frozen=True)
    class LuxModel: ...

    @jaxspec.io.register()                # a building block (NamedTuple or dataclass)
    class LuxParams(NamedTuple): ...

Writes are atomic: the archive is written to a temporary file in the target
folder and renamed over the destination, so a crash never leaves half a file.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxspec._version import __version__

__all__ = ["families", "info", "load", "register", "save"]

FORMAT = "jaxspec-model"
FORMAT_VERSION = 1
_META_KEY = "__metadata__"

_FAMILIES: dict[str, type] = {}
_TYPES: dict[str, type] = {}


def register(family: str | None = None):
    """Class decorator: allow a NamedTuple or dataclass in model files.

    Parameters
    ----------
    family : str, optional
        Name of a model family (``"lux"``, ``"rsca"``, ...) when the class is
        a top-level model that :func:`save` accepts.  Omit it for building
        blocks (params, configs) that appear inside a model.
    """

    def deco(cls: type) -> type:
        if not (_is_namedtuple_type(cls) or dataclasses.is_dataclass(cls)):
            raise TypeError(f"register: expected a NamedTuple or dataclass, found {cls!r}")
        name = f"{cls.__module__}.{cls.__qualname__}"
        _TYPES[name] = cls
        if family is not None:
            if family in _FAMILIES and _FAMILIES[family] is not cls:
                raise ValueError(f"family: {family!r} is already registered to {_FAMILIES[family]!r}")
            _FAMILIES[family] = cls
            cls._jaxspec_family = family
        return cls

    return deco


def families() -> list[str]:
    """Names of the registered model families."""
    return sorted(_FAMILIES)


def _is_namedtuple_type(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, "_fields")


def _encode(obj: Any, arrays: dict[str, np.ndarray], path: str) -> Any:
    if obj is None or isinstance(obj, bool | str):
        return {"t": "json", "v": obj}
    if isinstance(obj, int | float) and not isinstance(obj, np.generic):
        return {"t": "json", "v": obj}
    if isinstance(obj, np.ndarray | np.generic | jax.Array):
        key = f"a{len(arrays)}"
        arr = np.asarray(obj)
        if arr.dtype.hasobject or arr.dtype.kind not in "biufcUS":
            raise TypeError(f"model{path}: cannot store an array of dtype {arr.dtype}")
        arrays[key] = arr
        return {"t": "array", "key": key}
    cls = type(obj)
    name = f"{cls.__module__}.{cls.__qualname__}"
    if _is_namedtuple_type(cls) or dataclasses.is_dataclass(obj):
        if _TYPES.get(name) is not cls:
            raise TypeError(f"model{path}: class {name} is not registered with jaxspec.io.register")
        if _is_namedtuple_type(cls):
            fields = {f: getattr(obj, f) for f in cls._fields}
        else:
            fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
        return {"t": "obj", "cls": name, "fields": {k: _encode(v, arrays, f"{path}.{k}") for k, v in fields.items()}}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError(f"model{path}: dict keys must be str")
        return {"t": "dict", "items": {k: _encode(v, arrays, f"{path}[{k!r}]") for k, v in obj.items()}}
    if isinstance(obj, list | tuple):
        return {
            "t": "list" if isinstance(obj, list) else "tuple",
            "items": [_encode(v, arrays, f"{path}[{i}]") for i, v in enumerate(obj)],
        }
    raise TypeError(f"model{path}: cannot store an object of type {name}")


def _decode(node: Any, arrays: dict[str, np.ndarray], where: str) -> Any:
    try:
        kind = node["t"]
    except (TypeError, KeyError):
        raise ValueError(f"{where}: malformed model structure in metadata") from None
    if kind == "json":
        return node["v"]
    if kind == "array":
        if node.get("key") not in arrays:
            raise ValueError(f"{where}: metadata names array {node.get('key')!r}, which the file lacks")
        return arrays[node["key"]]
    if kind == "dict":
        return {k: _decode(v, arrays, where) for k, v in node["items"].items()}
    if kind in ("list", "tuple"):
        items = [_decode(v, arrays, where) for v in node["items"]]
        return items if kind == "list" else tuple(items)
    if kind == "obj":
        cls = _TYPES.get(node.get("cls"))
        if cls is None:
            raise ValueError(f"{where}: the file needs class {node.get('cls')!r}, unknown to this jaxspec")
        return cls(**{k: _decode(v, arrays, where) for k, v in node["fields"].items()})
    raise ValueError(f"{where}: unknown node kind {kind!r} in metadata")


def save(path: str | os.PathLike, model: Any, *, metadata: dict | None = None) -> Path:
    """Write ``model`` to ``path`` (``.npz`` appended if missing), atomically.

    Parameters
    ----------
    path : str or path-like
        Destination; its folder must exist.
    model : a registered model-family instance
        Arrays (numpy or jax) are stored exactly, with their dtype; Python
        scalars, strings and tuples of them go into the JSON metadata.
    metadata : dict, optional
        Extra JSON-serialisable information to keep with the model (e.g. the
        training data's provenance).

    Returns
    -------
    pathlib.Path
        The path written.
    """
    family = getattr(type(model), "_jaxspec_family", None)
    if family is None or _FAMILIES.get(family) is not type(model):
        raise TypeError(f"model: expected an instance of a registered model family {families()}, found {type(model)!r}")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: folder {path.parent} does not exist")
    arrays: dict[str, np.ndarray] = {}
    tree = _encode(model, arrays, "")
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "family": family,
        "jaxspec_version": __version__,
        "jax_version": jax.__version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "user": metadata or {},
        "tree": tree,
    }
    try:
        text = json.dumps(meta)
    except TypeError as exc:
        raise TypeError(f"metadata: expected JSON-serialisable values ({exc})") from None
    write_npz(path, {_META_KEY: np.array(text), **arrays})
    return path


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to the ``.npz`` ``path`` atomically: a temporary file in the same folder, then rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every entry of an ``.npz`` file, never unpickling: an object entry is a ``ValueError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as npz:
            arrays = {}
            for key in npz.files:
                try:
                    arrays[key] = npz[key]
                except ValueError as exc:
                    if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                        raise ValueError(
                            f"{path}: entry {key!r} holds a pickled object; jaxspec files never do, refusing it"
                        ) from None
                    raise
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    return arrays


def _read(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    path = Path(path)
    arrays = read_npz(path)
    raw = arrays.pop(_META_KEY, None)
    if raw is None:
        raise ValueError(f"{path}: no {_META_KEY} entry; not a jaxspec model file")
    try:
        meta = json.loads(str(raw))
    except (json.JSONDecodeError, TypeError):
        raise ValueError(f"{path}: {_META_KEY} is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: metadata does not declare format {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {meta.get('format_version')!r}; this jaxspec reads {FORMAT_VERSION}")
    for k in ("family", "tree"):
        if k not in meta:
            raise ValueError(f"{path}: metadata lacks the {k!r} field")
    return meta, arrays


def info(path: str | os.PathLike) -> dict:
    """The metadata of a model file (family, versions, creation time, user metadata), without building it."""
    meta, _ = _read(path)
    return {k: v for k, v in meta.items() if k != "tree"}


def load(path: str | os.PathLike, *, family: str | None = None) -> Any:
    """Read a model written by :func:`save`.

    Parameters
    ----------
    path : str or path-like
    family : str, optional
        Expected family; a file of another family is refused.

    Raises
    ------
    ValueError
        Pickled content, missing or malformed metadata, an unknown family or
        class, or a family other than ``family``.
    """
    meta, arrays = _read(path)
    fam = meta["family"]
    if fam not in _FAMILIES:
        raise ValueError(f"{path}: unknown model family {fam!r}; known: {families()} (import its module first?)")
    if family is not None and fam != family:
        raise ValueError(f"{path}: holds a {fam!r} model, expected {family!r}")
    model = _decode(meta["tree"], arrays, str(path))
    if type(model) is not _FAMILIES[fam]:
        raise ValueError(f"{path}: top-level object is {type(model).__name__}, not the {fam!r} model class")
    return model
