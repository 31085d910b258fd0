"""``jaxspec demo payne``: a Payne emulator trained on a mock synthetic grid, then labels and RVs of mock stars.

The mock generator (:func:`jaxspec.data.mock.spectrum`, noise-free, at rest)
stands in for a synthetic grid of five labels, The Payne's 2019 set: Teff,
logg, [Fe/H], [alpha/Fe] (O, Mg, Si, Ca together, the other [X/Fe] at 0)
and the broadening.  A single-network emulator is trained on it
(:func:`jaxspec.models.payne.fit`, a smaller and faster recipe than the
reference's so it trains in seconds); the "observed" stars are the trained
emulator's spectra at known labels, Doppler shifted, with noise and bad
pixels, so the fit's recovery can be checked against an exact truth.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.cli.demos._report import save_figure, write_report

#: The grid's labels, their box (the grid is uniform in it) and the mock's alpha elements.
GRID_NAMES = ("TEFF", "LOGG", "FE_H", "ALPHA_FE", "VBROAD")
BOX_LOW = np.array([3800.0, 1.0, -1.0, -0.1, 2.0])
BOX_HIGH = np.array([5200.0, 3.5, 0.4, 0.4, 12.0])
_ALPHA = ("O_FE", "MG_FE", "SI_FE", "CA_FE")
N_PIX = 7214  # The Payne's APOGEE grid
RV_RANGE = 4.0  # |RV| of the mock stars, km/s (the fit's bound is 5)
SNR = (50.0, 200.0)
BAD_PIXEL_FRAC = 0.02


def _mock_grid_star(y):
    """The mock's noise-free rest-frame spectrum of one star of grid labels ``y`` ``(5,)``."""
    from jaxspec.data import mock

    full = jnp.zeros(len(mock.LABEL_NAMES), y.dtype).at[:3].set(y[:3])
    full = full.at[jnp.array([mock.LABEL_NAMES.index(n) for n in _ALPHA])].set(y[3])
    return mock.spectrum(full, vbroad=y[4], n_pix=N_PIX)


@jax.jit
def _grid_chunk(y):
    return jax.vmap(_mock_grid_star)(y)


def _uniform(key, n: int, shrink: float = 0.0) -> np.ndarray:
    """``n`` label vectors uniform in the box (its inner ``1 - 2 shrink`` fraction of each side)."""
    lo, hi = BOX_LOW + shrink * (BOX_HIGH - BOX_LOW), BOX_HIGH - shrink * (BOX_HIGH - BOX_LOW)
    u = np.asarray(jax.random.uniform(key, (n, len(GRID_NAMES))), np.float64)
    return lo + u * (hi - lo)


def _observed(key, model, truth: np.ndarray, *, progress: bool):
    """Mock observations: the emulator at ``truth``, shifted by a random RV, noise at a random SNR, bad pixels."""
    from jaxspec.data import Spectra
    from jaxspec.models import payne

    n = truth.shape[0]
    k_rv, k_snr, k_noise, k_bad = jax.random.split(key, 4)
    rv = np.asarray(jax.random.uniform(k_rv, (n,), minval=-RV_RANGE, maxval=RV_RANGE), np.float64)
    snr = np.asarray(jax.random.uniform(k_snr, (n,), minval=SNR[0], maxval=SNR[1]), np.float64)
    clean = np.asarray(payne.observed_spectra(model, truth, rv), np.float64)
    err = 1.0 / snr[:, None]
    flux = clean + err * np.asarray(jax.random.normal(k_noise, clean.shape), np.float64)
    bad = np.asarray(jax.random.uniform(k_bad, clean.shape)) < BAD_PIXEL_FRAC
    ivar = np.where(bad, 0.0, np.broadcast_to(err**-2, clean.shape))
    flux = np.where(bad, 1.0, flux)
    spectra = Spectra(flux.astype(np.float32), ivar=ivar.astype(np.float32), wavelength=model.wavelength)
    return spectra, clean, rv, snr


def demo_payne(*, out: Path, seed: int = 0, progress: bool = True, quick: bool = False) -> dict:
    """Train a Payne emulator on a mock grid, fit labels and RVs of mock observed stars, report the recovery."""
    from jaxspec import metrics
    from jaxspec.data import Labels, Spectra, mock
    from jaxspec.data._grids import apogee_wavelength
    from jaxspec.models import payne
    from jaxspec.optim.chunks import map_chunks

    n_grid, epochs, n_obs = (1000, 100, 200) if quick else (3000, 150, 2000)
    n_starts = 2
    config = payne.Config(
        hidden=(128, 128),
        learning_rate=3e-3,
        loss_scale=1.0,
        batch_size=256,
        epochs=epochs,
        validate_every=10,
        validation_frac=0.1,
    )
    k_grid, k_fit, k_truth, k_obs = jax.random.split(jax.random.key(seed), 4)

    t0 = time.perf_counter()
    grid = _uniform(k_grid, n_grid)
    flux = map_chunks(
        _grid_chunk, grid.astype(np.float32), chunk_size=512, to_host=True, progress=progress, desc="mock grid"
    )
    wave = apogee_wavelength(N_PIX)
    grid_spectra = Spectra(flux, ivar=np.full(flux.shape, mock.SYNTHETIC_ERR**-2, np.float32), wavelength=wave)
    grid_labels = Labels(grid, ivar=np.ones_like(grid), names=GRID_NAMES, dtype=np.float64)
    grid_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    trained = payne.fit(grid_spectra, grid_labels, key=k_fit, config=config, progress=progress)
    train_s = time.perf_counter() - t0
    model = trained.model

    truth = _uniform(k_truth, n_obs, shrink=0.1)
    spectra, clean, rv_true, _ = _observed(k_obs, model, truth, progress=progress)
    t0 = time.perf_counter()
    fit = payne.fit_labels(model, spectra, n_starts=n_starts, progress=progress)
    fit_s = time.perf_counter() - t0

    ok = ~np.asarray(fit.flagged)
    use = np.broadcast_to(ok[:, None], truth.shape)
    stats = metrics.bias_rmse(np.asarray(fit.labels.values, np.float64), truth, mask=use)
    err = np.sqrt(np.diagonal(np.asarray(fit.covariance, np.float64), axis1=1, axis2=2))
    pulls = ((np.asarray(fit.labels.values, np.float64) - truth) / err)[ok]
    rv, rv_err = np.asarray(fit.rv, np.float64)[ok], np.asarray(fit.rv_err, np.float64)[ok]
    rv_pull = (rv - rv_true[ok]) / rv_err
    rchi2 = np.asarray(fit.reduced_chi2, np.float64)[ok]
    chi2_truth = np.sum(np.asarray(spectra.ivar, np.float64) * (np.asarray(spectra.flux, np.float64) - clean) ** 2, 1)
    # a fit above the chi2 of the true labels stopped in a local minimum: the truth is in the box and fits better
    trapped = np.asarray(fit.chi2, np.float64) > chi2_truth + 10.0
    q16, q50, q84 = (float(x) for x in np.percentile(rchi2, [16, 50, 84])) if rchi2.size else (np.nan,) * 3
    report = {
        "n_grid": n_grid,
        "n_obs": n_obs,
        "n_pix": N_PIX,
        "labels": {},
        "config": {"hidden": list(config.hidden), "epochs": epochs, "learning_rate": config.learning_rate},
        "train_loss": [float(v) for v in trained.history["loss"]],
        "val_loss": [float(v) for v in trained.history["val_loss"]],
        "best_epoch": trained.aux["best_epoch"],
        "n_starts": n_starts,
        "snr": list(SNR),
        "bad_pixel_frac": BAD_PIXEL_FRAC,
        "grid_s": grid_s,
        "train_s": train_s,
        "fit_s": fit_s,
        "fit_ms_per_star": 1e3 * fit_s / n_obs,
        "n_flagged": int(np.sum(~ok)),
        "n_on_bound": int(np.sum(fit.on_bound)),
        "n_converged": int(np.sum(fit.converged)),
        "n_local_minimum": int(np.sum(trapped)),
        "reduced_chi2": {"median": q50, "p16": q16, "p84": q84},
        "rv": {
            "bias": float(np.mean(rv - rv_true[ok])),
            "rmse": float(np.sqrt(np.mean((rv - rv_true[ok]) ** 2))),
            "mean_error": float(np.mean(rv_err)),
            "pull_std": float(np.std(rv_pull)),
        },
    }
    for j, name in enumerate(GRID_NAMES):
        report["labels"][name] = {
            "bias": float(stats.bias[j]),
            "rmse": float(stats.rmse[j]),
            "mean_error": float(np.mean(err[ok, j])),
            "pull_std": float(np.std(pulls[:, j])),
        }

    val = report["val_loss"]
    lines = [
        f"The Payne on mock data: a {n_grid}-star mock grid of {', '.join(GRID_NAMES)} x {N_PIX} px, "
        f"emulator {model.n_labels} -> {' -> '.join(map(str, config.hidden))} -> {N_PIX}, {epochs} epochs",
        f"grid {grid_s:.1f} s; training {train_s:.1f} s (validation L1 {val[0]:.4f} -> {min(val):.4f}, "
        f"best epoch {report['best_epoch']})",
        f"{n_obs} mock stars from the emulator: SNR {SNR[0]:g}-{SNR[1]:g}, RV within +-{RV_RANGE:g} km/s, "
        f"{100 * BAD_PIXEL_FRAC:g}% bad pixels",
        f"fit_labels (RV free, {n_starts} starts a star): {fit_s:.1f} s, {report['fit_ms_per_star']:.1f} ms a star "
        "[wall, incl. compile]",
        f"{report['n_converged']} converged, {report['n_flagged']} flagged, {report['n_on_bound']} on a bound, "
        f"{report['n_local_minimum']} in a local minimum (chi2 above the truth's by > 10)",
        f"reduced chi2: median {q50:.3f}, 16-84% {q16:.3f}-{q84:.3f}",
        "fitted vs true labels (unflagged stars):",
        f"{'label':<9} {'bias':>10} {'RMSE':>10} {'mean err':>10} {'pull std':>9}",
    ]
    for name, r in [*report["labels"].items(), ("RV", report["rv"])]:
        lines.append(
            f"{name:<9} {r['bias']:>10.4g} {r['rmse']:>10.4g} {r.get('mean_error', np.nan):>10.4g} "
            f"{r['pull_std']:>9.2f}"
        )
    lines.append("(pull = (fit - true) / Laplace error; RV in km/s)")
    try:
        from jaxspec.plots import require_matplotlib

        require_matplotlib()
    except ImportError as exc:
        lines.append(f"figures skipped: {exc}")
    else:
        report["figures"] = _payne_figures(out, model, spectra, fit, truth, rv_true)
        lines.append(f"figures: {', '.join(report['figures'])}")
    print("\n".join(lines))
    write_report(out, "payne", report)
    return report


def _payne_figures(out: Path, model, spectra, fit, truth, rv_true) -> list[str]:
    """A typical star's fit with residuals (all chips, and a zoom), and the label and RV recovery."""
    from jaxspec.plots import payne as plots

    good = np.flatnonzero(~np.asarray(fit.flagged))
    chi = np.asarray(fit.reduced_chi2)[good]
    star = int(good[np.argmin(np.abs(chi - np.median(chi)))]) if good.size else 0
    return [
        save_figure(plots.fit_residuals(model, spectra, fit, star), out / "payne_fit.png"),
        save_figure(
            plots.fit_residuals(model, spectra, fit, star, wave_range=(15700.0, 15800.0)), out / "payne_fit_zoom.png"
        ),
        save_figure(plots.label_recovery(truth, fit, rv=rv_true), out / "payne_labels.png"),
    ]
