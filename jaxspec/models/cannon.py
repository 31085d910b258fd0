r"""The Cannon: a quadratic, data-driven model of spectra given labels (Ness et al. 2015).

Each pixel (or XP coefficient) :math:`j` of star :math:`n` is quadratic in the
star's ``M`` labels, with a per-pixel intrinsic scatter :math:`s_j \ge 0`:

.. math::

    f_{nj} = \theta_j \cdot v(\ell_n) + \epsilon_{nj}, \qquad
    \epsilon_{nj} \sim \mathcal N(0, \sigma_{nj}^2 + s_j^2), \qquad
    v(\ell) = [1,\ x_1, \ldots, x_M,\ x_a x_b\ (a \le b)],\quad x = (\ell - \mathrm{pivot}) / \mathrm{scale},

``Q = 1 + M + M(M+1)/2`` terms; pivot = median and scale =
:math:`(p_{97.5} - p_{2.5})/4` of the training labels (a reparametrisation for
conditioning only: a quadratic in ``x`` is a quadratic in :math:`\ell`).

Training (:func:`fit`) minimises the negative log-likelihood over measured
pixels (``ivar > 0``) of stars with every label measured,

.. math::

    g(\theta, s) = \tfrac12 \sum_{n,j} \Bigl[\frac{(f_{nj} - \theta_j \cdot v_n)^2}{\sigma_{nj}^2 + s_j^2}
                   + \ln(\sigma_{nj}^2 + s_j^2)\Bigr],

by block coordinate descent: at fixed ``s`` each :math:`\theta_j` is the exact
weighted least-squares solve (:func:`jaxspec.optim.solvers.weighted_lstsq`,
all pixels at once); at fixed :math:`\theta` each :math:`s_j` maximises the
likelihood by Fisher scoring on :math:`\ln s_j^2`
(:func:`jaxspec.optim.scatter.scatter_step`).  The last block is always a
:math:`\theta` step, so the returned :math:`\theta` is the exact solve at the
returned ``s``.  The test step (:func:`infer_labels`) fits each star's labels
by dense Gauss-Newton through :func:`jaxspec.optim.fit_latents`.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxspec import io
from jaxspec.data.containers import Labels, Spectra, default_float
from jaxspec.data.preprocess import fit_standardizer
from jaxspec.optim.latents import FitOptions, fit_latents
from jaxspec.optim.scatter import scatter_step
from jaxspec.optim.solvers import weighted_lstsq

__all__ = [
    "CannonFit",
    "CannonModel",
    "LabelInference",
    "design",
    "fit",
    "infer_labels",
    "n_terms",
    "normalised_residuals",
    "predict_spectra",
]


def n_terms(n_labels: int) -> int:
    """``Q = 1 + M + M(M+1)/2``: the length of the quadratic label vector :math:`v(\\ell)`."""
    return 1 + n_labels + n_labels * (n_labels + 1) // 2


@io.register("cannon.Model", family="cannon")
@dataclasses.dataclass(frozen=True)
class CannonModel:
    """A trained Cannon (immutable; save with ``jaxspec.io.save``).

    ``theta`` ``(D, Q)``: coefficients in flux units, ordered as :math:`v` (1,
    linear terms, then ``x_a x_b`` for ``a <= b``, row-major); ``scatter``
    ``(D,)``: :math:`s_j \\ge 0`, flux units; ``pivot``, ``scale`` ``(M,)``:
    physical label units; ``label_names``: tuple of ``M`` str.
    """

    theta: np.ndarray
    scatter: np.ndarray
    pivot: np.ndarray
    scale: np.ndarray
    label_names: tuple

    def __post_init__(self):
        m, (d, q) = len(self.label_names), np.shape(self.theta)
        shapes = (np.shape(self.scatter), np.shape(self.pivot), np.shape(self.scale))
        if q != n_terms(m) or shapes != ((d,), (m,), (m,)):
            raise ValueError(
                f"CannonModel: expected theta (D, {n_terms(m)}), scatter (D,), pivot and scale ({m},) for "
                f"{m} labels, found {np.shape(self.theta)}, {shapes[0]}, {shapes[1]}, {shapes[2]}"
            )

    @property
    def n_pix(self) -> int:
        return int(np.shape(self.theta)[0])


class CannonFit(NamedTuple):
    """Result of :func:`fit`: ``model``, ``history`` (:math:`g`, zero-scatter solve first), ``converged``."""

    model: CannonModel
    history: np.ndarray
    converged: bool


class LabelInference(NamedTuple):
    """Result of :func:`infer_labels` (``n`` stars, ``M`` labels, physical units).

    ``labels``: best fit, ``ivar`` from the covariance's diagonal (0 where
    undefined, e.g. no measured pixel); ``covariance`` ``(n, M, M)``: Laplace
    (``inf`` diagonal where undefined); ``chi2`` ``(n,)`` with the scatter;
    ``converged`` ``(n,)``.
    """

    labels: Labels
    covariance: np.ndarray
    chi2: np.ndarray
    converged: np.ndarray


def _label_values(labels, names=None) -> tuple[np.ndarray, tuple]:
    """float64 ``(n, M)`` label values with NaN where missing, and the names (reordered to ``names``)."""
    if isinstance(labels, Labels):
        if names is not None:
            if set(names) - set(labels.names):
                raise ValueError(f"labels: expected the model's labels {names}, found {labels.names}")
            labels = labels.select(names)
        return labels.as_nan(), labels.names
    arr = np.asarray(labels)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"labels: expected Labels or a real array (n_stars, n_labels), found dtype {arr.dtype}")
    width = "n_labels" if names is None else len(names)
    if arr.ndim != 2 or arr.shape[1] == 0 or (names is not None and arr.shape[1] != len(names)):
        raise ValueError(f"labels: expected shape (n_stars, {width}), found {arr.shape}")
    if np.any(np.isinf(arr)):
        raise ValueError("labels: expected finite values (NaN = missing), found inf")
    return arr.astype(np.float64), names or tuple(f"label_{i}" for i in range(arr.shape[1]))


def _spectra_arrays(spectra, n_pix: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(flux, ivar)`` in the default dtype; masked flux set to 0 so garbage or NaN never enters."""
    if isinstance(spectra, Spectra):
        flux, ivar = np.asarray(spectra.flux), np.asarray(spectra.ivar)
    elif isinstance(spectra, tuple | list) and len(spectra) == 2:
        flux, ivar = np.asarray(spectra[0]), np.asarray(spectra[1])
    else:
        raise TypeError(f"spectra: expected Spectra or a (flux, ivar) pair of arrays, found {type(spectra).__name__}")
    if flux.dtype.kind not in "biuf" or ivar.dtype.kind not in "biuf":
        raise TypeError(f"spectra: expected real flux and ivar, found dtypes {flux.dtype} and {ivar.dtype}")
    if flux.ndim != 2 or ivar.shape != flux.shape or (n_pix is not None and flux.shape[1] != n_pix):
        want = "(n_stars, n_pix)" if n_pix is None else f"(n_stars, {n_pix})"
        raise ValueError(f"spectra: expected flux and ivar of shape {want}, found {flux.shape} and {ivar.shape}")
    if not np.all((ivar >= 0) & np.isfinite(ivar)):
        raise ValueError("spectra: expected ivar finite and >= 0 (0 = masked), found a negative, NaN or inf value")
    good = ivar > 0
    if not np.all(np.isfinite(flux) | ~good):
        raise ValueError("spectra: expected finite flux wherever ivar > 0, found NaN or inf")
    dtype = default_float()
    return np.where(good, flux, 0.0).astype(dtype), ivar.astype(dtype)


def _check_model(model) -> None:
    if not isinstance(model, CannonModel):
        raise TypeError(f"model: expected a CannonModel, found {type(model).__name__}")


def _vector(x):
    """:math:`v(x)` for scaled labels ``x`` of shape ``(..., M)``: ``(..., Q)``."""
    i, j = np.triu_indices(x.shape[-1])
    return jnp.concatenate([jnp.ones((*x.shape[:-1], 1), x.dtype), x, x[..., i] * x[..., j]], axis=-1)


def _decode(theta, x):
    """One star's spectrum ``(D,)`` from its scaled labels ``(M,)`` (one function object: compiled once)."""
    return theta @ _vector(x)


def design(model, labels) -> jax.Array:
    """The quadratic design matrix :math:`v(\\ell_n)` of many stars.

    Parameters
    ----------
    model : CannonModel or (pivot, scale)
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
    if isinstance(model, CannonModel):
        pivot, scale, names = np.asarray(model.pivot), np.asarray(model.scale), model.label_names
    elif isinstance(model, tuple | list) and len(model) == 2:
        pivot, scale, names = np.asarray(model[0], np.float64), np.asarray(model[1], np.float64), None
        if pivot.ndim != 1 or scale.shape != pivot.shape or not np.all(np.isfinite(pivot) & (scale > 0)):
            raise ValueError(f"model: expected finite pivot and positive scale of one shape (M,), found {pivot.shape}")
    else:
        raise TypeError(f"model: expected a CannonModel or a (pivot, scale) pair, found {type(model).__name__}")
    values, _ = _label_values(labels, names)
    if values.shape[1] != pivot.shape[0]:
        raise ValueError(f"labels: expected {pivot.shape[0]} label columns (as pivot), found {values.shape[1]}")
    v = _vector(jnp.asarray((values - pivot) / scale, default_float()))
    return jnp.where(np.all(np.isfinite(values), axis=1)[:, None], v, jnp.nan)


def predict_spectra(model: CannonModel, labels) -> jax.Array:
    """Noise-free spectra :math:`\\theta_j \\cdot v(\\ell_n)`, ``(N, D)``, flux units.

    ``labels``: Labels (any order of the model's names) or array ``(N, M)`` in
    the model's order; a star with a missing label gets a NaN row.
    """
    _check_model(model)
    return design(model, labels) @ jnp.asarray(model.theta).T


def normalised_residuals(model: CannonModel, spectra, labels) -> np.ndarray:
    """:math:`(f_{nj} - \\theta_j \\cdot v_n) / \\sqrt{\\sigma_{nj}^2 + s_j^2}`, ``(N, D)``.

    NaN where ``ivar == 0`` and on rows of stars with a missing label.
    """
    _check_model(model)
    flux, ivar = _spectra_arrays(spectra, model.n_pix)
    pred = np.asarray(predict_spectra(model, labels), np.float64)
    if pred.shape[0] != flux.shape[0]:
        raise ValueError(f"labels: expected {flux.shape[0]} stars (as spectra), found {pred.shape[0]}")
    good = ivar > 0
    var = np.where(good, 1.0 / np.where(good, ivar, 1.0) + np.asarray(model.scatter, np.float64) ** 2, 1.0)
    return np.where(good, (flux - pred) / np.sqrt(var), np.nan)


@jax.jit
def _theta_step(theta, scatter, dsg, flux, ivar):
    """Exact weighted least squares per pixel at fixed scatter (weights :math:`1/(\\sigma^2 + s^2)`)."""
    w = ivar / (1.0 + ivar * jnp.square(scatter))
    return weighted_lstsq(dsg, flux.T, w.T, theta)[0]


@jax.jit
def _scatter_step(theta, scatter, dsg, flux, ivar):
    """Maximum-likelihood scatter per pixel at fixed theta, in units of the pixel's residual rms.

    The shared Fisher-scoring step keeps :math:`\\ln s` in a fixed window, so
    each pixel is first divided by its residual rms ``c``: the window then
    means :math:`e^{-12} c \\le s \\le e^3 c` whatever the flux units.
    """
    good = ivar > 0
    r2 = jnp.where(good, jnp.square(flux - dsg @ theta.T), 0.0)
    c = jnp.sqrt(jnp.sum(r2, axis=0) / jnp.maximum(jnp.sum(good, axis=0), 1))
    c = jnp.where(c > 0, c, 1.0)
    ln_s0 = jnp.log(jnp.maximum(scatter / c, 1e-30))
    ln_s = scatter_step(ln_s0, theta / c[:, None], dsg, flux / c, ivar * jnp.square(c))
    return c * jnp.exp(ln_s)


@jax.jit
def _objective(theta, scatter, dsg, flux, ivar):
    """:math:`g(\\theta, s)` over measured pixels (see the module docstring)."""
    good = ivar > 0
    var = jnp.where(good, 1.0 / jnp.where(good, ivar, 1.0) + jnp.square(scatter), 1.0)
    r2 = jnp.square(flux - dsg @ theta.T)
    return 0.5 * jnp.sum(jnp.where(good, r2 / var + jnp.log(var), 0.0))


def fit(spectra, labels, *, n_iter: int = 20, tol: float = 1e-5, progress: bool = False) -> CannonFit:
    """Train a Cannon: exact per-pixel :math:`\\theta` and maximum-likelihood scatter, alternated.

    Parameters
    ----------
    spectra : Spectra or (flux, ivar)
        Arrays ``(N, D)``; ``ivar == 0`` marks a masked pixel (zero weight;
        its flux is never read, NaN allowed there).
    labels : Labels or array ``(N, M)``
        Physical units.  A star with any missing label (Labels ``ivar == 0``,
        NaN in an array) or no measured pixel is left out of training.
    n_iter : int
        Most (scatter, theta) iterations after the initial zero-scatter solve.
    tol : float
        Converged when :math:`g` changes by at most ``tol`` per measured pixel
        between iterations.
    progress : bool
        Show a progress bar over iterations.

    Returns
    -------
    CannonFit
        ``model``; ``history``: :math:`g` after the zero-scatter solve, then
        after each iteration; ``converged``.

    Raises
    ------
    TypeError, ValueError
        Wrong types or shapes, bad ivar, non-finite measured flux, an
        infinite label, fewer usable stars than ``Q``, bad ``n_iter``/``tol``.
    """
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 1:
        raise ValueError(f"n_iter: expected an int >= 1, found {n_iter!r}")
    if not tol > 0:
        raise ValueError(f"tol: expected a positive number, found {tol!r}")
    values, names = _label_values(labels)
    flux, ivar = _spectra_arrays(spectra)
    if values.shape[0] != flux.shape[0]:
        raise ValueError(f"labels: expected {flux.shape[0]} stars (as spectra), found {values.shape[0]}")
    used = np.all(np.isfinite(values), axis=1) & np.any(ivar > 0, axis=1)
    q = n_terms(values.shape[1])
    if used.sum() < q:
        raise ValueError(
            f"labels: expected at least Q = {q} training stars with every label and a pixel measured "
            f"({values.shape[1]} labels), found {int(used.sum())}"
        )
    std = fit_standardizer(values[used], method="percentile")
    dsg = design(tuple(std), values[used])
    flux, ivar = jnp.asarray(flux[used]), jnp.asarray(ivar[used])
    n_good = float(jnp.sum(ivar > 0))
    scatter = jnp.zeros(flux.shape[1], flux.dtype)
    theta = _theta_step(jnp.zeros((flux.shape[1], q), flux.dtype), scatter, dsg, flux, ivar)
    history, converged = [float(_objective(theta, scatter, dsg, flux, ivar))], False
    bar = tqdm(range(n_iter), disable=not progress, desc="cannon", unit="iter")
    for _ in bar:
        scatter = _scatter_step(theta, scatter, dsg, flux, ivar)
        theta = _theta_step(theta, scatter, dsg, flux, ivar)
        history.append(float(_objective(theta, scatter, dsg, flux, ivar)))
        bar.set_postfix(objective=history[-1])
        if abs(history[-1] - history[-2]) <= tol * n_good:
            converged = True
            break
    bar.close()
    model = CannonModel(np.asarray(theta), np.asarray(scatter), std.center, std.scale, tuple(names))
    return CannonFit(model, np.asarray(history), converged)


def infer_labels(
    model: CannonModel,
    spectra,
    *,
    init=None,
    options: FitOptions = FitOptions(),  # noqa: B008 - an immutable NamedTuple
    progress: bool = False,
) -> LabelInference:
    r"""Labels of new stars from their spectra: per-star nonlinear least squares on the quadratic model.

    Minimises :math:`\sum_j (f_j - \theta_j \cdot v(\ell))^2 / (\sigma_j^2 + s_j^2)`
    over :math:`\ell` by dense Gauss-Newton (:func:`jaxspec.optim.fit_latents`,
    vmapped, compiled once per chunk shape), in scaled labels.

    Parameters
    ----------
    model : CannonModel
    spectra : Spectra or (flux, ivar), ``(n, D)``
    init : array ``(M,)`` or ``(n, M)``, optional
        Starting labels, physical units (default the pivot).  The quadratic
        model can have several minima: the fit finds one downhill of ``init``.
    options : FitOptions
        Tolerance (step in scaled labels), iteration cap, chunk size.
    progress : bool

    Returns
    -------
    LabelInference
    """
    _check_model(model)
    flux, ivar = _spectra_arrays(spectra, model.n_pix)
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
        _decode,
        jnp.asarray(model.theta, flux.dtype),
        (flux, w),
        z0,
        method="dense_gauss_newton",
        options=options,
        covariance=True,
        progress=progress,
    )
    values = np.asarray(res.z, np.float64) * scale + pivot
    cov = np.asarray(res.covariance, np.float64) * (scale[:, None] * scale)
    var = np.diagonal(cov, axis1=1, axis2=2)
    ok = np.isfinite(var) & (var > 0)
    label_ivar = np.where(ok, 1.0 / np.where(ok, var, 1.0), 0.0)
    labels = Labels(values, ivar=label_ivar, names=model.label_names)
    return LabelInference(labels, cov, np.asarray(res.chi2), np.asarray(res.converged))
