"""Lux training: the paper's agendas of exact block steps, and the calibrated label scatter."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxspec.data._checks import check_key
from jaxspec.data.containers import Labels, Spectra, default_float
from jaxspec.data.preprocess import fit_standardizer
from jaxspec.metrics import robust_sigma
from jaxspec.models._common import (
    FitResult,
    LabelPrediction,
    check_finite_measured,
    check_label_columns,
    check_measured,
    check_stars,
    on_device,
)
from jaxspec.models.lux import _steps as steps
from jaxspec.models.lux._model import Config, Model, Params
from jaxspec.models.lux._predict import (
    as_outputs,
    check_labels,
    latents_from,
    mask_groups,
    predict_labels,
)
from jaxspec.optim._units import check_finite_fit, flux_scale, in_unit, power_of_two, rescaled
from jaxspec.optim.scatter import LN_S_MAX
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
        spectral outputs, rows matching ``labels``.  A star with no measured
        pixel informs the fit through its labels only; a pixel measured in no
        star (a mask applied to every star) gets a zero row of ``B`` and the
        largest scatter, so it carries no weight at prediction either.  Any
        flux unit: each output is fitted as ``flux / u`` with ``ivar u**2``,
        ``u`` the power of two nearest its median measured ``|flux|``, and
        ``B`` and the scatter are scaled back (exactly), so data times a
        constant fit the same up to it.
    labels : Labels ``(N, M)``
        Training labels in physical units; missing entries have ``ivar == 0``.
        Every label must be measured for at least one star.
    key : jax.random key
        Draws the U(0, 1) initial ``A`` and ``B`` (``B``'s times the median
        measured ``|flux|`` of its output).
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
        iteration changed the objective by at most ``config.tol`` (relative,
        on ``flux / u``: the flag does not depend on the flux unit);
        ``aux["z"]``: the training latents ``(N, P)``.

    Raises
    ------
    TypeError, ValueError
        Naming the argument: ``spectra`` not Spectra, zero stars, rows that do
        not match ``labels``, no measured pixel at all, NaN where ``ivar > 0``;
        a label never measured; a bad ``key`` or ``config``; an ivar beyond
        the float range, or a fit that would leave it (the message names the
        flux scale).
    """
    if not isinstance(labels, Labels):
        raise TypeError(f"labels: expected Labels, found {type(labels).__name__}")
    if not isinstance(config, Config):
        raise TypeError(f"config: expected a lux.Config, found {type(config).__name__}")
    check_key(key)
    check_stars(labels.n_stars, "labels")
    check_finite_measured(labels.values, labels.ivar, "labels")
    with np.errstate(over="ignore"):  # an ivar beyond float32 becomes inf here: refused below, naming the scale
        flux, ivar, waves = as_outputs(spectra, labels.n_stars, None)
    check_measured(ivar, "spectra")
    check_label_columns(labels.ivar, labels.names)
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
    flux, ivar, unit, b_start = _in_units(flux, ivar, waves)
    flux, ivar = jnp.asarray(flux), jnp.asarray(ivar)
    ka, kb = jax.random.split(key)
    a = jax.random.uniform(ka, (m, p), dtype)
    b = jax.random.uniform(kb, (flux.shape[1], p), dtype) * jnp.asarray(b_start, dtype)[:, None]
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

    # a pixel measured in no training star (a mask applied to every star) kept B's random start: it must
    # carry no weight at prediction either, so its row of B is 0 and its scatter the window's largest
    unmeasured = ~np.asarray(jnp.any(ivar > 0, axis=0))
    if unmeasured.any():
        b = b.at[unmeasured].set(0.0)
        ln_s = ln_s.at[unmeasured].set(LN_S_MAX)
    if masks is not None:
        a = _refit_masked_rows(a, b, ln_s, masks, flux, ivar, lab, lab_w)
    check_finite_fit(float(np.max(unit)), "spectra", A=a, B=b, ln_s=ln_s, z=z)
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
    if config.calibrate:  # on the rescaled data, where float32 holds B^2 and the weights whatever the flux unit
        model = calibrate_scatter(model, _as_spectra(flux, ivar, waves), labels, progress=progress)
    # back to the data's unit: B and the scatter scale with the flux, and g's ln(variance) gains 2 ln(unit) per
    # measured pixel; A, z, the label scatter and the chi2 terms have no flux unit
    b = np.concatenate([in_unit(b[sl], unit[sl.start], name, "B") for sl, name in _outputs(waves)])
    ln_s = np.asarray(ln_s) + np.log(unit).astype(ln_s.dtype)
    model = on_device(dataclasses.replace(model, params=Params(a, b, ln_s)))
    n_seen = np.asarray(jnp.sum(ivar > 0, axis=0), np.float64)
    history["objective"] = list(np.asarray(history["objective"]) + float(n_seen @ np.log(unit)))
    return FitResult(model, {k: np.asarray(v) for k, v in history.items()}, bool(converged), {"z": z})


def _as_spectra(flux, ivar, waves) -> Spectra | list:
    """The fit's (rescaled) arrays as the spectral outputs :func:`calibrate_scatter` reads."""
    out = [Spectra._make(np.asarray(flux[:, sl]), np.asarray(ivar[:, sl]), None) for sl, _ in _outputs(waves)]
    return out[0] if len(out) == 1 else out


def _outputs(waves):
    """``(pixel slice, name)`` of each spectral output."""
    edges = np.cumsum([0, *(len(w) for w in waves)])
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        yield slice(lo, hi), "spectra" if len(waves) == 1 else f"spectra[{i}]"


def _in_units(flux, ivar, waves):
    """``flux / unit`` and ``ivar * unit**2``, one unit per output: the power of two nearest the median measured
    ``|flux|`` (:func:`jaxspec.optim._units.flux_scale`); and per pixel ``(L,)`` that unit and the median
    itself over the unit (which scales B's random start, so that the fit of data times any constant is the
    same fit times that constant)."""
    unit, start = np.ones(flux.shape[1]), np.ones(flux.shape[1])
    parts = []
    for sl, name in _outputs(waves):
        scale = flux_scale(flux[:, sl], ivar[:, sl])
        unit[sl] = u = power_of_two(scale)
        start[sl] = scale / u
        parts.append(rescaled(flux[:, sl], ivar[:, sl], u, name))
    if len(parts) == 1:
        return (*parts[0], unit, start)
    flux, ivar = (np.concatenate([p[i] for p in parts], axis=1) for i in (0, 1))
    return flux, ivar, unit, start


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
