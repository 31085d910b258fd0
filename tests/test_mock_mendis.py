"""mock.mendis: the Mendis paper's training box and outlier classes on the binned APOGEE grid."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxspec.data import mock
from jaxspec.data._grids import apogee_wavelength


@pytest.fixture(scope="module")
def training():
    return mock.mendis(jax.random.key(0), 400, chunk_size=256, progress=False)


def test_grid_bins_three_pixels_within_each_chip():
    grid = mock.mendis_grid()
    assert grid.shape == (2404,) and np.all(np.diff(grid) > 0)
    full = apogee_wavelength(7214)
    np.testing.assert_allclose(grid[:3], [full[0:3].mean(), full[3:6].mean(), full[6:9].mean()], rtol=1e-12)
    # the second chip starts at APOGEE pixel 2920 of the 7214 grid (the first chip's 2920 = 3 x 973 + 1)
    np.testing.assert_allclose(grid[973], full[2920:2923].mean(), rtol=1e-12)


def test_training_box_labels_noise(training):
    d = training
    assert d.spectra.flux.shape == (400, 2404) and d.labels.names == ("TEFF", "LOGG", "FE_H")
    t = d.true_labels.values
    assert np.all((t[:, 0] >= 4300) & (t[:, 0] <= 4500) & (t[:, 1] >= 1.9) & (t[:, 1] <= 2.2))
    x_h = t[:, 3:] + t[:, 2:3]  # [X/Fe] + [Fe/H]
    n = d.true_labels.names.index("N_FE") - 3
    others = np.delete(x_h, n, axis=1)
    assert np.all((others >= -0.1 - 1e-6) & (others <= 0.05 + 1e-6)) and np.all((t[:, 2] >= -0.1) & (t[:, 2] <= 0.05))
    assert np.all((x_h[:, n] >= -1e-6) & (x_h[:, n] <= 0.15 + 1e-6))
    np.testing.assert_array_equal(d.vbroad, 5.0)
    # noise: 1/300 per binned pixel; labels: the paper's 25 K, 0.1 dex, 0.01 dex
    noise = np.asarray(d.spectra.flux) - d.model_flux
    assert abs(noise.std() * 300 - 1) < 0.01
    pulls = (d.labels.values - t[:, :3]) / np.array([25.0, 0.1, 0.01])
    np.testing.assert_allclose(pulls.std(axis=0), 1.0, atol=0.12)
    np.testing.assert_allclose(d.labels.err, np.broadcast_to([25.0, 0.1, 0.01], (400, 3)), rtol=1e-6)


def test_spectra_are_the_binned_mock_spectra(training):
    star = 3
    full = np.asarray(mock.spectrum(training.true_labels.values[star], vbroad=5.0, n_pix=7214))
    np.testing.assert_allclose(training.model_flux[star, :5], full[:15].reshape(5, 3).mean(axis=1), atol=2e-6)


def test_deterministic_and_independent_of_chunks(training):
    again = mock.mendis(jax.random.key(0), 10, chunk_size=3, progress=False)
    np.testing.assert_allclose(again.model_flux, training.model_flux[:10], atol=1e-6)
    np.testing.assert_allclose(again.true_labels.values, training.true_labels.values[:10], atol=1e-5)


@pytest.mark.parametrize(
    ("kind", "check", "moved"),
    [
        ("cemp", lambda t, v: (t[:, 2] >= -2) & (t[:, 2] <= -1.5) & (t[:, 3] >= 1) & (t[:, 3] <= 2), 0.01),
        ("fast_rotator", lambda t, v: (v >= 20) & (v <= 30), 0.01),
        ("stripped", lambda t, v: (t[:, 0] >= 4500) & (t[:, 0] <= 7000) & (t[:, 1] >= 4.5) & (t[:, 1] <= 6), 0.01),
        ("fast_rotator_mild", lambda t, v: (v >= 5.2) & (v <= 5.5), 0.002),
        (
            "cemp_mild",
            lambda t, v: (t[:, 2] >= -0.2) & (t[:, 2] <= -0.12) & (t[:, 3] >= 0.08) & (t[:, 3] <= 0.15),
            0.002,
        ),
    ],
)
def test_outlier_classes_follow_their_ranges(kind, check, moved, training):
    d = mock.mendis(jax.random.key(1), 30, kind=kind, progress=False)
    assert np.all(check(d.true_labels.values, d.vbroad))
    # each class looks different from the training stars (their mean noise-free spectra differ; SNR 300: 3e-3)
    assert np.abs(d.model_flux.mean(axis=0) - training.model_flux.mean(axis=0)).max() > moved


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        mock.mendis(jax.random.key(0), 2, kind="giants")
    with pytest.raises(ValueError, match="snr"):
        mock.mendis(jax.random.key(0), 2, snr=0.0)
    with pytest.raises(ValueError, match="n_stars"):
        mock.mendis(jax.random.key(0), 0)


def test_pixel_species_marks_the_known_lines_and_only_pixels_with_absorption():
    p = mock.mendis_species()
    grid = mock.mendis_grid()
    assert p.species.shape == p.element.shape == p.share.shape == grid.shape
    assert p.depth.shape == (len(p.names), grid.size) and np.all(p.depth >= 0)
    at = lambda air: int(np.argmin(np.abs(grid - air * 1.000274)))  # noqa: E731 - nearest binned pixel
    assert p.species[at(15740.7)] == "Mg I" and p.element[at(15740.7)] == "MG"  # the strongest Mg I anchor
    assert p.species[at(16719.0)] == "Al I"
    # the pixel's species is the one whose removal raises the flux most, by at least min_depth
    marked = p.species != ""
    assert np.all(p.depth.max(axis=0)[marked] >= 2e-3) and np.all(p.depth.max(axis=0)[~marked] < 2e-3)
    names = np.asarray(p.names)
    assert np.array_equal(names[np.argmax(p.depth, axis=0)][marked], p.species[marked])
    assert set(p.element[p.species == "CN"]) == {"N"} and set(p.element[p.species == "CO"]) == {"C"}
    assert np.all((p.share[marked] > 0) & (p.share[marked] <= 1))
    assert (mock.mendis_species(0.05).species != "").sum() < marked.sum()
    with pytest.raises(ValueError, match="min_depth"):
        mock.mendis_species(-1.0)
