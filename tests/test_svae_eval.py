"""Scatter-VAE evaluation: latent coverage on planted cases, residual statistics, ROC AUC."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxspec.metrics import roc_auc, roc_curve
from jaxspec.models import scatter_vae as sv
from jaxspec.models.scatter_vae import latent_coverage, residual_stats

RNG = np.random.default_rng(0)
BOX = RNG.uniform(size=(3000, 2))
FAST = {"n_samples": 20_000, "max_points": 1500}


def test_reexported_from_scatter_vae():
    assert sv.latent_coverage is latent_coverage and sv.residual_stats is residual_stats and sv.roc_auc is roc_auc
    assert {"LatentCoverage", "ResidualStats", "latent_coverage", "residual_stats", "roc_auc"} <= set(sv.__all__)


def test_identical_sets_cover_the_same_volume():
    z = RNG.normal(size=(300, 3))
    cov = latent_coverage(z, z, n_samples=5000)
    assert cov.ratio == 0.0 and cov.ratio_outside == 0.0 and cov.v_sup == cov.v_all > 0


def test_half_of_a_uniform_box_gives_one():
    cov = latent_coverage(BOX[BOX[:, 0] < 0.5], BOX, **FAST)
    assert cov.ratio == pytest.approx(1.0, abs=0.1)
    assert cov.ratio_outside == pytest.approx(1.0, abs=0.1)
    assert cov.v_all == pytest.approx(2 * cov.v_sup, rel=0.1)
    assert 0 < cov.stderr < 0.05 and cov.n_samples == FAST["n_samples"]


def test_random_subsample_covers_the_same_volume_and_units_do_not_matter():
    sub = BOX[:900]
    cov = latent_coverage(sub, BOX, **FAST)
    assert abs(cov.ratio) < 0.1
    scaled = latent_coverage(sub * [3.0, 0.01] + 5.0, BOX * [3.0, 0.01] + 5.0, **FAST)
    assert scaled.ratio == pytest.approx(cov.ratio, abs=1e-6)  # standardised by z_all's spread
    one, two = (latent_coverage(sub, BOX, n_samples=20_000, key=jax.random.key(k)) for k in (1, 2))
    assert abs(one.ratio - two.ratio) < 5 * one.stderr  # no subsampling: Monte Carlo noise only


def test_latent_coverage_refuses_bad_input():
    z = RNG.normal(size=(10, 2))
    with pytest.raises(ValueError, match="z_labelled"):
        latent_coverage(z[:, :1], z)
    with pytest.raises(ValueError, match="z_all"):
        latent_coverage(z, np.full((10, 2), np.nan))
    with pytest.raises(ValueError, match="z_all"):
        latent_coverage(z, z[0])
    with pytest.raises(ValueError, match="level"):
        latent_coverage(z, z, level=1.0)
    with pytest.raises(ValueError, match="bandwidth"):
        latent_coverage(z, z, bandwidth=-1.0)
    with pytest.raises(ValueError, match="n_samples"):
        latent_coverage(z, z, n_samples=1)


def test_residual_stats_per_bin_against_numpy():
    labels = np.r_[np.linspace(4000, 4999, 50), np.linspace(5000, 6000, 50), np.nan]
    r = RNG.normal(size=(101, 3))
    r[0, 0] = np.nan  # masked: ignored
    r[60, 1] = 10.0
    out = residual_stats(r, labels, bins=[4000, 5000, 6000])
    assert out.edges.tolist() == [4000, 5000, 6000]
    assert out.count.tolist() == [149, 150]
    hi = r[50:100].ravel()
    med = np.median(hi)
    np.testing.assert_allclose(out.median[1], med)
    np.testing.assert_allclose(out.spread[1], 1.4826 * np.median(np.abs(hi - med)))
    np.testing.assert_allclose([out.p16[1], out.p84[1]], np.percentile(hi, [16, 84]))
    np.testing.assert_allclose(out.frac_gt3[1], np.mean(np.abs(hi) > 3))
    np.testing.assert_allclose(out.mean[0], np.nanmean(r[:50]))


def test_residual_stats_unit_gaussian_one_bin_and_empty_bins():
    r = RNG.normal(size=(20_000,))
    out = residual_stats(r)
    assert out.count.tolist() == [20_000]
    assert abs(out.median[0]) < 0.03 and out.spread[0] == pytest.approx(1.0, abs=0.03)
    assert out.frac_gt3[0] == pytest.approx(0.0027, abs=0.002)
    empty = residual_stats(r[:4], np.array([0.0, 0.1, 0.9, 1.0]), bins=4)
    assert empty.count.tolist() == [2, 0, 0, 2] and np.isnan(empty.median[1])
    with pytest.raises(ValueError, match="labels"):
        residual_stats(r[:4], np.zeros(3))
    with pytest.raises(ValueError, match="bins"):
        residual_stats(r[:4], np.zeros(4), bins=[1.0, 0.0])
    with pytest.raises(ValueError, match="resid"):
        residual_stats(np.zeros((2, 2, 2)))


def test_roc_auc_against_pairwise_count():
    score = RNG.normal(size=200).round(1)  # ties count one half
    pos = RNG.uniform(size=200) < 0.2
    pairs = score[pos][:, None] - score[~pos][None, :]
    assert roc_auc(score, pos) == pytest.approx(np.mean(pairs > 0) + 0.5 * np.mean(pairs == 0))
    assert roc_auc(np.arange(4.0), np.array([False, False, True, True])) == 1.0
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(np.arange(3.0), np.zeros(3, bool))
    with pytest.raises(ValueError, match="positive"):
        roc_auc(np.arange(3.0), np.array([0, 1, 0]))


def test_roc_curve_counts_each_threshold_and_its_area_is_the_auc():
    score = RNG.normal(size=300).round(1)
    pos = RNG.uniform(size=300) < 0.3
    fpr, tpr = roc_curve(score, pos)
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(score, pos), abs=1e-12)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    t = np.median(score)  # one point of the curve, counted by hand
    k = np.flatnonzero(np.isclose(fpr, np.mean(score[~pos] >= t)) & np.isclose(tpr, np.mean(score[pos] >= t)))
    assert k.size == 1
    with pytest.raises(ValueError, match="both classes"):
        roc_curve(np.arange(3.0), np.ones(3, bool))
