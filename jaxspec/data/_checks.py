"""Validation and conversion shared by the containers.

``convert`` turns values plus ``ivar`` or ``err`` (plus NaN and a boolean mask)
into finite values and an inverse variance in the storage dtype.  It works on
blocks of rows, so a survey-sized input costs the output plus a few
block-sized float64 temporaries, not several full-size copies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_BLOCK_ELEMENTS = 1 << 22  # ~4M entries (32 MB in float64) per block of rows


def real_array(x: Any, name: str, *, allow_bool: bool = True) -> np.ndarray:
    """``x`` as a numpy array of a real numeric dtype, without copying if possible.

    bool becomes float, or with ``allow_bool=False`` is a ``TypeError`` (a boolean array where numbers are
    expected is usually a mask passed in the wrong place).
    """
    try:
        a = np.asarray(x)
    except Exception as exc:  # ragged lists, tracers, ...
        raise TypeError(f"{name}: expected a real numeric array, found {type(x).__name__} ({exc})") from None
    if a.dtype == bool:
        if not allow_bool:
            raise TypeError(f"{name}: expected a real numeric array, found dtype bool (a mask? give it as mask=)")
        a = a.astype(np.float64)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"{name}: expected a real numeric array, found dtype {a.dtype}")
    return a


def as_2d(a: np.ndarray, name: str, axes: str) -> np.ndarray:
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array {axes} (or 1-D for one star), found shape {a.shape}")
    return a


def finite_2d(x: Any, name: str) -> np.ndarray:
    """``x`` as a finite float64 ``(n_stars, n_features)`` array."""
    a = real_array(x, name).astype(np.float64, copy=False)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (n_stars, n_features), found shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: expected finite values, found {int(np.sum(~np.isfinite(a)))} NaN or inf")
    return a


def int_ids(ids: Any, n: int, name: str) -> np.ndarray:
    """Integer group ids ``(n,)``, one per star (any integers; gaps allowed)."""
    a = np.asarray(ids)
    if a.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},), one id per star, found {a.shape}")
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer ids, found dtype {a.dtype}")
    return a


def first_bad(where: np.ndarray, row0: int = 0) -> str:
    star, col = np.argwhere(where)[0]
    return f"first at star {row0 + star}, column {col}"


def _ivar_block(w: np.ndarray, is_err: bool, row0: int) -> np.ndarray:
    if is_err:
        if np.any(w < 0):
            raise ValueError(f"err: expected errors >= 0 (NaN/inf: missing), found a negative {first_bad(w < 0, row0)}")
        if np.any(w == 0):
            raise ValueError(f"err: expected errors > 0, found a zero (infinite weight) {first_bad(w == 0, row0)}")
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            iv = 1.0 / np.square(w)
        overflow = np.isfinite(w) & ~np.isfinite(iv)
        if np.any(overflow):
            raise ValueError(f"err: an error so small that 1/err**2 overflows {first_bad(overflow, row0)}")
        return np.where(np.isfinite(w), iv, 0.0)
    if np.any(w < 0):
        raise ValueError(f"ivar: expected inverse variances >= 0, found a negative one {first_bad(w < 0, row0)}")
    if np.any(np.isposinf(w)):
        raise ValueError(f"ivar: expected finite inverse variances, found +inf {first_bad(np.isposinf(w), row0)}")
    return np.where(np.isnan(w), 0.0, w)


def _store(block: np.ndarray, out: np.ndarray, name: str, row0: int, *, weight: bool = False) -> None:
    """Write a float64 block into ``out``; a finite value beyond the dtype's range is an error, not an inf.

    With ``weight``, a positive value that underflows to 0 is an error too: it would turn a measured
    entry into a missing one without a word.
    """
    with np.errstate(over="ignore", under="ignore"):
        out[...] = block
    overflow = np.isfinite(block) & ~np.isfinite(out)
    if np.any(overflow):
        raise ValueError(f"{name}: a value beyond the range of {out.dtype.name} {first_bad(overflow, row0)}")
    if weight:
        lost = (block > 0) & (out == 0)
        if np.any(lost):
            what = "1/err**2" if name == "err" else "an inverse variance"
            raise ValueError(
                f"{name}: expected weights that {out.dtype.name} can hold, found {what} of "
                f"{block[lost][0]:.3g} that underflows to 0 (a measured entry would become missing) "
                f"{first_bad(lost, row0)}; mark missing entries with NaN, or use dtype=np.float64"
            )


def _check_exact_ints(block: np.ndarray, dtype: np.dtype, name: str, row0: int) -> None:
    """Refuse integers that the float ``dtype`` cannot hold exactly (int32 16777217 in float32, say)."""
    if block.dtype.kind not in "iu":
        return
    info = np.iinfo(block.dtype)
    lim = 2 ** (np.finfo(dtype).nmant + 1)  # every integer in [-lim, lim] is exact
    if info.max <= lim and info.min >= -lim:
        return
    big = block > lim
    if info.min < 0:
        big |= block < -lim
    if not big.any():
        return
    vals = block[big]
    with np.errstate(over="ignore", invalid="ignore"):
        back = vals.astype(dtype).astype(np.float64)
    inside = (back >= info.min) & (back < float(info.max) + 1.0)  # inf (float16 overflow) is outside
    exact = np.zeros(vals.shape, bool)
    exact[inside] = back[inside].astype(block.dtype) == vals[inside]
    if not exact.all():
        where = np.zeros(block.shape, bool)
        where[big] = ~exact
        raise ValueError(
            f"{name}: expected integers that {dtype.name} holds exactly, found {vals[~exact][0]} "
            f"{first_bad(where, row0)}; convert to float first if rounding is acceptable, or use dtype=np.float64"
        )


def convert(
    values: Any,
    ivar: Any,
    err: Any,
    mask: Any,
    *,
    names: tuple[str, str],
    dtype: np.dtype,
    fill: float,
    fill_unweighted: bool,
    require_finite_row: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Finite values and inverse variance, both ``dtype``, zero weight where missing.

    Parameters
    ----------
    values, ivar, err, mask
        As the container constructors take them (exactly one of ivar/err).
    names : (value name, axes description), for messages.
    fill : float
        Placeholder stored where a value is NaN/inf (or, with
        ``fill_unweighted``, wherever its weight is zero).
    require_finite_row : bool
        Raise if a row has no finite value at all.

    bool values or weights are a ``TypeError``; integer ones must be exactly representable in ``dtype``;
    a weight that underflows to 0 in ``dtype`` is a ``ValueError`` (it would silently become "missing").
    """
    vname, axes = names
    if ivar is not None and err is not None:
        raise ValueError("give either ivar or err, not both")
    if ivar is None and err is None:
        raise ValueError("missing uncertainties: give ivar= (inverse variance) or err= (1-sigma errors)")
    v = as_2d(real_array(values, vname, allow_bool=False), vname, axes)
    wname = "err" if err is not None else "ivar"
    w = as_2d(real_array(err if err is not None else ivar, wname, allow_bool=False), wname, axes)
    if w.shape != v.shape:
        raise ValueError(f"{wname}: expected shape {v.shape} (same as {vname}), found {w.shape}")
    m = None
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != bool:
            raise TypeError(f"mask: expected a boolean array (True = bad), found dtype {m.dtype}")
        try:
            m = np.broadcast_to(m, v.shape)
        except ValueError:
            raise ValueError(f"mask: expected shape {v.shape} or ({v.shape[1]},), found {m.shape}") from None
    out_v, out_w = np.empty(v.shape, dtype), np.empty(v.shape, dtype)
    step = max(1, _BLOCK_ELEMENTS // max(1, v.shape[1]))
    for r0 in range(0, v.shape[0], step):
        rows = slice(r0, r0 + step)
        _check_exact_ints(v[rows], dtype, vname, r0)
        _check_exact_ints(w[rows], dtype, wname, r0)
        vb = v[rows].astype(np.float64)
        finite = np.isfinite(vb)
        if require_finite_row and not finite.any(axis=1).all():
            bad = np.flatnonzero(~finite.any(axis=1))
            raise ValueError(f"{vname}: star(s) with no finite pixel (all NaN/inf), first at row {r0 + bad[0]}")
        iv = _ivar_block(w[rows].astype(np.float64), err is not None, r0)
        if m is not None:
            iv[m[rows]] = 0.0
        iv[~finite] = 0.0
        keep = finite & (iv > 0) if fill_unweighted else finite
        _store(np.where(keep, vb, fill), out_v[rows], vname, r0)
        _store(iv, out_w[rows], wname, r0, weight=True)
    return out_v, out_w


# -- scalars and keys: configuration fields and call arguments -------------------------------------


def _describe(x: Any) -> str:
    """A short description of ``x`` for messages: type plus dtype/shape for arrays, else a clipped repr."""
    if isinstance(x, np.ndarray):
        return f"a numpy array (dtype {x.dtype}, shape {x.shape})"
    if hasattr(x, "dtype") and hasattr(x, "shape"):
        return f"{type(x).__name__} (dtype {x.dtype}, shape {tuple(x.shape)})"
    r = repr(x)
    return f"{type(x).__name__} {r if len(r) <= 60 else r[:57] + '...'}"


def check_key(key: Any, name: str = "key"):
    """``key`` if it is one ``jax.random`` key (new-style ``jax.random.key`` or a legacy ``PRNGKey``).

    Anything else is a ``TypeError`` naming ``name`` (numpy arrays too: a numpy ``uint32`` pair is not a jax
    key); a batch of keys (``jax.random.split(key, n)``) where one is expected is a ``ValueError``.
    """
    import jax

    hint = "jax.random.key(seed)"
    if isinstance(key, jax.Array):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            if key.shape != ():
                raise ValueError(
                    f"{name}: expected a single key, found shape {key.shape} (a batch; pick one: {name}[0])"
                )
            return key
        if key.dtype == np.uint32 and key.shape == (2,):  # legacy jax.random.PRNGKey(seed)
            return key
        if key.dtype == np.uint32 and key.ndim >= 2 and key.shape[-1] == 2:
            raise ValueError(
                f"{name}: expected a single key, found shape {key.shape} (a batch of legacy PRNGKeys; pick one)"
            )
        raise TypeError(
            f"{name}: expected a jax.random key ({hint}), found a jax array (dtype {key.dtype}, shape {key.shape})"
        )
    if isinstance(key, np.ndarray):
        raise TypeError(
            f"{name}: expected a jax.random key, found {_describe(key)}; a numpy array is not a key: {hint}"
        )
    seed = f"; for a seed use jax.random.key({key})" if isinstance(key, int | np.integer) else ""
    raise TypeError(f"{name}: expected a jax.random key ({hint}), found {_describe(key)}{seed}")


def check_int(value: Any, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` (Python or numpy integer, not bool) in ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name}: expected an int, found {type(value).__name__} {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        lo = "" if minimum is None else f">= {minimum}"
        hi = "" if maximum is None else f"<= {maximum}"
        raise ValueError(f"{name}: expected an int {' and '.join(filter(None, (lo, hi)))}, found {value!r}")
    return int(value)


def check_float(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
) -> float:
    """``value`` as a finite ``float`` in ``[low, high]`` (the ends excluded with ``open_low``/``open_high``)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name}: expected a number, found {type(value).__name__} {value!r}")
    v = float(value)
    bad = not np.isfinite(v) or (low is not None and (v <= low if open_low else v < low))
    bad = bad or (high is not None and (v >= high if open_high else v > high))
    if bad:
        lo = "" if low is None else f"{'>' if open_low else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if open_high else '<='} {high:g}"
        bounds = " and ".join(filter(None, (lo, hi)))
        raise ValueError(f"{name}: expected a finite value{' ' + bounds if bounds else ''}, found {value!r}")
    return v


def check_choice(value: Any, name: str, choices: tuple) -> Any:
    """``value`` if it is one of ``choices``."""
    if not isinstance(value, str | type(None) | bool) or value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, found {value!r}")
    return value


def check_widths(value: Any, name: str) -> tuple[int, ...]:
    """A non-empty tuple (or list) of ints >= 1, e.g. a network's hidden widths, as a tuple of int."""
    if not isinstance(value, tuple | list):
        raise TypeError(f"{name}: expected a tuple of positive ints, found {type(value).__name__} {value!r}")
    if len(value) == 0:
        raise ValueError(f"{name}: expected at least one hidden layer, found ()")
    for i, width in enumerate(value):
        check_int(width, f"{name}[{i}]", minimum=1)
    return tuple(int(w) for w in value)
