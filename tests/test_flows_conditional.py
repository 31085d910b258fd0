r"""p(S | y) from flows, against the Schur complement of a joint Gaussian.

A joint flow of one block whose coupling is the identity and whose LU mixing
is the inverse Cholesky factor of a covariance is that Gaussian exactly, so
the HMC sampler's draws can be held to the closed form within Monte Carlo
error; the structured flow (which cannot be Gaussian exactly: its splines are
bounded) is trained on draws of the Gaussian and held to the same closed form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import Labels
from jaxspec.models import flows
from jaxspec.models.flows._bijectors import ActNormParams, LUFixed, LUParams

L, M = 4, 2  # pixels, labels


def covariance(seed: int = 0) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(L + M, L + M))
    return a @ a.T / (L + M) + 0.3 * np.eye(L + M)


def gaussian_flow(cov: np.ndarray) -> flows.Model:
    """A joint flow whose density is exactly N(0, cov) (centre 0, spread 1): z = C^-1 x, cov = C C^T."""
    config = flows.Config(blocks=1, hidden=(4, 4, 4))
    spec = flows.FlowSpec(L + M, 1, hidden=config.hidden)
    params, _ = flows.init_blocks(jax.random.key(0), spec)
    w = np.linalg.inv(np.linalg.cholesky(cov))
    d = np.diag(w)
    lower = np.tril(w / d[None, :], -1)
    one = lambda a: jnp.asarray(a, jnp.float32)[None]  # noqa: E731
    params = params._replace(
        actnorm=ActNormParams(one(np.zeros(L + M)), one(np.zeros(L + M))),
        mixing=LUParams(one(lower), one(np.zeros((L + M, L + M))), one(np.log(np.abs(d)))),
    )
    fixed = LUFixed(np.sign(d)[None].astype(np.float32), np.arange(L + M)[None].astype(np.int32))
    return flows.Model(
        params, None, jnp.zeros(L + M), jnp.ones(L + M), fixed=fixed, label_fixed=None,
        label_names=("A", "B"), config=config,
    )  # fmt: skip


def schur(cov: np.ndarray, y: np.ndarray, eps: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of S given a label measured as y with Gaussian error eps (eps = 0: exact)."""
    s_s, s_y, yy = cov[:L, :L], cov[:L, L:], cov[L:, L:] + eps**2 * np.eye(M)
    gain = s_y @ np.linalg.inv(yy)
    return gain @ y, s_s - gain @ s_y.T


def test_the_hand_built_flow_is_the_gaussian():
    cov = covariance()
    model = gaussian_flow(cov)
    x = np.random.default_rng(1).normal(size=(5, L + M))
    want = -0.5 * np.einsum("ni,ij,nj->n", x, np.linalg.inv(cov), x) - 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1]
    np.testing.assert_allclose(np.asarray(flows.log_density(model, jnp.asarray(x, jnp.float32))), want, atol=2e-4)


def test_hmc_in_base_space_draws_the_schur_complement():
    cov, y = covariance(), np.array([0.8, -0.5])
    model = gaussian_flow(cov)
    mcmc = flows.MCMC(chains=16, warmup=200, leapfrog=12, label_tolerance=0.05)
    draws = flows.sample_spectra(model, y[None], jax.random.key(2), 16 * 250, mcmc=mcmc, progress=False)
    s = draws.spectra[0]
    mean, cond = schur(cov, y, eps=0.05)
    assert draws.r_hat[0] < 1.05 and 0.4 < draws.acceptance[0] < 0.98
    # Monte Carlo error of 4000 correlated draws (effective size taken as a quarter of that)
    se = np.sqrt(np.diag(cond) / 1000)
    assert np.all(np.abs(s.mean(axis=0) - mean) < 4 * se), (s.mean(axis=0) - mean) / se
    sd = np.sqrt(np.diag(cond))
    err = (np.cov(s.T) - cond) / np.outer(sd, sd)  # in units of the conditional sds: MC error ~ 0.045
    assert np.max(np.abs(err)) < 0.18, err
    # the relaxed conditional is the exact one to O(eps^2): the Schur complement at eps = 0 is as close
    exact_mean, _ = schur(cov, y)
    assert np.all(np.abs(s.mean(axis=0) - exact_mean) < 4 * se)


def test_split_r_hat_flags_chains_that_disagree():
    rng = np.random.default_rng(3)
    mixed = rng.normal(size=(8, 200, 3))
    stuck = mixed + np.arange(8)[:, None, None]  # each chain around its own value
    assert np.all(flows.split_r_hat(mixed) < 1.02) and np.all(flows.split_r_hat(stuck) > 1.5)


def test_sampler_refuses_bad_input():
    model = gaussian_flow(covariance())
    with pytest.raises(ValueError, match="labels: expected shape"):
        flows.sample_spectra(model, np.zeros((2, 3)), jax.random.key(0), 64, progress=False)
    with pytest.raises(ValueError, match="n_samples: expected at least 64"):
        flows.sample_spectra(model, np.zeros((1, 2)), jax.random.key(0), 10, progress=False)
    with pytest.raises(ValueError, match="mcmc.chains"):
        flows.sample_spectra(model, np.zeros((1, 2)), jax.random.key(0), 64, mcmc=flows.MCMC(chains=1))
    with pytest.raises(ValueError, match="labels: expected every label"):
        flows.sample_spectra(model, Labels(np.zeros((1, 2)), np.zeros((1, 2)), names=("A", "B")), jax.random.key(0), 64)


@pytest.mark.slow
def test_structured_flow_draws_the_schur_complement_and_agrees_with_hmc():
    """Both ways on the same data: a structured and a joint flow trained on 6000 draws of the Gaussian."""
    from jaxspec import Spectra

    cov, y = covariance(), np.array([0.8, -0.5])
    x = np.random.default_rng(4).multivariate_normal(np.zeros(L + M), cov, size=6000)
    spectra, labels = Spectra(x[:, :L], np.ones((6000, L))), Labels(x[:, L:], np.ones((6000, M)), names=("A", "B"))
    for kind in ("structured", "joint"):
        config = flows.Config(
            kind=kind, blocks=3, hidden=(32, 32, 32), epochs=15, patience=3, batch_size=200, learning_rate=1e-3
        )
        model = flows.fit(spectra, labels, key=jax.random.key(5), config=config, progress=False).model
        mcmc = flows.MCMC(chains=16, warmup=200, leapfrog=32, label_tolerance=0.05)
        draws = flows.sample_spectra(model, y[None], jax.random.key(6), 4000, mcmc=mcmc, progress=False)
        s = draws.spectra[0]
        if kind == "joint":
            assert draws.r_hat[0] < 1.05
        mean, cond = schur(cov, y, eps=0.0 if kind == "structured" else 0.05)
        sd = np.sqrt(np.diag(cond))
        # a trained flow's own error on top of the Monte Carlo error (measured: 0.04-0.11 sd, 0.11-0.16 in cov)
        assert np.all(np.abs(s.mean(axis=0) - mean) < 0.15 * sd), (kind, (s.mean(axis=0) - mean) / sd)
        assert np.max(np.abs((np.cov(s.T) - cond) / np.outer(sd, sd))) < 0.2, kind
