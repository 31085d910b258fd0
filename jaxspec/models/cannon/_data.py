"""Input checks of the Cannon: labels and spectra as float arrays, masked flux never read."""

from __future__ import annotations

import numpy as np

from jaxspec.data.containers import Labels, Spectra, default_float
from jaxspec.models._common import check_stars

__all__ = ["label_values", "spectra_arrays"]


def label_values(labels, names=None) -> tuple[np.ndarray, tuple]:
    """float64 ``(n, M)`` label values with NaN where missing, and the names (reordered to ``names``)."""
    if isinstance(labels, Labels):
        if names is not None:
            if set(names) - set(labels.names):
                raise ValueError(f"labels: expected the model's labels {names}, found {labels.names}")
            labels = labels.select(names)
        check_stars(labels.n_stars, "labels")
        return labels.as_nan(), labels.names
    arr = np.asarray(labels)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"labels: expected Labels or a real array (n_stars, n_labels), found dtype {arr.dtype}")
    width = "n_labels" if names is None else len(names)
    if arr.ndim != 2 or arr.shape[1] == 0 or (names is not None and arr.shape[1] != len(names)):
        raise ValueError(f"labels: expected shape (n_stars, {width}), found {arr.shape}")
    check_stars(arr.shape[0], "labels")
    if np.any(np.isinf(arr)):
        raise ValueError("labels: expected finite values (NaN = missing), found inf")
    return arr.astype(np.float64), names or tuple(f"label_{i}" for i in range(arr.shape[1]))


def spectra_arrays(spectra, n_pix: int | None = None, wavelength=None) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(flux, ivar)`` in the default dtype; masked flux set to 0 so garbage or NaN never enters.

    ``n_pix`` and ``wavelength`` (a model's): the spectra must have that many
    pixels and, when both have a grid, the same one.
    """
    if isinstance(spectra, Spectra):
        flux, ivar = np.asarray(spectra.flux), np.asarray(spectra.ivar)
        grid = spectra.wavelength
        same_shape = wavelength is not None and grid is not None and grid.shape == np.shape(wavelength)
        if same_shape and not np.allclose(grid, wavelength, rtol=1e-7, atol=0):
            raise ValueError(
                f"spectra: wavelength grid differs from the model's ({wavelength[0]:.3f}-{wavelength[-1]:.3f} A); "
                "resample the spectra onto the training grid first"
            )
    elif isinstance(spectra, tuple | list) and len(spectra) == 2:
        flux, ivar = np.asarray(spectra[0]), np.asarray(spectra[1])
    else:
        raise TypeError(f"spectra: expected Spectra or a (flux, ivar) pair of arrays, found {type(spectra).__name__}")
    if flux.dtype.kind not in "biuf" or ivar.dtype.kind not in "biuf":
        raise TypeError(f"spectra: expected real flux and ivar, found dtypes {flux.dtype} and {ivar.dtype}")
    if flux.ndim != 2 or ivar.shape != flux.shape or (n_pix is not None and flux.shape[1] != n_pix):
        want = "(n_stars, n_pix)" if n_pix is None else f"(n_stars, {n_pix})"
        raise ValueError(f"spectra: expected flux and ivar of shape {want}, found {flux.shape} and {ivar.shape}")
    check_stars(flux.shape[0], "spectra")
    if not np.all((ivar >= 0) & np.isfinite(ivar)):
        raise ValueError("spectra: expected ivar finite and >= 0 (0 = masked), found a negative, NaN or inf value")
    good = ivar > 0
    if not np.all(np.isfinite(flux) | ~good):
        raise ValueError("spectra: expected finite flux wherever ivar > 0, found NaN or inf")
    dtype = default_float()
    return np.where(good, flux, 0.0).astype(dtype), ivar.astype(dtype)
