"""optim/solvers.py: both L-BFGS backends and both least-squares methods agree; implicit gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec.optim import solvers
from tests.conftest import assert_allclose


def rosenbrock(x, a):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (a - x[:-1]) ** 2)


def quadratic(x, a):
    h = jnp.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]], x.dtype)
    return 0.5 * x @ h @ x - a @ x


def logcosh(x, a):
    return jnp.sum(jnp.log(jnp.cosh(x - a))) + 0.1 * jnp.sum(x**2)


PROBLEMS = {
    "rosenbrock": (rosenbrock, np.array([-1.2, 1.0, 0.5]), np.array(1.0), np.array([1.0, 1.0, 1.0])),
    "quadratic": (
        quadratic,
        np.zeros(3),
        np.array([1.0, -2.0, 0.5]),
        np.linalg.solve(np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]]), [1.0, -2.0, 0.5]),
    ),
    "logcosh": (logcosh, np.zeros(2), np.array([0.5, -0.3]), None),
}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_minimize_backends_agree(name):
    fun, x0, a, expected = PROBLEMS[name]
    x0, a = jnp.asarray(x0, jnp.float32), jnp.asarray(a, jnp.float32)
    results = {
        b: jax.jit(solvers.minimize, static_argnames=("fun", "backend"))(fun, x0, a, backend=b)
        for b in ("jaxopt", "optax")
    }
    for res in results.values():
        assert bool(res.converged)
        assert 0 < int(res.iterations) <= 3000
    assert_allclose(results["jaxopt"].params, results["optax"].params, scale=10)
    assert_allclose(results["jaxopt"].value, results["optax"].value, scale=10)
    if expected is not None:
        assert_allclose(results["optax"].params, expected, scale=10)


def exp_residual(x, t, y):
    return x[0] * jnp.exp(-x[1] * t) - y


@pytest.mark.parametrize("method", solvers.LEAST_SQUARES_METHODS)
def test_least_squares_recovers_and_agrees_with_lbfgs(method):
    t = jnp.linspace(0.0, 3.0, 20)
    y = 2.0 * jnp.exp(-0.7 * t)
    res = solvers.least_squares(exp_residual, jnp.array([1.0, 0.3]), t, y, method=method, tol=1e-6)
    assert bool(res.converged)
    assert_allclose(res.params, [2.0, 0.7])
    value = lambda x, t, y: 0.5 * jnp.sum(exp_residual(x, t, y) ** 2)  # noqa: E731
    lb = solvers.minimize(value, jnp.array([1.0, 0.3]), t, y, backend="optax")
    assert_allclose(res.params, lb.params, scale=4)


def test_vmap_over_problems():
    a = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]])
    run = jax.vmap(lambda a: solvers.minimize(quadratic, jnp.zeros(3), a, backend="optax"))
    res = run(a)
    assert res.params.shape == (2, 3) and res.converged.shape == (2,)
    assert bool(jnp.all(res.converged))


@pytest.mark.parametrize(
    ("kind", "option"),
    [
        ("minimize", "jaxopt"),
        ("minimize", "optax"),
        ("least_squares", "gauss_newton"),
        ("least_squares", "levenberg_marquardt"),
    ],
)
def test_implicit_gradient_matches_closed_form(kind, option):
    # argmin_x 0.5 |x - a|^2 + 0.5 c |x|^2  ->  x* = a / (1 + c)
    c = 0.5

    def solution(a):
        if kind == "minimize":
            f = lambda x, a: 0.5 * jnp.sum((x - a) ** 2) + 0.5 * c * jnp.sum(x**2)  # noqa: E731
            return solvers.minimize(f, jnp.zeros(2), a, backend=option, tol=1e-6).params
        r = lambda x, a: jnp.concatenate([x - a, jnp.sqrt(c) * x])  # noqa: E731
        return solvers.least_squares(r, jnp.zeros(2), a, method=option).params

    a = jnp.array([1.0, -2.0])
    jac = jax.jacrev(solution)(a)
    assert_allclose(jac, np.eye(2) / (1 + c))


def test_bad_arguments():
    with pytest.raises(ValueError, match="backend"):
        solvers.minimize(quadratic, jnp.zeros(3), jnp.ones(3), backend="scipy")
    with pytest.raises(ValueError, match="method"):
        solvers.least_squares(exp_residual, jnp.zeros(2), method="dogleg")
    with pytest.raises(ValueError, match="tol"):
        solvers.minimize(quadratic, jnp.zeros(3), jnp.ones(3), tol=0.0)
    with pytest.raises(ValueError, match="maxiter"):
        solvers.least_squares(exp_residual, jnp.zeros(2), maxiter=0)
    with pytest.raises(ValueError, match="max_stepsize"):
        solvers.minimize(quadratic, jnp.zeros(3), jnp.ones(3), max_stepsize=-1.0)


def test_nan_objective_not_converged():
    res = solvers.minimize(lambda x: jnp.sum(x**2) * jnp.nan, jnp.ones(2), backend="optax")
    assert not bool(res.converged)
    res = solvers.least_squares(lambda x: x * jnp.nan, jnp.ones(2))
    assert not bool(res.converged)


def saturating(x, target):
    """A bounded fit: ``tanh`` of each parameter against a target, the first beyond the bound 1."""
    return jnp.tanh(x) - target


def test_max_step_caps_the_step_and_stops_a_walk_along_a_saturated_bound():
    target = jnp.array([1.5, 0.3])
    one = solvers.least_squares(saturating, jnp.zeros(2), target, method="dense_gauss_newton", maxiter=1, max_step=0.5)
    assert float(jnp.linalg.norm(one.params)) == pytest.approx(0.5, rel=1e-5)
    # uncapped, one Gauss-Newton step from a flat tail throws the parameter thousands of units out
    free = solvers.least_squares(saturating, jnp.zeros(2), target, method="dense_gauss_newton", maxiter=200)
    assert abs(float(free.params[0])) > 100.0
    capped = solvers.least_squares(
        saturating, jnp.zeros(2), target, method="dense_gauss_newton", maxiter=200, max_step=2.0
    )
    assert bool(capped.converged) and int(capped.iterations) < 50 and float(capped.params[0]) < 40.0
    assert float(jnp.tanh(capped.params[0])) == pytest.approx(1.0, abs=1e-4)  # at the bound, to ~sqrt(eps)
    assert float(jnp.tanh(capped.params[1])) == pytest.approx(0.3, abs=1e-5)  # the free parameter still fits
    x0 = jnp.array([[0.0, 0.0], [3.0, -1.0], [-2.0, 0.5]])
    rows = (jnp.stack([target, jnp.array([0.2, -0.9]), jnp.array([-1.2, 0.1])]),)
    pooled = solvers.pooled_gauss_newton(saturating, x0, rows, (), slots=2, tol=1e-6, maxiter=200, max_step=2.0)
    for i in range(3):
        single = solvers.least_squares(
            saturating, x0[i], rows[0][i], method="dense_gauss_newton", maxiter=200, max_step=2.0
        )
        assert_allclose(pooled[0][i], single.params)
        assert int(pooled[1][i]) == int(single.iterations)
    with pytest.raises(ValueError, match="max_step"):
        solvers.least_squares(saturating, jnp.zeros(2), target, max_step=1.0)  # jaxopt's Gauss-Newton has none
    with pytest.raises(ValueError, match="max_step"):
        solvers.least_squares(saturating, jnp.zeros(2), target, method="dense_gauss_newton", max_step=0.0)
