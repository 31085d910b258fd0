"""PPCA with missing data (jaxspec.models.ppca): closed forms, planted structure, invariances, errors."""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
import pytest

from jaxspec.data.containers import Spectra
from jaxspec.models import ppca
from jaxspec.models.ppca import _data as _ppca_data
from jaxspec.models.ppca import _fit as _ppca_fit
from jaxspec.models.ppca import _kernels as _ppca_kernels
from tests.conftest import assert_allclose

KEY = jax.random.key(0)


def planted(n=300, d=40, k=3, noise=0.05, seed=0):
    """Data with a planted rank-``k`` structure (well separated) plus white noise, and the true loadings."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, k)) * np.linspace(2.0, 1.0, k)
    x = 1.0 + rng.normal(size=(n, k)) @ w.T + noise * rng.normal(size=(n, d))
    return x.astype(np.float32), w


def max_angle(a, b):
    """Largest principal angle, degrees."""
    qa, qb = np.linalg.qr(np.asarray(a, np.float64))[0], np.linalg.qr(np.asarray(b, np.float64))[0]
    return np.degrees(np.arccos(np.clip(np.linalg.svd(qa.T @ qb, compute_uv=False).min(), -1, 1)))


class Fitted(NamedTuple):
    """What the tests read of one ``ppca.fit``: the model's arrays and the fit's history, flat."""

    model: ppca.Model
    mean: np.ndarray
    loadings: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    noise_variance: float
    latents: np.ndarray
    log_likelihood: np.ndarray
    n_iter: int
    converged: bool


def fit(x, k=3, *, ivar=None, mask=None, key=KEY, **config):
    res = ppca.fit(x, key=key, config=ppca.Config(n_components=k, **config), ivar=ivar, mask=mask, progress=False)
    assert isinstance(res, ppca.FitResult) and isinstance(res.model, ppca.Model)
    m = res.model
    return Fitted(
        m, np.asarray(m.mean), np.asarray(m.loadings), m.components, m.explained_variance,
        float(m.noise_variance), res.aux["latents"], res.history["log_likelihood"], res.aux["n_iter"], res.converged,
    )  # fmt: skip


def transform(res, x, **kw):
    return ppca.encode(res.model, x, progress=False, **kw)


def test_no_missing_equals_pca_closed_form():
    """Tipping & Bishop: components = top eigenvectors, sigma2 = mean of the discarded eigenvalues."""
    x, _ = planted(n=200, d=30, k=3, noise=0.3)
    res = fit(x, tol=1e-9, max_iter=30)
    xc = np.asarray(x, np.float64) - np.mean(x, axis=0, dtype=np.float64)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    ev = s**2 / x.shape[0]
    assert_allclose(res.explained_variance, ev[:3], scale=4)
    assert_allclose(res.noise_variance, ev[3:].mean(), dtype=np.float32, scale=4)
    signs = np.sign(np.sum(res.components * vt[:3].T, axis=0))
    assert_allclose(res.components, vt[:3].T * signs, scale=4)
    assert_allclose(res.mean, x.mean(0), scale=4)
    assert_allclose(np.linalg.norm(res.components, axis=0), np.ones(3))


def test_planted_structure_with_20_percent_missing():
    x, w = planted(n=400, d=40, noise=0.1)
    mask = np.random.default_rng(1).random(x.shape) < 0.2
    res = fit(x, mask=mask, tol=1e-7, max_iter=60)
    assert max_angle(res.components, w) < 1.0
    assert 0.08 < np.sqrt(res.noise_variance) < 0.12


@pytest.mark.parametrize("x64", [False, True])
@pytest.mark.parametrize("fraction", [0.03, 0.2])
def test_planted_and_loglike_non_decreasing(fraction, x64):
    """Both EM variants (sparse below 10% missing, dense above) increase the log-likelihood every iteration.

    In float32 the log-likelihood carries a rounding error of about 1e-7 times
    the signal-to-noise variance ratio (here ~10), hence the tolerance.
    """
    x, w = planted(n=300, d=40, noise=1.0, seed=2)
    mask = np.random.default_rng(2).random(x.shape) < fraction
    with jax.enable_x64(x64):
        res = fit(x, mask=mask, tol=1e-12, max_iter=30)
    assert res.latents.dtype == (np.float64 if x64 else np.float32)
    assert max_angle(res.components, w) < 5.0
    ll = res.log_likelihood
    assert len(ll) == res.n_iter + 1 and res.n_iter >= 5
    assert np.all(np.diff(ll) >= -(1e-12 if x64 else 1e-6) * np.abs(ll[1:]))
    assert ll[-1] - ll[0] > 1.0


def test_sparse_and_dense_paths_agree(monkeypatch):
    """The complete-data EM (sparse) and the per-pixel EM (dense) reach the same maximum likelihood."""
    x, _ = planted(n=200, d=30, noise=0.5, seed=3)
    mask = np.random.default_rng(3).random(x.shape) < 0.05
    with jax.enable_x64(True):
        sparse = fit(x, mask=mask, tol=1e-13, max_iter=300)
        monkeypatch.setattr(_ppca_data, "_DENSE_FRACTION", 0.0)
        dense = fit(x, mask=mask, tol=1e-13, max_iter=300)
    assert sparse.converged and dense.converged
    assert max_angle(sparse.components, dense.components) < 1e-4
    assert_allclose(sparse.noise_variance, dense.noise_variance, dtype=np.float64, scale=10)
    assert_allclose(sparse.log_likelihood[-1], dense.log_likelihood[-1], dtype=np.float64)
    assert_allclose(sparse.latents, dense.latents, dtype=np.float64, scale=100)


def test_loglike_equals_direct_gaussian():
    """The Woodbury log-likelihood equals sum_n log N(x_obs | mu, W W^T + sigma2 I) computed densely."""
    x, _ = planted(n=60, d=12, k=2, noise=0.3, seed=4)
    mask = np.random.default_rng(4).random(x.shape) < 0.1
    res = fit(x, k=2, mask=mask, max_iter=5)
    c = res.loadings.astype(np.float64) @ res.loadings.T.astype(np.float64) + res.noise_variance * np.eye(12)
    total = 0.0
    for xn, mn in zip(x.astype(np.float64), mask, strict=True):
        o = ~mn
        r = xn[o] - res.mean[o]
        cov = c[np.ix_(o, o)]
        total -= 0.5 * (o.sum() * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1] + r @ np.linalg.solve(cov, r))
    assert_allclose(res.log_likelihood[-1], total, dtype=np.float32, scale=0.1)


def test_deterministic_for_a_key_and_close_across_keys():
    x, _ = planted(noise=0.1, seed=5)
    mask = np.random.default_rng(5).random(x.shape) < 0.03
    a = fit(x, mask=mask, tol=1e-8, max_iter=30)
    b = fit(x, mask=mask, tol=1e-8, max_iter=30)
    for field in ("components", "explained_variance", "latents", "log_likelihood"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.noise_variance == b.noise_variance
    c = fit(x, mask=mask, key=jax.random.key(7), tol=1e-8, max_iter=30)
    assert max_angle(a.components, c.components) < 0.05
    assert_allclose(a.noise_variance, c.noise_variance, dtype=np.float32, scale=10)


@pytest.mark.parametrize("fraction", [0.03, 0.2])
def test_chunking_invariance(fraction):
    x, _ = planted(n=100, noise=0.1, seed=6)
    mask = np.random.default_rng(6).random(x.shape) < fraction
    a = fit(x, mask=mask, chunk_size=16, tol=1e-8, max_iter=40)
    b = fit(x, mask=mask, chunk_size=1000, tol=1e-8, max_iter=40)
    assert max_angle(a.components, b.components) < 0.05
    assert_allclose(a.explained_variance, b.explained_variance, scale=10)
    assert_allclose(a.latents, b.latents, scale=20)


def test_ivar_weights_beat_unweighted_on_heteroscedastic_data():
    rng = np.random.default_rng(8)
    n, d, k = 300, 40, 3
    w = rng.normal(size=(d, k))
    sigma = np.where(rng.random((n, d)) < 0.3, 3.0, 0.05)  # 30% of entries very noisy
    x = (rng.normal(size=(n, k)) @ w.T + sigma * rng.normal(size=(n, d))).astype(np.float32)
    ivar = (1 / sigma**2).astype(np.float32)
    plain = fit(x, ivar=ivar, max_iter=60, tol=1e-7)
    weighted = fit(x, ivar=ivar, weights="ivar", max_iter=60, tol=1e-7)
    assert weighted.model.ivar_scale is not None and plain.model.ivar_scale is None
    assert max_angle(weighted.components, w) < 0.5 * max_angle(plain.components, w)
    assert max_angle(weighted.components, w) < 2.0
    with jax.enable_x64(True):  # ivar spans 3.6e3 here: check monotonicity without float32 rounding
        ll = fit(x, ivar=ivar, weights="ivar", max_iter=30, tol=1e-12).log_likelihood
    assert np.all(np.diff(ll) >= -1e-12 * np.abs(ll[1:]))
    assert_allclose(transform(weighted, x, ivar=ivar), weighted.latents, scale=20)


@pytest.mark.parametrize("fraction", [0.0, 0.03, 0.2])
def test_transform_of_training_data_equals_latents(fraction):
    x, _ = planted(n=120, noise=0.1, seed=9)
    mask = np.random.default_rng(9).random(x.shape) < fraction
    res = fit(x, mask=mask, max_iter=50)
    assert res.latents.shape == (120, 3)
    assert_allclose(transform(res, x, mask=mask), res.latents, scale=20)
    assert_allclose(transform(res, x[:7], mask=mask[:7], chunk_size=16), res.latents[:7], scale=20)
    # few stars take the direct float64 solves, many the chunked E-step: the same posterior means
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_ppca_fit, "_DIRECT_MAX", 0)
        assert_allclose(transform(res, x[:7], mask=mask[:7]), res.latents[:7], scale=20)


def test_spectra_input_and_nan_as_missing():
    x, w = planted(n=150, noise=0.1, seed=10)
    mask = np.random.default_rng(10).random(x.shape) < 0.03
    ivar = np.where(mask, 0.0, 100.0).astype(np.float32)
    from_spectra = fit(Spectra(x, ivar), max_iter=30, tol=1e-8)
    from_nan = fit(np.where(mask, np.nan, x), max_iter=30, tol=1e-8)
    assert max_angle(from_spectra.components, from_nan.components) < 0.05
    assert max_angle(from_nan.components, w) < 1.0
    assert np.all(np.isfinite(from_nan.latents))


def test_compiles_once():
    x, _ = planted(n=100, noise=0.1, seed=11)
    mask = np.random.default_rng(11).random(x.shape) < 0.03
    fit(x, mask=mask, max_iter=3)
    size = _ppca_fit._estep_chunk._cache_size()
    fit(x + 0.01, mask=mask, max_iter=3)
    assert _ppca_fit._estep_chunk._cache_size() == size


def test_bad_input():
    x, _ = planted(n=50, d=10)
    with pytest.raises(ValueError, match=r"config.n_components: expected 1 <= K < min\(N, D\) = 10"):
        fit(x, k=10)
    with pytest.raises(TypeError, match="config.n_components"):
        fit(x, k=2.0)
    with pytest.raises(ValueError, match="mask"):
        fit(x, mask=np.zeros((50, 9), bool))
    with pytest.raises(TypeError, match="mask"):
        fit(x, mask=np.zeros((50, 10)))
    with pytest.raises(ValueError, match="ivar"):
        fit(x, ivar=-np.ones_like(x))
    with pytest.raises(ValueError, match="weights"):
        fit(x, weights="ivar")
    with pytest.raises(ValueError, match="weights"):
        fit(x, weights="snr", ivar=np.ones_like(x))
    with pytest.raises(ValueError, match="spectra: expected a 2-D array"):
        fit(x[0])
    with pytest.raises(ValueError, match="spectra: every entry is missing"):
        fit(np.full_like(x, np.nan))
    with pytest.raises(TypeError, match="key"):
        fit(x, key=0)
    with pytest.raises(ValueError, match="chunk_size"):
        fit(x, chunk_size=0)
    res = fit(x, max_iter=2)
    with pytest.raises(ValueError, match="pixels"):
        transform(res, x[:, :5])
    with pytest.raises(TypeError, match=r"model: expected a ppca\.Model"):
        ppca.encode(res._asdict(), x)


def test_complex_data_and_zero_stars_are_refused():
    """Issue 14: complex data lost their imaginary part with only a ComplexWarning; zero stars blamed the config."""
    x, _ = planted(n=50, d=10)
    with pytest.raises(TypeError, match="^spectra: expected a real numeric array, found dtype complex"):
        fit(x.astype(np.complex64))
    with pytest.raises(TypeError, match="^ivar: expected a real numeric array"):
        fit(x, ivar=np.ones(x.shape, complex))
    with pytest.raises(ValueError, match="^spectra: expected at least one star, found 0"):
        fit(x[:0])
    res = fit(x, max_iter=2)
    with pytest.raises(ValueError, match="^spectra: expected at least one star, found 0"):
        ppca.encode(res.model, x[:0], progress=False)
    with pytest.raises(TypeError, match="^spectra: expected a real numeric array"):
        ppca.encode(res.model, x.astype(np.complex128), progress=False)


def test_nan_in_later_chunks_of_zero_copy_input():
    """Aligned float input is read in place until NaN turn up (mid-way, and in the partial last chunk)."""
    x, _ = planted(n=100, d=40)
    mask = np.random.default_rng(2).random(x.shape) < 0.03
    mask[:40] = False  # the first chunks are clean: the data are used in place at first
    src = _ppca_data._aligned(x.shape)
    src[...] = np.where(mask, np.nan, x)
    assert _ppca_data._zero_copy(src) is src
    from_nan = fit(src, chunk_size=16, max_iter=30, tol=1e-8)
    from_mask = fit(x, mask=mask, chunk_size=16, max_iter=30, tol=1e-8)
    assert_allclose(from_nan.log_likelihood, from_mask.log_likelihood, dtype=_ppca_data._dtype())
    assert max_angle(from_nan.components, from_mask.components) < 0.01
    assert np.isnan(src).sum() == mask.sum()  # the input is left as it was


def test_nan_under_the_mask_is_ignored():
    """NaN placeholders at masked entries never reach the matmuls (the raw data enter them uncorrected)."""
    x, _ = planted(n=100, d=40)
    mask = np.random.default_rng(3).random(x.shape) < 0.03
    with_nan = fit(np.where(mask, np.nan, x), mask=mask, chunk_size=16, max_iter=30, tol=1e-8)
    with_zero = fit(np.where(mask, 0.0, x), mask=mask, chunk_size=16, max_iter=30, tol=1e-8)
    assert np.all(np.isfinite(with_nan.log_likelihood))
    assert_allclose(with_nan.log_likelihood, with_zero.log_likelihood, dtype=_ppca_data._dtype())


def test_start_from_a_subsample_of_chunks_reaches_the_same_fit(monkeypatch):
    """The starting subspace from every 4th chunk only: EM still ends at the full-data fit."""
    x, w = planted(n=400, d=40, noise=0.1)
    mask = np.random.default_rng(4).random(x.shape) < 0.03
    full = fit(x, mask=mask, chunk_size=16, tol=1e-8, max_iter=60)
    monkeypatch.setattr(_ppca_fit, "_INIT_STARS", 100)  # 25 chunks of 16 -> every 4th chunk, 112 stars
    seen = []
    chunks = _ppca_data._chunks
    monkeypatch.setattr(_ppca_fit, "_chunks", lambda prep, stride=1: seen.append(stride) or chunks(prep, stride))
    sub = fit(x, mask=mask, chunk_size=16, tol=1e-8, max_iter=60)
    assert seen[:2] == [4, 4] and set(seen[2:]) == {1}  # two init passes on the subsample, EM on all
    assert max_angle(sub.components, full.components) < 0.05
    assert max_angle(sub.components, w) < 1.0
    assert_allclose(sub.log_likelihood[-1], full.log_likelihood[-1], dtype=np.float32, scale=10)


@pytest.mark.parametrize("rows", [slice(None), slice(37, None), slice(2, None), slice(0, 150)])
def test_memmap_with_nan_read_from_the_file(tmp_path, rows):
    """A NaN-holding ``.npy`` map, whole or a contiguous slice, is copied by reads from the file: same fit.

    numpy keeps the parent's ``offset`` on a slice; the reads start where the slice's first byte lies in
    the mapping.  Rows 0-2 are entirely missing, so the first row of the slice from row 2 is bitwise equal
    to the file's first row: a read that started 2 rows too early would pass the first-row check and
    shift every row, which the equality of the fits below would catch.
    """
    x, _ = planted(n=200, d=40)
    mask = np.random.default_rng(5).random(x.shape) < 0.03
    mask[:3] = True
    np.save(tmp_path / "x.npy", np.where(mask, np.nan, x).astype(np.float32))
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")[rows]
    readable = _ppca_data._dtype() == np.float32  # float64 runs convert, so copy
    with _ppca_data._row_reader(mm) as read:
        assert (read is not None) == readable
        if read is not None:
            got = np.empty((5, x.shape[1]), np.float32)
            read(10, 15, got)
            np.testing.assert_array_equal(got, np.asarray(mm[10:15]))
    from_file = fit(mm, chunk_size=16, tol=1e-8, max_iter=40)
    in_memory = fit(x[rows], mask=mask[rows], chunk_size=16, tol=1e-8, max_iter=40)
    assert_allclose(from_file.log_likelihood, in_memory.log_likelihood, dtype=np.float32)
    assert_allclose(from_file.latents, in_memory.latents, dtype=np.float32, scale=100)
    assert "bufs" not in _ppca_data._SCRATCH.__dict__  # the calling thread keeps no scratch arrays


@pytest.mark.parametrize("k", [1, 7, 8, 9, 30])
def test_batched_triangular_inverse(k):
    """The batched lower-triangular inverse of the E-step against numpy, and exactly lower-triangular."""
    a = np.random.default_rng(k).normal(size=(6, k, k))
    chol = np.linalg.cholesky(a @ a.transpose(0, 2, 1) + k * np.eye(k))
    got = np.asarray(_ppca_kernels._tri_inv(jax.numpy.asarray(chol, _ppca_data._dtype())))
    assert_allclose(got, np.linalg.inv(chol), dtype=_ppca_data._dtype(), scale=0.1)
    assert np.all(np.triu(got, 1) == 0)


def test_log_prob_is_the_gaussian_marginal_of_the_observed_entries():
    """ppca.log_prob against scipy's multivariate normal of each star's observed entries (missing marginalised)."""
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(11)
    x = rng.normal(size=(60, 3)) @ rng.normal(size=(3, 8)) + 0.3 * rng.normal(size=(60, 8)) + 2.0
    x[rng.uniform(size=x.shape) < 0.15] = np.nan
    x[5] = np.nan  # nothing observed
    model = ppca.fit(x, key=jax.random.key(0), config=ppca.Config(n_components=2, max_iter=30), progress=False).model
    got = ppca.log_prob(model, x)
    w, mu, s2 = (np.asarray(a, np.float64) for a in (model.loadings, model.mean, model.noise_variance))
    cov = w @ w.T + s2 * np.eye(8)
    for n in (0, 1, 7, 30):
        o = np.isfinite(x[n])
        want = multivariate_normal(mu[o], cov[np.ix_(o, o)]).logpdf(x[n, o])
        np.testing.assert_allclose(got[n], want, rtol=1e-7)
    assert np.isnan(got[5]) and np.sum(np.isnan(got)) == 1
