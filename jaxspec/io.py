"""Saving and loading trained models: one ``.npz`` with JSON metadata, never pickle.

A model file is a NumPy ``.npz`` archive.  Every array of the model is one
entry, stored with its exact dtype; the entry ``__metadata__`` is a JSON
document with the file format version, the jaxspec and jax versions, the
model family, a timestamp, any user metadata, and the model's structure (which
registered classes, which fields, which scalars such as config values, label
names or flags).  Loading rebuilds the model from registered classes only, so
loading a file can never run code from the file.

A file is not trusted
---------------------
:func:`load` reads ``__metadata__`` first (at most :data:`MAX_METADATA_BYTES`),
checks its structure (known node kinds, nesting at most :data:`MAX_DEPTH`
levels, known classes), and then reads only the entries the metadata
references (others are never decompressed).  Each array's ``.npy`` header is
checked before anything is allocated: object (pickled) and structured dtypes
are refused, never loaded, and the referenced entries may take at most
``max_bytes`` (:data:`MAX_BYTES`) uncompressed.  Every array is then checked
against the declared fields of its class (:class:`Array`: rank, dtype kind,
finiteness, None allowed or not) before the object is built, and the class's
``__post_init__`` checks the shapes against each other.  Whatever is wrong is a
``ValueError`` that names the file and, where it applies, the field
(``lux.Model.params.A``); numpy's advice to load a file "with allow_pickle" is
never relayed.

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

Model families make their classes loadable with :func:`register`, declaring
every array field (a class with none declares ``arrays={}``)::

    from jaxspec import io

    @io.register("lux.Model", family="lux", arrays={"label_scatter": io.Array(1, optional=True)})
    @dataclasses.dataclass(frozen=True)
    class Model: ...                                  # a top-level model family

    @io.register("lux.Params", arrays={"A": io.Array(2), "B": io.Array(2), "ln_s": io.Array(1)})
    class Params(NamedTuple): ...                     # a building block (NamedTuple or dataclass)

:func:`save` checks the same declarations, so a model that could not be loaded
again is never written.  Writes are atomic: the archive is written to a
temporary file in the target folder and renamed over the destination, so a
crash never leaves half a file.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from numpy.lib import format as npy_format

from jaxspec._version import __version__

__all__ = [
    "ALIASES",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_METADATA_BYTES",
    "MODULES",
    "Array",
    "families",
    "info",
    "load",
    "on_device",
    "register",
    "save",
]

FORMAT = "jaxspec-model"
FORMAT_VERSION = 2
_READABLE = (1, 2)  # 1: jaxspec 0.1, classes named by module path (read through ALIASES)
_META_KEY = "__metadata__"

#: Default ``max_bytes`` of :func:`load`: the arrays a file references may take at most this many bytes
#: uncompressed (4 GiB; the largest jaxspec models take tens of MB).  A larger file is refused, naming the
#: file and the size, before anything is allocated; ``load(path, max_bytes=...)`` reads it (None: no limit).
MAX_BYTES = 4 * 2**30
#: The ``__metadata__`` entry may take at most this many bytes (stored as UCS-4: 16 Mi characters).
MAX_METADATA_BYTES = 64 * 2**20
#: The model structure in ``__metadata__`` may nest at most this many levels (a jaxspec model takes 5).
MAX_DEPTH = 64
_READ_CHUNK = 16 * 2**20  # bytes read from an entry at a time

#: Stable-name prefix (everything before the class name) -> the module that registers those names.
MODULES: dict[str, str] = {
    "data": "jaxspec.data.preprocess",
    "lux": "jaxspec.models.lux",
    "lux.mlp": "jaxspec.models.lux.mlp",
    "cannon": "jaxspec.models.cannon",
    "ppca": "jaxspec.models.ppca",
    "rsca": "jaxspec.models.rsca",
    "svae": "jaxspec.models.scatter_vae",
    "payne": "jaxspec.models.payne",
    "flows": "jaxspec.models.flows",
    "cycle_starnet": "jaxspec.models.cycle_starnet",
}

#: Model family -> the stable name of its model class.
FAMILY_CLASSES: dict[str, str] = {
    "cannon": "cannon.Model",
    "lux": "lux.Model",
    "lux_mlp": "lux.mlp.Model",
    "ppca": "ppca.Model",
    "rsca": "rsca.Model",
    "svae": "svae.Model",
    "payne": "payne.Model",
    "flows": "flows.Model",
    "cycle_starnet": "cycle_starnet.Model",
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

_KINDS = {"b": "bool", "i": "signed-int", "u": "unsigned-int", "f": "real-float", "c": "complex", "U": "str"}


class Array(NamedTuple):
    """The declaration of one array field of a registered class (:func:`register`'s ``arrays``).

    :func:`load` checks every array of a file against its field's declaration
    before it builds the object (and :func:`save` before it writes one);
    how the arrays' shapes relate is the class's ``__post_init__``'s to check.

    Attributes
    ----------
    rank : int or tuple of int
        The number of axes, or the numbers allowed.
    kind : str
        The numpy dtype kinds allowed: ``"f"`` real floating point (the
        default: neither complex nor integer), ``"b"`` bool, ``"iu"``
        integers, ``"c"`` complex, ``"U"`` str.
    finite : bool
        Every value finite (the default; checked on float and complex arrays).
    optional : bool
        None is allowed instead of the array.
    nested : bool
        The field is a dict, list or tuple (nested to any depth) of such arrays,
        e.g. a network's weights or one wavelength grid per spectral output.

    Examples
    --------
    >>> print(Array(2))
    a finite real-float array of rank 2
    >>> print(Array((1, 2), nested=True))
    a dict, list or tuple of finite real-float arrays of rank 1 or 2
    >>> print(Array(1, kind="b", optional=True))
    a bool array of rank 1, or None
    """

    rank: int | tuple[int, ...]
    kind: str = "f"
    finite: bool = True
    optional: bool = False
    nested: bool = False

    @property
    def ranks(self) -> tuple[int, ...]:
        return (self.rank,) if isinstance(self.rank, int) else tuple(self.rank)

    def __str__(self) -> str:
        kinds = "int" if set(self.kind) == {"i", "u"} else " or ".join(_KINDS[k] for k in self.kind)
        finite = "finite " if self.finite and set(self.kind) & {"f", "c"} else ""
        ranks = " or ".join(map(str, self.ranks))
        what = f"{finite}{kinds} array{'s' if self.nested else ''} of rank {ranks}"
        what = f"a dict, list or tuple of {what}" if self.nested else _a(what)
        return f"{what}, or None" if self.optional else what


def _check_declaration(arrays: Any) -> dict[str, Array] | None:
    if arrays is None:
        return None
    if not isinstance(arrays, Mapping) or not all(isinstance(k, str) for k in arrays):
        raise TypeError(f"arrays: expected a dict of field name -> jaxspec.io.Array, found {arrays!r}")
    for field, spec in arrays.items():
        if not isinstance(spec, Array):
            raise TypeError(f"arrays[{field!r}]: expected a jaxspec.io.Array, found {spec!r}")
        ranks_ok = all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in spec.ranks)
        if not ranks_ok or not spec.ranks:
            raise ValueError(f"arrays[{field!r}].rank: expected an int >= 0 or a tuple of them, found {spec.rank!r}")
        if not isinstance(spec.kind, str) or not spec.kind or not set(spec.kind) <= set(_KINDS):
            raise ValueError(f"arrays[{field!r}].kind: expected dtype kinds among 'biufcU', found {spec.kind!r}")
    return dict(arrays)


@dataclasses.dataclass(frozen=True)
class _Entry:
    cls: type
    version: int
    upgrade: Callable[[dict, int], dict] | None
    arrays: dict[str, Array] | None = None


_FAMILIES: dict[str, type] = {}
_TYPES: dict[str, _Entry] = {}
_NAMES: dict[type, str] = {}


def register(
    name: str,
    *,
    family: str | None = None,
    version: int = 1,
    upgrade: Callable[[dict, int], dict] | None = None,
    arrays: Mapping[str, Array] | None = None,
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
    arrays : dict of str to Array, optional
        The declaration of every field that holds arrays (:class:`Array`);
        any other field may hold no array (a class without arrays declares
        ``{}``).  :func:`load` checks a file's arrays against it before it
        builds the object, :func:`save` before it writes one.  Every jaxspec
        class declares its arrays; without a declaration arrays go unchecked.
    """
    if not isinstance(name, str) or not name or name.startswith("jaxspec."):
        raise ValueError(f"name: expected a stable class name such as 'lux.Model', found {name!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version: expected an int >= 1, found {version!r}")
    if version > 1 and upgrade is None:
        raise ValueError(f"upgrade: version {version} of {name!r} needs an upgrade from older versions")
    declared = _check_declaration(arrays)

    def deco(cls: type) -> type:
        if not (_is_namedtuple_type(cls) or dataclasses.is_dataclass(cls)):
            raise TypeError(f"register: expected a NamedTuple or dataclass, found {cls!r}")
        if name in _TYPES and _TYPES[name].cls is not cls:
            raise ValueError(f"name: {name!r} is already registered to {_TYPES[name].cls!r}")
        if declared is not None:
            unknown = sorted(set(declared) - set(_field_names(cls)))
            if unknown:
                raise ValueError(f"arrays: {cls.__name__} has no field {unknown[0]!r} (fields: {_field_names(cls)})")
        _TYPES[name] = _Entry(cls, version, upgrade, declared)
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


def _field_names(cls: type) -> list[str]:
    if _is_namedtuple_type(cls):
        return list(cls._fields)
    return [f.name for f in dataclasses.fields(cls) if f.init]


def _fields_of(obj: Any) -> dict[str, Any]:
    return {f: getattr(obj, f) for f in _field_names(type(obj))}


# -- the declared fields -------------------------------------------------------------------------------


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray | np.generic | jax.Array)


def _children(value: Any):
    """``(suffix, child)`` of a dict, list or tuple (not of a registered NamedTuple); none otherwise."""
    if isinstance(value, dict):
        return [(f"[{k!r}]", v) for k, v in value.items()]
    if isinstance(value, list | tuple) and type(value) not in _NAMES:
        return [(f"[{i}]", v) for i, v in enumerate(value)]
    return []


def _a(word: str) -> str:
    """``word`` after its indefinite article."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _check_array(spec: Array, value: Any, where: str) -> None:
    if not _is_array(value):
        raise ValueError(f"{where}: expected {spec}, found {type(value).__name__}")
    try:
        dtype = np.dtype(value.dtype)
    except TypeError:
        raise ValueError(f"{where}: expected {spec}, found an array of dtype {value.dtype}") from None
    shape = tuple(np.shape(value))
    if dtype.kind not in spec.kind or len(shape) not in spec.ranks:
        raise ValueError(f"{where}: expected {spec}, found {_a(str(dtype))} array of shape {shape}")
    if spec.finite and dtype.kind in "fc":
        bad = int(np.count_nonzero(~np.isfinite(np.asarray(value))))
        if bad:
            raise ValueError(f"{where}: expected {spec}, found {bad} NaN or infinite of {math.prod(shape)} values")


def _check_value(spec: Array, value: Any, where: str, *, top: bool = True) -> None:
    if value is None and top and spec.optional:
        return
    if spec.nested and isinstance(value, dict | list | tuple) and type(value) not in _NAMES:
        for suffix, child in _children(value):
            _check_value(spec, child, where + suffix, top=False)
        return
    if spec.nested and top:
        raise ValueError(f"{where}: expected {spec}, found {type(value).__name__}")
    _check_array(spec, value, where)


def _no_arrays(value: Any, where: str, name: str, *, deep: bool) -> None:
    """Refuse an array in a field ``name`` does not declare; with ``deep``, check nested registered objects too."""
    if _is_array(value):
        raise ValueError(f"{where}: found {_a(str(np.dtype(value.dtype)))} array where class {name!r} declares none")
    if deep and type(value) in _NAMES:
        _check_fields(_NAMES[type(value)], _fields_of(value), where, deep=True)
        return
    for suffix, child in _children(value):
        _no_arrays(child, where + suffix, name, deep=deep)


def _check_fields(name: str, fields: dict, where: str, *, deep: bool = False) -> None:
    """Check ``fields`` of the registered class ``name`` against its declaration (``where``: its path)."""
    declared = _TYPES[name].arrays
    if declared is None:
        return
    for field, value in fields.items():
        if field in declared:
            _check_value(declared[field], value, f"{where}.{field}")
        else:
            _no_arrays(value, f"{where}.{field}", name, deep=deep)


# -- writing -------------------------------------------------------------------------------------------


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
        fields = _fields_of(obj)
        _check_fields(name, fields, f"model{path}")
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

    Raises
    ------
    TypeError
        Content that model files cannot hold (an unregistered class, an object array).
    ValueError
        An array that its class's declaration refuses (:class:`Array`): a file
        that :func:`load` would refuse is never written.
    """
    family = type(model).__dict__.get("_jaxspec_family")
    if family is None or _FAMILIES.get(family) is not type(model):
        raise TypeError(f"model: expected an instance of a registered model family {families()}, found {type(model)!r}")
    path = npz_destination(path)
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


def npz_destination(path: str | os.PathLike) -> Path:
    """``path`` with ``.npz`` appended if missing; a ``FileNotFoundError`` naming ``path`` if its folder is absent."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: folder {path.parent} does not exist")
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


# -- reading: the archive ------------------------------------------------------------------------------


class _Refused(Exception):
    """An entry refused for a reason of ours (the message is used as it is)."""


def _reason(exc: BaseException) -> str:
    """One line on ``exc``; never numpy's advice to trust a file with ``allow_pickle``."""
    text = " ".join(str(exc).split())
    if "pickle" in text.lower():
        return "a header numpy will not parse safely"
    if not isinstance(exc, ValueError | TypeError):
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text[:300] or type(exc).__name__


def _sniff(path: Path) -> str | None:
    """What a file that is not a zip archive looks like, where that is easy to tell."""
    try:
        with open(path, "rb") as fh:
            start = fh.read(16)
    except OSError:
        return None
    if not start:
        return "the file is empty"
    if start.startswith(b"\x93NUMPY"):
        return "a single .npy array, not an .npz archive"
    if start.startswith(b"SIMPLE  ="):
        return "a FITS file"
    return None


def _archive(path: Path, *, model: bool) -> zipfile.ZipFile:
    """``path`` opened as a zip archive; anything else is a ``ValueError`` naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return zipfile.ZipFile(path)
    except Exception as exc:
        reason = _sniff(path) or _reason(exc)
        if model:
            raise ValueError(f"{path}: not a jaxspec model file (not a readable .npz file: {reason})") from None
        raise ValueError(f"{path}: not a readable .npz file ({reason})") from None


def _member(zf: zipfile.ZipFile, key: str) -> zipfile.ZipInfo | None:
    """The archive member of the entry ``key`` (``key.npy`` as ``numpy.savez`` names it, or ``key``)."""
    for name in (f"{key}.npy", key):
        try:
            return zf.getinfo(name)
        except KeyError:
            continue
    return None


def _check_npy_dtype(dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise _Refused("holds a pickled object; jaxspec files never do, refusing it")
    if dtype.names is not None or dtype.subdtype is not None or dtype.kind not in "biufcUS":
        raise _Refused(f"has dtype {dtype}, which model files never hold; refusing it")


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, key: str) -> np.ndarray:
    """One ``.npy`` entry, its header checked (dtype, size) before anything is allocated."""
    try:
        with zf.open(info) as fh:
            version = npy_format.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = npy_format.read_array_header_2_0(fh)
            else:
                raise _Refused(f"is a .npy of format version {version}, which model files never are")
            _check_npy_dtype(dtype)
            if not all(isinstance(n, int) and n >= 0 for n in shape):
                raise _Refused(f"declares the invalid shape {shape}")
            count = math.prod(shape)
            nbytes = count * dtype.itemsize
            held = info.file_size - fh.tell()
            if nbytes != held:
                raise _Refused(f"declares a {dtype} array of shape {shape} ({nbytes} bytes) but holds {held} bytes")
            flat = np.empty(count, dtype)
            if nbytes:
                buffer, done = memoryview(flat.view(np.uint8)), 0
                while done < nbytes:
                    n = fh.readinto(buffer[done : done + _READ_CHUNK])
                    if not n:
                        raise _Refused(f"is truncated ({done} of {nbytes} bytes)")
                    done += n
            if fh.read(1):  # also has zipfile check the entry's CRC
                raise _Refused("holds bytes beyond its array")
    except _Refused as exc:
        raise ValueError(f"{path}: entry {key!r} {exc}") from None
    except Exception as exc:
        raise ValueError(f"{path}: entry {key!r} is not a readable array ({_reason(exc)})") from None
    arr = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
    return arr if dtype.isnative else arr.astype(dtype.newbyteorder("="))


def _check_max_bytes(max_bytes: Any) -> None:
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0):
        raise ValueError(f"max_bytes: expected an int >= 0 or None, found {max_bytes!r}")


def _read_entries(zf: zipfile.ZipFile, path: Path, members: dict[str, zipfile.ZipInfo], max_bytes: int | None):
    total = sum(info.file_size for info in members.values())
    if max_bytes is not None and total > max_bytes:
        big = max(members, key=lambda k: members[k].file_size)
        raise ValueError(
            f"{path}: its arrays take {total} bytes uncompressed (entry {big!r}: {members[big].file_size}), "
            f"more than max_bytes={max_bytes}; pass a larger max_bytes to read it"
        )
    return {key: _read_entry(zf, info, path, key) for key, info in members.items()}


def read_npz(path: str | os.PathLike, *, max_bytes: int | None = MAX_BYTES) -> dict[str, np.ndarray]:
    """Every entry of an ``.npz`` file, never unpickling: an object entry is a ``ValueError`` naming it.

    Headers are checked before anything is allocated, and the entries may take
    at most ``max_bytes`` uncompressed (None: no limit).
    """
    _check_max_bytes(max_bytes)
    path = Path(path)
    with _archive(path, model=False) as zf:
        members = {}
        for name in zf.namelist():
            members.setdefault(name[:-4] if name.endswith(".npy") else name, zf.getinfo(name))
        return _read_entries(zf, path, members, max_bytes)


# -- reading: the metadata and the model ---------------------------------------------------------------


def _metadata(zf: zipfile.ZipFile, path: Path) -> dict:
    """The parsed ``__metadata__`` of an open archive, its top level checked."""
    info = _member(zf, _META_KEY)
    if info is None:
        raise ValueError(f"{path}: not a jaxspec model file (no {_META_KEY} entry)")
    if info.file_size > MAX_METADATA_BYTES:
        raise ValueError(
            f"{path}: not a jaxspec model file ({_META_KEY} takes {info.file_size} bytes, "
            f"more than MAX_METADATA_BYTES={MAX_METADATA_BYTES})"
        )
    raw = _read_entry(zf, info, path, _META_KEY)
    if raw.dtype.kind != "U" or raw.ndim != 0:
        raise ValueError(f"{path}: not a jaxspec model file ({_META_KEY} is a {raw.dtype} array, not a JSON text)")
    try:
        meta = json.loads(str(raw[()]))
    except RecursionError:
        raise ValueError(f"{path}: {_META_KEY} nests too deeply to parse; not a jaxspec model file") from None
    except ValueError as exc:  # json.JSONDecodeError, or an integer of too many digits
        raise ValueError(f"{path}: {_META_KEY} is not valid JSON ({_reason(exc)})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a jaxspec model file (metadata does not declare format {FORMAT!r})")
    version = meta.get("format_version")
    if isinstance(version, bool) or version not in _READABLE:
        raise ValueError(f"{path}: format_version {version!r}; this jaxspec reads {list(_READABLE)}")
    for k in ("family", "tree"):
        if k not in meta:
            raise ValueError(f"{path}: metadata lacks the {k!r} field")
    return meta


def _walk(node: Any, where: str, trail: str, depth: int, keys: set[str]) -> None:
    """Check the structure of a metadata tree (kinds, classes, depth) and collect the array keys it references."""
    at = trail or "model"
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}: the model structure nests more than MAX_DEPTH={MAX_DEPTH} levels (at {at})")
    kind = node.get("t") if isinstance(node, dict) else None

    def malformed(what: str) -> ValueError:
        return ValueError(f"{where}: malformed model structure in metadata at {at} ({what})")

    if kind == "json":
        if "v" not in node:
            raise malformed("a value without 'v'")
    elif kind == "array":
        key = node.get("key")
        if not isinstance(key, str) or key == _META_KEY:
            raise malformed(f"an array named {key!r}")
        keys.add(key)
    elif kind == "dict":
        items = node.get("items")
        if not isinstance(items, dict):
            raise malformed("a dict without 'items'")
        for k, v in items.items():
            _walk(v, where, f"{at}[{k!r}]", depth + 1, keys)
    elif kind in ("list", "tuple"):
        items = node.get("items")
        if not isinstance(items, list):
            raise malformed(f"a {kind} without 'items'")
        for i, v in enumerate(items):
            _walk(v, where, f"{at}[{i}]", depth + 1, keys)
    elif kind == "obj":
        name = node.get("cls")
        entry = _entry(name)
        if entry is None:
            raise ValueError(f"{where}: the file needs class {name!r}, unknown to this jaxspec (at {at})")
        version = node.get("v", 1)
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= entry.version:
            raise ValueError(
                f"{where}: class {name!r} of layout version {version!r}; this jaxspec reads 1..{entry.version}"
            )
        fields = node.get("fields")
        if not isinstance(fields, dict):
            raise malformed(f"class {name!r} has no fields")
        here = trail or ALIASES.get(name, name)
        for k, v in fields.items():
            _walk(v, where, f"{here}.{k}", depth + 1, keys)
    elif kind is None:
        raise malformed("a node that is not an object with a kind 't'")
    else:
        raise malformed(f"unknown node kind {kind!r}")


def _decode(node: dict, arrays: dict[str, np.ndarray], where: str, trail: str) -> Any:
    """The object of a tree :func:`_walk` has checked; arrays are checked against their class's declaration."""
    kind = node["t"]
    at = trail or "model"
    if kind == "json":
        return node["v"]
    if kind == "array":
        return arrays[node["key"]]
    if kind == "dict":
        return {k: _decode(v, arrays, where, f"{at}[{k!r}]") for k, v in node["items"].items()}
    if kind in ("list", "tuple"):
        items = [_decode(v, arrays, where, f"{at}[{i}]") for i, v in enumerate(node["items"])]
        return items if kind == "list" else tuple(items)
    name = ALIASES.get(node["cls"], node["cls"])
    entry = _TYPES[name]
    here = trail or name
    fields = {k: _decode(v, arrays, where, f"{here}.{k}") for k, v in node["fields"].items()}
    version = node.get("v", 1)
    if version < entry.version:
        try:
            fields = entry.upgrade(fields, version)
            if not isinstance(fields, dict):
                raise TypeError(f"upgrade returned {type(fields).__name__}, not a dict")
        except Exception as exc:
            raise ValueError(
                f"{where}: cannot upgrade class {name!r} at {here} from layout version {version} ({_reason(exc)})"
            ) from None
    try:
        _check_fields(name, fields, here, deep=version < entry.version)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    try:
        return entry.cls(**fields)
    except Exception as exc:
        raise ValueError(f"{where}: cannot rebuild class {name!r} at {here} from the file ({_reason(exc)})") from None


def _read(path: Path, max_bytes: int | None) -> tuple[dict, dict[str, np.ndarray]]:
    """The metadata and the arrays it references (no other entry is read)."""
    with _archive(path, model=True) as zf:
        meta = _metadata(zf, path)
        keys: set[str] = set()
        _walk(meta["tree"], str(path), "", 1, keys)
        members = {}
        for key in sorted(keys):
            members[key] = _member(zf, key)
            if members[key] is None:
                raise ValueError(f"{path}: metadata names array {key!r}, which the file lacks")
        return meta, _read_entries(zf, path, members, max_bytes)


def info(path: str | os.PathLike) -> dict:
    """The metadata of a model file (family, versions, creation time, user metadata), without building it.

    Only the ``__metadata__`` entry is read.  Raises ``ValueError`` (naming the
    file) for anything that is not a jaxspec model file.
    """
    path = Path(path)
    with _archive(path, model=True) as zf:
        meta = _metadata(zf, path)
    return {k: v for k, v in meta.items() if k != "tree"}


def load(path: str | os.PathLike, *, family: str | None = None, max_bytes: int | None = MAX_BYTES) -> Any:
    """Read a model written by :func:`save`.

    Parameters
    ----------
    path : str or path-like
    family : str, optional
        Expected family; a file of another family is refused.
    max_bytes : int or None
        The most bytes the file's arrays may take uncompressed (default
        :data:`MAX_BYTES`, 4 GiB; None: no limit), checked before they are read.

    Returns
    -------
    The model, its array leaves on the default device (:func:`on_device`).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Naming the file: not a zip archive of ``.npy`` entries, pickled
        (object) or structured content, missing or malformed metadata, an
        unknown family or class, structure nested beyond :data:`MAX_DEPTH`,
        arrays beyond ``max_bytes``, an array its class's declaration refuses
        (naming the field, e.g. ``lux.Model.params.A``) or arrays whose shapes
        do not fit together, or a family other than ``family``.
    """
    _check_max_bytes(max_bytes)
    path = Path(path)
    meta, arrays = _read(path, max_bytes)
    fam = meta["family"]
    cls = _family_class(fam) if isinstance(fam, str) else None
    if cls is None:
        raise ValueError(f"{path}: unknown model family {fam!r}; known: {families()}")
    if family is not None and fam != family:
        raise ValueError(f"{path}: holds a {fam!r} model, expected {family!r}")
    model = _decode(meta["tree"], arrays, str(path), "")
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
