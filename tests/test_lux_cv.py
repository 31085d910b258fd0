"""Lux cross-validation: planted latent dimension, folds, reproducibility, input checks, Eq. A1 by hand."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxspec.data.containers import Labels, Spectra
from jaxspec.models import lux
from jaxspec.models.lux import cv as lux_cv

N, M, L, P_TRUE = 60, 2, 30, 6
SIGMA_LABEL, SIGMA_FLUX = 0.01, 0.002
GRID_P, GRID_OMEGA, K = (3, P_TRUE), (1.0, 100.0), 3
CONFIG = lux.Config(n_iter=2)  # fewer Agenda 1 iterations than the paper's 5: the planted data are exactly linear
CV = {"n_latents": GRID_P, "omegas": GRID_OMEGA, "n_folds": K, "config": CONFIG, "progress": False}


def _planted(seed: int = 0):
    """Labels and fluxes linear in latents of dimension P_TRUE (first one = 1), small noise, a few masked entries."""
    rng = np.random.default_rng(seed)
    z = np.concatenate([np.ones((N, 1)), rng.normal(size=(N, P_TRUE - 1))], axis=1)
    a, b = rng.normal(size=(M, P_TRUE)), 0.1 * rng.normal(size=(L, P_TRUE))
    lab = z @ a.T + SIGMA_LABEL * rng.normal(size=(N, M))
    flux = 1.0 + z @ b.T + SIGMA_FLUX * rng.normal(size=(N, L))
    lab_mask = np.zeros((N, M), bool)
    lab_mask[::7, 1] = True  # missing labels
    pix_mask = np.zeros((N, L), bool)
    pix_mask[::5, 3:6] = True  # bad pixels
    labels = Labels(lab, np.full((N, M), SIGMA_LABEL**-2), ["X", "Y"], mask=lab_mask)
    spectra = Spectra(flux, np.full((N, L), SIGMA_FLUX**-2), np.linspace(15100.0, 15200.0, L), mask=pix_mask)
    return labels, spectra


@pytest.fixture(scope="module")
def data():
    return _planted()


@pytest.fixture(scope="module")
def result(data):
    labels, spectra = data
    return lux_cv.cross_validate(spectra, labels, key=jax.random.key(3), **CV)


def test_shapes_grids_and_best(result):
    assert result.chi2_from_flux.shape == result.chi2_from_labels.shape == result.seconds.shape == (K, 2, 2)
    np.testing.assert_array_equal(result.n_latents, GRID_P)
    np.testing.assert_array_equal(result.omegas, GRID_OMEGA)
    assert np.all(np.isfinite(result.chi2_from_flux)) and np.all(result.chi2_from_flux > 0)
    assert np.all(result.seconds > 0)
    median = np.median(result.chi2_from_flux, axis=0)
    i, j = np.unravel_index(np.argmin(median), median.shape)
    assert result.best == (GRID_P[i], GRID_OMEGA[j])
    text = str(result)
    assert "Omega=100" in text and "3 (1.5M)" in text and "6 (3M)" in text and text.count("*") == 2  # header + best


def test_too_few_latents_is_clearly_worse(result):
    median = result.median("flux")
    # at P >= P_TRUE the held-out chi2 is about its expectation, ~ one per measured label and pixel
    n_measured = N * (M + L) - 9 * 1 - 12 * 3
    assert median[1, 0] < 2.0 * n_measured / K
    # at P < P_TRUE labels cannot follow from the fluxes: orders of magnitude worse, at every Omega
    assert np.all(median[0] > 100.0 * median[1, 0])
    assert result.best[0] == P_TRUE


def test_folds_partition_the_stars():
    folds = lux_cv.fold_indices(jax.random.key(1), 23, 5)
    assert [len(f) for f in folds] == [5, 5, 5, 4, 4]
    np.testing.assert_array_equal(np.sort(np.concatenate(folds)), np.arange(23))
    again = lux_cv.fold_indices(jax.random.key(1), 23, 5)
    assert all(np.array_equal(f, g) for f, g in zip(folds, again, strict=True))
    other = lux_cv.fold_indices(jax.random.key(2), 23, 5)
    assert not all(np.array_equal(f, g) for f, g in zip(folds, other, strict=True))


def test_result_folds_cover_every_star_once(result):
    assert len(result.folds) == K
    np.testing.assert_array_equal(np.sort(np.concatenate(result.folds)), np.arange(N))


def test_reproducible_with_the_same_key(data, result):
    labels, spectra = data
    again = lux_cv.cross_validate(spectra, labels, key=jax.random.key(3), **CV)
    np.testing.assert_array_equal(again.chi2_from_flux, result.chi2_from_flux)
    np.testing.assert_array_equal(again.chi2_from_labels, result.chi2_from_labels)
    assert all(np.array_equal(f, g) for f, g in zip(again.folds, result.folds, strict=True))


def _closed_form_z(design, y, w, omega):
    """argmin 1/2 sum w (y - design z)^2 + omega |z|^2 from the normal equations, float64."""
    p = design.shape[1]
    return np.stack(
        [np.linalg.solve(design.T @ (wi[:, None] * design) + 2.0 * omega * np.eye(p), design.T @ (wi * yi))
         for yi, wi in zip(y, w, strict=True)]
    )  # fmt: skip


def test_chi2_matches_eq_a1_by_hand(data, result):
    labels, spectra = data
    k, i, j = 1, 1, 0
    p, omega = GRID_P[i], GRID_OMEGA[j]
    test = result.folds[k]
    train = np.setdiff1d(np.arange(N), test)
    train_key = jax.random.split(jax.random.key(3))[1]
    key = jax.random.fold_in(train_key, k)
    config = lux.Config(n_latents=p, omega=omega, n_iter=2, calibrate=False)
    model = lux.fit(spectra[train], labels[train], key=key, config=config, progress=False).model
    a, b = np.asarray(model.params.A, np.float64), np.asarray(model.params.B, np.float64)
    s2 = np.exp(2.0 * np.asarray(model.params.ln_s, np.float64))
    center, scale = np.asarray(model.label_scaler.center), np.asarray(model.label_scaler.scale)
    lab_obs = np.asarray(labels.ivar[test]) > 0
    lab = (np.asarray(labels.values[test], np.float64) - center) / scale
    lab_w = np.where(lab_obs, SIGMA_LABEL**-2 * scale**2, 0.0)
    pix_obs = np.asarray(spectra.ivar[test]) > 0
    flux = np.asarray(spectra.flux[test], np.float64)
    flux_w = np.where(pix_obs, 1.0 / (SIGMA_FLUX**2 + s2), 0.0)

    def eq_a1(z):
        label_term = np.sum(np.where(lab_obs, (lab - z @ a.T) ** 2 / (SIGMA_LABEL / scale) ** 2, 0.0))
        flux_term = np.sum(np.where(pix_obs, (flux - z @ b.T) ** 2 / (SIGMA_FLUX**2 + s2), 0.0))
        return label_term + flux_term

    want_flux = eq_a1(_closed_form_z(b, flux, flux_w, omega))
    want_labels = eq_a1(_closed_form_z(a, lab, lab_w, omega))
    np.testing.assert_allclose(result.chi2_from_flux[k, i, j], want_flux, rtol=2e-3)
    np.testing.assert_allclose(result.chi2_from_labels[k, i, j], want_labels, rtol=2e-3)


def test_latent_grid_maps_multiple_one_to_m_plus_one():
    assert lux_cv.latent_grid(12) == (13, 24, 48, 96)
    assert lux_cv.latent_grid(1) == (2, 4, 8)  # M + 1 = 2M for one label: the duplicate is dropped
    with pytest.raises(ValueError, match="multiples"):
        lux_cv.latent_grid(3, (0, 2))


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"n_folds": 1}, "n_folds"),
        ({"n_folds": N + 1}, "n_folds"),
        ({"omegas": (0.0, 10.0)}, "omegas"),
        ({"omegas": (-1.0,)}, "omegas"),
        ({"omegas": (10.0, 10.0)}, "omegas"),
        ({"n_latents": (M,)}, "n_latents"),  # P = M: lux.fit needs P >= M + 1
        ({"n_latents": (3, 40)}, "n_latents"),  # P >= 40 stars in a training fold
        ({"n_latents": (3.5,)}, "n_latents"),
    ],
)
def test_bad_inputs_name_the_argument(data, kwargs, arg):
    labels, spectra = data
    kwargs = {"n_latents": (3,), "omegas": (1.0,), "n_folds": 3, **kwargs}
    with pytest.raises(ValueError, match=arg):
        lux_cv.cross_validate(spectra, labels, key=jax.random.key(0), progress=False, **kwargs)


def test_bad_types_and_shapes(data):
    labels, spectra = data
    with pytest.raises(TypeError, match="labels"):
        lux_cv.cross_validate(spectra, labels.values, key=jax.random.key(0))
    with pytest.raises(TypeError, match="spectra"):
        lux_cv.cross_validate(spectra.flux, labels, key=jax.random.key(0))
    with pytest.raises(ValueError, match="spectra"):
        lux_cv.cross_validate(spectra[:10], labels, key=jax.random.key(0))
    with pytest.raises(TypeError, match="key"):
        lux_cv.cross_validate(spectra, labels, key=0)
    with pytest.raises(TypeError, match="n_folds"):
        lux_cv.cross_validate(spectra, labels, key=jax.random.key(0), n_folds=2.5)


def test_plot_cv_grid_two_panels(result):
    plt = pytest.importorskip("matplotlib.pyplot")
    from jaxspec.plots.lux import plot_cv_grid

    fig = plot_cv_grid(result)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["test latents from flux", "test latents from labels"]
    assert len(panels[0].texts) == len(GRID_P) * len(GRID_OMEGA)
    assert len(panels[0].patches) == 1  # the best cell
    with pytest.raises(ValueError, match="ax"):
        plot_cv_grid(result, ax=[panels[0]])
    plt.close(fig)


def test_the_old_module_path_warns_and_still_works():
    import importlib
    import sys

    sys.modules.pop("jaxspec.models.lux_cv", None)
    with pytest.warns(DeprecationWarning, match=r"use jaxspec\.models\.lux\.cv"):
        old = importlib.import_module("jaxspec.models.lux_cv")
    assert old.cross_validate is lux_cv.cross_validate
