r"""The Lux test step: latents of new stars at fixed ``A``, ``B``, ``s``, then labels or spectra.

Re-exported by :mod:`jaxspec.models.lux`; see its docstring for the model.  The penalty follows the
one convention of :meth:`jaxspec.optim.GaussianPrior.l2`.
From fluxes (paper Eq. 10) the latents minimise

.. math::

    \tfrac12 \sum_\lambda \frac{(f_\lambda - B_\lambda z)^2}{\sigma_\lambda^2 + s_\lambda^2} + \Omega \lVert z\rVert^2 ,

and from labels (Eq. 11) the same with :math:`A` and the label errors.  Both
are linear, solved exactly per star by :func:`jaxspec.optim.fit_latents`
(``method="linear"``); its Laplace covariance
:math:`\Sigma_z = (B^\top W B + 2\Omega I)^{-1}` propagates to the labels as
:math:`A \Sigma_z A^\top` (what the paper's 10 resamplings per star estimate).
The paper's test step is unpenalised (:math:`\Omega = 0`), our default from
fluxes.  From labels, ``M < P`` leaves directions of ``z`` free: unpenalised
they are left to rounding, L2-penalised they shrink to 0 (the constant
latent, the "1" of Eq. 9, included), and ``B z`` is no spectrum at all
(reduced chi2 ~ 3e4-7e4 on the mock).  So :func:`predict_spectra` by
default uses the empirical Gaussian prior of the training latents
(``omega="empirical"``: mean and covariance of the latents ``A`` and ``B``
were fitted to), i.e. the conditional mean of ``z`` given the labels - a
departure from Eq. 11 that makes the spectra match (reduced chi2 ~ 3 on the
same mock).  It is available to every test step.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.data.containers import Labels, Spectra, default_float
from jaxspec.models._common import (
    CHUNK_SIZE,
    LabelPrediction,
    SpectraPrediction,
    check_finite_measured,
    check_stars,
)
from jaxspec.models.lux._model import Model
from jaxspec.optim.latents import FitOptions, GaussianPrior, LatentFit, fit_latents
from jaxspec.optim.scatter import flux_weights_np

__all__ = ["derivative_spectra", "encode", "predict_labels", "predict_spectra"]

#: A training-latent variance below this fraction of the largest counts as none: the empirical prior's
#: eigenvalues are floored here (float64 covariances resolve about 1e-16 of the largest).
_FLAT_DIRECTION = 1e-10
#: Stars per step of the predictive-variance map: a ``(batch, L, P)`` temporary of ~25 MB at 7514 pixels, P = 48.
_VARIANCE_BATCH = 16


# -- input checks --------------------------------------------------------------------


def as_outputs(spectra, n_stars: int | None, model: Model | None, arg: str = "spectra"):
    """One or several ``Spectra`` side by side: ``flux, ivar (n, L_total), wavelengths``.

    With one output the arrays are the container's own (no copy).  ``model``
    (when given) fixes the number of outputs and their grids; a ``None``
    output is then all-masked.
    """
    if not (isinstance(spectra, Spectra | list | tuple) or spectra is None):
        raise TypeError(
            f"{arg}: expected Spectra (or a list of Spectra, one per spectral output), found {type(spectra).__name__}"
        )
    items = [spectra] if isinstance(spectra, Spectra) or spectra is None else list(spectra)
    if model is not None and len(items) != len(model.wavelengths):
        raise ValueError(
            f"{arg}: expected {len(model.wavelengths)} spectral outputs as in training, found {len(items)}"
        )
    if all(s is None for s in items):
        raise ValueError(f"{arg}: expected Spectra, found None")
    for i, s in enumerate(items):
        if s is not None and not isinstance(s, Spectra):
            raise TypeError(f"{arg}[{i}]: expected Spectra, found {type(s).__name__}")
    n = n_stars if n_stars is not None else next(s.n_stars for s in items if s is not None)
    check_stars(n, arg)
    dtype = default_float()
    flux, ivar, waves = [], [], []
    for i, s in enumerate(items):
        if s is not None and s.n_stars != n:
            raise ValueError(f"{arg}[{i}]: expected {n} stars (one row per star as in the labels), found {s.n_stars}")
        if model is not None:
            want = model.wavelengths[i]
            if s is None:
                flux.append(np.ones((n, len(want)), dtype))
                ivar.append(np.zeros((n, len(want)), dtype))
                continue
            if s.n_pix != len(want):
                raise ValueError(f"{arg}[{i}]: expected {len(want)} pixels as the model was trained, found {s.n_pix}")
            if s.wavelength is not None and len(want) and not np.allclose(s.wavelength, want, rtol=1e-7, atol=0):
                raise ValueError(
                    f"{arg}[{i}]: wavelength grid differs from the model's ({want[0]:.3f}-{want[-1]:.3f} A); "
                    "resample the spectra onto the training grid first"
                )
        check_finite_measured(s.flux, s.ivar, f"{arg}[{i}]" if len(items) > 1 else arg)
        flux.append(np.asarray(s.flux, dtype))
        ivar.append(np.asarray(s.ivar, dtype))
        waves.append(np.asarray(s.wavelength if s.wavelength is not None else np.arange(s.n_pix), np.float64))
    join = (lambda xs: xs[0]) if len(flux) == 1 else (lambda xs: np.concatenate(xs, axis=1))
    return join(flux), join(ivar), tuple(waves)


def check_labels(labels, model: Model) -> Labels:
    """``labels`` with the model's names in the model's order."""
    if not isinstance(labels, Labels):
        raise TypeError(f"labels: expected Labels, found {type(labels).__name__}")
    check_stars(labels.n_stars, "labels")
    check_finite_measured(labels.values, labels.ivar, "labels")
    if tuple(labels.names) != model.label_names:
        missing = [n for n in model.label_names if n not in labels.names]
        if missing:
            raise ValueError(f"labels: expected names {list(model.label_names)}, found {list(labels.names)}")
        labels = labels.select(model.label_names)
    return labels


def test_prior(model: Model, omega) -> GaussianPrior | None:
    """The test step's prior on ``z``: None (``omega`` 0), the L2 penalty, or the training latents' Gaussian."""
    p = model.n_latents
    if isinstance(omega, str) and omega == "empirical":
        if model.latent_mean is None or model.latent_cov is None:
            raise ValueError("omega: 'empirical' needs a model with latent_mean/latent_cov (trained by this version)")
        cov = np.asarray(model.latent_cov, np.float64)
        evals, evecs = np.linalg.eigh(0.5 * (cov + cov.T))
        floor = max(evals.max(), 1e-300) * _FLAT_DIRECTION  # a latent direction with no training spread: a tight prior
        precision = (evecs / np.clip(evals, floor, None)) @ evecs.T
        return GaussianPrior(np.asarray(model.latent_mean, np.float64), 0.5 * (precision + precision.T))
    if isinstance(omega, str) or not isinstance(omega, int | float | np.floating | np.integer):
        raise ValueError(f"omega: expected a finite value >= 0 or 'empirical', found {omega!r}")
    omega = float(omega)
    if not (np.isfinite(omega) and omega >= 0):
        raise ValueError(f"omega: expected a finite value >= 0 or 'empirical', found {omega!r}")
    return GaussianPrior.l2(omega, p) if omega > 0 else None


def mask_groups(masks: np.ndarray):
    """Distinct restricting masks and the label rows using each (all-True rows skipped)."""
    groups: dict[bytes, list[int]] = {}
    for i, row in enumerate(masks):
        if not row.all():
            groups.setdefault(np.packbits(row).tobytes(), []).append(i)
    return [(masks[rows[0]], np.array(rows)) for rows in groups.values()]


# -- latents ---------------------------------------------------------------------------


def _decode(matrix, z):
    """Linear decoder shared by every test-step fit (one function object: compiled once per shape)."""
    return matrix @ z


def latents_from(matrix, y, w, prior, *, progress: bool, covariance=False, chunk_size=CHUNK_SIZE) -> LatentFit:
    """Exact per-star latents for ``y ~ matrix @ z`` with weights ``w`` and a Gaussian ``prior`` (or None)."""
    p = matrix.shape[1]
    return fit_latents(
        _decode,
        jnp.asarray(matrix),
        (y, w),
        np.zeros(p) if prior is None else prior.mean,
        prior=prior,
        method="linear",
        options=FitOptions(chunk_size=chunk_size),
        covariance=covariance,
        progress=progress,
    )


def encode(
    model: Model,
    spectra: Spectra | Sequence | None = None,
    labels: Labels | None = None,
    *,
    omega: float | str | None = None,
    covariance: bool = False,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
) -> LatentFit:
    r"""Latents of new stars from their spectra, their labels, or both, at fixed ``A``, ``B``, ``s``.

    Minimises the flux and/or label chi2 (fluxes weighted by
    :math:`1/(\sigma^2 + s^2)`) plus :math:`\Omega\lVert z\rVert^2` exactly,
    with :func:`jaxspec.optim.fit_latents` (``method="linear"``).

    Parameters
    ----------
    model : Model
    spectra : Spectra ``(n, L)`` or a sequence (one per output; ``None`` for a missing one), optional
    labels : Labels ``(n, M)``, optional
        Physical units; any order of the model's names.
    omega : float or "empirical", optional
        Test-step penalty :math:`\Omega` (default 0: the paper's unpenalised
        Eqs. 10-11), or ``"empirical"``: the training latents' Gaussian prior.
    covariance : bool
        Also return the Laplace covariance ``(n, P, P)``.
    chunk_size : int
        Stars per compiled chunk.
    progress : bool

    Returns
    -------
    LatentFit
    """
    if spectra is None and labels is None:
        raise ValueError("spectra, labels: expected at least one of them, found neither")
    prior = test_prior(model, 0.0 if omega is None else omega)
    parts = []
    n = None
    if labels is not None:
        labels = check_labels(labels, model)
        std = model.label_scaler.transform(labels)
        parts.append((model.params.A, np.asarray(std.values), np.asarray(std.ivar)))
        n = labels.n_stars
    if spectra is not None:
        flux, ivar, _ = as_outputs(spectra, n, model)
        parts.append((model.params.B, flux, flux_weights_np(ivar, model.params.ln_s)))
    if len(parts) == 1:
        matrix, y, w = parts[0]
    else:
        matrix, y, w = (np.concatenate(x, axis=i) for x, i in zip(zip(*parts, strict=True), (0, 1, 1), strict=True))
    return latents_from(matrix, y, w, prior, progress=progress, covariance=covariance, chunk_size=chunk_size)


# -- labels from latents ---------------------------------------------------------------


@jax.jit
def _project(a, scale, center, z, cov):
    """Labels ``A z`` and covariance ``A Sigma A^T`` in physical units (float32-safe: no inversion here)."""
    values = (z @ a.T) * scale + center
    cov_l = jnp.einsum("mp,npq,kq->nmk", a, cov, a) * (scale[:, None] * scale)
    return values, cov_l


def _labels_from(model: Model, fit_: LatentFit):
    dtype = fit_.z.dtype
    return _project(
        jnp.asarray(model.params.A, dtype),
        jnp.asarray(model.label_scaler.scale, dtype),
        jnp.asarray(model.label_scaler.center, dtype),
        fit_.z,
        fit_.covariance,
    )


def predict_labels(
    model: Model,
    spectra: Spectra | Sequence,
    *,
    omega: float | str | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
) -> LabelPrediction:
    r"""Labels of new stars from their spectra alone: :math:`\hat\ell = A \hat z`, :math:`\hat z` from the fluxes.

    Parameters
    ----------
    model : Model
    spectra : Spectra ``(n, L)`` or a sequence (one per spectral output; ``None`` for a missing one)
        On the training wavelength grid.
    omega : float or "empirical", optional
        Penalty at the test step (default 0, the paper's Eq. 10), or
        ``"empirical"``: the training latents' Gaussian prior (see the module
        docstring).
    chunk_size : int
        Stars per compiled chunk.
    progress : bool

    Returns
    -------
    LabelPrediction
        Labels with covariance :math:`A \Sigma_z A^\top + \mathrm{diag}(s_\ell^2)`,
        :math:`\Sigma_z = (B^\top W B + 2\Omega I)^{-1}` (``W`` includes the
        pixel scatter) and :math:`s_\ell` the model's calibrated label scatter
        (``model.label_scatter``); flagged stars (no measured pixel, failed
        fit) get ``ivar = 0``, the label centre as value and an ``inf`` diagonal.
    """
    prior = test_prior(model, 0.0 if omega is None else omega)
    flux, ivar, _ = as_outputs(spectra, None, model)
    w = flux_weights_np(ivar, model.params.ln_s)
    fit_ = latents_from(model.params.B, flux, w, prior, progress=progress, covariance=True, chunk_size=chunk_size)
    values, cov = _labels_from(model, fit_)
    if model.label_masks is not None:
        for mask, rows in mask_groups(model.label_masks):
            sub = latents_from(
                model.params.B, flux, w * mask, prior, progress=False, covariance=True, chunk_size=chunk_size
            )
            v, c = _labels_from(model, sub)
            values = values.at[:, rows].set(v[:, rows])
            cov = cov.at[:, rows[:, None], rows].set(c[:, rows[:, None], rows])
    if model.label_scatter is not None:
        cov = cov + jnp.diag(jnp.asarray(model.label_scatter, cov.dtype) ** 2)
    values, cov = np.asarray(values), np.asarray(cov)
    # fit_latents reports a star with no measured pixel as not converged
    flagged = ~np.asarray(fit_.converged) | ~np.all(np.isfinite(values), axis=1)
    var = np.diagonal(cov, axis1=1, axis2=2)
    good = ~flagged[:, None] & (var > 0) & np.isfinite(var)
    ivar_l = np.where(good, 1.0 / np.where(good, var, 1.0), 0.0)
    if flagged.any():
        values = np.where(flagged[:, None], np.asarray(model.label_scaler.center, values.dtype), values)
        cov = np.where(flagged[:, None, None], np.diag(np.full(len(model.label_names), np.inf, cov.dtype)), cov)
    dtype = default_float()
    labels = Labels._make(values.astype(dtype, copy=False), ivar_l.astype(dtype), model.label_names)
    return LabelPrediction(labels, cov, np.asarray(fit_.z), np.asarray(fit_.reduced_chi2), flagged)


@jax.jit
def _flux_variance(b, cov):
    """diag(B Sigma_n B^T) for each star, without the ``(n, L, P)`` intermediate of a full product."""
    return jax.lax.map(lambda c: jnp.sum((b @ c) * b, axis=1), cov, batch_size=_VARIANCE_BATCH)


def predict_spectra(
    model: Model,
    labels: Labels,
    *,
    omega: float | str | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
) -> SpectraPrediction:
    r"""Spectra of stars from their labels alone: :math:`\hat f = B \hat z`, :math:`\hat z` from the labels (Eq. 11).

    With ``M < P`` the labels alone leave latent directions free; the default
    (``omega=None``) fixes them with the empirical Gaussian prior of the
    training latents (the conditional mean of ``z`` given the labels); a
    number gives the paper's L2 penalty (0: Eq. 11 as published, ill-posed
    for ``M < P``: the free directions are left to rounding).  The returned ``ivar`` is
    :math:`1/(\mathrm{diag}(B\Sigma_z B^\top) + s^2)`; flagged stars (no
    measured label) get ``ivar = 0``.  Several spectral outputs are
    concatenated along pixels in the order of training.
    """
    labels = check_labels(labels, model)
    omega = "empirical" if omega is None and model.latent_mean is not None else omega
    fit_ = encode(model, labels=labels, omega=omega, covariance=True, chunk_size=chunk_size, progress=progress)
    b = jnp.asarray(model.params.B, fit_.z.dtype)
    flux = np.asarray(fit_.z @ b.T)
    flagged = ~np.asarray(fit_.converged) | ~np.any(np.asarray(labels.ivar) > 0, axis=1)
    cov = jnp.where(jnp.isfinite(fit_.covariance), fit_.covariance, 0.0)
    var = np.asarray(_flux_variance(b, cov)) + np.exp(2.0 * np.asarray(model.params.ln_s))
    ivar = np.where(flagged[:, None], 0.0, 1.0 / var).astype(flux.dtype)
    flux = np.where(flagged[:, None], 1.0, flux)
    waves = model.wavelengths
    # One grid in Angstrom; None for several outputs, or for the pixel-index stand-in (0, 1, ...) of a model
    # trained on spectra without a grid (not a wavelength: the container refuses it).
    wave = waves[0] if len(waves) == 1 and np.all(np.asarray(waves[0]) > 0) else None
    spectra = Spectra(flux, ivar, wave, dtype=flux.dtype)
    return SpectraPrediction(spectra, np.asarray(fit_.z), np.asarray(fit_.reduced_chi2), flagged)


def derivative_spectra(model: Model) -> np.ndarray:
    r"""The derivative spectra :math:`\partial\ell/\partial f = A B^+` (paper Eq. 13), physical label units.

    Returns an array ``(M, L)``: row ``m`` is how label ``m`` changes per unit
    change of each pixel's flux.  :math:`B^+` is the Moore-Penrose
    pseudo-inverse of ``B`` (SVD, float64), not of ``A`` (Eq. 12 is unstable).
    """
    a = np.asarray(model.params.A, np.float64)
    b_pinv = np.linalg.pinv(np.asarray(model.params.B, np.float64))
    return (a @ b_pinv) * np.asarray(model.label_scaler.scale, np.float64)[:, None]
