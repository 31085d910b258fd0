"""`jaxspec demo` end to end, as a user runs it (a subprocess of the installed package)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest

from jaxspec.data import mock


def _demo(tmp_path, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "jaxspec.cli", "demo", *args, "--out", str(tmp_path), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MPLBACKEND": "Agg"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_mock_demo_runs_and_reports_what_it_computed(tmp_path):
    proc = _demo(tmp_path, "mock")
    report = json.loads((tmp_path / "mock_report.json").read_text())
    assert report["n_stars"] == 5000
    assert report["n_pix"] == 7514
    assert abs(report["noise_pull_std"] - 1.0) < 0.02  # the noise matches the stated errors
    assert 0.002 < report["masked_pixel_frac"] < 0.05
    assert abs(report["labels"]["TEFF"]["missing_frac"] - 0.05) < 0.02
    for figure in report["figures"]:
        assert (tmp_path / figure.split("/")[-1]).stat().st_size > 10_000
    assert "noise check" in proc.stdout
    assert "TEFF" in proc.stdout


@pytest.mark.slow
def test_flagship_lux_demo_trains_and_predicts_labels_from_flux(tmp_path):
    proc = _demo(tmp_path, "--quick")  # no name: the flagship
    report = json.loads((tmp_path / "lux_report.json").read_text())
    assert (report["n_train"], report["n_test"], report["n_pix"]) == (500, 200, 7514)
    assert (report["n_labels"], report["n_latents"]) == (12, 48)  # the paper's P = 4 M
    assert report["n_flagged"] == 0
    assert 0.8 < report["test_reduced_chi2_median"] < 2.0
    objective = report["train_objective"]
    assert all(b <= a + 1e-5 * abs(a) for a, b in itertools.pairwise(objective[:5]))  # Agenda 1 descends
    labels = report["labels"]
    assert tuple(labels) == mock.LABEL_NAMES
    # Loose bounds that hold for 500 training stars: Lux learns every label from the flux.
    assert labels["TEFF"]["rmse"] < 250.0 and abs(labels["TEFF"]["bias"]) < 100.0
    assert labels["LOGG"]["rmse"] < 0.6
    for name in list(labels)[2:]:
        assert labels[name]["rmse"] < 0.2, name
    for figure in report["figures"]:
        assert (tmp_path / figure.split("/")[-1]).stat().st_size > 10_000
    assert "bias" in proc.stdout and "MG_FE" in proc.stdout and "test step" in proc.stdout


@pytest.mark.slow
def test_rsca_demo_learns_a_metric_that_beats_raw_latents(tmp_path):
    proc = _demo(tmp_path, "rsca", "--quick")
    report = json.loads((tmp_path / "rsca_report.json").read_text())
    assert (report["n_clusters"], report["n_members"], report["n_field"]) == (6, 48, 300)
    assert report["ppca_converged"]
    assert report["matched_pairs"] > 100  # the rv / A_K matching leaves pairs to score
    rates = [report["rate_spectra"], report["rate_raw_latents"], report["rate_labels"], *report["top_n"]["rate"]]
    rates += report["k_sweep"]["rate_spectra"] + report["k_sweep"]["rate_raw_latents"]
    assert all(0.0 <= r <= 1.0 for r in rates)
    # RSCA on spectra finds far fewer doppelgangers than the raw latents, and both beat random pairs (0.5)
    assert report["rate_spectra"] < 0.5 * report["rate_raw_latents"] < 0.25
    assert report["k_sweep"]["rate_spectra"][-1] == report["rate_spectra"]
    assert report["top_n"]["n_dims"][-1] == report["n_components"]
    assert report["top_n"]["rate"][-1] == pytest.approx(report["rate_spectra"])
    assert report["labels_n_members"] > 10 and report["labels_n_field"] > 100
    assert len(report["figures"]) == 2
    for figure in report["figures"]:
        assert (tmp_path / figure.split("/")[-1]).stat().st_size > 10_000
    assert "RSCA on abundance labels" in proc.stdout and "top-N table" in proc.stdout


@pytest.mark.slow
def test_svae_demo_reconstructs_held_out_stars_and_finds_outliers(tmp_path):
    proc = _demo(tmp_path, "svae", "--quick")
    report = json.loads((tmp_path / "svae_report.json").read_text())
    assert report["n_stars"] == 3000 and report["n_outliers"] > 20
    assert report["n_svae_train"] + report["n_test"] == 3000
    assert report["n_test"] > 150 and report["n_cannon_train"] > 2 * report["n_test"]
    val = report["svae_val_loss"]
    assert len(val) == report["svae_config"]["epochs"] and min(val) < val[0] - 0.1  # the sVAE learns
    assert report["cannon_converged"]
    # normalised residuals of held-out stars: centred, about unit spread, few beyond 3 sigma, for both models
    for name in ("svae", "cannon"):
        r = report["residuals"][name]
        assert abs(r["mean"]) < 0.1 and abs(r["median"]) < 0.1, name
        assert 0.6 < r["robust_spread"] < 1.3 and 0.6 < r["std"] < 1.5, name
        assert r["frac_abs_gt3"] < 0.03, name
    sc = report["scatter"]
    assert 0 < sc["svae_per_star_median"] < 2 and 0 < sc["cannon_population_median"] < 2
    assert report["anomaly_auc"] > 0.85  # the ELBO ranks the CEMP-like stars high
    lc = report["latent_coverage"]
    assert len(lc["ratio_2d"]) == 15 and abs(lc["ratio_2d_mean"]) < 0.3  # labelled = a random subset
    assert abs(lc["ratio"]) < 1.0 and lc["ratio_spread"] >= 0
    assert len(report["figures"]) == 2
    for figure in report["figures"]:
        assert (tmp_path / figure.split("/")[-1]).stat().st_size > 10_000
    assert "normalised residuals" in proc.stdout and "ROC AUC" in proc.stdout


@pytest.mark.slow
def test_payne_demo_trains_an_emulator_and_recovers_labels_and_rvs(tmp_path):
    proc = _demo(tmp_path, "payne", "--quick")
    report = json.loads((tmp_path / "payne_report.json").read_text())
    assert (report["n_grid"], report["n_obs"], report["n_pix"]) == (1000, 200, 7214)
    val = report["val_loss"]
    assert min(val) < 0.1 * val[0]  # the emulator learns the grid
    assert report["n_flagged"] <= 2 and report["n_converged"] >= 190
    chi2 = report["reduced_chi2"]
    assert abs(chi2["median"] - 1.0) < 0.05 and chi2["p16"] < chi2["median"] < chi2["p84"] < 1.1
    rv = report["rv"]
    assert abs(rv["bias"]) < 0.05 and rv["rmse"] < 0.2 and 0.8 < rv["pull_std"] < 1.25
    labels = report["labels"]
    assert tuple(labels) == ("TEFF", "LOGG", "FE_H", "ALPHA_FE", "VBROAD")
    # Loose bounds for the quick emulator (a few stars stop in a local minimum); the full demo's pulls are ~1.
    for name, rmse in {"TEFF": 150.0, "LOGG": 0.4, "FE_H": 0.04, "ALPHA_FE": 0.05, "VBROAD": 0.6}.items():
        assert labels[name]["rmse"] < rmse, name
    assert report["train_s"] > 0 and report["fit_ms_per_star"] > 0
    assert len(report["figures"]) == 3
    for figure in report["figures"]:
        assert (tmp_path / figure.split("/")[-1]).stat().st_size > 10_000
    assert "reduced chi2: median" in proc.stdout and "ms a star" in proc.stdout and "ALPHA_FE" in proc.stdout


@pytest.mark.slow
def test_flows_demo_scores_outliers_and_finds_pure_line_groups(tmp_path):
    proc = _demo(tmp_path, "flows", "--quick")
    report = json.loads((tmp_path / "flows_report.json").read_text())
    assert (report["n_train"], report["n_pix"], report["kind"]) == (800, 400, "structured")
    history = report["history_nll_std"]
    assert history[report["best_epoch"]] < history[0] or report["best_epoch"] == 0
    # whitened at the start, the flow is at least the data's Gaussian: it beats the 16-component PPCA
    assert report["held_out_log_prob"] > report["held_out_log_prob_ppca"]
    auc = report["auc"]
    for name in ("cemp", "fast_rotator", "stripped"):  # the paper's classes: the flow's NLL finds them
        assert auc[name]["nll"] > 0.99, name
    graph = report["graph"]
    assert graph["components"] >= 1 and all(size >= 3 for size in graph["sizes"])
    assert max(graph["purity"]) == 1.0  # at least one component is all one species
    assert len(report["figures"]) == 4
    for figure in report["figures"]:
        assert (tmp_path / figure.split("/")[-1]).stat().st_size > 10_000
    assert "ROC AUC" in proc.stdout and "purity" in proc.stdout


@pytest.mark.slow
def test_cyclestarnet_demo_closes_part_of_the_synthetic_gap_and_finds_features(tmp_path):
    proc = _demo(tmp_path, "cyclestarnet", "--quick")
    report = json.loads((tmp_path / "cyclestarnet_report.json").read_text())
    assert report["n_stars"] == 400 and report["n_pix"] == 1791
    assert report["iterations"] >= 200
    for term, last in report["distances_last"].items():  # training reduces every distance term
        assert last < report["distances_first"][term], term
    rec = report["recovery"]
    # the transferred model fits the held-out observed spectra better than the emulator alone
    assert rec["eq11"]["reduced_chi2_median"] < rec["eq9"]["reduced_chi2_median"]
    assert all(rec[m]["n_flagged"] < 30 for m in ("eq9", "eq10", "eq11"))
    assert report["features"] and all(f["pixels"][1] > f["pixels"][0] for f in report["features"])
    assert len(report["figures"]) == 3
    for figure in report["figures"]:
        assert (tmp_path / figure.split("/")[-1]).stat().st_size > 10_000
    assert "NOT CONVERGED" in proc.stdout and "Eq. 11" in proc.stdout
