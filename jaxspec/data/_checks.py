"""Validation helpers shared by the containers: numeric arrays, shapes, weights."""

from __future__ import annotations

from typing import Any

import numpy as np


def real_array(x: Any, name: str, dtype: np.dtype | None = None) -> np.ndarray:
    try:
        a = np.asarray(x)
    except Exception as exc:  # ragged lists, tracers, ...
        raise TypeError(f"{name}: expected a real numeric array, found {type(x).__name__} ({exc})") from None
    if a.dtype == bool:
        a = a.astype(np.float64)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"{name}: expected a real numeric array, found dtype {a.dtype}")
    return a if dtype is None else a.astype(dtype, copy=False)


def as_2d(a: np.ndarray, name: str, axes: str) -> np.ndarray:
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array {axes} (or 1-D for one star), found shape {a.shape}")
    return a


def cast(a: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """Cast to the storage dtype; a finite value that does not fit is an error, not an inf."""
    with np.errstate(over="ignore"):
        out = a.astype(dtype)
    overflow = np.isfinite(a) & ~np.isfinite(out)
    if np.any(overflow):
        raise ValueError(f"{name}: values beyond the range of {np.dtype(dtype).name}: {first_bad(overflow)}")
    return out


def first_bad(where: np.ndarray) -> str:
    star, col = np.argwhere(where)[0]
    return f"{int(where.sum())} entries, first at star {star}, column {col}"


def weights(
    values: np.ndarray,
    ivar: Any,
    err: Any,
    mask: Any,
    names: tuple[str, str],
) -> np.ndarray:
    """Inverse variance from ``ivar`` or ``err`` with NaN and ``mask`` folded in.

    Returns the float64 ``ivar``, zero where masked; the caller fills values.
    """
    vname, axes = names
    if ivar is not None and err is not None:
        raise ValueError("give either ivar or err, not both")
    if ivar is None and err is None:
        raise ValueError("missing uncertainties: give ivar= (inverse variance) or err= (1-sigma errors)")
    if err is not None:
        e = as_2d(real_array(err, "err", np.float64), "err", axes)
        if e.shape != values.shape:
            raise ValueError(f"err: expected shape {values.shape} (same as {vname}), found {e.shape}")
        if np.any(e < 0):
            raise ValueError(f"err: expected errors >= 0 (NaN/inf = missing), found negatives: {first_bad(e < 0)}")
        if np.any(e == 0):
            raise ValueError(f"err: expected errors > 0, found zeros (infinite weight): {first_bad(e == 0)}")
        with np.errstate(divide="ignore", over="ignore"):
            iv = np.where(np.isfinite(e), 1.0 / np.square(e), 0.0)
        iv = np.where(np.isnan(e), 0.0, iv)
    else:
        iv = as_2d(real_array(ivar, "ivar", np.float64), "ivar", axes)
        if iv.shape != values.shape:
            raise ValueError(f"ivar: expected shape {values.shape} (same as {vname}), found {iv.shape}")
        if np.any(iv < 0):
            raise ValueError(f"ivar: expected inverse variances >= 0, found negative values: {first_bad(iv < 0)}")
        if np.any(np.isposinf(iv)):
            raise ValueError(f"ivar: expected finite inverse variances, found +inf: {first_bad(np.isposinf(iv))}")
        iv = np.where(np.isnan(iv), 0.0, iv)
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != bool:
            raise TypeError(f"mask: expected a boolean array (True = bad), found dtype {m.dtype}")
        try:
            m = np.broadcast_to(m, values.shape)
        except ValueError:
            raise ValueError(f"mask: expected shape {values.shape} or ({values.shape[1]},), found {m.shape}") from None
        iv = np.where(m, 0.0, iv)
    iv = np.where(np.isfinite(values), iv, 0.0)
    return iv
