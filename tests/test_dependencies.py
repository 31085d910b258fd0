"""The runtime dependencies import and work under the suite's warning filters.

Later model families call jaxopt (in optim/solvers.py), distrax (in
models/flows.py), flax NNX and optax; this catches an environment where one of
them breaks on the installed JAX before any model code runs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def test_jaxopt_solves_a_least_squares_problem():
    import jaxopt

    a = jnp.array([[2.0, 1.0], [1.0, 3.0], [0.0, 1.0]])
    b = jnp.array([1.0, 2.0, 0.5])
    res = jaxopt.GaussNewton(residual_fun=lambda x: a @ x - b, maxiter=5).run(jnp.zeros(2))
    np.testing.assert_allclose(res.params, np.linalg.lstsq(np.asarray(a), np.asarray(b), rcond=None)[0], rtol=1e-4)


def test_distrax_flow_log_prob_matches_change_of_variables():
    import distrax

    base = distrax.Normal(0.0, 1.0)
    flow = distrax.Transformed(base, distrax.ScalarAffine(shift=1.0, scale=2.0))
    x = jnp.array([0.3, -1.2, 2.5])
    expected = base.log_prob((x - 1.0) / 2.0) - jnp.log(2.0)
    np.testing.assert_allclose(flow.log_prob(x), expected, rtol=1e-5)


def test_flax_nnx_split_and_optax_step_equal_the_closed_form():
    """A split NNX linear layer is ``x @ W + b``; one SGD step on the mean squared error is ``W - lr * grad``."""
    import optax
    from flax import nnx

    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 1)).astype(np.float32)
    w, b = np.asarray(params["kernel"][...], np.float64), np.asarray(params["bias"][...], np.float64)
    np.testing.assert_allclose(nnx.merge(graphdef, params)(x), x @ w + b, rtol=1e-5, atol=1e-6)

    def loss(p):
        return jnp.mean((nnx.merge(graphdef, p)(x) - y) ** 2)

    opt = optax.sgd(0.1)
    updates, _ = opt.update(jax.grad(loss)(params), opt.init(params), params)
    new = optax.apply_updates(params, updates)
    resid = x @ w + b - y  # d/dW mean(r^2) = 2 x^T r / n, d/db = 2 mean(r)
    np.testing.assert_allclose(new["kernel"][...], w - 0.1 * 2 * x.T @ resid / 4, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["bias"][...], b - 0.1 * 2 * resid.mean(axis=0), rtol=1e-5, atol=1e-6)
