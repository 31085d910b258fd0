"""Scatter VAE: preprocessing invariants, the loss against numpy, training, sharding, encode, real XP files, io."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import io
from jaxspec.data import mock
from jaxspec.data.gaia_xp import read_xp_continuous
from jaxspec.models import scatter_vae as sv
from jaxspec.models.scatter_vae import _model as sv_model
from jaxspec.models.scatter_vae import _net as sv_net
from tests._multidevice import run_in_subprocess
from tests.conftest import assert_allclose, count_compiles

SMALL = sv.Config(hidden=(12, 8), latent_dim=3, batch_size=32, epochs=3)


@pytest.fixture(scope="module")
def xp():
    return mock.gaia_xp(jax.random.key(0), 300, outlier_frac=0.1)


@pytest.fixture(scope="module")
def trained(xp):
    config = sv.Config(batch_size=32, epochs=4)
    return sv.fit(xp, key=jax.random.key(1), config=config, progress=False)


def _damaged(xp):
    """The mock's arrays with a NaN coefficient, a zero error and a missing BP band."""
    coef, err = np.array(xp.coefficients), np.array(xp.errors)
    coef[0, 3] = np.nan
    err[1, 70] = 0.0
    coef[2, :55] = np.nan
    err[2, :55] = np.nan
    return coef, err


# -- preprocessing --------------------------------------------------------------------------------


def test_preprocess_standardises_the_training_set(xp):
    batch, stats = sv.preprocess(xp)
    assert batch.x.dtype == jnp.zeros(()).dtype and batch.mask.all() and batch.cov is None
    assert_allclose(batch.x.mean(axis=0), 0.0, scale=10)
    assert_allclose(batch.x.std(axis=0), 1.0, scale=10)
    g = xp.phot_g_mean_flux[:, None]
    # coefficients and errors share the factor 1 / (g d)
    assert_allclose(batch.x, (xp.coefficients / g - stats.center) / stats.scale, rtol=1e-6, atol=1e-5)
    assert_allclose(batch.sigma * stats.scale * g, xp.errors, rtol=1e-6, atol=0)
    again, same = sv.preprocess((xp.coefficients, xp.errors), xp.phot_g_mean_flux, stats=stats)
    assert same is stats
    np.testing.assert_array_equal(again.x, batch.x)


def test_preprocess_masks_nan_zero_error_and_missing_band(xp):
    coef, err = _damaged(xp)
    batch, stats = sv.preprocess((coef, err), xp.phot_g_mean_flux)
    assert not batch.mask[0, 3] and not batch.mask[1, 70] and not batch.mask[2, :55].any()
    assert batch.mask.sum() == 300 * 110 - 57
    for a in (batch.x, batch.sigma, stats.center, stats.scale):
        assert np.all(np.isfinite(a))
    assert batch.x[0, 3] == 0.0 and batch.sigma[0, 3] == 1.0
    used = np.where(batch.mask, batch.x, np.nan)
    assert_allclose(np.nanmean(used, axis=0), 0.0, scale=10)
    assert_allclose(np.nanstd(used, axis=0), 1.0, scale=10)
    params = sv.init_params(jax.random.key(0), SMALL)
    value_and_grad = jax.jit(jax.value_and_grad(sv.batch_loss(SMALL), has_aux=True))
    (loss, aux), grads = value_and_grad(params, batch, jax.random.key(1))
    assert np.isfinite(loss) and all(np.isfinite(v) for v in aux.values())
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (lambda c, e, g: ((c[:, :100], e[:, :100]), g), ValueError, r"data\[0\].*\(n, 110\).*\(300, 100\)"),
        (lambda c, e, g: ((c, e[:, :109]), g), ValueError, r"data\[1\].*\(n, 110\)"),
        (lambda c, e, g: ((c, e), None), ValueError, "g_flux.*phot_g_mean_flux"),
        (lambda c, e, g: ((c, e), np.where(np.arange(300) == 7, 0.0, g)), ValueError, r"g_flux.*> 0.*star 7"),
        (lambda c, e, g: ((c, e), -g), ValueError, r"g_flux.*> 0"),
        (lambda c, e, g: ((c, e), np.where(np.arange(300) == 3, np.nan, g)), ValueError, "g_flux.*star 3"),
        (lambda c, e, g: ((c, e), g[:10]), ValueError, r"g_flux.*\(300,\).*\(10,\)"),
        (lambda c, e, g: (c, g), TypeError, "data: expected an XPSpectra"),
        (lambda c, e, g: ((np.where(np.arange(300)[:, None] == 5, np.nan, c), e), g), ValueError, r"star\(s\) \[5\]"),
    ],
    ids=["width", "error-width", "no-g", "zero-g", "negative-g", "nan-g", "g-shape", "type", "all-nan-star"],
)
def test_preprocess_refuses_bad_input(xp, args, error, match):
    data, g = args(np.array(xp.coefficients), np.array(xp.errors), np.array(xp.phot_g_mean_flux))
    with pytest.raises(error, match=match):
        sv.preprocess(data, g)


def test_bad_config_and_arguments_are_named(xp, trained):
    with pytest.raises(ValueError, match=r"config.schedule"):
        sv.Config(schedule="step")
    with pytest.raises(ValueError, match=r"config.hidden\[1\]"):
        sv.Config(hidden=(8, 0))
    with pytest.raises(ValueError, match=r"config.validation_frac"):
        sv.Config(validation_frac=1.0)
    with pytest.raises(TypeError, match="key"):
        sv.fit(xp, key=1, config=SMALL, progress=False)
    with pytest.raises(TypeError, match="full_covariance needs an XPSpectra"):
        sv.preprocess(xp, covariance=True)
    with pytest.raises(ValueError, match="chunk_size"):
        sv.encode(trained.model, xp, chunk_size=0, progress=False)
    with pytest.raises(ValueError, match=r"z: expected shape \(\.\.\., 6\)"):
        sv.decode(trained.model, np.zeros((2, 3)))
    with pytest.raises(TypeError, match=r"model: expected an svae\.Model"):
        sv.encode(trained, xp)


# -- the loss -------------------------------------------------------------------------------------


def _np_mlp(layers: dict, x: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    n = len(layers)
    for i in range(n):
        layer = layers[f"layer_{i}"]
        x = x @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64)
        if i < n - 1:
            x = 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))
    return x


def test_loss_equals_numpy_formula(xp):
    coef, err = _damaged(xp)
    batch, _ = sv.preprocess((coef[:20], err[:20]), xp.phot_g_mean_flux[:20])
    params = sv.init_params(jax.random.key(3), SMALL)
    key = jax.random.key(4)
    loss, aux = sv.batch_loss(SMALL)(params, batch, key)

    eps = np.asarray(jax.random.normal(key, (20, SMALL.latent_dim), batch.x.dtype), np.float64)
    x, sigma, m = batch.x.astype(np.float64), batch.sigma.astype(np.float64), batch.mask
    enc = _np_mlp(params.encoder, x)
    mu, logvar = enc[:, :3], enc[:, 3:]
    z = mu + np.exp(logvar / 2) * eps
    x_hat = _np_mlp(params.decoder, z)
    s = np.log1p(np.exp(_np_mlp(params.scatter, z)))
    var = sigma**2 + s**2
    n_used = m.sum(axis=1)
    chi2 = np.where(m, (x - x_hat) ** 2 / var, 0).sum(axis=1) / (2 * n_used)
    penalty = np.where(m, np.log(var), 0).sum(axis=1) / (2 * n_used)
    kl = (mu**2 + np.exp(logvar) - 1 - logvar).sum(axis=1) / (2 * 3)
    assert n_used[:3].tolist() == [109, 109, 55]
    assert_allclose(loss, np.mean(chi2 + penalty + kl))
    assert_allclose(aux["chi2"], chi2.mean())
    assert_allclose(aux["penalty"], penalty.mean())
    assert_allclose(aux["kl"], kl.mean())


def test_full_covariance_with_diagonal_covariance_equals_diagonal_loss(xp):
    coef, err = _damaged(xp)
    g = xp.phot_g_mean_flux[:16]
    cov = np.nan_to_num(err[:16, :, None] ** 2) * np.eye(110)
    full, _ = sv.preprocess((coef[:16], err[:16]), g, covariance=cov)
    params = sv.init_params(jax.random.key(5), SMALL)
    key = jax.random.key(6)
    diag_loss, diag_aux = sv.batch_loss(SMALL)(params, full, key)
    full_loss, full_aux = sv.batch_loss(dataclasses.replace(SMALL, full_covariance=True))(params, full, key)
    assert_allclose(full_loss, diag_loss)
    for k in diag_aux:
        assert_allclose(full_aux[k], diag_aux[k], atol=2e-4)
    with pytest.raises(ValueError, match="batch.cov"):
        sv.batch_loss(dataclasses.replace(SMALL, full_covariance=True))(params, full._replace(cov=None), key)


# -- training -------------------------------------------------------------------------------------


def test_short_fit_reduces_the_loss_and_compiles_once(xp, monkeypatch):
    traces = []
    original = sv.batch_loss

    def counting(config):
        loss = original(config)

        def traced(params, batch, key):
            traces.append(1)  # runs only while JAX traces the loss
            return loss(params, batch, key)

        return traced

    monkeypatch.setattr(sv_model, "batch_loss", counting)
    result = sv.fit(xp, key=jax.random.key(2), config=dataclasses.replace(SMALL, epochs=4), progress=False)
    history = result.history
    assert len(history["loss"]) == 4 and set(history) >= {"loss", "chi2", "penalty", "kl", "val_loss"}
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_loss"][-1] < history["val_loss"][0]
    # 4 epochs x 8 steps: the train step traced once, validation once
    assert len(traces) == 2


@pytest.mark.parametrize("schedule", sv_net.SCHEDULES)
def test_learning_rate_schedules_follow_their_formulas(schedule):
    """With momentum 0 and no clip, step t moves a parameter by -lr(t) * gradient, lr(t) the schedule's formula."""
    lr0, rho, per_epoch, epochs = 0.1, 0.5, 4, 3
    config = sv.Config(
        learning_rate=lr0, momentum=0.0, schedule=schedule, decay_rate=rho, epochs=epochs, clip_norm=None
    )
    opt = sv.make_optimizer(config, per_epoch)
    params, grad = jnp.zeros(2), jnp.array([1.0, -2.0])
    state = opt.init(params)
    total = per_epoch * epochs
    for t in range(total):
        updates, state = opt.update(grad, state, params)
        lr = {
            "exponential": lr0 * rho ** (t / per_epoch),
            "cosine": lr0 * 0.5 * (1.0 + np.cos(np.pi * t / total)),
            "constant": lr0,
        }[schedule]
        assert_allclose(updates, -lr * np.asarray(grad), rtol=1e-5, atol=1e-9)  # float32 schedules


def test_momentum_and_clip_follow_their_formulas():
    """Heavy ball: v_t = g_t + m v_{t-1}, step -lr v_t; the global norm of g is clipped to clip_norm first."""
    config = sv.Config(learning_rate=0.1, momentum=0.9, schedule="constant", clip_norm=10.0)
    opt = sv.make_optimizer(config, 4)
    params = jnp.zeros(2)
    state = opt.init(params)
    grads = [np.array([30.0, 40.0]), np.array([3.0, 4.0]), np.array([0.0, 1.0])]  # norms 50 (clipped), 5, 1
    v = np.zeros(2)
    for g in grads:
        clipped = g * min(1.0, 10.0 / np.linalg.norm(g))
        v = clipped + 0.9 * v
        updates, state = opt.update(jnp.asarray(g), state, params)
        assert_allclose(updates, -0.1 * v, rtol=1e-5, atol=1e-9)


def _memmap(a: np.ndarray, path) -> np.memmap:
    out = np.lib.format.open_memmap(path, mode="w+", dtype=a.dtype, shape=a.shape)
    out[:] = a
    out.flush()
    return np.load(path, mmap_mode="r")


def test_fit_on_a_preprocessed_memmapped_batch_with_missing_data(xp, tmp_path):
    coef, err = _damaged(xp)
    batch, stats = sv.preprocess((coef, err), xp.phot_g_mean_flux)
    config = dataclasses.replace(SMALL, epochs=2)
    result = sv.fit(batch, stats=stats, key=jax.random.key(0), config=config, progress=False)
    assert np.all(np.isfinite(result.history["val_loss"]))
    on_disk = sv.Batch(*(_memmap(a, tmp_path / f"{k}.npy") for k, a in zip("xsm", batch[:3], strict=True)))
    streamed = sv.fit(on_disk, stats=stats, key=jax.random.key(0), config=config, progress=False)
    assert isinstance(on_disk.x, np.memmap)
    np.testing.assert_array_equal(streamed.history["loss"], result.history["loss"])
    with pytest.raises(ValueError, match="stats"):
        sv.fit(batch, key=jax.random.key(0), config=SMALL, progress=False)
    bad = batch._replace(x=np.where(np.arange(300)[:, None] == 9, np.nan, batch.x))
    with pytest.raises(ValueError, match="data: expected finite x"):
        sv.fit(bad, stats=stats, key=jax.random.key(0), config=SMALL, progress=False)
    with pytest.raises(ValueError, match=r"data.x: expected shape \(n, 110\)"):
        sv.encode(result.model, batch._replace(x=batch.x[:, :100]), progress=False)


def test_full_covariance_fit_with_a_diagonal_covariance_equals_the_diagonal_fit(xp):
    """A full-covariance fit whose covariances are diagonal (the squared errors) trains the same weights."""
    err = np.asarray(xp.errors[:96])
    cov = err[:, :, None] ** 2 * np.eye(110)
    batch, stats = sv.preprocess((xp.coefficients[:96], err), xp.phot_g_mean_flux[:96], covariance=cov)
    config = dataclasses.replace(SMALL, epochs=2, batch_size=16)
    diag = sv.fit(batch._replace(cov=None), stats=stats, key=jax.random.key(0), config=config, progress=False)
    full_config = dataclasses.replace(config, full_covariance=True)
    full = sv.fit(batch, stats=stats, key=jax.random.key(0), config=full_config, progress=False)
    assert_allclose(full.history["loss"], diag.history["loss"], scale=10)
    leaves = zip(
        jax.tree_util.tree_leaves(full.model.params), jax.tree_util.tree_leaves(diag.model.params), strict=True
    )
    for a, b in leaves:
        assert_allclose(a, b, scale=100)
    score_full = sv.anomaly_score(full.model, batch, chunk_size=32, progress=False)
    score_diag = sv.anomaly_score(diag.model, batch._replace(cov=None), chunk_size=32, progress=False)
    assert_allclose(score_full, score_diag, scale=100)


DATA_PARALLEL = """
from jaxspec.models import scatter_vae as sv
rng = np.random.default_rng(0)
coef = 1.0 + rng.normal(size=(64, 110)) @ rng.normal(size=(110, 110)) * 0.05
err = np.full((64, 110), 0.02)
config = sv.Config(hidden=(16, 8), latent_dim=3, batch_size=16, epochs=2)
for name, m in (("plain", None), ("sharded", mesh)):
    r = sv.fit((coef, err), g_flux=np.ones(64), key=jax.random.key(0), config=config, mesh=m, progress=False)
    out[name + "_kernel"] = r.model.params.decoder["layer_0"]["kernel"]
    out[name + "_loss"] = r.history["loss"]
out["devices"] = np.asarray(jax.device_count())
"""


@pytest.mark.slow  # float32 pass only (CI time)
def test_data_parallel_equals_one_device():
    out = run_in_subprocess(DATA_PARALLEL, devices=4, timeout=300)
    assert int(out["devices"]) == 4
    np.testing.assert_allclose(out["sharded_loss"], out["plain_loss"], rtol=1e-5)
    np.testing.assert_allclose(out["sharded_kernel"], out["plain_kernel"], rtol=1e-4, atol=1e-6)


# -- the trained model ----------------------------------------------------------------------------


def test_encode_in_chunks_equals_at_once_and_compiles_once(xp, trained):
    model = trained.model
    mu, logvar = sv.encode(model, xp, chunk_size=1024, progress=False)
    mu7, logvar7 = sv.encode(model, xp, chunk_size=7, progress=False)
    assert mu.shape == logvar.shape == (300, 6)
    assert_allclose(mu7, mu)
    assert_allclose(logvar7, logvar)
    with count_compiles() as compiles:
        sv.encode(model, (xp.coefficients[:50], xp.errors[:50]), xp.phot_g_mean_flux[:50], chunk_size=7, progress=False)
    assert not compiles, f"encode compiled {len(compiles)} more time(s)"


def test_reconstruct_sample_and_residuals(xp, trained):
    model = trained.model
    rec = sv.reconstruct(model, xp, progress=False)
    assert rec.coefficients.shape == rec.scatter.shape == xp.coefficients.shape and rec.z.shape == (300, 6)
    assert np.all(rec.scatter > 0)
    mu, _ = sv.encode(model, xp, progress=False)
    x_hat, s = sv.decode(model, mu)
    g, stats = xp.phot_g_mean_flux[:, None], model.stats
    assert_allclose((rec.coefficients / g - stats.center) / stats.scale, x_hat, scale=10)
    res = sv.normalised_residuals(model, xp, progress=False)
    batch, _ = sv.preprocess(xp, stats=stats)
    assert_allclose(res, (batch.x - x_hat) / np.sqrt(batch.sigma**2 + s**2), scale=10)
    draws = sv.sample(model, jax.random.key(0), 5)
    assert draws.coefficients.shape == (5, 110) and np.all(np.isfinite(draws.coefficients))
    assert np.all(draws.scatter > 0)


def test_anomaly_scores(xp, trained):
    chi2 = sv.anomaly_score(trained.model, xp, kind="chi2", progress=False)
    elbo = sv.anomaly_score(trained.model, xp, progress=False)
    assert chi2.shape == elbo.shape == (300,)
    assert np.all(np.isfinite(chi2)) and np.all(chi2 >= 0) and np.all(np.isfinite(elbo))
    res = sv.normalised_residuals(trained.model, xp, progress=False)
    assert_allclose(chi2, np.mean(res**2, axis=1), scale=10)
    mu, logvar = sv.encode(trained.model, xp, progress=False)
    x_hat, s = sv.decode(trained.model, mu)
    batch, _ = sv.preprocess(xp, stats=trained.model.stats)
    var = batch.sigma.astype(np.float64) ** 2 + s**2
    kl = 0.5 * np.mean(mu**2 + np.exp(logvar) - 1 - logvar, axis=1)
    assert_allclose(elbo, 0.5 * np.mean((batch.x - x_hat) ** 2 / var + np.log(var), axis=1) + kl, scale=10)
    with pytest.raises(ValueError, match="kind"):
        sv.anomaly_score(trained.model, xp, kind="auc")
    # the mock's CEMP-like outliers rank high (ROC AUC: P(score of an outlier > score of a normal star))
    auc = np.mean(elbo[xp.is_outlier][:, None] > elbo[~xp.is_outlier][None, :])
    print(f"ROC AUC {auc:.3f}")
    assert auc > 0.75, auc


def test_a_star_with_nothing_usable_gets_the_prior_and_no_score(xp, trained):
    """Issue 14: one star with no usable coefficient failed the whole call of every verb."""
    coef, err, g = np.array(xp.coefficients[:20]), np.array(xp.errors[:20]), np.array(xp.phot_g_mean_flux[:20])
    coef[4] = np.nan
    mu, logvar = sv.encode(trained.model, (coef, err), g, progress=False)
    assert np.all(mu[4] == 0) and np.all(logvar[4] == 0)
    clean, _ = sv.encode(trained.model, (xp.coefficients[:20], err), g, progress=False)
    np.testing.assert_array_equal(np.delete(mu, 4, axis=0), np.delete(clean, 4, axis=0))
    score = sv.anomaly_score(trained.model, (coef, err), g, progress=False)
    assert np.isnan(score[4]) and np.all(np.isfinite(np.delete(score, 4)))
    rec = sv.reconstruct(trained.model, (coef, err), g, progress=False)
    assert np.all(np.isfinite(rec.coefficients)) and np.all(rec.z[4] == 0)
    assert np.all(np.isnan(sv.normalised_residuals(trained.model, (coef, err), g, progress=False)[4]))


def test_keys_and_counts_are_checked_before_any_work(trained):
    """Issue 14: ``sample(model, key, 2.5)`` and a non-key ``latent_coverage`` key failed late or not at all."""
    with pytest.raises(TypeError, match="^n: expected an int"):
        sv.sample(trained.model, jax.random.key(0), 2.5)
    with pytest.raises(TypeError, match="^key"):
        sv.sample(trained.model, 3, 2)
    z = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(TypeError, match="^key"):
        sv.latent_coverage(z, z, key=0)


def test_io_round_trip(xp, trained, tmp_path):
    path = io.save(tmp_path / "svae", trained.model)
    loaded = io.load(path, family="svae")
    assert loaded.config == trained.model.config
    np.testing.assert_array_equal(loaded.stats.scale, trained.model.stats.scale)
    for a, b in zip(sv.encode(loaded, xp, progress=False), sv.encode(trained.model, xp, progress=False), strict=True):
        np.testing.assert_array_equal(a, b)


# -- the real Gaia XP files -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["csv", "fits"])
def test_real_files_with_missing_bp(shared_data, trained, suffix):
    real = read_xp_continuous(shared_data / "gaia_xp" / f"XP_CONTINUOUS_RAW_with_missing_BP.{suffix}")
    assert real.phot_g_mean_flux is None  # the archive files lack it: a stand-in G flux from RP coefficient 0
    g = np.asarray(real.coefficients[:, 55])
    with pytest.raises(ValueError, match="g_flux"):
        sv.preprocess(real)
    batch, _ = sv.preprocess(real, g, stats=trained.model.stats, covariance=True)
    assert not batch.mask[1, :55].any() and batch.mask[1, 55:].all() and batch.mask[[0, 2]].all()
    assert np.all(np.isfinite(batch.x)) and np.all(np.isfinite(batch.cov))
    assert not batch.cov[1, :55].any()
    diag = np.diagonal(batch.cov, axis1=1, axis2=2)
    assert_allclose(np.where(batch.mask, diag, 1.0), np.where(batch.mask, batch.sigma**2, 1.0), rtol=1e-5, atol=0)
    np.testing.assert_array_equal(batch.cov, np.swapaxes(batch.cov, 1, 2))
    mu, logvar = sv.encode(trained.model, real, g, chunk_size=2, progress=False)
    assert mu.shape == (3, 6) and np.all(np.isfinite(mu)) and np.all(np.isfinite(logvar))
    res = sv.normalised_residuals(trained.model, real, g, progress=False)
    assert np.isnan(res[1, :55]).all() and np.isfinite(res[1, 55:]).all()
    assert np.all(np.isfinite(sv.anomaly_score(trained.model, real, g, progress=False)))
    # the full covariance of real sources through the (float32) Cholesky, against numpy in float64
    params = jax.tree_util.tree_map(jnp.asarray, trained.model.params)
    full = sv.batch_loss(dataclasses.replace(trained.model.config, full_covariance=True))
    loss, _ = full(params, batch, jax.random.key(0))
    assert np.isfinite(loss)
    model = dataclasses.replace(trained.model, config=dataclasses.replace(trained.model.config, full_covariance=True))
    chi2 = sv.anomaly_score(model, real, g, kind="chi2", progress=False)
    x_hat, s = (np.asarray(a, np.float64) for a in sv.decode(model, mu))
    for n in range(3):
        m = batch.mask[n]
        v = batch.cov[n][np.ix_(m, m)].astype(np.float64) + np.diag(s[n, m] ** 2)
        r = batch.x[n, m] - x_hat[n, m]
        assert_allclose(chi2[n], r @ np.linalg.solve(v, r) / m.sum(), scale=10)
