"""The flux unit of a fit: a power of two near the data's magnitude, so float32 never meets its range limits.

The Cannon, PPCA and Lux fit ``flux / u`` with ``ivar * u**2`` and map the
fitted parameters back to the caller's units.  Multiplying by a power of two
is exact in binary floating point (short of overflow and underflow), so the
rescaling itself rounds nothing, and data times any factor fit as the data
times that factor, where sums of ``ivar * flux**2`` would otherwise overflow
float32 and small variances fall below its smallest normal number.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_finite_fit", "flux_scale", "in_unit", "power_of_two", "rescaled"]

#: Entries read to find the unit: every k-th star of a survey-sized input (the unit needs no precision).
_SAMPLE = 2**22


def flux_scale(flux, ivar=None, mask=None) -> float:
    """The median ``|flux|`` over measured entries (the largest ``|flux|`` if that median is 0).

    Measured: finite flux, and ``ivar > 0`` (inf counts) and not ``mask`` where given.
    1.0 when nothing is measured or every measured flux is 0 (the fit's own
    checks say so).  Arrays ``(N, D)`` (numpy or memmap); every k-th star of
    a large input is read, at most about ``2**22`` entries.
    """
    n, d = np.shape(flux)
    rows = slice(None, None, max(1, n * d // _SAMPLE))
    x = np.abs(np.asarray(flux[rows], np.float64))
    ok = np.isfinite(x)
    if ivar is not None:
        ok &= np.asarray(ivar[rows], np.float64) > 0
    if mask is not None:
        ok &= ~np.asarray(mask[rows], bool)
    if not ok.any():
        return 1.0
    x = x[ok]
    return float(np.median(x)) or float(x.max()) or 1.0


def power_of_two(scale: float) -> float:
    """The power of two nearest ``scale > 0`` (in log): the unit a fit divides the flux by."""
    return float(2.0 ** np.round(np.log2(scale)))


def rescaled(flux, ivar, unit: float, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``flux / unit`` and ``ivar * unit**2`` in their dtypes, or a ``ValueError`` naming ``name`` and the
    unit when an ivar is (an overflow of the cast to the default float) or becomes infinite."""
    flux, ivar = np.asarray(flux), np.asarray(ivar)
    if unit != 1.0:
        with np.errstate(over="ignore"):
            flux = (flux.astype(np.float64) / unit).astype(flux.dtype)
            ivar = (ivar.astype(np.float64) * unit**2).astype(ivar.dtype)
    if not np.all(np.isfinite(ivar)):
        hint = f"multiply the flux by {1 / unit:.3g} and ivar by {unit**2:.3g}, or " if unit != 1.0 else ""
        raise ValueError(
            f"{name}: an ivar beyond the range of {ivar.dtype.name} at flux scale {unit:.3g}; {hint}enable float64"
        )
    return flux, ivar


def in_unit(x, unit: float, name: str, what: str) -> np.ndarray:
    """``x * unit`` in ``x``'s dtype (exact for a power of two), or a ``ValueError`` naming ``name`` and the
    unit when a value leaves the dtype's range."""
    x = np.asarray(x)
    with np.errstate(over="ignore"):
        out = (x.astype(np.float64) * unit).astype(x.dtype)
    if not np.all(np.isfinite(out)):
        raise ValueError(
            f"{name}: the fitted {what} in the data's unit (flux scale {unit:.3g}) overflow {x.dtype.name}; "
            "divide the flux by a constant (and multiply ivar by its square) to bring it near 1"
        )
    return out


def check_finite_fit(unit: float, name: str, **arrays) -> None:
    """Refuse a fit whose parameters (in its internal unit) are not all finite: never hand back NaN."""
    bad = [k for k, v in arrays.items() if not np.all(np.isfinite(np.asarray(v)))]
    if bad:
        raise ValueError(
            f"{name}: the fit produced non-finite {', '.join(bad)} (flux scale {unit:.3g}, fitted in units of it); "
            "the data may be degenerate or outside float range"
        )
