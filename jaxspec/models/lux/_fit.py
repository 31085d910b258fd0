"""Lux training: the paper's agendas of exact block steps, and the calibrated label scatter."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxspec.data._checks import check_key
from jaxspec.data.containers import Labels, Spectra, default_float
from jaxspec.data.preprocess import fit_standardizer
from jaxspec.metrics import robust_sigma
from jaxspec.models._common import FitResult, LabelPrediction, on_device
from jaxspec.models.lux import _steps as steps
from jaxspec.models.lux._model import Config, Model, Params
from jaxspec.models.lux._predict import (
    as_outputs,
    check_labels,
    latents_from,
    mask_groups,
    predict_labels,
)
from jaxspec.typing import Key

# -- input checks --------------------------------------------------------------------


#: Elements of the largest ``(rows, n_obs)`` temporary of a block step (256 MB of float32): the A/B/z
#: steps solve their rows in batches of this size, so memory is bounded for any survey.
_STEP_BUDGET = 2**26

#: Residuals beyond this many robust standard deviations are left out of the label-scatter estimate
#: (outliers the Gaussian scatter model does not describe; 5 sigma keeps every Gaussian residual of a survey).
_CLIP_SIGMA = 5.0

__all__ = ["calibrate_scatter", "fit"]


def _batch(n_rows: int, n_obs: int, budget: int = _STEP_BUDGET) -> int | None:
    """Rows per batch so a ``(rows, n_obs)`` temporary stays near ``budget`` elements (None: all at once)."""
    return None if n_rows * n_obs <= budget else max(1, budget // n_obs)


# -- training --------------------------------------------------------------------------


def fit(
    spectra: Spectra | Sequence[Spectra],
    labels: Labels,
    *,
    key: Key,
    config: Config = Config(),  # noqa: B008 - a frozen dataclass
    label_masks: Mapping[str, np.ndarray] | None = None,
    progress: bool = True,
) -> FitResult:
    r"""Train Lux with the paper's recipe (see the module docstring).

    Parameters
    ----------
    spectra : Spectra ``(N, L)`` or a sequence of them
        Training spectra (continuum-normalised flux); several for several
        spectral outputs, rows matching ``labels``.
    labels : Labels ``(N, M)``
        Training labels in physical units; missing entries have ``ivar == 0``.
    key : jax.random key
        Draws the U(0, 1) initial ``A`` and ``B``.
    config : Config
        ``P``, :math:`\Omega`, the agendas and the calibration (defaults: the paper's).
    label_masks : mapping of label name -> bool array ``(L,)``, optional
        Pixels allowed to inform that label: its row of ``A`` is refitted on
        training latents inferred from those pixels only, and prediction does
        the same.
    progress : bool
        Progress bar over the steps.

    Returns
    -------
    FitResult
        ``model``; ``history``: the objective and its chi2 terms after each
        step (``"step"`` names them); ``converged``: the last Agenda 1
        iteration changed the objective by at most ``config.tol`` (relative);
        ``aux["z"]``: the training latents ``(N, P)``.
    """
    if not isinstance(labels, Labels):
        raise TypeError(f"labels: expected Labels, found {type(labels).__name__}")
    if not isinstance(config, Config):
        raise TypeError(f"config: expected a lux.Config, found {type(config).__name__}")
    check_key(key)
    flux, ivar, waves = as_outputs(spectra, labels.n_stars, None)
    n, m = labels.n_stars, labels.n_labels
    p = 4 * m if config.n_latents is None else config.n_latents
    if not m + 1 <= p < n:
        raise ValueError(f"config.n_latents: expected M + 1 = {m + 1} <= P < N = {n} stars, found {p}")
    omega = config.omega
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

    bar = tqdm(total=config.n_iter + (3 if config.scatter else 0), disable=not progress, desc="lux fit", unit="step")
    w_flux = ivar  # Agenda 1: no scatter
    for it in range(config.n_iter):
        a = steps.a_step(a, z, lab, lab_w)
        b = steps.b_step(b, z, flux, w_flux, batch_size=bs_b)
        z = steps.z_step(z, a, b, lab, lab_w, flux, w_flux, 0.0, batch_size=bs_z)
        record(f"agenda1.{it + 1}", 0.0)
        bar.update()
    z_fitted = np.asarray(z, np.float64)  # what A and B are fitted to (Agenda 2 refits B on it)
    obj = history["objective"]
    converged = len(obj) >= 2 and abs(obj[-1] - obj[-2]) <= config.tol * abs(obj[-1])
    if config.scatter:
        ln_s = steps.scatter_step(ln_s, b, z, flux, ivar, maxiter=config.scatter_maxiter)
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
        a = _refit_masked_rows(a, b, ln_s, masks, flux, ivar, lab, lab_w)
    model = Model(
        params=Params(a, b, ln_s),
        label_scaler=scaler,
        latent_mean=z_fitted.mean(axis=0),
        latent_cov=np.cov(z_fitted, rowvar=False),
        label_names=tuple(labels.names),
        wavelengths=waves,
        config=dataclasses.replace(config, n_latents=p),
        label_masks=masks,
    )
    model = on_device(model)
    if config.calibrate:
        model = on_device(calibrate_scatter(model, spectra, labels, progress=progress))
    return FitResult(model, {k: np.asarray(v) for k, v in history.items()}, bool(converged), {"z": z})


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


def _refit_masked_rows(a, b, ln_s, masks, flux, ivar, lab, lab_w):
    """Rows of ``A`` for masked labels, refitted on training latents inferred from their pixels only."""
    w = steps.flux_weights(ivar, ln_s)
    for mask, rows in mask_groups(masks):
        z_mask = latents_from(b, flux, w * jnp.asarray(mask), None, progress=False).z
        a = a.at[rows].set(steps.a_step(a[rows], z_mask, lab[:, rows], lab_w[:, rows]))
    return a


def calibrate_scatter(model: Model, spectra: Spectra | Sequence, labels: Labels, *, progress: bool = True) -> Model:
    r"""The model with ``label_scatter`` estimated from stars with known labels (a held-out set is best).

    Labels predicted from ``spectra`` alone (as by :func:`predict_labels`)
    differ from ``labels`` by :math:`r`; the model error of label ``m`` is
    :math:`s_m^2 = \langle r^2 - \sigma_{\ell}^2 - \sigma_{\rm pred}^2\rangle^+`
    over stars where it is measured, after clipping ``|r|`` beyond 5 robust
    (MAD) standard deviations.  :func:`fit` calls this on the training set,
    where the fit has seen the label noise: there the scatter comes out
    smaller (on the mock, predicted-minus-true pulls have widths 1.0-1.26
    instead of 1); calling it on held-out stars removes that optimism.

    Parameters
    ----------
    model : Model
    spectra : Spectra ``(n, L)`` or a sequence (one per output)
    labels : Labels ``(n, M)``
        Reference labels of the same stars, physical units (``ivar == 0``: missing).
    progress : bool

    Returns
    -------
    Model
        A copy with ``label_scatter`` ``(M,)`` in physical units.
    """
    labels = check_labels(labels, model)
    pred = predict_labels(dataclasses.replace(model, label_scatter=None), spectra, progress=progress)
    if pred.labels.n_stars != labels.n_stars:
        raise ValueError(f"spectra: expected {labels.n_stars} stars as in labels, found {pred.labels.n_stars}")
    return dataclasses.replace(model, label_scatter=_label_scatter(pred, labels))


def _label_scatter(pred: LabelPrediction, labels: Labels) -> np.ndarray:
    r"""Per-label model scatter :math:`s_\ell` (physical units) from training-set predictions.

    :math:`s_\ell^2 = \langle r^2 - \sigma_\ell^2 - \sigma_{\rm pred}^2\rangle^+` over stars with a
    measured label, ``r`` the prediction minus the training label, after
    clipping ``|r|`` beyond 5 robust (MAD) standard deviations.
    """
    ref, ref_ivar = np.asarray(labels.values, np.float64), np.asarray(labels.ivar, np.float64)
    pred_var = np.diagonal(np.asarray(pred.covariance, np.float64), axis1=1, axis2=2)
    out = np.zeros(labels.n_labels)
    for m in range(labels.n_labels):
        ok = (ref_ivar[:, m] > 0) & ~pred.flagged & np.isfinite(pred_var[:, m])
        r = np.asarray(pred.labels.values[ok, m], np.float64) - ref[ok, m]
        if r.size < 2:
            continue
        robust_sd = robust_sigma(r)
        keep = np.abs(r - np.median(r)) <= _CLIP_SIGMA * robust_sd if robust_sd > 0 else np.ones(r.size, bool)
        excess = r[keep] ** 2 - 1.0 / ref_ivar[ok, m][keep] - pred_var[ok, m][keep]
        out[m] = np.sqrt(max(float(np.mean(excess)), 0.0))
    return out
