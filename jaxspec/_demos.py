"""End-to-end demos behind ``jaxspec demo NAME`` (each under 2 minutes on 2 CPU cores).

A demo takes ``out`` (a folder), ``seed``, ``progress`` and ``quick`` (smaller
sizes), prints a short report of what it computed and returns it as a dict
(also written to ``out/<name>_report.json``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import numpy as np


def _write_report(out: Path, name: str, report: dict) -> None:
    path = out / f"{name}_report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=float))
    tmp.replace(path)


def _figure(fig, path: Path) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(path)


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
            _figure(full, out / "mock_spectra.png"),
            _figure(zoom, out / "mock_spectra_zoom.png"),
        ]
        lines.append(f"figures: {', '.join(report['figures'])}")
    print("\n".join(lines))
    _write_report(out, "mock", report)
    return report


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
    fit = lux.fit(sv.labels[train], spectra[train], key=k_fit, progress=progress)
    train_s = time.perf_counter() - t0
    # the label scatter fit() calibrates on its own training stars is optimistic: re-calibrate on held-out stars
    model = lux.calibrate_scatter(fit.model, sv.labels[cal], spectra[cal])
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
    _write_report(out, "lux", report)
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
    model_flux = np.asarray(pred.z, np.float64) @ np.asarray(model.params.B, np.float64).T  # B z of each star
    elements = ["FE_H", "MG_FE", "AL_FE"]
    ll = mock.line_list()
    lines = {n: ll.wavelength[ll.element == n.split("_")[0]] for n in elements[1:]}  # Fe lines would crowd
    return [
        _figure(plot_label_comparison(pred.labels, truth, ncols=4), out / "lux_labels.png"),
        _figure(plot_kiel(pred.labels), out / "lux_kiel.png"),
        _figure(plot_abundance_plane(pred.labels), out / "lux_mg_fe.png"),
        _figure(plot_spectrum_fit(test_spectra, model_flux, star, wave_range=(15600.0, 15800.0)), out / "lux_fit.png"),
        _figure(
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


def demo_rsca(*, out: Path, seed: int = 0, progress: bool = True, quick: bool = False) -> dict:
    """RSCA on mock open clusters: doppelganger rates from spectra and from noisy abundance labels."""
    from jaxspec.data import mock
    from jaxspec.models import rsca

    n_clusters, n_members, n_field = (6, 8, 300) if quick else (12, 12, 1500)
    n_ppca, ks = (10, [2, 5, 10]) if quick else (40, [5, 10, 15, 20, 30])
    k = ks[-1]  # headline K (the paper's 30 of 60 PPCA components in the full demo)
    tol = [5.0, 0.05]  # |dRV| < 5 km/s, |dA_K| < 0.05 mag (the paper's nuisance matching)
    k_data, k_fit = jax.random.split(jax.random.key(seed))
    t0 = time.perf_counter()
    # ASPCAP fails on ~5% of the paper's stars for one of its abundances; those stars are dropped (sec. 2)
    noise = mock.Noise(missing_label_frac=0.005)  # 10 abundances: ~5% of stars miss one
    mc = mock.open_clusters(k_data, n_clusters, n_members, n_field, noise=noise, progress=progress)
    mock_s = time.perf_counter() - t0
    member = mc.cluster_id >= 0
    ids = mc.cluster_id[member]
    nuis = np.stack([mc.rv, mc.a_k], axis=1)
    nf, nc = nuis[~member], nuis[member]

    # Step 1 once, with the most components; every K of the sweep keeps the first K latents.
    t0 = time.perf_counter()
    fit = rsca.fit(
        mc.spectra[~member],
        mc.spectra[member],
        ids,
        n_components=k,
        key=k_fit,
        ppca_components=n_ppca,
        ppca_kwargs={"progress": progress},
    )
    fit_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    match = {"nuisance_field": nf, "nuisance_clusters": nc, "tolerances": tol}
    loo, raw = [], []
    for kk in ks:
        zp, zc = fit.field_feats[:, :kk], fit.cluster_feats[:, :kk]
        loo.append(rsca.leave_one_cluster_out_rate(zp, zc, ids, **match).rate)
        raw.append(rsca.doppelganger_rate(zp, zc, ids, **match).rate)
    top_dims = [n for n in (1, 2, 3, 5, 10, 20, 30) if n <= k]
    top = rsca.top_n_table(fit.field_feats, fit.cluster_feats, ids, n_dims=top_dims, **match)

    # Abundance baseline: steps 2-4 on [Fe/H] and the nine [X/Fe]; as in the paper, only stars with all of
    # them measured (the spectra rate on the same stars is reported too)
    lab = mc.labels.as_nan()
    abund = lab[:, mc.labels.index("FE_H") :]
    full = np.all(np.isfinite(abund), axis=1)
    fm, cm = full[~member], full[member]
    ab_match = {"nuisance_field": nf[fm], "nuisance_clusters": nc[cm], "tolerances": tol}
    ab = rsca.leave_one_cluster_out_rate(abund[~member & full], abund[member & full], ids[cm], **ab_match)
    ab_spectra = rsca.leave_one_cluster_out_rate(
        fit.field_feats[fm], fit.cluster_feats[cm], ids[cm], **ab_match
    )  # spectra on the same stars
    eval_s = time.perf_counter() - t0

    head = ks.index(k)
    report = {
        "n_clusters": n_clusters,
        "n_members": int(member.sum()),
        "n_field": int((~member).sum()),
        "n_pix": mc.spectra.n_pix,
        "ppca_components": n_ppca,
        "n_components": k,
        "ppca_converged": fit.converged,
        "ppca_iterations": len(fit.log_likelihood),
        "tolerances": {"rv_km_s": tol[0], "a_k_mag": tol[1]},
        "matched_pairs": int(sum(rsca.doppelganger_rate(fit.field_feats, fit.cluster_feats, ids, **match).n_pairs)),
        "rate_spectra": loo[head],
        "rate_raw_latents": raw[head],
        "rate_labels": ab.rate,
        "rate_spectra_same_stars": ab_spectra.rate,
        "labels_n_field": int(fm.sum()),
        "labels_n_members": int(cm.sum()),
        "per_cluster_spectra": [None if not np.isfinite(v) else float(v) for v in top.per_cluster[-1]],
        "k_sweep": {"n_components": ks, "rate_spectra": loo, "rate_raw_latents": raw},
        "top_n": {"n_dims": top_dims, "rate": [float(v) for v in top.rates]},
        "mock_s": mock_s,
        "fit_s": fit_s,
        "eval_s": eval_s,
    }
    lines = [
        f"RSCA on mock open clusters: {n_clusters} clusters x {n_members} members + {report['n_field']} field "
        f"giants x {mc.spectra.n_pix} px; PPCA {n_ppca} components, K = {k}",
        f"mock {mock_s:.1f} s; RSCA fit {fit_s:.1f} s ({report['ppca_iterations']} EM iterations, "
        f"converged {fit.converged}); rates {eval_s:.1f} s  [wall, incl. compile]",
        f"doppelganger rate (leave-one-cluster-out, |dRV| < {tol[0]:g} km/s, |dA_K| < {tol[1]:g}; "
        f"{report['matched_pairs']} matched member-field pairs):",
        f"  RSCA on spectra           {loo[head]:.4f}",
        f"  raw PPCA latents          {raw[head]:.4f}  (no metric learning)",
        f"  RSCA on abundance labels  {ab.rate:.4f}  ([Fe/H] + 9 [X/Fe]; {report['labels_n_members']} members, "
        f"{report['labels_n_field']} field with all measured; spectra on those stars: {ab_spectra.rate:.4f})",
        "rate against K (first K PPCA components):  "
        + ", ".join(f"K={a}: {b:.4f}" for a, b in zip(ks, loo, strict=True)),
        f"top-N table (N most discriminating RSCA dimensions at K = {k}):",
        "  " + "  ".join(f"{n:>6d}" for n in top_dims),
        "  " + "  ".join(f"{v:>6.4f}" for v in top.rates),
    ]
    try:
        from jaxspec.plots import require_matplotlib

        require_matplotlib()
    except ImportError as exc:
        lines.append(f"figures skipped: {exc}")
    else:
        from jaxspec._plots_rsca import plot_rate_vs_components, plot_rsca_dimensions

        feats = np.concatenate([fit.cluster_feats, fit.field_feats])
        emb = rsca.embed(fit.model.metric, feats, n_dims=min(4, k))
        fe_h = np.concatenate([lab[member, mc.labels.index("FE_H")], lab[~member, mc.labels.index("FE_H")]])
        all_ids = np.concatenate([ids, np.full(int((~member).sum()), -1)])
        report["figures"] = [
            _figure(
                plot_rsca_dimensions(emb, fe_h, cluster_ids=all_ids, n_dims=min(4, k)), out / "rsca_dimensions.png"
            ),
            _figure(plot_rate_vs_components(ks, loo, rate_labels=ab.rate, rates_raw=raw), out / "rsca_rate_vs_k.png"),
        ]
        lines.append(f"figures: {', '.join(report['figures'])}")
    print("\n".join(lines))
    _write_report(out, "rsca", report)
    return report
