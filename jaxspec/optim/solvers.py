r"""The one place jaxopt and optax's L-BFGS are called: small solvers for ONE problem.

Two entry points, both written for a single problem, jittable and vmappable
(the iteration is a ``jax.lax.while_loop`` inside), both returning a
:class:`SolverResult`:

* :func:`least_squares` minimises :math:`\tfrac12 \lVert r(x, \ldots) \rVert^2`
  with jaxopt's ``GaussNewton`` or ``LevenbergMarquardt``;
* :func:`minimize` minimises a scalar :math:`f(x, \ldots)` with L-BFGS from
  jaxopt (``backend="jaxopt"``) or optax (``backend="optax"``).

Linear problems never go through an iterative solver:
:func:`weighted_lstsq` solves many weighted, optionally penalised linear
least-squares problems that share one design matrix in closed form (the
per-star latent solve of a linear decoder, and each block step of Lux).

Extra positional ``*args`` are passed to the function.  Derivatives of the
solution with respect to ``*args`` use **implicit differentiation** of the
optimality condition :math:`\nabla_x f(x^\star, \theta) = 0` (for least squares
:math:`J^\top r = 0`), for both backends, so gradients flow through the
converged solution without unrolling the iterations.  Anything the function
closes over instead of receiving through ``*args`` is treated as a constant
by that rule, so pass what you differentiate with respect to as ``*args``.

jaxopt is unmaintained upstream; swapping it out means editing this file only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jaxopt
import numpy as np
import optax
import optax.tree_utils as otu

from jaxspec.optim.chunks import map_chunks

__all__ = [
    "LEAST_SQUARES_METHODS",
    "MINIMIZE_BACKENDS",
    "SolverResult",
    "least_squares",
    "minimize",
    "pooled_gauss_newton",
    "scaled_cho_solve",
    "scaled_cholesky",
    "weighted_lstsq",
    "weighted_lstsq_one",
]

LEAST_SQUARES_METHODS = ("gauss_newton", "levenberg_marquardt", "dense_gauss_newton")
MINIMIZE_BACKENDS = ("jaxopt", "optax")


class SolverResult(NamedTuple):
    """What a solver returns for one problem.

    Attributes
    ----------
    params : pytree like ``x0``
        The solution.
    value : scalar array
        Objective at ``params`` (for least squares :math:`\\tfrac12\\lVert r\\rVert^2`).
    iterations : int scalar array
        Iterations taken.
    converged : bool scalar array
        ``True`` when the stopping criterion was met within ``maxiter`` and
        the solution and objective are finite.
    """

    params: Any
    value: jax.Array
    iterations: jax.Array
    converged: jax.Array


def _check(tol: float, maxiter: int) -> None:
    if not tol > 0:
        raise ValueError(f"tol: expected a positive tolerance, found {tol!r}")
    if isinstance(maxiter, bool) or not isinstance(maxiter, int) or maxiter < 1:
        raise ValueError(f"maxiter: expected an int >= 1, found {maxiter!r}")


def _finite(tree) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def least_squares(
    residual_fn: Callable,
    x0,
    *args,
    method: str = "gauss_newton",
    tol: float = 1e-6,
    maxiter: int = 50,
    jacobian_fn: Callable | None = None,
    max_step: float | None = None,
) -> SolverResult:
    r"""Minimise :math:`\tfrac12 \sum_i r_i(x, \ldots)^2` for one problem.

    Parameters
    ----------
    residual_fn : callable
        ``residual_fn(x, *args) -> r``, ``r`` of shape ``(m,)``.
    x0 : array or pytree
        Starting point, e.g. shape ``(n,)``.
    *args
        Passed to ``residual_fn``; gradients of the solution with respect to
        them are implicit (see the module docstring).
    method : {"gauss_newton", "levenberg_marquardt", "dense_gauss_newton"}
        Gauss-Newton (jaxopt, steps from conjugate gradients on
        :math:`J^\top J`; converged when the step norm ``<= tol``),
        Levenberg-Marquardt (jaxopt, materialised Jacobian and Cholesky;
        converged when :math:`\lVert J^\top r\rVert_2 \le` ``tol``), or a
        lean dense Gauss-Newton (``jax.jacfwd`` Jacobian, Cholesky of
        :math:`J^\top J + \lambda\,\mathrm{diag}(J^\top J)`, :math:`\lambda`
        raised tenfold on a step that does not lower the objective and lowered
        on one that does; converged when a step that lowers the objective, or
        leaves it within rounding, has norm ``<= tol``),
        the fast choice for few parameters and many residuals.
    tol : float
        Stopping tolerance (see ``method``).
    maxiter : int
        Iteration cap.
    jacobian_fn : callable, optional
        ``jacobian_fn(x, *args) -> (r, J)``: the residuals and their Jacobian
        ``(m, n)`` in closed form, used by ``"dense_gauss_newton"`` in place
        of ``jax.jacfwd(residual_fn)`` (``residual_fn`` still gives the
        implicit derivatives).  Not accepted by the jaxopt methods.
    max_step : float, optional
        ``"dense_gauss_newton"`` only: a step longer than this (2-norm) is
        shortened to it, a trust radius for parameters whose scale makes
        longer steps meaningless (a ``tanh`` bound reparametrisation, where a
        step of tens of units lands in the flat tails and stalls there).
        None: no cap.

    Returns
    -------
    SolverResult

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> res = least_squares(lambda x, a: x**2 - a, jnp.array([1.0]), jnp.array([4.0]))
    >>> round(float(res.params[0]), 4), bool(res.converged)
    (2.0, True)
    """
    _check(tol, maxiter)
    if jacobian_fn is not None and method != "dense_gauss_newton":
        raise ValueError(f"jacobian_fn: only method='dense_gauss_newton' takes one, found method={method!r}")
    if max_step is not None and method != "dense_gauss_newton":
        raise ValueError(f"max_step: only method='dense_gauss_newton' takes one, found method={method!r}")
    _check_max_step(max_step)
    if method == "gauss_newton":
        solver = jaxopt.GaussNewton(residual_fun=residual_fn, tol=tol, maxiter=maxiter, implicit_diff=True)
    elif method == "levenberg_marquardt":
        solver = jaxopt.LevenbergMarquardt(
            residual_fun=residual_fn,
            tol=tol,
            maxiter=maxiter,
            solver="cholesky",
            materialize_jac=True,
            implicit_diff=True,
        )
    elif method == "dense_gauss_newton":
        x, (iterations, error) = _dense_gauss_newton(residual_fn, tol, maxiter, jacobian_fn, max_step)(x0, args)
        value = 0.5 * jnp.sum(jnp.square(residual_fn(x, *args)))
        converged = (error <= tol) & jnp.isfinite(value) & _finite(x)
        return SolverResult(x, value, iterations, converged)
    else:
        raise ValueError(f"method: expected one of {LEAST_SQUARES_METHODS}, found {method!r}")
    x, state = solver.run(x0, *args)
    r = residual_fn(x, *args)
    value = 0.5 * jnp.sum(jnp.square(r))
    converged = (state.error <= tol) & jnp.isfinite(value) & _finite(x)
    return SolverResult(x, value, jnp.asarray(state.iter_num), converged)


_LAMBDA0 = 1e-3  # the dense Gauss-Newton's starting damping
_LAMBDA_MAX = 1e12  # damping at which it gives up


def _gn_linearise(residual_fn: Callable, jacobian_fn: Callable | None, x, args):
    """``(value, J^T J, J^T r)`` at ``x``: from ``jacobian_fn`` or one ``jax.jacfwd`` pass."""
    if jacobian_fn is not None:
        r, jac = jacobian_fn(x, *args)
    else:  # one forward pass gives both the residuals and (as the jvp's primal) the Jacobian
        jac, r = jax.jacfwd(lambda x: (lambda r: (r, r))(residual_fn(x, *args)), has_aux=True)(x)
    return 0.5 * jnp.sum(jnp.square(r)), jac.T @ jac, jac.T @ r


def _check_max_step(max_step) -> None:
    if max_step is not None and not max_step > 0:
        raise ValueError(f"max_step: expected a positive number or None, found {max_step!r}")


def _gn_step(x, value, jtj, grad, lam, max_step: float | None = None):
    r"""The damped Gauss-Newton step: Cholesky of the Jacobi-scaled ``J^T J + lam I``.

    With ``max_step``, the step is shortened to that norm (a trust radius),
    and a parameter that a step of that length could not move the objective
    ``value`` beyond rounding (:math:`\tfrac12 (J^\top J)_{ii}\,`
    ``max_step``:math:`^2 \le \epsilon\,` ``value``: a saturated ``tanh``
    bound, say) is held where it is.  Jacobi scaling would otherwise blow its
    rounding-level gradient up into a full step, and the fit would walk
    along the flat tail without meeting its tolerance.
    """
    diag = jnp.diagonal(jtj)
    live = diag > 0
    if max_step is not None:
        live = live & (0.5 * diag * max_step**2 > jnp.finfo(x.dtype).eps * value)
    scale = jnp.where(live, jnp.sqrt(jnp.where(live, diag, 1.0)), jnp.inf)
    eye = jnp.eye(x.shape[0], dtype=x.dtype)
    a = jtj / scale[:, None] / scale[None, :] + (lam + jnp.finfo(x.dtype).eps) * eye
    step = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a, lower=True), grad / scale) / scale
    if max_step is None:
        return step
    norm = jnp.linalg.norm(step)
    return jnp.where(norm > max_step, step * (max_step / norm), step)


def _gn_accept(state, step, new):
    """Keep a step that does not raise the objective; adapt the damping; ``err`` = its norm (inf if refused)."""
    x, value, jtj, grad, lam = state
    value_new, jtj_new, grad_new = new
    better = value_new <= value
    pick = lambda a, b: jnp.where(better, a, b)  # noqa: E731
    # a step within rounding of the current value still counts towards convergence
    flat = value_new <= value + 100 * jnp.finfo(x.dtype).eps * jnp.abs(value)
    err = jnp.where(better | flat, jnp.linalg.norm(step), jnp.inf)
    lam = jnp.where(better, lam * 0.3, lam * 10.0)
    return (pick(x - step, x), pick(value_new, value), pick(jtj_new, jtj), pick(grad_new, grad), lam), err


def _gn_running(k, err, lam, tol: float, maxiter: int):
    return (k < maxiter) & ~(err <= tol) & (lam < _LAMBDA_MAX)


def _dense_gauss_newton(
    residual_fn: Callable, tol: float, maxiter: int, jacobian_fn: Callable | None, max_step: float | None = None
) -> Callable:
    """``solve(x0, args) -> (x, (iterations, last_step_norm))`` for a flat array ``x``; implicit derivatives."""

    def optimality(x, args):
        r, vjp = jax.vjp(lambda x: residual_fn(x, *args), x)
        return vjp(r)[0]

    @jaxopt.implicit_diff.custom_root(optimality, has_aux=True)
    def solve(x0, args):
        def body(carry):
            state, k, _ = carry
            step = _gn_step(*state, max_step)
            state, err = _gn_accept(state, step, _gn_linearise(residual_fn, jacobian_fn, state[0] - step, args))
            return state, k + 1, err

        def cond(carry):
            state, k, err = carry
            return _gn_running(k, err, state[-1], tol, maxiter)

        lam0 = jnp.asarray(_LAMBDA0, x0.dtype)
        init = (
            (x0, *_gn_linearise(residual_fn, jacobian_fn, x0, args), lam0),
            jnp.asarray(0),
            jnp.asarray(jnp.inf, x0.dtype),
        )
        state, k, err = jax.lax.while_loop(cond, body, init)
        return state[0], (k, err)

    return solve


def pooled_gauss_newton(
    residual_fn: Callable,
    x0,
    rows,
    shared=(),
    *,
    slots: int,
    tol: float,
    maxiter: int,
    jacobian_fn: Callable | None = None,
    max_step: float | None = None,
):
    r"""The dense Gauss-Newton of :func:`least_squares` for ``N`` problems on ``slots`` lanes that refill.

    ``residual_fn(x, *row, *shared)`` (and ``jacobian_fn``, as in
    :func:`least_squares`) for one problem, ``row`` its slice of ``rows``
    (a tuple of arrays ``(N, ...)``).  Every loop iteration takes one step on
    every lane (``vmap``); a lane whose problem has finished (the same test
    as :func:`least_squares`: step norm ``<= tol``, ``maxiter`` steps, or
    damping beyond :math:`10^{12}`) writes it out and takes the next
    problem of the queue.  The work is then about the *sum* of the
    iterations over ``slots`` lanes, not ``N`` times the slowest problem of
    a ``vmap``, which pays when iteration counts vary (a few stars needing
    three times the median).  Each problem sees exactly the iterates of
    :func:`least_squares`.  Not differentiable (no implicit derivatives: a
    ``while_loop`` with a data-dependent queue).  ``max_step`` caps each step as
    in :func:`least_squares`.

    Returns
    -------
    x : array ``(N, n)``, iterations : int array ``(N,)``, error : array ``(N,)``
        The solutions, steps taken, and the last step norm (``inf`` after a
        refused step), as the ``while_loop`` solver gives them.
    """
    n, dtype = x0.shape[0], x0.dtype
    slots = min(int(slots), n)
    lin = jax.vmap(lambda x, row: _gn_linearise(residual_fn, jacobian_fn, x, (*row, *shared)))
    take = lambda tree, idx: jax.tree_util.tree_map(lambda a: a[idx], tree)  # noqa: E731

    def body(carry):
        state, k, err, idx, fresh, active, row, nxt, out = carry
        x, lam = state[0], state[-1]
        step = jnp.where(fresh[:, None], 0.0, jax.vmap(partial(_gn_step, max_step=max_step))(*state))
        x_try = jnp.where(fresh[:, None], take(x0, idx), x - step)
        new = lin(x_try, row)
        accepted, err_new = jax.vmap(_gn_accept)(state, step, new)
        started = (x_try, *new, jnp.full_like(lam, _LAMBDA0))
        f = lambda a, b: jnp.where(fresh.reshape(-1, *([1] * (a.ndim - 1))), a, b)  # noqa: E731
        state = jax.tree_util.tree_map(f, started, accepted)
        k = jnp.where(fresh, 0, k + 1)
        err = jnp.where(fresh, jnp.inf, err_new)
        done = active & ~fresh & ~_gn_running(k, err, state[-1], tol, maxiter)
        where = jnp.where(done, idx, n)  # out of range: dropped
        out = (
            out[0].at[where].set(state[0], mode="drop"),
            out[1].at[where].set(k, mode="drop"),
            out[2].at[where].set(err, mode="drop"),
        )
        order = jnp.cumsum(done) - 1
        new_idx = nxt + order
        refill = done & (new_idx < n)
        idx = jnp.where(refill, new_idx, idx)
        row = jax.tree_util.tree_map(
            lambda cur, all_: jnp.where(
                refill.reshape(-1, *([1] * (cur.ndim - 1))), all_[jnp.minimum(idx, n - 1)], cur
            ),
            row,
            rows,
        )
        return state, k, err, idx, refill, (active & ~done) | refill, row, nxt + jnp.sum(done), out

    def cond(carry):
        return jnp.any(carry[5])

    idx = jnp.arange(slots)
    row = take(rows, idx)
    p = x0.shape[1]
    state = (
        take(x0, idx),
        jnp.zeros(slots, dtype),
        jnp.zeros((slots, p, p), dtype),
        jnp.zeros((slots, p), dtype),
        jnp.full(slots, _LAMBDA0, dtype),
    )
    out = (x0, jnp.zeros(n, jnp.int32), jnp.full(n, jnp.inf, dtype))
    init = (
        state,
        jnp.zeros(slots, jnp.int32),
        jnp.full(slots, jnp.inf, dtype),
        idx,
        jnp.ones(slots, bool),
        jnp.ones(slots, bool),
        row,
        jnp.asarray(slots),
        out,
    )
    return jax.lax.while_loop(cond, body, init)[-1]


def minimize(
    fun: Callable,
    x0,
    *args,
    backend: str = "jaxopt",
    tol: float = 1e-6,
    maxiter: int = 3000,
    max_stepsize: float = 1e3,
) -> SolverResult:
    r"""Minimise a smooth scalar :math:`f(x, \ldots)` with L-BFGS for one problem.

    Converged means :math:`\lVert\nabla_x f\rVert_2 \le` ``tol`` within
    ``maxiter`` iterations.  Defaults follow the Lux paper (tol ``1e-6``,
    3000 iterations, largest line-search step ``1e3``).

    Parameters
    ----------
    fun : callable
        ``fun(x, *args) -> scalar``.
    x0 : array or pytree
        Starting point.
    *args
        Passed to ``fun``; gradients of the solution with respect to them are
        implicit (see the module docstring).
    backend : {"jaxopt", "optax"}
        ``jaxopt.LBFGS`` or ``optax.lbfgs`` (zoom line search) in a
        ``jax.lax.while_loop``.
    tol, maxiter, max_stepsize : float, int, float
        Gradient-norm tolerance, iteration cap, largest line-search step.

    Returns
    -------
    SolverResult

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> f = lambda x, c: jnp.sum((x - c) ** 2)
    >>> res = minimize(f, jnp.zeros(2), jnp.array([1.0, -2.0]), backend="optax")
    >>> [round(float(v), 4) for v in res.params], bool(res.converged)
    ([1.0, -2.0], True)
    """
    _check(tol, maxiter)
    if not max_stepsize > 0:
        raise ValueError(f"max_stepsize: expected a positive number, found {max_stepsize!r}")
    if backend == "jaxopt":
        solver = jaxopt.LBFGS(fun=fun, tol=tol, maxiter=maxiter, max_stepsize=max_stepsize, implicit_diff=True)
        x, state = solver.run(x0, *args)
        iterations, error = jnp.asarray(state.iter_num), state.error
    elif backend == "optax":
        x, (iterations, error) = _optax_lbfgs(fun, tol, maxiter, max_stepsize)(x0, args)
    else:
        raise ValueError(f"backend: expected one of {MINIMIZE_BACKENDS}, found {backend!r}")
    value = fun(x, *args)
    converged = (error <= tol) & jnp.isfinite(value) & _finite(x)
    return SolverResult(x, value, iterations, converged)


def _optax_lbfgs(fun: Callable, tol: float, maxiter: int, max_stepsize: float) -> Callable:
    """``solve(x0, args) -> (x, (iterations, grad_norm))`` with implicit derivatives in ``args``."""
    opt = optax.lbfgs(
        linesearch=optax.scale_by_zoom_linesearch(
            max_linesearch_steps=30, max_learning_rate=max_stepsize, initial_guess_strategy="one"
        )
    )

    def optimality(x, args):
        return jax.grad(fun)(x, *args)

    @jaxopt.implicit_diff.custom_root(optimality, has_aux=True)
    def solve(x0, args):
        f = lambda x: fun(x, *args)  # noqa: E731
        value_and_grad = optax.value_and_grad_from_state(f)

        def body(carry):
            x, state = carry
            value, grad = value_and_grad(x, state=state)
            updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
            return optax.apply_updates(x, updates), state

        def cond(carry):
            _, state = carry
            count = otu.tree_get(state, "count")
            err = otu.tree_norm(otu.tree_get(state, "grad"))
            return (count == 0) | ((count < maxiter) & (err > tol))

        x, state = jax.lax.while_loop(cond, body, (x0, opt.init(x0)))
        err = otu.tree_norm(otu.tree_get(state, "grad"))
        return x, (jnp.asarray(otu.tree_get(state, "count")), err)

    return solve


# -- closed-form weighted linear least squares ------------------------------------


def scaled_cholesky(gram: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Cholesky factor of a symmetric PSD matrix after Jacobi scaling (unit diagonal) plus a tiny jitter.

    Returns ``(factor, d)`` for :func:`scaled_cho_solve`.  Scaling removes the
    spread of column scales from the conditioning; the jitter (machine epsilon
    on the unit diagonal) keeps a nearly singular matrix factorable and gives
    a zero step in directions the data do not constrain.  Where rounding
    leaves a rank-deficient matrix (e.g. fewer data than unknowns) indefinite
    even so, the factor of the matrix with jitter ``sqrt(eps)`` is used
    instead: a tiny ridge, whose bias the refinement step of the callers
    removes in every direction the data constrain.
    """
    d = jnp.sqrt(jnp.diagonal(gram))
    d = jnp.where(d > 0, d, 1.0)
    scaled = gram / d[:, None] / d[None, :]
    eps = jnp.finfo(gram.dtype).eps
    eye = jnp.eye(gram.shape[0], dtype=gram.dtype)
    first = jax.scipy.linalg.cholesky(scaled + eps * eye, lower=True)
    jitter = jnp.where(jnp.all(jnp.isfinite(first)), eps, jnp.sqrt(eps))
    return jax.scipy.linalg.cholesky(scaled + jitter * eye, lower=True), d


def scaled_cho_solve(factor_d: tuple[jax.Array, jax.Array], b: jax.Array) -> jax.Array:
    """Solve ``gram x = b`` (``b`` of shape ``(P,)`` or ``(P, k)``) with the output of :func:`scaled_cholesky`."""
    factor, d = factor_d
    dd = d if b.ndim == 1 else d[:, None]
    return jax.scipy.linalg.cho_solve((factor, True), b / dd) / dd


def weighted_lstsq_one(y, w, x0, design, design_tri, precision, prior_rhs):
    """One row: ``argmin_x sum_i w_i (y_i - design_i . x)^2 + x^T P x - 2 x^T prior_rhs``, from ``x0``."""
    p = design.shape[1]
    w = jnp.where(w > 0, w, 0.0)
    gram = jnp.zeros((p, p), w.dtype).at[np.triu_indices(p)].set(w @ design_tri)
    gram = gram + jnp.triu(gram, 1).T + precision
    fd = scaled_cholesky(gram)

    def step(x):
        r = jnp.where(w > 0, y - design @ x, 0.0)  # the residual itself, not the normal equations: refinement
        return x + scaled_cho_solve(fd, (w * r) @ design + prior_rhs - precision @ x)

    x = step(step(x0))
    return x, gram


def weighted_lstsq(design, y, w, x0=None, *, precision=None, prior_rhs=None, batch_size: int | None = None):
    r"""Many weighted linear least-squares problems sharing one design matrix, in closed form.

    For each row ``r`` of ``y``:

    .. math::

        x_r = \arg\min_x \sum_i w_{ri} (y_{ri} - D_i \cdot x)^2 + x^\top \Lambda x - 2 x^\top b

    with design :math:`D` ``(n_obs, P)``, weights :math:`w \ge 0` (0 = masked),
    penalty precision :math:`\Lambda` ``(P, P)`` (default 0) and prior term
    :math:`b = \Lambda \mu` ``(P,)`` (default 0).

    The Gram matrices :math:`D^\top W_r D` of all rows are one matmul
    ``w @ D_pairs`` (``D_pairs`` the ``P(P+1)/2`` column products), factored
    by Jacobi-scaled Cholesky (:func:`scaled_cholesky`), never inverted.  The
    solve starts from ``x0`` and takes a Newton step on the exact objective
    followed by one step of iterative refinement in which the residual
    ``y - D x`` is recomputed directly, so float32 keeps the accuracy of a QR
    solve for condition numbers of ``D`` up to about :math:`10^3`.  Directions
    the data leave unconstrained (a zero Gram column) keep their value in
    ``x0`` (a minimum-change step, as an iterative solver started at ``x0``
    would do).

    Parameters
    ----------
    design : array ``(n_obs, P)``
    y, w : arrays ``(n_rows, n_obs)``
        Targets and weights (inverse variances).
    x0 : array ``(n_rows, P)``, optional
        Starting values (default zeros).
    precision : array ``(P, P)``, optional
    prior_rhs : array ``(P,)``, optional
    batch_size : int, optional
        Rows per compiled chunk, bounding memory at ``batch_size * n_obs``
        (a Python loop: not inside ``jax.jit``); default: all rows at once
        (jittable).

    Returns
    -------
    x : array ``(n_rows, P)``
    gram : array ``(n_rows, P, P)``
        :math:`D^\top W_r D + \Lambda` (the Hessian of half the objective).

    Examples
    --------
    >>> import numpy as np
    >>> D = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> x, _ = weighted_lstsq(D, np.array([[1.0, 2.0, 3.0]]), np.ones((1, 3)))
    >>> np.round(np.asarray(x), 5).tolist()
    [[1.0, 2.0]]
    """
    design = jnp.asarray(design)
    p = design.shape[1]
    dtype = design.dtype
    precision = jnp.zeros((p, p), dtype) if precision is None else jnp.asarray(precision, dtype)
    prior_rhs = jnp.zeros(p, dtype) if prior_rhs is None else jnp.asarray(prior_rhs, dtype)
    y, w = jnp.asarray(y, dtype), jnp.asarray(w, dtype)
    x0 = jnp.zeros((y.shape[0], p), dtype) if x0 is None else jnp.asarray(x0, dtype)
    n = y.shape[0]
    if batch_size is None or batch_size >= n:
        return _lstsq_rows(design, y, w, x0, precision, prior_rhs)
    # fixed-size chunks (the last one padded): one compilation, bounded memory
    return map_chunks(lambda rows: _lstsq_rows(design, *rows, precision, prior_rhs), (y, w, x0), chunk_size=batch_size)


@jax.jit
def _lstsq_rows(design, y, w, x0, precision, prior_rhs):
    tri = np.triu_indices(design.shape[1])
    design_tri = design[:, tri[0]] * design[:, tri[1]]
    return jax.vmap(weighted_lstsq_one, in_axes=(0, 0, 0, None, None, None, None))(
        y, w, x0, design, design_tri, precision, prior_rhs
    )
