"""Cycle-StarNet label fitting (Eqs. 9-11) and line finding (Eq. 8): planted truths, exact Jacobians."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import Spectra
from jaxspec.models import cycle_starnet as cs
from jaxspec.models import payne
from tests.conftest import assert_allclose
from tests.test_cycle_starnet import domains, tiny

LO, HI = np.array([4000.0, 1.0, -1.0]), np.array([5000.0, 3.0, 0.5])


def emulator(wavelength, seed=11):
    """A small random single-network emulator of three labels on the toy grid (64 pixels)."""
    rng = np.random.default_rng(seed)
    layers = (
        payne.Layer(rng.normal(0, 0.5, (8, 3)).astype(np.float32), rng.normal(0, 0.1, 8).astype(np.float32)),
        payne.Layer(rng.normal(0, 0.05, (64, 8)).astype(np.float32), np.full(64, 0.9, np.float32)),
    )
    return payne.Model(layers, LO.astype(np.float32), HI.astype(np.float32), ("TEFF", "LOGG", "FE_H"), wavelength)


@pytest.fixture(scope="module")
def model():
    observed, synthetic = domains()
    emu = emulator(observed.wavelength)
    return cs.fit(observed, synthetic, key=jax.random.key(8), config=tiny(iterations=30), emulator=emu,
                  progress=False).model  # fmt: skip


@pytest.fixture(scope="module")
def planted(model):
    rng = np.random.default_rng(3)
    observed, _ = domains()
    z_sp = cs.encode(model, observed[:6], progress=False).z_sp
    truth = np.column_stack([rng.uniform(4300, 4700, 6), rng.uniform(1.6, 2.4, 6), rng.uniform(-0.6, 0.1, 6)])
    flux = np.ones((6, 64))
    flux[:, 1:] = np.asarray(cs.emulate(model, truth, z_sp))
    noise = 0.002
    spectra = Spectra(flux + noise * rng.normal(size=flux.shape), err=np.full(flux.shape, noise),
                      wavelength=observed.wavelength)  # fmt: skip
    clean = Spectra(flux, err=np.full(flux.shape, noise), wavelength=observed.wavelength)
    return spectra, clean, truth, z_sp


def _chi2(model, spectra, labels, z_sp):
    r = np.asarray(spectra.flux)[:, 1:] - np.asarray(cs.emulate(model, labels, z_sp))
    return np.sum(np.asarray(spectra.ivar)[:, 1:] * r**2, axis=1)


def test_transfer_fit_recovers_planted_labels_and_its_covariance_is_the_laplace_one(model, planted):
    spectra, clean, truth, z_sp = planted
    # noiseless spectra of the calibrated model from a start off the truth: back to the truth
    start = truth + np.array([20.0, 0.02, 0.01])
    exact = cs.fit_labels(model, clean, z_sp=z_sp, start=start, progress=False)
    assert exact.converged.all() and not exact.flagged.any()
    sd = 1.0 / np.sqrt(exact.labels.ivar)
    assert np.all(np.abs(exact.labels.values - truth) < 0.05 * sd), (exact.labels.values - truth) / sd
    # noisy spectra: every fit at least as good as the truth (the toy model is not identifiable everywhere)
    fit = cs.fit_labels(model, spectra, z_sp=z_sp, start=start, progress=False)
    assert fit.converged.all() and not fit.flagged.any()
    chi2_truth = _chi2(model, spectra, truth, z_sp)
    assert_allclose(fit.chi2, _chi2(model, spectra, fit.labels.values, z_sp), rtol=1e-4)
    assert np.all(fit.chi2 <= chi2_truth * (1 + 1e-4)), (fit.chi2, chi2_truth)
    assert np.all((fit.reduced_chi2 > 0.5) & (fit.reduced_chi2 < 1.6)), fit.reduced_chi2
    # the covariance is (J^T W J)^-1 with J of the calibrated model with respect to the physical labels
    i = 2
    jac = np.asarray(jax.jacfwd(lambda y: cs.emulate(model, y, z_sp[i]))(jnp.asarray(fit.labels.values[i])))
    w = np.asarray(spectra.ivar)[i, 1:]
    cov = np.linalg.inv(jac.T @ (w[:, None] * jac))
    sd = np.sqrt(np.diag(cov))
    assert_allclose(fit.covariance[i] / np.outer(sd, sd), cov / np.outer(sd, sd), atol=2e-3)
    # the star's own split latent is the default
    own = cs.fit_labels(model, spectra, start=start, progress=False)
    mine = cs.encode(model, spectra, progress=False).z_sp
    assert_allclose(
        own.labels.values, cs.fit_labels(model, spectra, z_sp=mine, start=start, progress=False).labels.values
    )


def test_emulator_fit_recovers_emulator_spectra_and_the_three_methods_run(model):
    rng = np.random.default_rng(4)
    truth = np.column_stack([rng.uniform(4300, 4700, 5), rng.uniform(1.6, 2.4, 5), rng.uniform(-0.6, 0.1, 5)])
    flux = np.asarray(payne.decode(model.emulator, truth)) + 0.001 * rng.normal(size=(5, 64))
    spectra = Spectra(flux, err=np.full(flux.shape, 0.001), wavelength=model.wavelength)
    fit9 = cs.fit_labels(model, spectra, method="emulator", n_starts=4, progress=False)
    assert fit9.converged.all()
    # on the pixels the networks see, at least as good as the truth (the toy emulator is not identifiable everywhere)
    resid = lambda y: np.sum((flux - np.asarray(payne.decode(model.emulator, y)))[:, 1:] ** 2, axis=1) / 0.001**2  # noqa: E731
    assert_allclose(fit9.chi2, resid(fit9.labels.values), rtol=1e-3)
    assert np.all(fit9.chi2 <= resid(truth) * (1 + 1e-4))
    fit10 = cs.fit_labels(model, spectra, method="synthetic", progress=False)
    assert np.all(np.isfinite(fit10.labels.values)) and fit10.labels.values.shape == (5, 3)
    pred = cs.predict_labels(model, spectra, method="emulator", n_starts=4, progress=False)
    assert_allclose(pred.labels.values, fit9.labels.values)
    with pytest.raises(ValueError, match="method"):
        cs.fit_labels(model, spectra, method="kurucz", progress=False)
    with pytest.raises(ValueError, match="start, z_sp"):
        cs.fit_labels(model, spectra, method="emulator", start=truth, progress=False)


def test_a_star_with_nothing_measured_is_flagged_not_nan(model, planted):
    spectra = planted[0]
    ivar = np.array(spectra.ivar)
    ivar[1] = 0.0
    bad = Spectra(np.asarray(spectra.flux), ivar=ivar, wavelength=spectra.wavelength)
    for method in cs.METHODS:
        fit = cs.fit_labels(model, bad, method=method, progress=False)
        assert fit.flagged[1] and np.all(np.isfinite(fit.labels.values)) and fit.labels.ivar[1].sum() == 0, method


def test_features_find_a_planted_line_and_its_label_exactly():
    # synthetic model: a continuum and a Teff line; observed: the same plus a line at pixels 30-34 tied to label 2
    pix = jnp.arange(64.0)
    line = lambda c, w: jnp.exp(-0.5 * ((pix - c) / w) ** 2)  # noqa: E731

    def synthetic(y):
        return 1.0 - 0.1 * (y[0] / 5000.0) * line(12.0, 1.5) - 0.05 * y[1] * line(50.0, 1.0)

    def observed(y):
        return synthetic(y) - 0.3 * y[2] * line(32.0, 0.8)

    y = jnp.array([4500.0, 2.0, 0.1])
    j_obs, j_syn, diff = cs.jacobian_difference(observed, synthetic, y)
    np.testing.assert_array_equal(j_obs - j_syn, diff)
    assert_allclose(diff[:, 2], -0.3 * np.asarray(line(32.0, 0.8)), atol=1e-7)
    assert np.all(diff[:, :2] == 0)
    found = cs.features(diff, threshold=0.01, label_names=("TEFF", "LOGG", "FE_H"), wavelength=np.asarray(pix))
    assert [(f.start, f.stop, f.name) for f in found] == [(30, 35, "FE_H")]  # exp(-0.5 (2/0.8)^2) 0.044 > 1/30
    assert found[0].label == 2 and found[0].wavelength == (30.0, 34.0)
    assert_allclose(found[0].peak, 0.3, rtol=1e-6)
    # a label step makes responses comparable: in 1000 K steps the Teff line is a feature of both models' difference
    both = diff.copy()
    both[:, 0] = np.asarray(jax.jacfwd(synthetic)(y))[:, 0]
    found = cs.features(both, threshold=0.01, units=[1000.0, 1.0, 1.0])
    assert [(f.start, f.stop, f.label) for f in found] == [(11, 14, 0), (30, 35, 2)]  # 0.02 exp(-x^2/4.5) > 0.01
    assert cs.features(diff, threshold=0.01, min_pixels=6) == []


def test_line_jacobians_are_exact_derivatives_of_both_models(model):
    observed, _ = domains(4, 4)
    z_sp = cs.encode(model, observed, progress=False).z_sp
    y = np.array([4500.0, 2.0, -0.2])
    lj = cs.line_jacobians(model, y, z_sp)
    assert lj.transfer.shape == (63, 3) and lj.label_names == ("TEFF", "LOGG", "FE_H")
    # the chain rule with the other mode: J_T(P(y)) (reverse mode over the input spectrum) times J_P(y)
    mean, std = (float(v) for v in np.asarray(model.norm))
    from jaxspec.models.cycle_starnet._model import model_graphdefs

    gd = model_graphdefs(model, np.float32)
    f = np.asarray(payne.decode(model.emulator, y.astype(np.float32)))[1:]

    def t_of_flux(flux):  # the transfer with each star's z_sp, averaged, of one synthetic spectrum
        x = (flux - mean) / std
        out = jax.vmap(lambda z: cs.transfer_one(gd, model.params, x, "synth->obs", z))(jnp.asarray(z_sp))
        return jnp.mean(out, axis=0) * std + mean

    j_t = np.asarray(jax.jacrev(t_of_flux)(jnp.asarray(f)))
    assert_allclose(lj.transfer, j_t @ lj.emulator, rtol=1e-4, atol=1e-6 * np.abs(lj.transfer).max())
    if jax.config.jax_enable_x64:  # central differences where rounding allows them (the networks are piecewise linear)
        for j, h in enumerate([1e-3, 1e-6, 1e-6]):
            dy = np.eye(3)[j] * h
            fd_e = np.asarray(payne.decode(model.emulator, y + dy)) - np.asarray(payne.decode(model.emulator, y - dy))
            assert_allclose(lj.emulator[:, j], fd_e[1:] / (2 * h), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(lj.difference, lj.transfer - lj.emulator)
    with pytest.raises(ValueError, match="labels"):
        cs.line_jacobians(model, y[:2], z_sp)
