"""Lux with one MLP output: starts at the linear model, beats it on planted nonlinearity, compiles once, saves."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxspec import Labels, Spectra, io
from jaxspec.data.preprocess import Standardizer
from jaxspec.models import lux
from jaxspec.models.lux import mlp as lux_mlp
from jaxspec.optim import _loop
from tests.conftest import assert_allclose, count_compiles

N_TRAIN, N_TEST, N_PIX = 160, 100, 30
WAVE = 15000.0 + np.arange(N_PIX, dtype=np.float64)


def _rmse(pred: Labels, truth: Labels) -> np.ndarray:
    return np.sqrt(np.mean((np.asarray(pred.values) - np.asarray(truth.values)) ** 2, axis=0))


# -- planted data: a label quadratic in the latent that the fluxes carry linearly -------------


def _label_data(n, seed):
    """Fluxes linear in ``u`` (2 latents); labels ``a = u0``, ``b = u1``, ``c = u0**2`` (not linear in ``u``)."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(99).normal(size=(N_PIX, 2))
    u = rng.normal(size=(n, 2))
    flux = 1.0 + 0.1 * u @ w.T + 0.01 * rng.normal(size=(n, N_PIX))
    values = np.stack([u[:, 0], u[:, 1], u[:, 0] ** 2], axis=1) + 0.02 * rng.normal(size=(n, 3))
    labels = Labels(values, err=np.full(values.shape, 0.02), names=["a", "b", "c"])
    return labels, Spectra(flux, err=np.full(flux.shape, 0.01), wavelength=WAVE)


@pytest.fixture(scope="module")
def label_case():
    train, test = _label_data(N_TRAIN, 1), _label_data(N_TEST, 2)
    linear = lux.fit(
        train[1], train[0], key=jax.random.key(0), config=lux.Config(n_latents=6, omega=1.0), progress=False
    )
    config = lux_mlp.Config(hidden=(16, 16), epochs=300, learning_rate=1e-2, batch_size=50)
    mlp = lux_mlp.fit(train[1], train[0], key=jax.random.key(1), base=linear, config=config, progress=False)
    return train, test, linear, mlp


# -- planted data: fluxes quadratic in a label, a linear model fixed at the true latents --------


def _spectra_case():
    """Fluxes with a ``u0**2`` term partly along ``u0``'s direction, so a linear ``B`` biases label ``a``.

    The "linear Lux fit" has the true latents ``z = [1, u0, u1]``, ``A`` reading
    ``u`` off them and ``B`` the best linear map from them (Lux's B-step at the
    true latents), which keeps this test free of a second ``lux.fit``.
    """
    rng_w = np.random.default_rng(7)
    w = rng_w.normal(size=(N_PIX, 2))
    v = 0.5 * w[:, 0] + 0.5 * rng_w.normal(size=N_PIX)  # flux stays monotonic in u0 for u0 > -2

    def make(n, seed):
        rng = np.random.default_rng(seed)
        u = rng.normal(size=(n, 2))
        flux = 1.0 + 0.1 * u @ w.T + 0.05 * np.outer(u[:, 0] ** 2 - 1.0, v) + 0.01 * rng.normal(size=(n, N_PIX))
        labels = Labels(u + 0.02 * rng.normal(size=u.shape), err=np.full(u.shape, 0.02), names=["a", "b"])
        return u, labels, Spectra(flux, err=np.full(flux.shape, 0.01), wavelength=WAVE)

    u, labels, spectra = make(N_TRAIN, 3)
    z = np.concatenate([np.ones((N_TRAIN, 1)), u], axis=1).astype(np.float32)
    b = np.linalg.lstsq(z, np.asarray(spectra.flux), rcond=None)[0].T.astype(np.float32)
    a = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    params = lux.Params(a, b, np.full(N_PIX, -8.0, np.float32))
    scaler = Standardizer(np.zeros(2, np.float32), np.ones(2, np.float32))
    model = lux.Model(params, scaler, label_names=("a", "b"), wavelengths=(WAVE,), config=lux.Config(omega=0.1))
    return lux.FitResult(model, {}, True, {"z": z}), (labels, spectra), make(N_TEST, 4)[1:]


@pytest.fixture(scope="module")
def spectra_case():
    linear, train, test = _spectra_case()
    config = lux_mlp.Config(output="spectra", hidden=(16,), epochs=150, learning_rate=1e-2, batch_size=50)
    mlp = lux_mlp.fit(train[1], train[0], key=jax.random.key(2), base=linear, config=config, progress=False)
    return train, test, linear, mlp


# -- tests ---------------------------------------------------------------------------------------


def test_label_mlp_beats_linear_lux_on_a_nonlinear_label(label_case):
    _, (test_labels, test_spectra), linear, mlp = label_case
    lin = _rmse(
        lux.predict_labels(linear.model, test_spectra, omega=linear.model.omega, progress=False).labels, test_labels
    )
    pred = lux_mlp.predict_labels(mlp.model, test_spectra, progress=False)
    new = _rmse(pred.labels, test_labels)
    assert lin[2] > 1.0, lin  # a linear map of flux-inferred latents cannot make u0**2 (std sqrt(2))
    assert new[2] < 0.5 * lin[2], (new, lin)
    assert np.all(new[:2] < 2.0 * lin[:2] + 0.01), (new, lin)  # the linear labels stay as good
    assert not pred.flagged.any() and np.all(pred.labels.ivar > 0)
    assert mlp.history["loss"][-1] < 0.5 * mlp.history["loss"][0]


def test_spectra_mlp_with_gauss_newton_latents_beats_linear(spectra_case):
    _, (test_labels, test_spectra), linear, mlp = spectra_case
    lin = _rmse(
        lux.predict_labels(linear.model, test_spectra, omega=linear.model.omega, progress=False).labels, test_labels
    )
    fit_ = lux_mlp.encode(mlp.model, test_spectra, progress=False)
    assert np.all(np.asarray(fit_.converged))
    new = _rmse(lux_mlp.predict_labels(mlp.model, test_spectra, progress=False).labels, test_labels)
    assert lin[0] > 0.2, lin  # the u0**2 flux term biases the linear label a
    assert new[0] < 0.25 * lin[0], (new, lin)
    assert new[1] < 1.5 * lin[1] + 0.01, (new, lin)


@pytest.mark.parametrize("output", lux_mlp.OUTPUTS)
def test_residual_is_zero_at_init(label_case, spectra_case, output):
    (train, test, linear, _) = label_case if output == "labels" else spectra_case
    config = lux_mlp.Config(output=output, hidden=(8, 4), epochs=0)
    model = lux_mlp.fit(train[1], train[0], key=jax.random.key(5), base=linear, config=config, progress=False).model
    assert all(np.all(v == 0) for v in model.params.net["out"].values())
    z = np.random.default_rng(0).normal(size=(7, linear.model.n_latents)).astype(np.float32)
    lin = linear.model.params
    expected = linear.model.label_scaler.inverse(z @ lin.A.T) if output == "labels" else z @ lin.B.T
    assert_allclose(lux_mlp.decode(model, z), expected)
    # and so are the test-step predictions (Gauss-Newton lands on the linear solve for "spectra")
    bare = linear.model  # compare the Laplace covariances alone, without a calibrated label scatter
    if getattr(bare, "label_scatter", None) is not None:
        bare = dataclasses.replace(bare, label_scatter=None)
    want = lux.predict_labels(bare, test[1], omega=linear.model.omega, progress=False)
    got = lux_mlp.predict_labels(model, test[1], progress=False)
    assert_allclose(got.labels.values, want.labels.values, scale=10)
    assert_allclose(got.covariance, want.covariance, scale=10)


def test_train_step_compiles_once(label_case, monkeypatch):
    train, _, linear, _ = label_case
    steps = []

    def recording(*args, **kwargs):
        steps.append(make_train_step(*args, **kwargs))
        return steps[-1]

    make_train_step = lux_mlp.make_train_step
    monkeypatch.setattr(lux_mlp, "make_train_step", recording)
    config = lux_mlp.Config(hidden=(8,), epochs=3, batch_size=40)
    result = lux_mlp.fit(train[1], train[0], key=jax.random.key(3), base=linear, config=config, progress=False)
    assert len(result.history["loss"]) == 3  # 3 epochs of 4 steps each
    assert len(steps) == 1 and _loop._keyed(steps[0])._cache_size() == 1  # fit calls it with the key folded in


@pytest.mark.parametrize("case", ["label_case", "spectra_case"])
def test_prediction_does_not_recompile(case, request, tmp_path):
    """Gauss-Newton latents (spectra), the MLP Jacobian (labels): new data, a reloaded model reuse the compilation."""
    _, (_, test_spectra), _, mlp = request.getfixturevalue(case)
    lux_mlp.predict_labels(mlp.model, test_spectra, progress=False)
    loaded = io.load(io.save(tmp_path / "m", mlp.model))
    other = test_spectra.replace(flux=np.asarray(test_spectra.flux) + 1e-3)
    with count_compiles() as compiles:
        jax.block_until_ready(lux_mlp.predict_labels(loaded, other, progress=False).z)
    assert not compiles, f"prediction compiled {len(compiles)} more time(s)"


@pytest.mark.parametrize("case", ["label_case", "spectra_case"])
def test_io_round_trip_predicts_identically(case, request, tmp_path):
    _, (_, test_spectra), _, mlp = request.getfixturevalue(case)
    path = io.save(tmp_path / "lux_mlp", mlp.model)
    loaded = io.load(path, family="lux_mlp")
    assert isinstance(loaded, lux_mlp.Model) and loaded.config == mlp.model.config
    before = lux_mlp.predict_labels(mlp.model, test_spectra, progress=False)
    after = lux_mlp.predict_labels(loaded, test_spectra, progress=False)
    np.testing.assert_array_equal(after.labels.values, before.labels.values)
    np.testing.assert_array_equal(after.covariance, before.covariance)


def test_bad_input_names_the_argument(label_case):
    train, test, linear, mlp = label_case
    kw = {"key": jax.random.key(0), "config": lux_mlp.Config(epochs=1), "progress": False}
    with pytest.raises(ValueError, match="config.output"):
        lux_mlp.Config(output="flux")
    with pytest.raises(ValueError, match="config.hidden"):
        lux_mlp.Config(hidden=())
    with pytest.raises(ValueError, match=r"config.hidden\[1\]"):
        lux_mlp.Config(hidden=(8, 0))
    with pytest.raises(ValueError, match="config.learning_rate"):
        lux_mlp.Config(learning_rate=-1.0)
    with pytest.raises(TypeError, match="base"):
        lux_mlp.fit(train[1], train[0], base=linear.model, **kw)
    short = Spectra(np.ones((N_TRAIN, N_PIX - 1)), err=np.full((N_TRAIN, N_PIX - 1), 0.01))
    with pytest.raises(ValueError, match="spectra"):
        lux_mlp.fit(short, train[0], base=linear, **kw)
    with pytest.raises(ValueError, match="labels"):
        lux_mlp.fit(train[1], train[0][:10], base=linear, **kw)
    with pytest.raises(ValueError, match="z"):
        lux_mlp.decode(mlp.model, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="omega"):
        lux_mlp.predict_labels(mlp.model, test[1], omega=-1.0, progress=False)
    with pytest.raises(TypeError, match="model"):
        lux_mlp.predict_labels(linear.model, test[1], progress=False)


def test_the_old_module_path_warns_and_still_works():
    import importlib
    import sys

    sys.modules.pop("jaxspec.models.lux_mlp", None)
    with pytest.warns(DeprecationWarning, match=r"use jaxspec\.models\.lux\.mlp"):
        old = importlib.import_module("jaxspec.models.lux_mlp")
    assert old.fit is lux_mlp.fit
