"""``jaxspec demo mock``: a mock APOGEE-like survey, summarised, with a few spectra drawn."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from jaxspec.cli.demos._report import save_figure, write_report


def demo_mock(*, out: Path, seed: int = 0, progress: bool = True, quick: bool = False) -> dict:
    """Generate a mock APOGEE-like survey, summarise it and plot a few spectra."""
    from jaxspec.data import mock

    n_stars = 500 if quick else 5000
    t0 = time.perf_counter()
    sv = mock.survey(jax.random.key(seed), n_stars, keep_model=True, progress=progress)
    seconds = time.perf_counter() - t0
    s, lab = sv.spectra, sv.labels
    flux, ivar = np.asarray(s.flux, np.float64), np.asarray(s.ivar, np.float64)
    good = ivar > 0
    pulls = ((flux - sv.model_flux) * np.sqrt(ivar))[good]
    clean_pulls = pulls[np.abs(pulls) < 10]  # sky-line spikes are outliers by design
    snr = np.asarray(sv.snr)
    report = {
        "n_stars": s.n_stars,
        "n_pix": s.n_pix,
        "wavelength_A": [float(s.wavelength[0]), float(s.wavelength[-1])],
        "generation_s": seconds,
        "spectra_per_s": s.n_stars / seconds,
        "snr_median": float(np.median(snr)),
        "snr_p5_p95": [float(v) for v in np.percentile(snr, [5, 95])],
        "masked_pixel_frac": float(1 - good.mean()),
        "noise_pull_std": float(np.std(clean_pulls)),
        "labels": {},
    }
    true = sv.true_labels.as_nan()
    observed = lab.as_nan()
    for j, name in enumerate(lab.names):
        err = np.asarray(lab.err)[:, j]
        measured = np.isfinite(observed[:, j])
        report["labels"][name] = {
            "median": float(np.median(true[:, j])),
            "p5": float(np.percentile(true[:, j], 5)),
            "p95": float(np.percentile(true[:, j], 95)),
            "median_error": float(np.median(err[measured])),
            "missing_frac": float(1 - measured.mean()),
            "rms_observed_minus_true": float(np.sqrt(np.mean((observed[measured, j] - true[measured, j]) ** 2))),
        }

    lines = [
        f"mock survey: {s.n_stars} stars x {s.n_pix} pixels, vacuum {s.wavelength[0]:.1f}-{s.wavelength[-1]:.1f} A "
        f"(APOGEE DR17 grid), generated in {seconds:.1f} s ({report['spectra_per_s']:.0f} spectra/s incl. compile)",
        f"SNR per pixel: median {report['snr_median']:.0f}, 5-95%: "
        f"{report['snr_p5_p95'][0]:.0f}-{report['snr_p5_p95'][1]:.0f}; masked pixels {report['masked_pixel_frac']:.2%}",
        f"noise check: std of (flux - noise-free model) * sqrt(ivar) = {report['noise_pull_std']:.3f} (expect 1)",
        f"{'label':<7} {'median':>8} {'p5':>8} {'p95':>8} {'err':>7} {'rms(obs-true)':>13} {'missing':>8}",
    ]
    for name, r in report["labels"].items():
        lines.append(
            f"{name:<7} {r['median']:>8.3f} {r['p5']:>8.3f} {r['p95']:>8.3f} {r['median_error']:>7.3f} "
            f"{r['rms_observed_minus_true']:>13.3f} {r['missing_frac']:>8.1%}"
        )
    try:
        from jaxspec.plots import plot_spectra, require_matplotlib

        require_matplotlib()
    except ImportError as exc:
        lines.append(f"figure skipped: {exc}")
    else:
        teff = np.asarray(sv.true_labels.values)[:, 0]
        pick = [int(np.argmin(np.abs(teff - t))) for t in np.percentile(teff, [5, 35, 65, 95])]
        full = plot_spectra(s, pick, labels=sv.true_labels)
        zoom = plot_spectra(s, pick, labels=sv.true_labels, wave_range=(15600.0, 15800.0))
        report["figures"] = [
            save_figure(full, out / "mock_spectra.png"),
            save_figure(zoom, out / "mock_spectra_zoom.png"),
        ]
        lines.append(f"figures: {', '.join(report['figures'])}")
    print("\n".join(lines))
    write_report(out, "mock", report)
    return report
