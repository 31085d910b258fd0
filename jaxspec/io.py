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

Stable names
------------
Classes are named in files by a stable name of their own (``"lux.Model"``,
``"svae.Config"``), never by their module path, so modules can move without
breaking a saved model.  :data:`MODULES` says which module registers the names
under each prefix: :func:`load` imports it on demand, so ``jaxspec.io.load(path)``
works in a fresh interpreter.  Files of format 1 (jaxspec 0.1) named classes by
module path; :data:`ALIASES` maps those names to today's.  When a class changes
its fields it raises its ``version`` and passes an ``upgrade(fields, version)``
that turns the fields of an older version into today's; files keep loading.

Model families make their classes loadable with :func:`register`::

    @jaxspec.io.register("lux.Model", family="lux")   # a top-level model family
    @dataclasses.dataclass(frozen=True)
    class Model: ...

    @jaxspec.io.register("lux.Params")                # a building block (NamedTuple or dataclass)
    class Params(NamedTuple): ...

Writes are atomic: the archive is written to a temporary file in the target
folder and renamed over the destination, so a crash never leaves half a file.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxspec._version import __version__

__all__ = ["ALIASES", "MODULES", "families", "info", "load", "on_device", "register", "save"]

FORMAT = "jaxspec-model"
FORMAT_VERSION = 2
_READABLE = (1, 2)  # 1: jaxspec 0.1, classes named by module path (read through ALIASES)
_META_KEY = "__metadata__"

#: Stable-name prefix (everything before the class name) -> the module that registers those names.
MODULES: dict[str, str] = {
    "data": "jaxspec.data.preprocess",
    "lux": "jaxspec.models.lux",
    "lux.mlp": "jaxspec.models.lux.mlp",
    "cannon": "jaxspec.models.cannon",
    "ppca": "jaxspec.models.ppca",
    "rsca": "jaxspec.models.rsca",
    "svae": "jaxspec.models.scatter_vae",
}

#: Model family -> the stable name of its model class.
FAMILY_CLASSES: dict[str, str] = {
    "cannon": "cannon.Model",
    "lux": "lux.Model",
    "lux_mlp": "lux.mlp.Model",
    "ppca": "ppca.Model",
    "rsca": "rsca.Model",
    "svae": "svae.Model",
}

#: Class names in files of format 1 (module paths of jaxspec 0.1) -> stable names.  Never remove an entry.
ALIASES: dict[str, str] = {
    "jaxspec.data.preprocess.Standardizer": "data.Standardizer",
    "jaxspec.models.lux.LuxModel": "lux.Model",
    "jaxspec.models.lux.LuxParams": "lux.Params",
    "jaxspec.models.lux_mlp.LuxMLPModel": "lux.mlp.Model",
    "jaxspec.models.lux_mlp.MLPParams": "lux.mlp.Params",
    "jaxspec.models.cannon.CannonModel": "cannon.Model",
    "jaxspec.models.rsca.RSCAModel": "rsca.Model",
    "jaxspec.models._rsca_metric.RSCAMetric": "rsca.Metric",
    "jaxspec.models.scatter_vae.SVAEModel": "svae.Model",
    "jaxspec.models._svae_net.SVAEConfig": "svae.Config",
    "jaxspec.models._svae_net.SVAEParams": "svae.Params",
    "jaxspec.models._svae_data.SVAEStats": "svae.Stats",
}


@dataclasses.dataclass(frozen=True)
class _Entry:
    cls: type
    version: int
    upgrade: Callable[[dict, int], dict] | None


_FAMILIES: dict[str, type] = {}
_TYPES: dict[str, _Entry] = {}
_NAMES: dict[type, str] = {}


def register(
    name: str,
    *,
    family: str | None = None,
    version: int = 1,
    upgrade: Callable[[dict, int], dict] | None = None,
):
    """Class decorator: allow a NamedTuple or dataclass in model files under a stable ``name``.

    Parameters
    ----------
    name : str
        The name written in files, ``"<prefix>.<Class>"`` (e.g. ``"lux.Model"``);
        it never changes once files exist.  Its prefix is a key of :data:`MODULES`
        for jaxspec's own classes, so :func:`load` can import the module.
    family : str, optional
        Name of a model family (``"lux"``, ``"rsca"``, ...) when the class is
        a top-level model that :func:`save` accepts.  Omit it for building
        blocks (params, configs) that appear inside a model.
    version : int
        Layout version of the class's fields (1 until they first change).
    upgrade : callable, optional
        ``upgrade(fields, version) -> fields``: the decoded fields of an older
        ``version`` as this version's (needed once ``version > 1``).
    """
    if not isinstance(name, str) or not name or name.startswith("jaxspec."):
        raise ValueError(f"name: expected a stable class name such as 'lux.Model', found {name!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version: expected an int >= 1, found {version!r}")
    if version > 1 and upgrade is None:
        raise ValueError(f"upgrade: version {version} of {name!r} needs an upgrade from older versions")

    def deco(cls: type) -> type:
        if not (_is_namedtuple_type(cls) or dataclasses.is_dataclass(cls)):
            raise TypeError(f"register: expected a NamedTuple or dataclass, found {cls!r}")
        if name in _TYPES and _TYPES[name].cls is not cls:
            raise ValueError(f"name: {name!r} is already registered to {_TYPES[name].cls!r}")
        _TYPES[name] = _Entry(cls, version, upgrade)
        _NAMES[cls] = name
        if family is not None:
            if family in _FAMILIES and _FAMILIES[family] is not cls:
                raise ValueError(f"family: {family!r} is already registered to {_FAMILIES[family]!r}")
            _FAMILIES[family] = cls
            cls._jaxspec_family = family
        return cls

    return deco


def families() -> list[str]:
    """Names of the model families this jaxspec can save and load (imported or not)."""
    return sorted(set(FAMILY_CLASSES) | set(_FAMILIES))


def _import_for(name: str) -> None:
    """Import the module that registers the stable ``name`` (its longest prefix in :data:`MODULES`)."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module = MODULES.get(".".join(parts[:i]))
        if module is not None:
            importlib.import_module(module)
            return


def _entry(name: Any) -> _Entry | None:
    """The registered class behind a stable or format-1 name, importing its module on demand."""
    if not isinstance(name, str):
        return None
    name = ALIASES.get(name, name)
    if name not in _TYPES:
        _import_for(name)
    return _TYPES.get(name)


def _family_class(family: str) -> type | None:
    if family not in _FAMILIES and family in FAMILY_CLASSES:
        _entry(FAMILY_CLASSES[family])
    return _FAMILIES.get(family)


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
    name = _NAMES.get(cls, f"{cls.__module__}.{cls.__qualname__}")
    if _is_namedtuple_type(cls) or dataclasses.is_dataclass(obj):
        if cls not in _NAMES:
            raise TypeError(f"model{path}: class {name} is not registered with jaxspec.io.register")
        if _is_namedtuple_type(cls):
            fields = {f: getattr(obj, f) for f in cls._fields}
        else:
            fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}
        node = {"t": "obj", "cls": name, "fields": {k: _encode(v, arrays, f"{path}.{k}") for k, v in fields.items()}}
        version = _TYPES[name].version
        return node if version == 1 else {**node, "v": version}
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
        entry = _entry(node.get("cls"))
        if entry is None:
            raise ValueError(f"{where}: the file needs class {node.get('cls')!r}, unknown to this jaxspec")
        version = node.get("v", 1)
        if not isinstance(version, int) or not 1 <= version <= entry.version:
            raise ValueError(
                f"{where}: class {node['cls']!r} of layout version {version!r}; this jaxspec reads 1..{entry.version}"
            )
        if not isinstance(node.get("fields"), dict):
            raise ValueError(f"{where}: malformed model structure in metadata (class {node['cls']!r} has no fields)")
        fields = {k: _decode(v, arrays, where) for k, v in node["fields"].items()}
        if version < entry.version:
            fields = entry.upgrade(fields, version)
        try:
            return entry.cls(**fields)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: cannot rebuild class {node['cls']!r} from the file ({exc})") from None
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
    family = type(model).__dict__.get("_jaxspec_family")
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
    if meta.get("format_version") not in _READABLE:
        raise ValueError(f"{path}: format_version {meta.get('format_version')!r}; this jaxspec reads {list(_READABLE)}")
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

    Returns
    -------
    The model, its array leaves on the default device (:func:`on_device`).

    Raises
    ------
    ValueError
        Pickled content, missing or malformed metadata, an unknown family or
        class, or a family other than ``family``.
    """
    meta, arrays = _read(path)
    fam = meta["family"]
    cls = _family_class(fam) if isinstance(fam, str) else None
    if cls is None:
        raise ValueError(f"{path}: unknown model family {fam!r}; known: {families()}")
    if family is not None and fam != family:
        raise ValueError(f"{path}: holds a {fam!r} model, expected {family!r}")
    model = _decode(meta["tree"], arrays, str(path))
    if type(model) is not cls:
        raise ValueError(f"{path}: top-level object is {type(model).__name__}, not the {fam!r} model class")
    return on_device(model)


def _device_leaf(x):
    if isinstance(x, np.ndarray) and x.dtype.kind in "biuf" and jax.dtypes.canonicalize_dtype(x.dtype) == x.dtype:
        return jax.device_put(x)
    return x


def on_device(tree):
    """``tree`` with its numpy leaves on the default device, where the current precision keeps their dtype.

    A float64 leaf stays a numpy array unless ``JAX_ENABLE_X64`` is on, so it is
    never silently rounded; static fields of a model (names, grids) are not
    leaves and stay as they are.  :func:`load` and every family's ``fit``
    return models placed so: prediction verbs then use the device arrays as
    they are, and a model is uploaded once, not on every call.
    """
    return jax.tree_util.tree_map(_device_leaf, tree)
