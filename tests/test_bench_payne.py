"""The Payne reference fitter of ``benchmarks/`` (outside the package): it recovers planted truth and agrees
with ``payne.fit_labels``; the benchmark's random single-network emulator is a valid Payne file."""

from __future__ import annotations

import importlib
from pathlib import Path

import jax
import numpy as np
import pytest

from benchmarks import _payne_reference as ref
from jaxspec import Spectra
from jaxspec.models import payne

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def shipped(shared_data):
    path = shared_data / "payne" / "NN_normalized_spectra.npz"
    with np.load(shared_data / "payne" / "apogee_wavelength.npz") as d:
        wave = np.asarray(d["wavelength"], np.float64)
    return payne.load(path), ref.load(path), wave


def _planted(em, wave, n, seed):
    """``n`` stars drawn with the reference's own forward model: SNR 50-200, 2% bad pixels (garbage flux)."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(-0.4, 0.4, (n, em.n_labels))
    rv = rng.uniform(-4.0, 4.0, n)
    sigma = 1.0 / rng.uniform(50, 200, n)
    clean = np.stack([ref.doppler_shift(wave, ref.spectrum(em, s[i]), rv[i]) for i in range(n)])
    flux = clean + sigma[:, None] * rng.standard_normal(clean.shape)
    bad = rng.uniform(size=flux.shape) < 0.02
    flux[bad] = rng.uniform(-10, 10, bad.sum())
    labels = (s + 0.5) * (em.x_max - em.x_min) + em.x_min
    return flux, np.broadcast_to(sigma[:, None], flux.shape), bad, labels, rv


def test_forward_model_is_the_emulator(shipped):
    model, em, _ = shipped
    s = np.random.default_rng(0).uniform(-0.5, 0.5, (3, 5))
    want = np.asarray(payne.decode_scaled(model, s), np.float64)
    got = np.stack([ref.spectrum(em, row) for row in s])
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert em.kind == "per_pixel" and em.n_labels == 5


def test_reference_recovers_planted_truth_and_agrees_with_fit_labels(shipped):
    model, em, wave = shipped
    flux, err, bad, labels, rv = _planted(em, wave, 3, seed=3)
    err_in = err.copy()
    fits = ref.fit_stars(em, wave, flux, err_in, bad)
    np.testing.assert_array_equal(err_in, err)  # the caller's errors are not edited (the reference's are)
    assert fits.converged.all()
    assert np.all((fits.n_eval >= 7) & (fits.n_eval < 300)), fits.n_eval  # finite differences: >= M + 2 calls
    assert np.all(fits.seconds > 0)
    pulls = np.column_stack([(fits.labels - labels) / fits.label_err, (fits.rv - rv) / fits.rv_err])
    assert np.all(np.abs(pulls) < 4), pulls
    n_good = (~bad).sum(axis=1)
    np.testing.assert_allclose(fits.chi2 / (n_good - 6), 1, atol=0.1)

    spectra = Spectra(flux, np.where(bad, 0.0, 1 / err**2), model.wavelength)
    fit = payne.fit_labels(model, spectra, chunk_size=4, progress=False)
    assert fit.converged.all() and not fit.flagged.any()
    js_err = np.sqrt(np.diagonal(np.asarray(fit.covariance, np.float64), axis1=1, axis2=2))
    diff = np.column_stack(
        [
            (fits.labels - np.asarray(fit.labels.values)) / js_err,
            (fits.rv - np.asarray(fit.rv)) / np.asarray(fit.rv_err),
        ]
    )
    assert np.all(np.abs(diff) < 1), diff  # the same minimum, to within the errors (the reference's tol is loose)
    np.testing.assert_allclose(fits.label_err, js_err, rtol=0.05)  # the same Laplace errors
    np.testing.assert_allclose(fits.rv_err, np.asarray(fit.rv_err), rtol=0.05)


def test_masked_pixels_get_error_999(shipped):
    _, em, wave = shipped
    flux, err, bad, _, _ = _planted(em, wave, 1, seed=4)
    wild = flux[0].copy()
    wild[bad[0]] = 1e3  # huge garbage: harmless only if masked
    fit = ref.fit_star(em, wave, wild, err[0], bad[0])
    assert fit.converged and fit.chi2 / (~bad[0]).sum() < 1.2


def test_benchmark_network_emulator(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = importlib.import_module("bench_payne")
    arrays = bench.network_arrays(seed=0)
    assert arrays["w_array_0"].shape == (300, 25) and arrays["w_array_2"].shape == (7214, 300)
    np.savez(tmp_path / "net.npz", **arrays)
    model, em = payne.load(tmp_path / "net.npz"), ref.load(tmp_path / "net.npz")
    assert model.file_format == "network" and model.label_names == payne.NETWORK_LABEL_NAMES
    s = np.random.default_rng(1).uniform(-0.4, 0.4, (4, 25))
    want = np.asarray(payne.decode_scaled(model, s), np.float64)
    got = np.stack([ref.spectrum(em, row) for row in s])
    np.testing.assert_allclose(got, want, atol=2e-5 if jax.config.jax_enable_x64 else 1e-4)
    # normalised flux: continuum near 1, lines whose depths vary with the labels
    assert 0.95 < np.median(got) < 1.01 and got.min() > -0.2 and got.max() < 1.3
    assert np.std(got, axis=0).max() > 0.02
