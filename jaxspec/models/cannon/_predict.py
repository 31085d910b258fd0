"""The Cannon's verbs on new stars: spectra from labels, labels from spectra, normalised residuals."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.data.containers import Labels, Spectra, default_float
from jaxspec.models._common import CHUNK_SIZE, LabelPrediction, SpectraPrediction
from jaxspec.models.cannon._data import label_values, spectra_arrays
from jaxspec.models.cannon._model import Model, decode, quadratic_vector
from jaxspec.optim.latents import FitOptions, fit_latents

__all__ = ["design", "normalised_residuals", "predict_labels", "predict_spectra"]


def _check_model(model) -> None:
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a cannon.Model, found {type(model).__name__}")


def design(model, labels) -> jax.Array:
    """The quadratic design matrix :math:`v(\\ell_n)` of many stars.

    Parameters
    ----------
    model : cannon.Model or (pivot, scale)
        Label standardisation, arrays ``(M,)`` in physical units.
    labels : Labels or array ``(N, M)``
        Physical units; a row with a missing label (ivar 0 / NaN) is NaN.

    Returns
    -------
    array ``(N, Q)``, default float dtype

    Examples
    --------
    >>> np.asarray(design((np.zeros(2), np.ones(2)), np.array([[1.0, 2.0]]))).tolist()
    [[1.0, 1.0, 2.0, 1.0, 2.0, 4.0]]
    """
    if isinstance(model, Model):
        pivot, scale, names = model.pivot, model.scale, model.label_names
    elif isinstance(model, tuple | list) and len(model) == 2:
        pivot, scale, names = np.asarray(model[0], np.float64), np.asarray(model[1], np.float64), None
        if pivot.ndim != 1 or scale.shape != pivot.shape or not np.all(np.isfinite(pivot) & (scale > 0)):
            raise ValueError(f"model: expected finite pivot and positive scale of one shape (M,), found {pivot.shape}")
    else:
        raise TypeError(f"model: expected a cannon.Model or a (pivot, scale) pair, found {type(model).__name__}")
    values, _ = label_values(labels, names)
    if values.shape[1] != np.shape(pivot)[0]:
        raise ValueError(f"labels: expected {np.shape(pivot)[0]} label columns (as pivot), found {values.shape[1]}")
    dtype = default_float()
    x = (jnp.asarray(values, dtype) - jnp.asarray(pivot, dtype)) / jnp.asarray(scale, dtype)
    return jnp.where(np.all(np.isfinite(values), axis=1)[:, None], quadratic_vector(x), jnp.nan)


def predict_spectra(model: Model, labels) -> SpectraPrediction:
    r"""Spectra of stars from their labels: :math:`\theta_j \cdot v(\ell_n)` ``(N, D)``, flux units.

    Parameters
    ----------
    model : cannon.Model
    labels : Labels (any order of the model's names) or array ``(N, M)`` in the model's order
        Physical units.

    Returns
    -------
    SpectraPrediction
        ``spectra``: the model flux on the model's grid with ``ivar``
        :math:`1/s_j^2` (the intrinsic scatter is the model's predictive
        variance; a pixel with no scatter gets the largest finite weight);
        ``flagged``: stars with a missing label (flux 1, ``ivar`` 0);
        ``z`` and ``reduced_chi2`` are None (nothing is fitted).
    """
    _check_model(model)
    values, _ = label_values(labels, model.label_names)
    flagged = ~np.all(np.isfinite(values), axis=1)
    dtype = default_float()
    flux = decode(model, np.where(flagged[:, None], np.asarray(model.pivot), values).astype(dtype))
    s2 = jnp.square(jnp.asarray(model.scatter, flux.dtype))
    ivar = 1.0 / jnp.maximum(s2, jnp.finfo(flux.dtype).tiny)
    flux = jnp.where(flagged[:, None], 1.0, flux)
    ivar = jnp.where(flagged[:, None], 0.0, jnp.broadcast_to(ivar, flux.shape))
    return SpectraPrediction(Spectra._make(flux, ivar, model.wavelength), None, None, flagged)


def normalised_residuals(model: Model, spectra, labels) -> np.ndarray:
    """:math:`(f_{nj} - \\theta_j \\cdot v_n) / \\sqrt{\\sigma_{nj}^2 + s_j^2}`, ``(N, D)``.

    NaN where ``ivar == 0`` and on rows of stars with a missing label.
    """
    _check_model(model)
    flux, ivar = spectra_arrays(spectra, model.n_pix, model.wavelength)
    values, _ = label_values(labels, model.label_names)
    if values.shape[0] != flux.shape[0]:
        raise ValueError(f"labels: expected {flux.shape[0]} stars (as spectra), found {values.shape[0]}")
    pred = np.asarray(decode(model, values), np.float64)
    good = ivar > 0
    var = np.where(good, 1.0 / np.where(good, ivar, 1.0) + np.asarray(model.scatter, np.float64) ** 2, 1.0)
    return np.where(good, (flux - pred) / np.sqrt(var), np.nan)


def _decode_scaled(theta, x):
    """One star's spectrum ``(D,)`` from its scaled labels ``(M,)`` (one function object: compiled once)."""
    return theta @ quadratic_vector(x)


def predict_labels(
    model: Model,
    spectra,
    *,
    init=None,
    options: FitOptions | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
) -> LabelPrediction:
    r"""Labels of new stars from their spectra: per-star nonlinear least squares on the quadratic model.

    Minimises :math:`\sum_j (f_j - \theta_j \cdot v(\ell))^2 / (\sigma_j^2 + s_j^2)`
    over :math:`\ell` by dense Gauss-Newton (:func:`jaxspec.optim.fit_latents`,
    vmapped, compiled once per chunk shape), in scaled labels.

    Parameters
    ----------
    model : cannon.Model
    spectra : Spectra or (flux, ivar), ``(n, D)``
    init : array ``(M,)`` or ``(n, M)``, optional
        Starting labels, physical units (default the pivot).  The quadratic
        model can have several minima: the fit finds one downhill of ``init``.
    options : FitOptions, optional
        Tolerance (step in scaled labels) and iteration cap of the fit
        (default ``FitOptions()``); ``chunk_size`` sets its chunks.
    chunk_size : int
        Stars per compiled chunk.
    progress : bool

    Returns
    -------
    LabelPrediction
        Labels with the Laplace covariance (physical units); ``reduced_chi2``
        with the scatter, over (measured pixels - M); ``flagged``: no measured
        pixel or the fit did not converge (``ivar`` 0, value the pivot,
        ``inf`` diagonal); ``z`` is None.
    """
    _check_model(model)
    options = FitOptions() if options is None else options
    if not isinstance(options, FitOptions):
        raise TypeError(f"options: expected FitOptions, found {type(options).__name__}")
    flux, ivar = spectra_arrays(spectra, model.n_pix, model.wavelength)
    pivot, scale = np.asarray(model.pivot, np.float64), np.asarray(model.scale, np.float64)
    m = pivot.shape[0]
    z0 = np.zeros(m)
    if init is not None:
        init = np.asarray(init, np.float64)
        if init.shape not in ((m,), (flux.shape[0], m)) or not np.all(np.isfinite(init)):
            what = "non-finite values" if init.shape in ((m,), (flux.shape[0], m)) else f"shape {init.shape}"
            raise ValueError(f"init: expected finite labels of shape ({m},) or ({flux.shape[0]}, {m}), found {what}")
        z0 = (init - pivot) / scale
    w = ivar / (1.0 + ivar * np.square(np.asarray(model.scatter, ivar.dtype)))
    res = fit_latents(
        _decode_scaled,
        jnp.asarray(model.theta, flux.dtype),
        (flux, w),
        z0,
        method="dense_gauss_newton",
        options=options._replace(chunk_size=chunk_size),
        covariance=True,
        progress=progress,
    )
    flagged = ~np.asarray(res.converged)
    values = np.where(flagged[:, None], pivot, np.asarray(res.z, np.float64) * scale + pivot)
    cov = np.asarray(res.covariance, np.float64) * (scale[:, None] * scale)
    cov = np.where(flagged[:, None, None], np.diag(np.full(m, np.inf)), cov)
    var = np.diagonal(cov, axis1=1, axis2=2)
    ok = np.isfinite(var) & (var > 0)
    label_ivar = np.where(ok, 1.0 / np.where(ok, var, 1.0), 0.0)
    labels = Labels(values, ivar=label_ivar, names=model.label_names)
    return LabelPrediction(labels, cov, None, np.asarray(res.reduced_chi2), flagged)
