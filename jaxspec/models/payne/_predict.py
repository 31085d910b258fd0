"""The Payne's batch verb on labels: spectra of many stars, chunked, compiled once per chunk shape."""

from __future__ import annotations

import jax
import numpy as np

from jaxspec.data.containers import Labels, Spectra
from jaxspec.models._common import CHUNK_SIZE, SpectraPrediction, check_finite_measured, check_stars
from jaxspec.models.payne._model import Model, compute_dtype, one_star
from jaxspec.optim.chunks import map_chunks

__all__ = ["label_values", "predict_spectra"]


def _check_model(model) -> None:
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a payne.Model, found {type(model).__name__}")


def label_values(labels, names: tuple) -> np.ndarray:
    """float64 ``(n, M)`` label values in the order of ``names``, NaN where missing.

    ``labels``: ``Labels`` holding (at least) ``names``, in any order, or a
    real array ``(n, M)`` in ``names``' order with NaN for a missing value.
    """
    if isinstance(labels, Labels):
        check_stars(labels.n_stars, "labels")
        check_finite_measured(labels.values, labels.ivar, "labels")
        if set(names) - set(labels.names):
            raise ValueError(f"labels: expected the model's labels {list(names)}, found {list(labels.names)}")
        return (labels if tuple(labels.names) == names else labels.select(names)).as_nan()
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"labels: expected Labels or a real array (n_stars, {len(names)}), found dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != len(names):
        raise ValueError(
            f"labels: expected shape (n_stars, {len(names)}) in the order {list(names)}, found {arr.shape}"
        )
    check_stars(arr.shape[0], "labels")
    if np.any(np.isinf(arr)):
        raise ValueError("labels: expected finite values (NaN = missing), found inf")
    return arr.astype(np.float64)


@jax.jit
def _chunk(s, params):
    """Spectra ``(chunk, L)`` of a chunk of scaled labels ``(chunk, M)`` (one function object: compiled once)."""
    return jax.vmap(one_star, in_axes=(None, 0))(params, s)


def predict_spectra(
    model: Model,
    labels,
    *,
    extrapolate: bool = False,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
) -> SpectraPrediction:
    r"""Spectra of stars from their labels through the emulator (:func:`decode`), ``(N, L)``.

    Parameters
    ----------
    model : payne.Model
    labels : Labels (any order of the model's names) or array ``(N, M)`` in the model's order
        Physical units (NaN in an array = missing).
    extrapolate : bool
        Evaluate the emulator for labels outside its box ``[x_min, x_max]``
        too.  By default such a star is flagged: the network was trained on
        the box only and extrapolates badly (sigmoid units saturate, LeakyReLU
        units grow linearly), so its spectrum is not a prediction.
    chunk_size : int
        Stars per compiled chunk (any batch size; one compilation per chunk shape).
    progress : bool

    Returns
    -------
    SpectraPrediction
        ``spectra``: the emulator's continuum-normalised flux on the model's
        grid (``model.wavelength``, None if unknown), in the default float
        dtype.  The emulator has no predictive variance: ``ivar``
        is the largest finite weight, :math:`1/\mathrm{tiny}` (the convention
        of a model with zero scatter).  ``flagged``: stars with a missing
        label or (unless ``extrapolate``) a label outside the box; their flux
        is 1 and ``ivar`` 0.  ``z`` and ``reduced_chi2`` are None (nothing is
        fitted).
    """
    _check_model(model)
    if not isinstance(extrapolate, bool | np.bool_):
        raise TypeError(f"extrapolate: expected a bool, found {type(extrapolate).__name__}")
    values = label_values(labels, model.label_names)
    lo, hi = np.asarray(model.x_min, np.float64), np.asarray(model.x_max, np.float64)
    flagged = ~np.all(np.isfinite(values), axis=1)
    if not extrapolate:
        flagged |= np.any((values < lo) | (values > hi), axis=1)
    dtype = np.dtype(compute_dtype(model))
    s = ((np.where(flagged[:, None], 0.5 * (lo + hi), values) - lo) / (hi - lo) - 0.5).astype(dtype)
    flux = map_chunks(
        _chunk, s, model.params, chunk_size=chunk_size, to_host=True, progress=progress, desc="payne.predict_spectra"
    )
    weight = 1.0 / np.finfo(dtype).tiny
    flux = np.where(flagged[:, None], 1.0, flux).astype(dtype)
    ivar = np.where(flagged[:, None], 0.0, np.full(flux.shape, weight)).astype(dtype)
    return SpectraPrediction(Spectra(flux, ivar, model.wavelength, dtype=dtype), None, None, flagged)
