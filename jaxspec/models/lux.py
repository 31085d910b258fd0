r"""Lux: a generative, multi-output, latent-variable model of stellar labels and spectra.

Horta, Price-Whelan, Hogg, Ness & Casey (2025).  Each star :math:`n` has a
latent vector :math:`z_n` of length ``P``; its labels and fluxes are linear in it:

.. math::

    \ell_n = A z_n + \epsilon_\ell,\quad \epsilon_\ell \sim \mathcal N(0, \sigma_\ell^2), \qquad
    f_n = B z_n + \epsilon_f,\quad \epsilon_f \sim \mathcal N(0, \sigma_f^2 + s^2),

with ``A`` ``(M, P)``, ``B`` ``(L, P)``, ``M < P < L``, and a per-pixel
scatter ``s``.  Labels enter standardised (centre = median, scale =
(97.5th - 2.5th percentile)/4); missing labels and bad pixels have zero
weight (``ivar == 0``), never a filler value.

Training (:func:`fit`) follows the paper: ``z_n = [1, rescaled labels, 0, ...]``,
``A, B ~ U(0, 1)``, ``ln s = -8``; Agenda 1 (5 iterations of the A-, B- and
z-steps, no scatter, no penalty); Agenda 2 (once: scatter, B, then z with the
penalty :math:`\Omega \sum z^2`).  Every block step is solved exactly in closed
form (:mod:`jaxspec.models._lux_steps`); the paper's Gauss-Newton and L-BFGS
solvers converge to the same block optima.  Test step: latents of new stars
from fluxes (:func:`predict_labels`) or labels (:func:`predict_spectra`) with
the engine's :func:`jaxspec.optim.fit_latents`, whose Laplace covariance gives
the label uncertainties (the paper's 10 resamplings estimate the same).

Beyond the paper: several spectral outputs (pass a sequence of ``Spectra``,
e.g. two instruments; a star missing one passes ``None`` at prediction), and
per-label wavelength masks (``label_masks``).  Cross-validation over ``P`` and
``Omega`` is :func:`jaxspec.models.lux_cv.cross_validate`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxspec import io
from jaxspec.data.containers import Labels, Spectra, default_float
from jaxspec.data.preprocess import Standardizer, fit_standardizer
from jaxspec.models import _lux_steps as steps
from jaxspec.optim.latents import FitOptions, GaussianPrior, LatentFit, fit_latents

__all__ = [
    "Agenda",
    "LabelPrediction",
    "LuxFit",
    "LuxModel",
    "LuxParams",
    "SpectraPrediction",
    "derivative_spectra",
    "fit",
    "infer_latents",
    "predict_labels",
    "predict_spectra",
]


@io.register()
class LuxParams(NamedTuple):
    """Trained parameters: ``A`` ``(M, P)`` (standardised labels), ``B`` ``(L, P)`` (flux), ``ln_s`` ``(L,)``."""

    A: np.ndarray
    B: np.ndarray
    ln_s: np.ndarray


@io.register("lux")
@dataclasses.dataclass(frozen=True)
class LuxModel:
    """A trained Lux model (immutable; save with ``jaxspec.io.save``).

    Attributes
    ----------
    params : LuxParams
    label_scaler : Standardizer
        Maps standardised labels back to physical units.
    label_names : tuple of str
    wavelengths : tuple of arrays
        One wavelength grid (vacuum Angstrom) per spectral output; an empty
        array where the training spectra had none.
    omega : float
        L2 penalty strength used in training (and by default at prediction).
    label_masks : bool array ``(M, L)`` or None
        Pixels allowed to inform each label (None: all).
    """

    params: LuxParams
    label_scaler: Standardizer
    label_names: tuple
    wavelengths: tuple
    omega: float
    label_masks: np.ndarray | None = None

    @property
    def n_latents(self) -> int:
        return int(self.params.A.shape[1])

    @property
    def n_pix(self) -> tuple:
        return tuple(len(w) for w in self.wavelengths)


class Agenda(NamedTuple):
    """The training recipe.  Defaults are the paper's.

    Attributes
    ----------
    n_iter : int
        Agenda 1 iterations of the A-, B- and z-steps.
    scatter : bool
        Run Agenda 2 (scatter, B, regularised z).
    scatter_maxiter : int
        Fisher-scoring iterations of the scatter step.
    """

    n_iter: int = 5
    scatter: bool = True
    scatter_maxiter: int = 40


class LuxFit(NamedTuple):
    """Result of :func:`fit`: the model, training latents ``z`` ``(N, P)`` and the objective after each step."""

    model: LuxModel
    z: np.ndarray
    history: dict


class LabelPrediction(NamedTuple):
    """Labels predicted from spectra.

    Attributes
    ----------
    labels : Labels
        Physical units; ``ivar`` from the Laplace covariance (0 for a flagged star).
    covariance : array ``(n, M, M)``
        Label covariance in physical units (``inf`` diagonal when flagged).
    z : array ``(n, P)``
    reduced_chi2 : array ``(n,)``
        Flux chi2 (with the scatter) over (measured pixels - P).
    flagged : bool array ``(n,)``
        No measured pixel, or the fit failed.
    """

    labels: Labels
    covariance: np.ndarray
    z: np.ndarray
    reduced_chi2: np.ndarray
    flagged: np.ndarray


class SpectraPrediction(NamedTuple):
    """Spectra predicted from labels: ``spectra`` (model flux; ``ivar`` from latent covariance plus scatter),
    ``z``, ``reduced_chi2`` of the label fit and ``flagged`` stars (no measured label)."""

    spectra: Spectra
    z: np.ndarray
    reduced_chi2: np.ndarray
    flagged: np.ndarray


# -- input checks --------------------------------------------------------------------


def _as_outputs(spectra, n_stars: int | None, model: LuxModel | None, arg: str = "spectra"):
    """Concatenate one or several ``Spectra`` along pixels: ``flux, ivar (n, L_total), wavelengths``."""
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
    dtype = default_float()
    flux, ivar, waves = [], [], []
    for i, s in enumerate(items):
        if s is not None and s.n_stars != n:
            raise ValueError(f"{arg}[{i}]: expected {n} stars (one row per star as in the labels), found {s.n_stars}")
        if model is not None:
            want = model.wavelengths[i]
            if s is None:
                s_flux = np.ones((n, len(want)), dtype)
                flux.append(s_flux)
                ivar.append(np.zeros_like(s_flux))
                continue
            if s.n_pix != len(want):
                raise ValueError(f"{arg}[{i}]: expected {len(want)} pixels as the model was trained, found {s.n_pix}")
            if s.wavelength is not None and len(want) and not np.allclose(s.wavelength, want, rtol=1e-7, atol=0):
                raise ValueError(
                    f"{arg}[{i}]: wavelength grid differs from the model's ({want[0]:.3f}-{want[-1]:.3f} A); "
                    "resample the spectra onto the training grid first"
                )
        flux.append(np.asarray(s.flux, dtype))
        ivar.append(np.asarray(s.ivar, dtype))
        waves.append(np.asarray(s.wavelength if s.wavelength is not None else np.arange(s.n_pix), np.float64))
    return np.concatenate(flux, axis=1), np.concatenate(ivar, axis=1), tuple(waves)


def _check_labels(labels, model: LuxModel) -> Labels:
    if not isinstance(labels, Labels):
        raise TypeError(f"labels: expected Labels, found {type(labels).__name__}")
    if tuple(labels.names) != model.label_names:
        missing = [n for n in model.label_names if n not in labels.names]
        if missing:
            raise ValueError(f"labels: expected names {list(model.label_names)}, found {list(labels.names)}")
        labels = labels.select(model.label_names)
    return labels


def _batch(n_rows: int, n_obs: int, budget: int = 2**26) -> int | None:
    """Rows per batch so a ``(rows, n_obs)`` temporary stays near ``budget`` elements (None: all at once)."""
    return None if n_rows * n_obs <= budget else max(1, budget // n_obs)


# -- training --------------------------------------------------------------------------


def fit(
    labels: Labels,
    spectra: Spectra | Sequence[Spectra],
    *,
    key: jax.Array,
    n_latents: int | None = None,
    omega: float = 1e3,
    agenda: Agenda = Agenda(),  # noqa: B008 - an immutable NamedTuple
    label_masks: Mapping[str, np.ndarray] | None = None,
    progress: bool = True,
) -> LuxFit:
    r"""Train Lux with the paper's recipe (see the module docstring).

    Parameters
    ----------
    labels : Labels ``(N, M)``
        Training labels in physical units; missing entries have ``ivar == 0``.
    spectra : Spectra ``(N, L)`` or a sequence of them
        Training spectra (continuum-normalised flux); several for several
        spectral outputs, rows matching ``labels``.
    key : jax.random key
        Draws the U(0, 1) initial ``A`` and ``B``.
    n_latents : int, optional
        ``P`` (default ``4 M``, the paper's cross-validated choice); needs
        ``M + 1 <= P < N``.
    omega : float
        L2 penalty :math:`\Omega` on the latents in Agenda 2 (paper: 1e3).
    agenda : Agenda
        Iterations and steps (defaults: the paper's).
    label_masks : mapping of label name -> bool array ``(L,)``, optional
        Pixels allowed to inform that label: its row of ``A`` is refitted on
        training latents inferred from those pixels only, and prediction does
        the same.
    progress : bool
        Progress bar over the steps.

    Returns
    -------
    LuxFit
        ``model``, training latents ``z`` and ``history`` (objective terms after
        each step).
    """
    if not isinstance(labels, Labels):
        raise TypeError(f"labels: expected Labels, found {type(labels).__name__}")
    flux, ivar, waves = _as_outputs(spectra, labels.n_stars, None)
    n, m = labels.n_stars, labels.n_labels
    p = 4 * m if n_latents is None else int(n_latents)
    if not m + 1 <= p < n:
        raise ValueError(f"n_latents: expected M + 1 = {m + 1} <= P < N = {n} stars, found {p}")
    if not (np.isfinite(omega) and omega >= 0):
        raise ValueError(f"omega: expected a finite value >= 0, found {omega!r}")
    if not isinstance(agenda, Agenda) or agenda.n_iter < 1:
        raise ValueError(f"agenda: expected an Agenda with n_iter >= 1, found {agenda!r}")
    masks = _label_masks(label_masks, labels.names, flux.shape[1])

    scaler = fit_standardizer(labels, method="percentile")
    std = scaler.transform(labels)
    dtype = default_float()
    lab, lab_w = jnp.asarray(std.values, dtype), jnp.asarray(std.ivar, dtype)
    flux, ivar = jnp.asarray(flux), jnp.asarray(ivar)
    ka, kb = jax.random.split(key)
    a = jax.random.uniform(ka, (m, p), dtype)
    b = jax.random.uniform(kb, (flux.shape[1], p), dtype)
    ln_s = jnp.full(flux.shape[1], -8.0, dtype)
    z = jnp.zeros((n, p), dtype).at[:, 0].set(1.0).at[:, 1 : m + 1].set(lab)

    bs_b, bs_z = _batch(flux.shape[1], n), _batch(n, flux.shape[1] + m)
    history: dict[str, list] = {"step": [], "objective": [], "label_chi2": [], "flux_chi2": []}

    def record(name, omega_now):
        terms = {k: float(v) for k, v in steps.objective(a, b, ln_s, z, lab, lab_w, flux, ivar, omega_now).items()}
        history["step"].append(name)
        history["objective"].append(
            0.5 * (terms["label_chi2"] + terms["flux_chi2"] + terms["flux_log_var"]) + terms["penalty"]
        )
        history["label_chi2"].append(terms["label_chi2"])
        history["flux_chi2"].append(terms["flux_chi2"])

    bar = tqdm(total=agenda.n_iter + (3 if agenda.scatter else 0), disable=not progress, desc="lux fit", unit="step")
    w_flux = ivar  # Agenda 1: no scatter
    for it in range(agenda.n_iter):
        a = steps.a_step(a, z, lab, lab_w)
        b = steps.b_step(b, z, flux, w_flux, batch_size=bs_b)
        z = steps.z_step(z, a, b, lab, lab_w, flux, w_flux, 0.0, batch_size=bs_z)
        record(f"agenda1.{it + 1}", 0.0)
        bar.update()
    if agenda.scatter:
        ln_s = steps.scatter_step(ln_s, b, z, flux, ivar, maxiter=agenda.scatter_maxiter)
        record("agenda2.scatter", 0.0)
        bar.update()
        w_flux = steps.flux_weights(ivar, ln_s)
        b = steps.b_step(b, z, flux, w_flux, batch_size=bs_b)
        record("agenda2.B", 0.0)
        bar.update()
        z = steps.z_step(z, a, b, lab, lab_w, flux, w_flux, omega, batch_size=bs_z)
        record("agenda2.z", omega)
        bar.update()
    bar.close()

    if masks is not None:
        a = _refit_masked_rows(a, b, ln_s, masks, flux, ivar, lab, lab_w, omega)
    params = LuxParams(np.asarray(a), np.asarray(b), np.asarray(ln_s))
    model = LuxModel(params, scaler, tuple(labels.names), waves, float(omega), masks)
    return LuxFit(model, np.asarray(z), {k: np.asarray(v) for k, v in history.items()})


def _label_masks(label_masks, names, n_pix: int) -> np.ndarray | None:
    if label_masks is None:
        return None
    masks = np.ones((len(names), n_pix), bool)
    for name, mask in label_masks.items():
        if name not in names:
            raise ValueError(f"label_masks: unknown label {name!r}; labels are {list(names)}")
        mask = np.asarray(mask)
        if mask.shape != (n_pix,) or mask.dtype != bool or not mask.any():
            raise ValueError(
                f"label_masks[{name!r}]: expected a bool array ({n_pix},) with at least one True, "
                f"found {mask.dtype} {mask.shape}"
            )
        masks[list(names).index(name)] = mask
    return masks


def _refit_masked_rows(a, b, ln_s, masks, flux, ivar, lab, lab_w, omega):
    """Rows of ``A`` for masked labels, refitted on training latents inferred from their pixels only."""
    w = steps.flux_weights(ivar, ln_s)
    for mask, rows in _mask_groups(masks):
        z_mask = _latents_from(b, flux, w * jnp.asarray(mask), omega, progress=False).z
        a = a.at[rows].set(steps.a_step(a[rows], z_mask, lab[:, rows], lab_w[:, rows]))
    return a


def _mask_groups(masks: np.ndarray):
    """Distinct restricting masks and the label rows using each (all-True rows skipped)."""
    groups: dict[bytes, list[int]] = {}
    for i, row in enumerate(masks):
        if not row.all():
            groups.setdefault(np.packbits(row).tobytes(), []).append(i)
    return [(masks[rows[0]], np.array(rows)) for rows in groups.values()]


# -- test step -------------------------------------------------------------------------


def _decode(matrix, z):
    """Linear decoder shared by every test-step fit (one function object: compiled once per shape)."""
    return matrix @ z


def _latents_from(matrix, y, w, omega, *, progress, covariance=False, chunk_size=1024) -> LatentFit:
    p = matrix.shape[1]
    prior = GaussianPrior.l2(steps.PRECISION_PER_OMEGA * omega, p) if omega > 0 else None
    return fit_latents(
        _decode,
        jnp.asarray(matrix),
        (np.asarray(y), np.asarray(w)),
        np.zeros(p),
        prior=prior,
        method="linear",
        options=FitOptions(chunk_size=chunk_size),
        covariance=covariance,
        progress=progress,
    )


def infer_latents(
    model: LuxModel,
    *,
    spectra: Spectra | Sequence | None = None,
    labels: Labels | None = None,
    omega: float | None = None,
    covariance: bool = False,
    progress: bool = True,
) -> LatentFit:
    r"""Latents of new stars from their spectra, their labels, or both, at fixed ``A``, ``B``, ``s``.

    Minimises the flux and/or label chi2 plus :math:`\Omega\lVert z\rVert^2`
    (``omega`` default: the model's; 0 gives the paper's unpenalised Eq. 10)
    exactly, with :func:`jaxspec.optim.fit_latents` (``method="linear"``).
    """
    if spectra is None and labels is None:
        raise ValueError("spectra, labels: expected at least one of them, found neither")
    omega = model.omega if omega is None else float(omega)
    if not (np.isfinite(omega) and omega >= 0):
        raise ValueError(f"omega: expected a finite value >= 0, found {omega!r}")
    parts_m, parts_y, parts_w = [], [], []
    n = None
    if labels is not None:
        labels = _check_labels(labels, model)
        std = model.label_scaler.transform(labels)
        parts_m.append(model.params.A)
        parts_y.append(np.asarray(std.values))
        parts_w.append(np.asarray(std.ivar))
        n = labels.n_stars
    if spectra is not None:
        flux, ivar, _ = _as_outputs(spectra, n, model)
        parts_m.append(model.params.B)
        parts_y.append(flux)
        parts_w.append(np.asarray(steps.flux_weights(jnp.asarray(ivar), jnp.asarray(model.params.ln_s))))
    matrix = np.concatenate(parts_m)
    y, w = np.concatenate(parts_y, axis=1), np.concatenate(parts_w, axis=1)
    return _latents_from(matrix, y, w, omega, progress=progress, covariance=covariance)


def _labels_from(model: LuxModel, fit_: LatentFit):
    """Physical labels and their covariance from latents and latent covariance."""
    a = np.asarray(model.params.A, np.float64)
    z = np.asarray(fit_.z, np.float64)
    scale = np.asarray(model.label_scaler.scale, np.float64)
    values = model.label_scaler.inverse(z @ a.T)
    cov = np.einsum("mp,npq,kq->nmk", a, np.asarray(fit_.covariance, np.float64), a) * scale[:, None] * scale
    return values, cov


def predict_labels(
    model: LuxModel, spectra: Spectra | Sequence, *, omega: float | None = None, progress: bool = True
) -> LabelPrediction:
    r"""Labels of new stars from their spectra alone: :math:`\hat\ell = A \hat z`, :math:`\hat z` from the fluxes.

    Parameters
    ----------
    model : LuxModel
    spectra : Spectra ``(n, L)`` or a sequence (one per spectral output; ``None`` for a missing one)
        On the training wavelength grid.
    omega : float, optional
        Penalty at the test step (default: the model's).
    progress : bool

    Returns
    -------
    LabelPrediction
        Labels with ``ivar`` from :math:`A \Sigma_z A^\top`, :math:`\Sigma_z = (B^\top W B + 2\Omega I)^{-1}`
        (``W`` includes the scatter); flagged stars (no measured pixel, failed fit) get ``ivar = 0``.
    """
    fit_ = infer_latents(model, spectra=spectra, omega=omega, covariance=True, progress=progress)
    values, cov = _labels_from(model, fit_)
    if model.label_masks is not None:
        flux, ivar, _ = _as_outputs(spectra, None, model)
        w = np.asarray(steps.flux_weights(jnp.asarray(ivar), jnp.asarray(model.params.ln_s)))
        om = model.omega if omega is None else float(omega)
        for mask, rows in _mask_groups(model.label_masks):
            sub = _latents_from(model.params.B, flux, w * mask, om, progress=False, covariance=True)
            v, c = _labels_from(model, sub)
            values[:, rows] = v[:, rows]
            cov[:, rows[:, None], rows] = c[:, rows[:, None], rows]
    # fit_latents reports a star with no measured pixel as not converged
    flagged = ~np.asarray(fit_.converged) | ~np.all(np.isfinite(values), axis=1)
    var = np.diagonal(cov, axis1=1, axis2=2)
    ivar = np.where(flagged[:, None] | ~(var > 0), 0.0, 1.0 / np.where(var > 0, var, 1.0))
    values = np.where(flagged[:, None], np.asarray(model.label_scaler.center), values)
    cov = np.where(flagged[:, None, None], np.diag(np.full(len(model.label_names), np.inf)), cov)
    dtype = default_float()
    labels = Labels._make(values.astype(dtype), ivar.astype(dtype), model.label_names)
    return LabelPrediction(labels, cov, np.asarray(fit_.z), np.asarray(fit_.reduced_chi2), flagged)


@jax.jit
def _flux_variance(b, cov):
    """diag(B Sigma_n B^T) for each star, without the ``(n, L, P)`` intermediate of a full product."""
    return jax.lax.map(lambda c: jnp.sum((b @ c) * b, axis=1), cov, batch_size=16)


def predict_spectra(
    model: LuxModel, labels: Labels, *, omega: float | None = None, progress: bool = True
) -> SpectraPrediction:
    r"""Spectra of stars from their labels alone: :math:`\hat f = B \hat z`, :math:`\hat z` from the labels.

    With ``M < P`` the labels alone leave latent directions free; the penalty
    (``omega``, default the model's) fixes them at 0.  The returned ``ivar``
    is :math:`1/(\mathrm{diag}(B\Sigma_z B^\top) + s^2)`; flagged stars (no
    measured label) get ``ivar = 0``.  One spectral output per training
    output is concatenated along pixels in the order of training.
    """
    fit_ = infer_latents(model, labels=labels, omega=omega, covariance=True, progress=progress)
    b = jnp.asarray(model.params.B)
    flux = np.asarray(fit_.z @ b.T)
    labels = _check_labels(labels, model)
    flagged = ~np.asarray(fit_.converged) | ~np.any(np.asarray(labels.ivar) > 0, axis=1)
    cov = jnp.where(jnp.isfinite(fit_.covariance), fit_.covariance, 0.0)
    var = np.asarray(_flux_variance(b, cov)) + np.exp(2.0 * np.asarray(model.params.ln_s))
    ivar = np.where(flagged[:, None], 0.0, 1.0 / var).astype(flux.dtype)
    flux = np.where(flagged[:, None], 1.0, flux)
    waves = model.wavelengths
    wave = waves[0] if len(waves) == 1 else None
    return SpectraPrediction(
        Spectra._make(flux, ivar, wave), np.asarray(fit_.z), np.asarray(fit_.reduced_chi2), flagged
    )


def derivative_spectra(model: LuxModel) -> np.ndarray:
    r"""The derivative spectra :math:`\partial\ell/\partial f = A B^+` (paper Eq. 13), physical label units.

    Returns an array ``(M, L)``: row ``m`` is how label ``m`` changes per unit
    change of each pixel's flux.  :math:`B^+` is the Moore-Penrose
    pseudo-inverse of ``B`` (SVD, float64), not of ``A`` (Eq. 12 is unstable).
    """
    a = np.asarray(model.params.A, np.float64)
    b_pinv = np.linalg.pinv(np.asarray(model.params.B, np.float64))
    return (a @ b_pinv) * np.asarray(model.label_scaler.scale, np.float64)[:, None]
