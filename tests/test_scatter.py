"""optim.scatter: the per-pixel scatter step finds the planted scatter and a stationary point; weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec.data.containers import default_float
from jaxspec.optim import scatter
from tests.conftest import assert_allclose


def _scatter_problem(seed=3, n=400):
    rng = np.random.default_rng(seed)
    dtype = default_float()
    s_true = np.array([0.0, 0.0, 0.002, 0.03, 0.05, 0.1, 0.2, 0.04])
    sigma = 0.01
    z = np.concatenate([np.ones((n, 1)), rng.normal(size=(n, 1))], axis=1)
    b = rng.normal(size=(s_true.size, 2))
    flux = z @ b.T + rng.normal(size=(n, s_true.size)) * np.sqrt(sigma**2 + s_true**2)
    ivar = np.full(flux.shape, sigma**-2) * (rng.random(flux.shape) > 0.1)
    return s_true, sigma, *(np.asarray(x, dtype) for x in (b, z, flux, ivar))


def _flux_objective(ln_s, b, z, flux, ivar):
    r"""Negative log-likelihood in ``ln s``: :math:`\tfrac12\sum [r^2/v + \ln v]`, :math:`v = \sigma^2 + s^2`."""
    good = ivar > 0
    v = jnp.where(good, 1.0 / jnp.where(good, ivar, 1.0), 1.0) + jnp.exp(2.0 * ln_s)
    r2 = jnp.square(flux - z @ b.T)
    return 0.5 * jnp.sum(jnp.where(good, r2 / v + jnp.log(v), 0.0))


def test_scatter_step_recovers_planted_scatter():
    s_true, sigma, b, z, flux, ivar = _scatter_problem()
    ln_s = np.asarray(scatter.scatter_step(jnp.full(s_true.size, -8.0, b.dtype), b, z, flux, ivar, maxiter=100))
    big = s_true >= 3 * sigma
    # about 360 stars per pixel: s^2 is known to ~7%, ln s to ~4%
    np.testing.assert_array_less(np.abs(ln_s[big] - np.log(s_true[big])), 0.15)
    np.testing.assert_array_less(np.exp(ln_s[~big]), 0.6 * sigma)
    assert np.all(ln_s >= scatter.LN_S_MIN) and np.all(ln_s <= scatter.LN_S_MAX)


def test_scatter_step_is_stationary_in_ln_s():
    s_true, sigma, b, z, flux, ivar = _scatter_problem()
    ln_s = scatter.scatter_step(jnp.full(s_true.size, -8.0, b.dtype), b, z, flux, ivar, maxiter=100)
    grad = jax.grad(_flux_objective)(ln_s, b, z, flux, ivar)
    interior = np.asarray(ln_s) > scatter.LN_S_MIN + 0.5
    assert interior.sum() >= 5
    # curvature in ln s is ~2N = 720 per pixel: a gradient of 0.05 is a step of 1e-4
    np.testing.assert_array_less(np.abs(np.asarray(grad)[interior]), 0.05)
    # and a minimum: where the scatter dominates, the gradient changes sign across it
    big = s_true >= 3 * sigma
    up = np.asarray(jax.grad(_flux_objective)(ln_s + 0.1, b, z, flux, ivar))
    down = np.asarray(jax.grad(_flux_objective)(ln_s - 0.1, b, z, flux, ivar))
    assert np.all(up[big] > 10.0) and np.all(down[big] < -10.0)


def test_scatter_step_keeps_unmeasured_pixel():
    s_true, _, b, z, flux, ivar = _scatter_problem()
    ivar = ivar.copy()
    ivar[:, 4] = 0.0
    ln_s = scatter.scatter_step(jnp.full(s_true.size, -3.0, b.dtype), b, z, flux, ivar)
    assert float(ln_s[4]) == pytest.approx(-3.0)
    assert np.all(np.isfinite(np.asarray(ln_s)))


def test_flux_weights():
    ivar = jnp.asarray([0.0, 4.0, 1e4], default_float())
    w = scatter.flux_weights(ivar, jnp.log(jnp.asarray([0.1, 0.5, 0.01], default_float())))
    assert_allclose(w, [0.0, 1.0 / (0.25 + 0.25), 1.0 / (1e-4 + 1e-4)])
