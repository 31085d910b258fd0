r"""Scatter VAE input: G-flux normalisation, per-coefficient standardisation and masks.

For star :math:`n` and coefficient :math:`i` (BP 0-54 then RP 0-54, e-/s) with
G flux :math:`g_n` (``phot_g_mean_flux``, e-/s), training mean :math:`c_i` and
standard deviation :math:`d_i` of :math:`a_{ni} / g_n`:

.. math:: x_{ni} = \frac{a_{ni} / g_n - c_i}{d_i}, \qquad
          \sigma_{ni} = \frac{e_{ni} / g_n}{d_i}, \qquad
          C'_{n,ij} = \frac{C_{n,ij}}{g_n^2 d_i d_j}.

A coefficient is used (``mask`` True) when its band is present and its value
and error are finite with :math:`e > 0`; elsewhere ``x = 0`` (the training
mean, which is also what the encoder sees) and ``sigma = 1``, so no NaN ever
reaches a loss.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxspec import io
from jaxspec.data.containers import default_float

N_COEFF = 110  # 55 BP + 55 RP Hermite coefficients
_CHECK_ROWS = 4096  # stars read at a time when checking a (memory-mapped) batch: ~3.6 MB of float32 per leaf
_COV_ROWS = 1024  # stars per chunk of the full covariances: float64 temporaries of ~100 MB


@io.register("svae.Stats", arrays={"center": io.Array(1), "scale": io.Array(1)})
class Stats(NamedTuple):
    """Standardisation of the G-flux-normalised coefficients: ``center`` and ``scale``, float64 ``(110,)``."""

    center: np.ndarray
    scale: np.ndarray


class Batch(NamedTuple):
    """Standardised scatter-VAE input (host arrays, leading axis ``n`` stars).

    Attributes
    ----------
    x : float ``(n, 110)``
        Standardised coefficients; 0 where masked.
    sigma : float ``(n, 110)``
        Standardised 1-sigma errors; 1 where masked.
    mask : bool ``(n, 110)``
        True for used coefficients.
    cov : float ``(n, 110, 110)`` or None
        Standardised coefficient covariance (only for ``full_covariance``);
        masked rows and columns are 0.
    """

    x: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray
    cov: np.ndarray | None = None


def _field(data, name: str):
    return getattr(data, name, None)


def _as_arrays(data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(coefficients, errors, band_mask)`` as float64/bool ``(n, 110)`` from any accepted input."""
    if isinstance(data, tuple) and not hasattr(data, "_fields") and len(data) == 2:
        coef, err = data
        where = "data[0] (coefficients)", "data[1] (errors)"
    elif _field(data, "coefficients") is not None and _field(data, "errors") is not None:
        coef, err = data.coefficients, data.errors
        where = "data.coefficients", "data.errors"
    else:
        raise TypeError(
            "data: expected an XPSpectra, a MockXP or a tuple (coefficients, errors), found " + type(data).__name__
        )
    arrays = []
    for name, a in zip(where, (coef, err), strict=True):
        a = np.asarray(a)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{name}: expected a real numeric array, found dtype {a.dtype}")
        if a.ndim != 2 or a.shape[1] != N_COEFF:
            raise ValueError(f"{name}: expected shape (n, {N_COEFF}) (55 BP + 55 RP coefficients), found {a.shape}")
        arrays.append(a.astype(np.float64, copy=False))
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(
            f"{where[1]}: expected the shape of the coefficients {arrays[0].shape}, found {arrays[1].shape}"
        )
    present = _field(data, "band_present")
    band = np.ones(arrays[0].shape, bool)
    if present is not None:
        band = np.repeat(np.asarray(present, bool), N_COEFF // 2, axis=1)
    return arrays[0], arrays[1], band


def _g_flux(data, g_flux, n: int) -> np.ndarray:
    """The G flux ``(n,)`` e-/s from the argument or ``data.phot_g_mean_flux``, checked finite and > 0."""
    name = "g_flux"
    if g_flux is None:
        g_flux, name = _field(data, "phot_g_mean_flux"), "data.phot_g_mean_flux"
        if g_flux is None:
            raise ValueError(
                "g_flux: expected an array (n,) of phot_g_mean_flux (e-/s), found None and data has no "
                "phot_g_mean_flux (it lives in gaia_source; join it or pass g_flux=)"
            )
    g = np.asarray(g_flux)
    if g.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a real numeric array, found dtype {g.dtype}")
    g = g.astype(np.float64, copy=False)
    if g.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) (one G flux per star), found {g.shape}")
    bad = ~(np.isfinite(g) & (g > 0))
    if bad.any():
        first = int(np.argmax(bad))
        raise ValueError(
            f"{name}: expected finite values > 0 (e-/s), found {g[first]!r} at star {first} "
            f"({int(bad.sum())} bad star(s)); drop those stars first"
        )
    return g


def _check_stats(stats) -> Stats:
    if not isinstance(stats, Stats):
        raise TypeError(f"stats: expected Stats (from preprocess on the training set), found {type(stats).__name__}")
    for name, v in zip(stats._fields, stats, strict=True):
        v = np.asarray(v)
        if v.shape != (N_COEFF,) or not np.all(np.isfinite(v)) or (name == "scale" and not np.all(v > 0)):
            raise ValueError(f"stats.{name}: expected finite values of shape ({N_COEFF},), scale > 0, found {v}")
    return stats


def fit_stats(y: np.ndarray, mask: np.ndarray) -> Stats:
    """Mean and standard deviation per coefficient over the used entries of ``y`` ``(n, 110)``."""
    count = mask.sum(axis=0)
    safe = np.where(mask, y, 0.0)
    center = safe.sum(axis=0) / np.maximum(count, 1)
    var = np.where(mask, (safe - center) ** 2, 0.0).sum(axis=0) / np.maximum(count, 1)
    scale = np.sqrt(var)
    ok = (count > 0) & (scale > 1e-12 * max(float(np.max(scale, initial=0.0)), 1e-300))
    return Stats(np.where(count > 0, center, 0.0), np.where(ok, scale, 1.0))


def _covariance_source(data, covariance, n: int):
    """A function ``rows -> (len(rows), 110, 110)`` covariance in e-/s squared (XPSpectra chunk by chunk)."""
    if covariance is True:
        if not callable(getattr(data, "covariance", None)):
            raise TypeError(
                f"data: full_covariance needs an XPSpectra (with .covariance()) or covariance= an array "
                f"(n, {N_COEFF}, {N_COEFF}), found {type(data).__name__}"
            )
        if callable(getattr(data, "take", None)):
            return lambda sl: data.take(sl).covariance()
        full = data.covariance()
        return lambda sl: full[sl]
    cov = covariance if isinstance(covariance, np.ndarray) else np.asarray(covariance)  # memmaps stay on disk
    if cov.shape != (n, N_COEFF, N_COEFF):
        raise ValueError(f"covariance: expected shape ({n}, {N_COEFF}, {N_COEFF}) (e-/s squared), found {cov.shape}")
    return lambda sl: cov[sl]


def check_batch(batch: Batch, name: str = "data") -> Batch:
    """A preprocessed batch checked: shapes ``(n, 110)`` (``cov`` ``(n, 110, 110)``), finite, ``sigma > 0``.

    Read ``_CHECK_ROWS`` stars at a time, so memmapped leaves are checked without loading them whole.
    """
    n = np.shape(batch.x)[0] if np.ndim(batch.x) == 2 else -1
    for field, shape in (("x", (n, N_COEFF)), ("sigma", (n, N_COEFF)), ("mask", (n, N_COEFF))):
        if np.shape(getattr(batch, field)) != shape or n < 1:
            raise ValueError(f"{name}.{field}: expected shape (n, {N_COEFF}) with n >= 1, found {np.shape(batch.x)}")
    if batch.cov is not None and np.shape(batch.cov) != (n, N_COEFF, N_COEFF):
        raise ValueError(f"{name}.cov: expected shape ({n}, {N_COEFF}, {N_COEFF}), found {np.shape(batch.cov)}")
    if np.asarray(batch.mask[:1]).dtype != bool:
        raise TypeError(f"{name}.mask: expected a bool array, found dtype {np.asarray(batch.mask[:1]).dtype}")
    for start in range(0, n, _CHECK_ROWS):
        sl = slice(start, start + _CHECK_ROWS)
        leaves = [np.asarray(batch.x[sl]), np.asarray(batch.sigma[sl])]
        if batch.cov is not None:
            leaves.append(np.asarray(batch.cov[sl]))
        if not all(np.all(np.isfinite(a)) for a in leaves) or not np.all(leaves[1] > 0):
            raise ValueError(f"{name}: expected finite x, sigma > 0 and cov (as preprocess makes), found bad rows")
    return batch


def preprocess(
    data,
    g_flux=None,
    *,
    stats: Stats | None = None,
    covariance=False,
    keep_empty: bool = False,
) -> tuple[Batch, Stats]:
    r"""Normalise XP coefficients by the G flux and standardise them (module equations).

    Parameters
    ----------
    data : XPSpectra, MockXP or tuple ``(coefficients, errors)``
        Coefficients and errors ``(n, 110)`` in e-/s (BP 0-54, RP 0-54).  NaN
        or infinite values, errors ``<= 0`` and missing bands
        (``band_present``) are masked.
    g_flux : array ``(n,)``, optional
        ``phot_g_mean_flux`` in e-/s; default ``data.phot_g_mean_flux``.
        Must be finite and > 0 (``ValueError`` otherwise).
    stats : Stats, optional
        Training-set standardisation; None computes it from ``data`` (the
        training set): each used coefficient then has mean 0 and standard
        deviation 1 over the stars.
    covariance : bool or array ``(n, 110, 110)``
        True: also return the full covariance from ``data.covariance()``
        (XPSpectra only, computed 1024 stars at a time); an array (or memmap):
        that covariance in e-/s squared.  The result takes ``n * 110**2 * 4``
        bytes (48 kB per star in float32): chunk large surveys.
    keep_empty : bool
        Keep a star with no usable coefficient (all masked: ``x = 0``,
        ``sigma = 1``), as the evaluation verbs do; by default it is an error
        naming the star.

    Returns
    -------
    batch : Batch
        ``x``, ``sigma`` (default float dtype), ``mask`` and ``cov`` (or None).
    stats : Stats
        ``stats`` as given, or computed.

    Examples
    --------
    >>> import numpy as np
    >>> coef = np.arange(1.0, 221.0).reshape(2, 110)
    >>> batch, stats = preprocess((coef, np.ones((2, 110))), g_flux=np.array([1.0, 2.0]))
    >>> batch.x[:, 0].tolist(), bool(batch.mask.all())
    ([-1.0, 1.0], True)
    """
    coef, err, band = _as_arrays(data)
    n = coef.shape[0]
    if n == 0:
        raise ValueError("data: expected at least one star, found 0")
    g = _g_flux(data, g_flux, n)
    mask = band & np.isfinite(coef) & np.isfinite(err) & (err > 0)
    empty = ~mask.any(axis=1)
    if empty.any() and not keep_empty:
        raise ValueError(
            f"data: every star needs at least one usable coefficient (finite, error > 0, band present); "
            f"found none for star(s) {np.flatnonzero(empty)[:10].tolist()}"
        )
    y = np.where(mask, coef, 0.0) / g[:, None]
    stats = fit_stats(y, mask) if stats is None else _check_stats(stats)
    center, scale = np.asarray(stats.center, np.float64), np.asarray(stats.scale, np.float64)
    dtype = default_float()
    x = np.where(mask, (y - center) / scale, 0.0).astype(dtype)
    sigma = np.where(mask, np.where(mask, err, 1.0) / g[:, None] / scale, 1.0).astype(dtype)
    cov = None
    if covariance is not False:
        cov = np.empty((n, N_COEFF, N_COEFF), dtype)
        source = _covariance_source(data, covariance, n)
        for start in range(0, n, _COV_ROWS):  # chunked: the float64 temporaries stay small
            sl = slice(start, min(start + _COV_ROWS, n))
            d = 1.0 / (g[sl, None] * scale)
            both = mask[sl, :, None] & mask[sl, None, :]
            c = np.where(both, np.asarray(source(sl), np.float64), 0.0)
            cov[sl] = np.where(np.isfinite(c), c, 0.0) * (d[:, :, None] * d[:, None, :])  # exactly symmetric
    return Batch(x, sigma, mask, cov), stats
