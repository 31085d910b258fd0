"""``jaxspec demo lux`` (the default demo): Lux trained on a mock survey, 12 labels of held-out stars from flux."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from jaxspec.cli.demos._report import save_figure, write_report


def demo_lux(*, out: Path, seed: int = 0, progress: bool = True, quick: bool = False) -> dict:
    """Train Lux on a mock survey, then predict held-out stars' 12 labels from their spectra alone."""
    from jaxspec import metrics
    from jaxspec.data import mask_bad_pixels, mock
    from jaxspec.models import lux

    n_train, n_cal, n_test = (500, 200, 200) if quick else (5000, 1000, 2000)
    k_data, k_fit = jax.random.split(jax.random.key(seed))
    t0 = time.perf_counter()
    sv = mock.survey(k_data, n_train + n_cal + n_test, noise=mock.Noise(snr=(100.0, 300.0)), progress=progress)
    mock_s = time.perf_counter() - t0
    spectra = mask_bad_pixels(sv.spectra)
    train, cal = np.arange(n_train), np.arange(n_train, n_train + n_cal)
    test = np.arange(n_train + n_cal, n_train + n_cal + n_test)

    t0 = time.perf_counter()
    fit = lux.fit(spectra[train], sv.labels[train], key=k_fit, progress=progress)
    train_s = time.perf_counter() - t0
    # the label scatter fit() calibrates on its own training stars is optimistic: re-calibrate on held-out stars
    model = lux.calibrate_scatter(fit.model, spectra[cal], sv.labels[cal])
    t0 = time.perf_counter()
    pred = lux.predict_labels(model, spectra[test], progress=progress)  # flux only: no labels of these stars
    test_s = time.perf_counter() - t0

    truth = sv.true_labels[test]
    stats = metrics.bias_rmse(pred.labels, truth)  # flagged stars have ivar 0: not counted
    catalog = metrics.bias_rmse(sv.labels[train], sv.true_labels[train])  # noise of the training labels
    pred_err = metrics.mean_error(pred.labels)
    chi2 = np.asarray(pred.reduced_chi2)[~pred.flagged]
    ok = ~pred.flagged
    pulls = (np.asarray(pred.labels.values) - np.asarray(truth.values))[ok] * np.sqrt(np.asarray(pred.labels.ivar)[ok])
    report = {
        "n_train": n_train,
        "n_calibration": n_cal,
        "n_test": n_test,
        "n_pix": spectra.n_pix,
        "n_labels": len(model.label_names),
        "n_latents": model.n_latents,
        "omega": model.omega,
        "mock_s": mock_s,
        "train_s": train_s,
        "test_s": test_s,
        "train_objective": [float(v) for v in fit.history["objective"]],
        "test_reduced_chi2_median": float(np.median(chi2)) if chi2.size else float("nan"),
        "n_flagged": int(np.sum(pred.flagged)),
        "labels": {},
    }
    for j, name in enumerate(model.label_names):
        report["labels"][name] = {
            "bias": float(stats.bias[j]),
            "rmse": float(stats.rmse[j]),
            "mean_predicted_error": float(pred_err[j]),
            "pull_std": float(np.std(pulls[:, j])),
            "training_label_noise": float(catalog.rmse[j]),
        }

    lines = [
        f"Lux on a mock survey: {n_train} training + {n_cal} calibration + {n_test} test stars x {spectra.n_pix} px, "
        f"SNR 100-300, {report['n_labels']} labels, P = {model.n_latents} latents, training Omega = {model.omega:g}",
        f"mock survey generated in {mock_s:.1f} s; training {train_s:.1f} s; "
        f"test step (labels of {n_test} stars from flux only) {test_s:.1f} s  [wall, incl. compile]",
        f"test stars: median reduced chi2 of the flux fit {report['test_reduced_chi2_median']:.3f}, "
        f"{report['n_flagged']} flagged",
        "predicted vs true labels of the test stars (training-label noise for scale):",
        f"{'label':<7} {'bias':>9} {'RMSE':>9} {'pred err':>9} {'pull std':>9} {'train noise':>11}",
    ]
    for name, r in report["labels"].items():
        lines.append(
            f"{name:<7} {r['bias']:>9.4f} {r['rmse']:>9.4f} {r['mean_predicted_error']:>9.4f} "
            f"{r['pull_std']:>9.2f} {r['training_label_noise']:>11.4f}"
        )
    lines.append(f"(label scatter calibrated on {n_cal} held-out stars; pull = (predicted - true) / predicted error)")
    try:
        from jaxspec.plots import require_matplotlib

        require_matplotlib()
    except ImportError as exc:
        lines.append(f"figures skipped: {exc}")
    else:
        report["figures"] = _lux_figures(out, sv, spectra[test], test, pred, model)
        lines.append(f"figures: {', '.join(report['figures'])}")
    print("\n".join(lines))
    write_report(out, "lux", report)
    return report


def _lux_figures(out: Path, sv, test_spectra, test, pred, model) -> list[str]:
    """The Lux paper's figures for the demo: label comparison, Kiel, abundance plane, a fit, derivatives."""
    from jaxspec.data import mock
    from jaxspec.models import lux
    from jaxspec.plots import (
        plot_abundance_plane,
        plot_derivative_spectra,
        plot_kiel,
        plot_label_comparison,
        plot_spectrum_fit,
    )

    truth = sv.true_labels[test]
    good = np.flatnonzero(~pred.flagged)
    star = int(good[np.argmin(np.abs(np.asarray(pred.reduced_chi2)[good] - np.median(pred.reduced_chi2[good])))])
    model_flux = np.asarray(lux.decode(model, pred.z)[1])  # B z of each star
    elements = ["FE_H", "MG_FE", "AL_FE"]
    ll = mock.line_list()
    lines = {n: ll.wavelength[ll.element == n.split("_")[0]] for n in elements[1:]}  # Fe lines would crowd
    return [
        save_figure(plot_label_comparison(pred.labels, truth, ncols=4), out / "lux_labels.png"),
        save_figure(plot_kiel(pred.labels), out / "lux_kiel.png"),
        save_figure(plot_abundance_plane(pred.labels), out / "lux_mg_fe.png"),
        save_figure(
            plot_spectrum_fit(test_spectra, model_flux, star, wave_range=(15600.0, 15800.0)), out / "lux_fit.png"
        ),
        save_figure(
            plot_derivative_spectra(
                model.wavelengths[0],
                lux.derivative_spectra(model),
                model.label_names,
                select=elements,
                wave_range=(15700.0, 16800.0),  # Mg and Al lines of the mock line list
                lines=lines,
            ),
            out / "lux_derivatives.png",
        ),
    ]
