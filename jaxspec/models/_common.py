"""The family contract: what every model family shares (``docs/families.md`` walks through it).

* :func:`model_dataclass` registers a frozen dataclass as a JAX pytree: array
  fields are leaves, fields declared with :func:`static` (names, wavelength
  grids, the config) are static metadata, so a model passes through
  ``jax.jit``, ``jax.vmap`` and ``jax.grad``.
* :class:`FitResult` is what every ``fit`` returns.
* :class:`LabelPrediction` and :class:`SpectraPrediction` are what every
  ``predict_labels`` and ``predict_spectra`` return.
* :data:`CHUNK_SIZE` is the one default of every ``chunk_size``; every verb's
  ``progress`` defaults to ``True``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxspec.data.containers import Labels, Spectra
from jaxspec.io import on_device

__all__ = [
    "CHUNK_SIZE",
    "FitResult",
    "LabelPrediction",
    "SpectraPrediction",
    "check_finite_measured",
    "check_label_columns",
    "check_last_axis",
    "check_measured",
    "check_shapes",
    "check_stars",
    "check_tree_shapes",
    "model_dataclass",
    "on_device",
    "static",
]

#: Stars per compiled chunk of every batch verb: bounded memory (a chunk of 7514-pixel spectra with their
#: weights is ~60 MB in float32) and one compilation per verb; large enough that a chunk's dispatch costs
#: little beside its arithmetic on a CPU (measured: benchmarks/RESULTS.md).
CHUNK_SIZE = 1024


class FitResult(NamedTuple):
    """What every family's ``fit`` returns.

    Attributes
    ----------
    model
        The trained model: a frozen dataclass registered as a JAX pytree, saved
        by ``jaxspec.io.save``.
    history : dict of str to numpy array
        Loss or objective terms, one row per iteration, step or epoch.
    converged : bool
        The fit met its tolerance (an EM or block-coordinate tolerance, or early
        stopping on the validation loss); False when it stopped at its
        iteration or epoch cap instead.
    aux : dict
        What the fit computed on the training stars that the model does not
        keep (training latents, the best epoch, ...); named by each family.
    """

    model: Any
    history: dict
    converged: bool
    aux: dict


class LabelPrediction(NamedTuple):
    """Labels predicted from spectra (``n`` stars, ``M`` labels).

    Attributes
    ----------
    labels : Labels
        Physical units; ``ivar`` from the covariance's diagonal (0 for a
        flagged star, whose value is the model's label centre).
    covariance : array ``(n, M, M)``
        Label covariance in physical units (``inf`` diagonal when flagged).
    z : array ``(n, P)`` or None
        The star's latents, for latent-variable models.
    reduced_chi2 : array ``(n,)``
        Chi2 of the spectrum fit over (measured pixels - free parameters).
    flagged : bool array ``(n,)``
        No measured pixel, or the fit failed: the star's labels are placeholders.
    """

    labels: Labels
    covariance: Any
    z: Any
    reduced_chi2: Any
    flagged: Any


class SpectraPrediction(NamedTuple):
    """Spectra predicted from labels (``n`` stars).

    Attributes
    ----------
    spectra : Spectra
        Model flux; ``ivar`` the inverse of the model's predictive variance
        (0 for a flagged star, whose flux is 1).
    z : array ``(n, P)`` or None
        The star's latents, for latent-variable models.
    reduced_chi2 : array ``(n,)`` or None
        Chi2 of the label fit, where the labels were fitted.
    flagged : bool array ``(n,)``
        No measured label, or the fit failed.
    """

    spectra: Spectra
    z: Any
    reduced_chi2: Any
    flagged: Any


def check_last_axis(x, size: int, name: str):
    """``x`` as an array whose last axis has ``size`` entries (a static check: works on tracers too)."""
    shape = np.shape(x)
    if len(shape) == 0 or shape[-1] != size:
        raise ValueError(f"{name}: expected shape (..., {size}), found {shape}")
    return x


# -- input checks shared by the fits and verbs (docs/families.md, "Bad input") -------------------

#: Rows per block of the host-side scans below (bounded temporaries for survey-sized inputs).
_SCAN_ROWS = 4096


def check_stars(n: int, name: str) -> int:
    """``n`` if at least one star, else a ``ValueError`` naming ``name`` (fits and verbs refuse zero stars)."""
    if n == 0:
        raise ValueError(f"{name}: expected at least one star, found 0")
    return n


def check_measured(ivar, name: str, what: str = "pixel") -> None:
    """Refuse a fit in which no entry of ``ivar`` ``(n, L)`` is measured (``ivar > 0``)."""
    ivar = np.asarray(ivar) if not hasattr(ivar, "shape") else ivar
    for lo in range(0, ivar.shape[0], _SCAN_ROWS):
        if np.any(np.asarray(ivar[lo : lo + _SCAN_ROWS]) > 0):
            return
    raise ValueError(f"{name}: expected at least one measured {what} (ivar > 0), found every {what} masked")


def check_finite_measured(values, ivar, name: str) -> None:
    """Refuse NaN or inf values where ``ivar > 0``, and a NaN, inf or negative ``ivar`` (a container changed
    behind its constructor's back).

    The containers store a finite placeholder wherever a value is missing, so a
    fit or verb reading only ``ivar > 0`` entries never meets NaN; a ``Spectra``
    or ``Labels`` built with ``_make``, edited with ``object.__setattr__`` or
    mapped with ``jax.tree.map`` may break that promise: this says where.
    """
    for lo in range(0, np.shape(values)[0], _SCAN_ROWS):
        v, w = np.asarray(values[lo : lo + _SCAN_ROWS]), np.asarray(ivar[lo : lo + _SCAN_ROWS])
        bad_w = ~(np.isfinite(w) & (w >= 0))
        if bad_w.any():
            star, col = np.argwhere(bad_w)[0]
            raise ValueError(
                f"{name}: expected ivar finite and >= 0, found {w[star, col]} at star {lo + star}, column {col} "
                "(build the container with its constructor, which checks it)"
            )
        bad = ~np.isfinite(v) & (w > 0)
        if bad.any():
            star, col = np.argwhere(bad)[0]
            raise ValueError(
                f"{name}: expected finite values wherever ivar > 0, found {v[star, col]} at star {lo + star}, "
                f"column {col} (build the container with its constructor, which masks NaN)"
            )


def check_grid(grid, wavelength, name: str = "spectra") -> None:
    """Refuse spectra on a wavelength grid other than the model's (when both have one; ``rtol`` 1e-7)."""
    if grid is None or wavelength is None:
        return
    grid, wavelength = np.asarray(grid), np.asarray(wavelength)
    if grid.shape != wavelength.shape or not np.allclose(grid, wavelength, rtol=1e-7, atol=0):
        raise ValueError(
            f"{name}: wavelength grid differs from the model's ({wavelength[0]:.3f}-{wavelength[-1]:.3f} A); "
            "resample the spectra onto the training grid first"
        )


def check_label_columns(ivar, names, name: str = "labels") -> None:
    """Refuse training labels of which a column is never measured (nothing to learn it from)."""
    seen = np.any(np.asarray(ivar) > 0, axis=0)
    if not seen.any():
        raise ValueError(f"{name}: expected at least one measured label (ivar > 0), found every label missing")
    if not seen.all():
        never = [n for n, ok in zip(names, seen, strict=True) if not ok]
        raise ValueError(f"{name}: expected every label measured for at least one star, found none for {never}")


def check_shapes(owner: str, **fields: tuple[Any, tuple]) -> None:
    """Refuse fields whose shape is not the one the others imply: ``name=(array or None, shape)``.

    A model's ``__post_init__`` calls this so that a model file whose arrays do
    not fit together fails in ``io.load`` (naming the file), not later in a verb.
    ``None`` arrays (optional fields) are skipped.
    """
    bad = [f"{n} {np.shape(a)} (expected {s})" for n, (a, s) in fields.items() if a is not None and np.shape(a) != s]
    if bad:
        raise ValueError(f"{owner}: shapes that do not fit together: {', '.join(bad)}")


def check_tree_shapes(owner: str, name: str, found, expected) -> None:
    """Refuse a pytree of arrays ``found`` whose structure or leaf shapes differ from ``expected``
    (a pytree of anything with a ``shape``, e.g. ``jax.eval_shape`` of the initialiser)."""
    paths = dict(jax.tree_util.tree_flatten_with_path(found)[0])
    want = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    if paths.keys() != want.keys():
        missing = sorted(jax.tree_util.keystr(k) for k in want.keys() - paths.keys())
        extra = sorted(jax.tree_util.keystr(k) for k in paths.keys() - want.keys())
        raise ValueError(f"{owner}: {name} is not the network its config builds: missing {missing}, unexpected {extra}")
    check_shapes(
        owner,
        **{f"{name}{jax.tree_util.keystr(k)}": (paths[k], tuple(v.shape)) for k, v in want.items()},
    )


# -- models as pytrees ---------------------------------------------------------------------------


def static(**kwargs):
    """A dataclass field that is static metadata of the pytree (names, grids, config), not a leaf."""
    metadata = {**kwargs.pop("metadata", {}), "static": True}
    return dataclasses.field(metadata=metadata, **kwargs)


def _key(value):
    """A hashable stand-in for a static value; arrays by shape, dtype and a digest of their bytes."""
    if isinstance(value, np.ndarray):
        digest = hashlib.blake2b(np.ascontiguousarray(value).tobytes(), digest_size=16).digest()
        return ("ndarray", value.shape, value.dtype.str, digest)
    if isinstance(value, tuple | list):
        return (type(value).__name__, *map(_key, value))
    if isinstance(value, dict):
        return ("dict", *((k, _key(v)) for k, v in sorted(value.items())))
    return value


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
        )
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


class _Static:
    """The static fields of one model: hashable and comparable although they may hold numpy arrays."""

    __slots__ = ("_hash", "values")

    def __init__(self, values: tuple):
        self.values = values
        self._hash = None

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(_key(self.values))
        return self._hash

    def __eq__(self, other) -> bool:
        return isinstance(other, _Static) and (self is other or _same(self.values, other.values))

    def __repr__(self) -> str:
        return f"_Static({len(self.values)} fields)"


def model_dataclass(cls: type) -> type:
    """Register a frozen dataclass as a JAX pytree: :func:`static` fields are metadata, the others children.

    Children may be arrays, ``None`` or pytrees (parameter NamedTuples, nested
    models).  Rebuilding from leaves (``jax.tree.map``, a trace) bypasses
    ``__init__``, so validation in ``__post_init__`` runs only when a model
    is constructed (by ``fit`` or ``io.load``), never on tracers.
    """
    if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):
        raise TypeError(f"model_dataclass: expected a frozen dataclass, found {cls!r}")
    fields = dataclasses.fields(cls)
    children = tuple(f.name for f in fields if not f.metadata.get("static"))
    meta = tuple(f.name for f in fields if f.metadata.get("static"))

    def flatten_with_keys(obj):
        return tuple((jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in children), _Static(
            tuple(getattr(obj, n) for n in meta)
        )

    def flatten(obj):
        return tuple(getattr(obj, n) for n in children), _Static(tuple(getattr(obj, n) for n in meta))

    def unflatten(aux: _Static, values):
        obj = object.__new__(cls)
        for name, value in zip(children, values, strict=True):
            object.__setattr__(obj, name, value)
        for name, value in zip(meta, aux.values, strict=True):
            object.__setattr__(obj, name, value)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
    cls._jaxspec_static_fields = meta
    return cls
