"""``Spectra`` and ``Labels``: immutable, validated pytrees.

Both hold a value array and an inverse variance ``ivar`` of the same shape,
``(n_stars, n_pix)`` or ``(n_stars, n_labels)``.  ``ivar == 0`` means masked or
missing; masked entries hold a finite placeholder (never NaN), so a weighted
sum over a batch can never turn into NaN.  Constructors take ``ivar`` or
``err``, an optional boolean ``mask`` (``True`` = bad) and NaN, and convert.

Validation runs once, on the host, at construction.  Inside ``jit``/``vmap``
the containers are plain pytrees: ``flux``/``ivar`` (or ``values``/``ivar``)
are leaves, the wavelength grid and label names are static metadata, so
``jax.vmap(f)(spectra)`` hands ``f`` one star with ``flux`` of shape
``(n_pix,)`` and the same wavelength grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import GetAttrKey

from jaxspec.data._checks import as_2d as _as_2d
from jaxspec.data._checks import check_float, check_key
from jaxspec.data._checks import convert as _convert
from jaxspec.data._checks import real_array as _real_array

__all__ = ["Labels", "Spectra", "concatenate", "default_float", "train_test_split"]


def default_float() -> np.dtype:
    """float32, or float64 when ``JAX_ENABLE_X64`` is on."""
    return np.dtype(jnp.zeros(()).dtype)


def _storage_dtype(dtype: Any) -> np.dtype:
    """The containers' storage dtype: ``None`` (the default float) or float16/32/64, else a ``TypeError``.

    An integer, bool or complex storage dtype would silently damage the data (Teff 5000 becomes -120 in
    int8, an ivar of 1e-4 becomes 0, "missing", in int32), so it is refused rather than cast to.
    """
    if dtype is None:
        return default_float()
    try:
        d = np.dtype(dtype)
    except TypeError:
        d = None
    if d is None or d.kind != "f" or d.itemsize not in (2, 4, 8):
        found = dtype if d is None else d
        raise TypeError(f"dtype: expected a floating-point dtype (float16, float32 or float64), found {found!r}")
    return np.dtype(d.name)  # native byte order


def _check_fill(fill_value: Any, dtype: np.dtype) -> float:
    """A finite ``fill_value`` that ``dtype`` holds (NaN there would break the "never NaN" promise)."""
    fill = check_float(fill_value, "fill_value")
    with np.errstate(over="ignore"):
        if not np.isfinite(dtype.type(fill)):
            raise ValueError(f"fill_value: expected a value within the range of {dtype.name}, found {fill_value!r}")
    return fill


class _Static:
    """A read-only numpy array that can be pytree metadata (hashable, comparable)."""

    __slots__ = ("array", "_hash")

    def __init__(self, array: np.ndarray):
        array = np.array(array, copy=True)
        array.setflags(write=False)
        self.array = array
        self._hash = hash((array.shape, array.dtype.str, array.tobytes()))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Static)
            and self._hash == other._hash
            and self.array.shape == other.array.shape
            and bool(np.array_equal(self.array, other.array))
        )


def _row_index(key: Any, n: int) -> np.ndarray:
    if isinstance(key, tuple):
        raise TypeError("index: containers are indexed by star only (one axis); select pixels with preprocess helpers")
    idx = np.atleast_1d(np.arange(n)[np.asarray(key) if not isinstance(key, slice) else key])
    return idx


def _frozen_setattr(self, name, value):
    raise AttributeError(f"{type(self).__name__} is immutable; use .replace(...) to make a modified copy")


class Spectra:
    r"""Continuum-normalised (unless a loader says otherwise) spectra of many stars.

    Parameters
    ----------
    flux : array, shape ``(n_stars, n_pix)`` (or ``(n_pix,)`` for one star)
        Flux; NaN or inf marks a missing pixel.
    ivar : array, same shape, optional
        Inverse variance, ``>= 0``; 0 means masked.  Give ``ivar`` or ``err``.
    wavelength : array, shape ``(n_pix,)``, optional
        Vacuum wavelength in Angstrom, strictly increasing.  ``None`` for data
        that is not on a wavelength grid (e.g. Gaia XP coefficients).
    err : array, same shape as ``flux``, optional
        1-sigma errors, ``> 0``; NaN or inf means missing.
    mask : bool array, ``(n_stars, n_pix)`` or ``(n_pix,)``, optional
        ``True`` marks bad pixels (their ``ivar`` becomes 0).
    fill_value : float
        Placeholder stored in ``flux`` where it was NaN/inf (default 1, the
        continuum); finite.  It never carries weight.
    dtype : float dtype, optional
        Storage dtype of ``flux`` and ``ivar``: float16, float32 or float64;
        default float32 (float64 under ``JAX_ENABLE_X64``).  Inputs are
        converted to it: float16 input is upcast; integer input must be
        exactly representable (e.g. ``|n| <= 2**24`` always is in float32).
        Nothing is cast down silently: a finite value beyond the dtype's
        range, or a positive weight that would underflow to 0, is a
        ``ValueError``; an integer, bool or complex ``dtype`` is a ``TypeError``.

    Raises
    ------
    TypeError, ValueError
        On non-numeric (complex, bool, str) input, a non-float ``dtype``,
        mismatched shapes, negative or zero errors, negative ivar, values the
        storage dtype cannot hold, a non-finite ``fill_value``, a non-monotonic
        wavelength grid, or a star whose flux is NaN at every pixel.

    Examples
    --------
    >>> import numpy as np
    >>> s = Spectra(np.array([[1.0, np.nan, 0.9]]), err=np.full((1, 3), 0.1))
    >>> s.n_stars, s.n_pix, s.ivar.tolist()
    (1, 3, [[100.0, 0.0, 100.0]])
    """

    __slots__ = ("flux", "ivar", "_wave")
    __setattr__ = _frozen_setattr

    def __init__(self, flux, ivar=None, wavelength=None, *, err=None, mask=None, fill_value=1.0, dtype=None):
        dtype = _storage_dtype(dtype)
        fill_value = _check_fill(fill_value, dtype)
        n_pix = _as_2d(_real_array(flux, "flux", allow_bool=False), "flux", "(n_stars, n_pix)").shape[1]
        if n_pix == 0:
            raise ValueError("flux: expected at least one pixel, found none")
        wave = None
        if wavelength is not None:
            w = _real_array(wavelength, "wavelength", allow_bool=False).astype(np.float64)
            if w.shape != (n_pix,):
                raise ValueError(f"wavelength: expected shape ({n_pix},) (one per pixel), found {w.shape}")
            if not np.all(np.isfinite(w)) or np.any(w <= 0):
                raise ValueError("wavelength: expected finite, positive values (vacuum Angstrom)")
            if n_pix > 1 and not np.all(np.diff(w) > 0):
                raise ValueError("wavelength: expected a strictly increasing grid")
            wave = _Static(w)
        f, iv = _convert(
            flux,
            ivar,
            err,
            mask,
            names=("flux", "(n_stars, n_pix)"),
            dtype=dtype,
            fill=fill_value,
            fill_unweighted=False,
            require_finite_row=True,
        )
        self._set(f, iv, wave)

    def _set(self, flux, ivar, wave):
        object.__setattr__(self, "flux", flux)
        object.__setattr__(self, "ivar", ivar)
        object.__setattr__(self, "_wave", wave)

    @classmethod
    def _make(cls, flux, ivar, wave) -> Spectra:
        """Unchecked construction (the caller vouches for the arrays); ``wave`` None, a grid or its ``_Static``."""
        obj = object.__new__(cls)
        obj._set(flux, ivar, wave if wave is None or isinstance(wave, _Static) else _Static(wave))
        return obj

    # -- views -----------------------------------------------------------------
    @property
    def wavelength(self) -> np.ndarray | None:
        """Vacuum wavelength grid in Angstrom, shape ``(n_pix,)``, or ``None``."""
        return None if self._wave is None else self._wave.array

    @property
    def n_stars(self) -> int:
        return self.flux.shape[0]

    @property
    def n_pix(self) -> int:
        return self.flux.shape[-1]

    @property
    def mask(self):
        """Boolean, ``True`` where a pixel is masked (``ivar == 0``)."""
        return self.ivar == 0

    @property
    def err(self):
        """1-sigma errors; ``inf`` where masked."""
        xp = np if isinstance(self.ivar, np.ndarray) else jnp
        with np.errstate(divide="ignore"):
            return xp.where(self.ivar > 0, 1.0 / xp.sqrt(xp.where(self.ivar > 0, self.ivar, 1.0)), xp.inf)

    def snr(self) -> np.ndarray:
        """Median per-pixel signal-to-noise over unmasked pixels, shape ``(n_stars,)``."""
        f, iv = np.asarray(self.flux, np.float64), np.asarray(self.ivar, np.float64)
        s = np.where(iv > 0, np.abs(f) * np.sqrt(iv), np.nan)
        out = np.zeros(self.n_stars)
        ok = (iv > 0).any(axis=1)
        out[ok] = np.nanmedian(s[ok], axis=1)
        return out

    def replace(self, *, flux=None, ivar=None) -> Spectra:
        """A validated copy with ``flux`` and/or ``ivar`` replaced (same grid)."""
        return Spectra(
            self.flux if flux is None else flux,
            self.ivar if ivar is None else ivar,
            self.wavelength,
            dtype=np.asarray(self.flux).dtype,
        )

    def __getitem__(self, key) -> Spectra:
        """Select stars (int, slice, index array or boolean mask); always 2-D."""
        idx = _row_index(key, self.n_stars)
        return Spectra._make(self.flux[idx], self.ivar[idx], self._wave)

    def __len__(self) -> int:
        return self.n_stars

    def split(self, key: jax.Array, test_fraction: float = 0.2) -> tuple[Spectra, Spectra]:
        """Random ``(train, test)`` split of the stars, reproducible from ``key``."""
        return train_test_split(key, self, test_fraction=test_fraction)

    def __repr__(self) -> str:
        w = self.wavelength
        grid = "no wavelength grid" if w is None else f"{w[0]:.2f}-{w[-1]:.2f} A"
        return (
            f"Spectra(n_stars={self.n_stars}, n_pix={self.n_pix}, masked={_zero_fraction(self.ivar):.1%}, "
            f"{grid}, dtype={self.flux.dtype})"
        )


class Labels:
    r"""Stellar labels (Teff, logg, abundances, ...) with inverse variances.

    Parameters
    ----------
    values : array, shape ``(n_stars, n_labels)`` (or ``(n_labels,)`` for one star)
        Label values in physical units (K, dex, ...); NaN marks a missing label.
    ivar : array, same shape, optional
        Inverse variance, ``>= 0``; 0 means missing.  Give ``ivar`` or ``err``.
    names : sequence of str, length ``n_labels``
        Label names, e.g. ``("TEFF", "LOGG", "FE_H")``; unique.
    err : array, same shape, optional
        1-sigma errors, ``> 0``; NaN or inf means missing.
    mask : bool array, optional
        ``True`` marks a missing label.
    dtype : float dtype, optional
        Storage dtype, float16, float32 or float64, with the conversion rules
        of :class:`Spectra` (integer input exactly, nothing cast down
        silently; an integer, bool or complex ``dtype`` is a ``TypeError``).

    Missing entries hold 0 as a placeholder with ``ivar == 0``;
    :func:`jaxspec.data.preprocess.fill_missing_labels` gives the median fill
    for models that need a number there.  A star may have every label
    missing (a test star, say).

    Examples
    --------
    >>> lab = Labels([[4800.0, np.nan]], err=[[50.0, 0.1]], names=["TEFF", "LOGG"])
    >>> lab.ivar.tolist(), lab.as_nan().tolist()
    ([[0.0004, 0.0]], [[4800.0, nan]])
    """

    __slots__ = ("values", "ivar", "names")
    __setattr__ = _frozen_setattr

    def __init__(self, values, ivar=None, names: Sequence[str] | None = None, *, err=None, mask=None, dtype=None):
        dtype = _storage_dtype(dtype)
        n_labels = _as_2d(_real_array(values, "values", allow_bool=False), "values", "(n_stars, n_labels)").shape[1]
        if names is None:
            raise ValueError("names: expected one name per label column, found None")
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"names: expected a sequence of str, found {names!r}")
        names = tuple(names)
        if len(names) != n_labels:
            raise ValueError(f"names: expected {n_labels} names (one per column of values), found {len(names)}")
        if len(set(names)) != len(names):
            raise ValueError(f"names: expected unique names, found {names}")
        v, iv = _convert(
            values,
            ivar,
            err,
            mask,
            names=("values", "(n_stars, n_labels)"),
            dtype=dtype,
            fill=0.0,
            fill_unweighted=True,
            require_finite_row=False,
        )
        self._set(v, iv, names)

    def _set(self, values, ivar, names):
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "ivar", ivar)
        object.__setattr__(self, "names", names)

    @classmethod
    def _make(cls, values, ivar, names) -> Labels:
        obj = object.__new__(cls)
        obj._set(values, ivar, names)
        return obj

    @property
    def n_stars(self) -> int:
        return self.values.shape[0]

    @property
    def n_labels(self) -> int:
        return self.values.shape[-1]

    @property
    def observed(self):
        """Boolean, ``True`` where a label is measured (``ivar > 0``)."""
        return self.ivar > 0

    @property
    def err(self):
        """1-sigma errors; ``inf`` where missing."""
        xp = np if isinstance(self.ivar, np.ndarray) else jnp
        return xp.where(self.ivar > 0, 1.0 / xp.sqrt(xp.where(self.ivar > 0, self.ivar, 1.0)), xp.inf)

    def as_nan(self) -> np.ndarray:
        """Values with NaN where missing (for display and numpy work), float64."""
        return np.where(np.asarray(self.ivar) > 0, np.asarray(self.values, np.float64), np.nan)

    def index(self, name: str) -> int:
        """Column index of ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"name: no label {name!r}; available: {', '.join(self.names)}") from None

    def select(self, names: Sequence[str]) -> Labels:
        """The listed label columns, in that order.

        ``names`` must be non-empty, without repeats, and every name one of
        :attr:`names`; otherwise a ``ValueError`` (``TypeError`` for a bare
        str or non-str entries) naming ``names``.
        """
        try:
            wanted = None if isinstance(names, str) else tuple(names)
        except TypeError:
            wanted = None
        if wanted is None or not all(isinstance(n, str) for n in wanted):
            raise TypeError(f"names: expected a sequence of label names (str), found {names!r}")
        if not wanted:
            raise ValueError("names: expected at least one label name, found none")
        if dup := list(dict.fromkeys(n for n in wanted if wanted.count(n) > 1)):
            raise ValueError(f"names: expected each label once, found {dup} more than once in {list(wanted)}")
        if unknown := [n for n in wanted if n not in self.names]:
            raise ValueError(f"names: expected label names among {list(self.names)}, found unknown {unknown}")
        cols = [self.names.index(n) for n in wanted]
        return Labels._make(self.values[:, cols], self.ivar[:, cols], wanted)

    def replace(self, *, values=None, ivar=None) -> Labels:
        """A validated copy with ``values`` and/or ``ivar`` replaced."""
        return Labels(
            self.values if values is None else values,
            self.ivar if ivar is None else ivar,
            self.names,
            dtype=np.asarray(self.values).dtype,
        )

    def __getitem__(self, key) -> Labels:
        """Select stars (int, slice, index array or boolean mask); always 2-D."""
        idx = _row_index(key, self.n_stars)
        return Labels._make(self.values[idx], self.ivar[idx], self.names)

    def __len__(self) -> int:
        return self.n_stars

    def split(self, key: jax.Array, test_fraction: float = 0.2) -> tuple[Labels, Labels]:
        """Random ``(train, test)`` split of the stars, reproducible from ``key``."""
        return train_test_split(key, self, test_fraction=test_fraction)

    def __repr__(self) -> str:
        return (
            f"Labels(n_stars={self.n_stars}, names={list(self.names)}, "
            f"missing={_zero_fraction(self.ivar):.1%}, dtype={self.values.dtype})"
        )


def _zero_fraction(ivar) -> float:
    """Fraction of masked entries, NaN for tracers and empty arrays (repr must never fail)."""
    if isinstance(ivar, jax.core.Tracer) or ivar.size == 0:
        return float("nan")
    return float(np.mean(np.asarray(ivar) == 0))


jax.tree_util.register_pytree_with_keys(
    Spectra,
    lambda s: (((GetAttrKey("flux"), s.flux), (GetAttrKey("ivar"), s.ivar)), s._wave),
    lambda wave, leaves: Spectra._make(leaves[0], leaves[1], wave),
    flatten_func=lambda s: ((s.flux, s.ivar), s._wave),
)
jax.tree_util.register_pytree_with_keys(
    Labels,
    lambda s: (((GetAttrKey("values"), s.values), (GetAttrKey("ivar"), s.ivar)), s.names),
    lambda names, leaves: Labels._make(leaves[0], leaves[1], names),
    flatten_func=lambda s: ((s.values, s.ivar), s.names),
)


def concatenate(items: Sequence[Spectra] | Sequence[Labels]):
    """Stack several ``Spectra`` (same grid) or ``Labels`` (same names) along stars."""
    items = list(items)
    if not items:
        raise ValueError("items: expected at least one container, found none")
    first = items[0]
    if not all(type(it) is type(first) for it in items):
        raise TypeError(f"items: expected all of one type, found {sorted({type(it).__name__ for it in items})}")
    if isinstance(first, Spectra):
        for i, it in enumerate(items):
            if it._wave != first._wave or it.n_pix != first.n_pix:
                raise ValueError(f"items[{i}]: wavelength grid differs from items[0]; resample first")
        return Spectra._make(
            np.concatenate([np.asarray(it.flux) for it in items]),
            np.concatenate([np.asarray(it.ivar) for it in items]),
            first._wave,
        )
    if isinstance(first, Labels):
        for i, it in enumerate(items):
            if it.names != first.names:
                raise ValueError(f"items[{i}]: label names {it.names} differ from items[0] {first.names}")
        return Labels._make(
            np.concatenate([np.asarray(it.values) for it in items]),
            np.concatenate([np.asarray(it.ivar) for it in items]),
            first.names,
        )
    raise TypeError(f"items: expected Spectra or Labels, found {type(first).__name__}")


def train_test_split(key: jax.Array, *items, test_fraction: float = 0.2) -> tuple:
    """Split several star-aligned containers with one random permutation.

    Parameters
    ----------
    key : jax.random key
        One key (``jax.random.key(seed)``); fixes the permutation (same key,
        same split).
    *items : Spectra or Labels
        At least one container; all with the same number of stars (e.g.
        spectra and labels).  Arrays with one row per star work too.
    test_fraction : float in (0, 1)
        Fraction of stars in the test part (rounded, at least one each side).

    Raises
    ------
    TypeError
        ``key`` not a jax key, a non-number ``test_fraction``, an item without
        a length.
    ValueError
        ``test_fraction`` outside (0, 1), no items, items of different
        lengths, fewer than 2 stars.

    Returns
    -------
    tuple
        ``(train_0, test_0, train_1, test_1, ...)``.

    Examples
    --------
    >>> s = Spectra(np.ones((10, 4)), ivar=np.ones((10, 4)))
    >>> tr, te = train_test_split(jax.random.key(0), s, test_fraction=0.3)
    >>> tr.n_stars, te.n_stars
    (7, 3)
    """
    check_key(key)
    fraction = check_float(test_fraction, "test_fraction", low=0.0, high=1.0, open_low=True, open_high=True)
    if not items:
        raise ValueError("items: expected at least one container to split, found none")
    lengths = []
    for i, it in enumerate(items):
        try:
            lengths.append(len(it))
        except TypeError:
            raise TypeError(
                f"items[{i}]: expected Spectra, Labels or an array of stars, found {type(it).__name__}"
            ) from None
    n = lengths[0]
    for i, m in enumerate(lengths):
        if m != n:
            raise ValueError(f"items[{i}]: expected {n} stars (as items[0]), found {m}; lengths: {lengths}")
    if n < 2:
        raise ValueError(f"items: need at least 2 stars to split, found {n}")
    n_test = min(max(round(n * fraction), 1), n - 1)
    perm = np.asarray(jax.random.permutation(key, n))
    test_idx, train_idx = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    out = []
    for it in items:
        out += [it[train_idx], it[test_idx]]
    return tuple(out)
