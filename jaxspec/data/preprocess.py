r"""Preparing spectra and labels for a fit, as the Lux paper does.

Horta et al. (2025, Sect. 2) prepare APOGEE data so that:

* a flux of exactly zero, a non-finite flux, or an inverse variance below 0.1
  is a bad pixel; the paper sets its flux to 1 (the continuum) and its error
  to 9999.  Here the pixel gets ``ivar = 0`` and flux 1: the same zero weight,
  with no magic number (:func:`mask_bad_pixels`);
* a missing label is filled with the training-set median and given a huge
  error.  Here it keeps ``ivar = 0``; :func:`fill_missing_labels` supplies the
  median only for models that need a number in that slot;
* labels are rescaled by a robust centre and scale, median and
  :math:`(p_{97.5} - p_{2.5}) / 4`, before the latents are initialised
  (:func:`fit_standardizer`).  The :class:`Standardizer` keeps both so that
  predictions return to physical units.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxspec import io
from jaxspec.data._checks import check_float
from jaxspec.data.containers import Labels, Spectra

__all__ = [
    "Standardizer",
    "apply_pixel_mask",
    "fill_missing_labels",
    "fit_standardizer",
    "mask_bad_pixels",
]


def mask_bad_pixels(spectra: Spectra, *, min_ivar: float = 0.1, fill_value: float = 1.0) -> Spectra:
    r"""Mask zero flux and tiny inverse variance (the Lux recipe).

    A pixel is bad where ``flux == 0`` or ``ivar < min_ivar``; it gets
    ``ivar = 0`` and ``flux = fill_value``.

    Parameters
    ----------
    spectra : Spectra, ``(n_stars, n_pix)``
    min_ivar : float
        Smallest usable inverse variance, finite and ``>= 0`` (paper: 0.1,
        i.e. errors above ~3.2 in continuum units).
    fill_value : float
        Flux placeholder for bad pixels, finite (1 = continuum, the paper's
        choice for continuum-normalised spectra).

    Returns
    -------
    Spectra
        Same stars and grid.

    Raises
    ------
    TypeError, ValueError
        ``spectra`` not a ``Spectra``; a NaN, infinite or negative
        ``min_ivar``; a non-finite ``fill_value`` (NaN in ``flux`` is never
        allowed) or one beyond the range of the flux dtype.

    Examples
    --------
    >>> s = Spectra([[1.0, 0.0, 0.8]], ivar=[[100.0, 100.0, 0.05]])
    >>> out = mask_bad_pixels(s)
    >>> out.ivar.tolist(), out.flux.tolist()
    ([[100.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]])
    """
    if not isinstance(spectra, Spectra):
        raise TypeError(f"spectra: expected Spectra, found {type(spectra).__name__}")
    min_ivar = check_float(min_ivar, "min_ivar", low=0.0)
    fill_value = check_float(fill_value, "fill_value")
    flux, ivar = np.asarray(spectra.flux), np.asarray(spectra.ivar)
    with np.errstate(over="ignore"):
        fill = np.asarray(fill_value, flux.dtype)
    if not np.isfinite(fill):
        raise ValueError(f"fill_value: expected a value within the range of {flux.dtype.name}, found {fill_value!r}")
    bad = (flux == 0) | (ivar < min_ivar) | (ivar == 0)
    return Spectra._make(
        np.where(bad, fill, flux),
        np.where(bad, np.zeros((), ivar.dtype), ivar),
        spectra._wave,
    )


def apply_pixel_mask(spectra: Spectra, mask) -> Spectra:
    """Zero the weight of pixels where ``mask`` is ``True``.

    Parameters
    ----------
    spectra : Spectra, ``(n_stars, n_pix)``
    mask : bool array, ``(n_pix,)`` (one mask for all stars, e.g. The Payne's
        ``apogee_mask``) or ``(n_stars, n_pix)``; ``True`` = drop the pixel.
    """
    m = np.asarray(mask)
    if m.dtype != bool:
        raise TypeError(f"mask: expected a boolean array (True = bad), found dtype {m.dtype}")
    if m.shape not in ((spectra.n_pix,), (spectra.n_stars, spectra.n_pix)):
        raise ValueError(f"mask: expected shape ({spectra.n_pix},) or {spectra.flux.shape}, found {m.shape}")
    ivar = np.asarray(spectra.ivar)
    return Spectra._make(np.asarray(spectra.flux), np.where(m, np.zeros((), ivar.dtype), ivar), spectra._wave)


def _column_stats(values: np.ndarray, observed: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.where(observed, values.astype(np.float64), np.nan)
    if method == "percentile":
        center = np.nanmedian(x, axis=0)
        lo, hi = np.nanpercentile(x, [2.5, 97.5], axis=0)
        scale = (hi - lo) / 4.0
    else:
        center = np.nanmean(x, axis=0)
        scale = np.nanstd(x, axis=0)
    return center, scale


def _observed_columns(x: Labels | Spectra | np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[str, ...] | None]:
    if isinstance(x, Labels):
        return np.asarray(x.values), np.asarray(x.ivar) > 0, x.names
    if isinstance(x, Spectra):
        return np.asarray(x.flux), np.asarray(x.ivar) > 0, None
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"x: expected a 2-D array (n_stars, n_columns), found shape {a.shape}")
    return a, np.isfinite(a), None


def fill_missing_labels(labels: Labels, center=None) -> np.ndarray:
    """Label values with each missing entry replaced by its column's median.

    This is the number the Lux paper puts in a missing slot; the weight stays
    ``ivar = 0``, so it only matters to models that need *some* value there
    (e.g. to initialise latents).

    Parameters
    ----------
    labels : Labels, ``(n_stars, n_labels)``
    center : array ``(n_labels,)``, optional
        Fill values (e.g. a training set's medians, so test stars are filled
        like training stars).  Default: this set's medians over measured
        entries; a label never measured is filled with 0.

    Returns
    -------
    numpy array, ``(n_stars, n_labels)``

    Examples
    --------
    >>> lab = Labels([[1.0, 2.0], [3.0, np.nan], [5.0, 4.0]], err=np.ones((3, 2)), names=["a", "b"])
    >>> fill_missing_labels(lab).tolist()
    [[1.0, 2.0], [3.0, 3.0], [5.0, 4.0]]
    """
    values, observed, _ = _observed_columns(labels)
    if center is None:
        x = np.where(observed, values.astype(np.float64), np.nan)
        center = np.zeros(values.shape[1])
        seen = observed.any(axis=0)
        center[seen] = np.nanmedian(x[:, seen], axis=0)
    center = np.asarray(center, dtype=values.dtype)
    if center.shape != (values.shape[1],):
        raise ValueError(f"center: expected shape ({values.shape[1]},), found {center.shape}")
    return np.where(observed, values, center)


class Standardizer(NamedTuple):
    r"""Per-column centre and scale: :math:`x' = (x - c) / s`.

    Attributes
    ----------
    center, scale : arrays ``(n_columns,)``, in the columns' physical units.

    A pytree (NamedTuple), so it can live inside a trained model and be saved
    by :mod:`jaxspec.io`.
    """

    center: np.ndarray
    scale: np.ndarray

    def transform(self, x):
        """Standardise ``Labels``/``Spectra`` (ivar scaled by ``scale**2``) or a raw array ``(..., n_columns)``.

        The column count must match the fitted one (``ValueError`` naming ``x``), also for a raw array.
        """
        c, s = np.asarray(self.center), np.asarray(self.scale)
        if isinstance(x, Labels):
            _check_width(x.n_labels, c)
            return Labels._make(
                ((np.asarray(x.values) - c) / s).astype(x.values.dtype) * (np.asarray(x.ivar) > 0),
                (np.asarray(x.ivar) * s**2).astype(x.ivar.dtype),
                x.names,
            )
        if isinstance(x, Spectra):
            _check_width(x.n_pix, c)
            return Spectra._make(
                ((np.asarray(x.flux) - c) / s).astype(x.flux.dtype),
                (np.asarray(x.ivar) * s**2).astype(x.ivar.dtype),
                x._wave,
            )
        _check_last_axis(x, c, "x")
        return (x - self.center) / self.scale

    def inverse(self, x):
        """Back to physical units: ``x * scale + center`` (array ``(..., n_columns)``)."""
        _check_last_axis(x, self.center, "x")
        return x * self.scale + self.center

    def inverse_err(self, err):
        """Errors back to physical units: ``err * scale`` (array ``(..., n_columns)``)."""
        _check_last_axis(err, self.center, "err")
        return err * self.scale


def _check_width(n: int, center: np.ndarray) -> None:
    if center.shape != (n,):
        raise ValueError(f"x: expected {center.shape[0]} columns (as the standardizer was fitted), found {n}")


def _check_last_axis(x, center, name: str) -> None:
    """A raw array must have one column per standardised column on its last axis (no silent broadcasting).

    Only shapes are read, so this also works on tracers inside ``jit``.
    """
    c_shape = np.shape(center)
    if len(c_shape) != 1:
        return
    shape = np.shape(x)
    if not shape or shape[-1] != c_shape[0]:
        raise ValueError(
            f"{name}: expected an array (..., {c_shape[0]}), {c_shape[0]} columns as the standardizer "
            f"was fitted, found shape {shape}"
        )


def fit_standardizer(x: Labels | Spectra | np.ndarray, *, method: str = "percentile") -> Standardizer:
    r"""Per-column centre and scale from the measured entries.

    Parameters
    ----------
    x : Labels, Spectra or array ``(n_stars, n_columns)`` (NaN = missing)
    method : ``"percentile"`` or ``"moments"``
        ``"percentile"`` (Lux): centre = median,
        scale = :math:`(p_{97.5} - p_{2.5})/4`, robust to outliers.
        ``"moments"``: mean and standard deviation (the scatter VAE's
        per-coefficient standardisation).

    Returns
    -------
    Standardizer
        float64 ``center``/``scale``; a column with zero spread gets scale 1.

    Raises
    ------
    ValueError
        If a column has no measured entry.

    Examples
    --------
    >>> st = fit_standardizer(np.array([[0.0], [4.0], [8.0]]), method="moments")
    >>> st.center.tolist(), [round(v, 4) for v in st.scale.tolist()]
    ([4.0], [3.266])
    """
    if method not in ("percentile", "moments"):
        raise ValueError(f"method: expected 'percentile' or 'moments', found {method!r}")
    values, observed, names = _observed_columns(x)
    empty = ~observed.any(axis=0)
    if np.any(empty):
        col = int(np.flatnonzero(empty)[0])
        what = repr(names[col]) if names else str(col)
        raise ValueError(f"x: column {what} has no measured entry; cannot standardise it")
    center, scale = _column_stats(values, observed, method)
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    return Standardizer(center=center, scale=scale)


# Standardizers live inside trained models, so model files may hold them.
io.register("data.Standardizer", arrays={"center": io.Array(1), "scale": io.Array(1)})(Standardizer)
