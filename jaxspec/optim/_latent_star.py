r"""The one-star solves behind :func:`jaxspec.optim.latents.fit_latents`, vmapped over a chunk of stars.

Residuals (whitened, with the prior's rows and an optional variable-projection scale basis) and their
Jacobians, the linear normal-equation solve, the iterative solvers (Gauss-Newton, Levenberg-Marquardt,
dense Gauss-Newton, L-BFGS; pooled lanes for dense Gauss-Newton), and the summary of a solution (chi2,
Laplace covariance, flags, never NaN).  :func:`fit_chunk` is the compiled entry point; input checks,
chunking and sharding live in :mod:`jaxspec.optim.latents`.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.optim import solvers


class LatentFit(NamedTuple):
    r"""Result of :func:`fit_latents` (``n`` stars, ``P`` latents).

    Attributes
    ----------
    z : array ``(n, P)``
        Best-fit latents; the prior mean (``z0`` without a prior) for a
        flagged star.
    chi2 : array ``(n,)``
        :math:`\sum_i w_i (y_i - f(z)_i)^2` (data term only); 0 for a star with
        no unmasked output, ``inf`` where the decoder gave non-finite values.
    reduced_chi2 : array ``(n,)``
        ``chi2 / (n_good - P - K)`` (``K`` columns of a ``scale_basis``, else
        0); ``inf`` where that is not positive.
    converged : bool array ``(n,)``
        Solver converged and the result is finite; ``False`` for a star with
        every output masked.
    iterations : int array ``(n,)``
        Solver iterations (1 for ``"linear"``).
    covariance : array ``(n, P, P)`` or None
        Laplace covariance :math:`(J^\top W J + \Lambda)^{-1}` at ``z`` when
        requested; ``inf`` on the diagonal where it is undefined.  With a
        ``scale_basis``, that of ``z`` with the coefficients profiled out
        (marginal over them: :math:`J` is the projected Jacobian).
    coefficients : array ``(n, K)`` or None
        The ``scale_basis`` coefficients :math:`c` at ``z`` (None without a
        basis; 0 where they are not finite).
    """

    z: jax.Array
    chi2: jax.Array
    reduced_chi2: jax.Array
    converged: jax.Array
    iterations: jax.Array
    covariance: jax.Array | None = None
    coefficients: jax.Array | None = None


# -- one star ------------------------------------------------------------------


def _cholesky_solve(a, b):
    """Solve ``a x = b`` (``a`` symmetric PSD, ``b`` vector or matrix) by Jacobi-scaled Cholesky with jitter."""
    return solvers.scaled_cho_solve(solvers.scaled_cholesky(a), b)


def _projection(sw, f, y, basis):
    """The best scale ``B c`` of ``f`` for whitened data: ``A = diag(sw f) B``, ``c = argmin |sw y - A c|``."""
    design = (sw * f)[:, None] * basis
    factor = solvers.scaled_cholesky(design.T @ design)
    return design, factor, solvers.scaled_cho_solve(factor, design.T @ (sw * y))


def _residual(z, params, y, ivar, mean, root, decode, basis=None):
    """Whitened residuals: data ``sqrt(w) (y - f(z) B c)``, then prior ``Lambda^(1/2) (z - mu)``.

    Without a ``basis`` the scale ``B c`` is 1; with one, ``c`` is the
    closed-form best fit for this ``z`` (variable projection).
    """
    good = ivar > 0
    sw = jnp.sqrt(jnp.where(good, ivar, 0.0))
    f = decode(params, z)
    if basis is None:
        r = jnp.where(good, sw * (y - f), 0.0)
    else:
        design, _, c = _projection(sw, f, jnp.where(good, y, 0.0), basis)
        r = jnp.where(good, sw * y - design @ c, 0.0)
    return jnp.concatenate([r, root @ (z - mean)])


def _residual_and_jacobian(z, params, y, ivar, mean, root, jacobian, basis=None, prior=True):
    r""":func:`_residual` and its Jacobian ``(n_out + P, P)`` from the decoder's closed-form ``jacobian``.

    With a ``basis``, Kaufman's Jacobian of the projected residuals,
    :math:`-(I - A (A^\top A)^{-1} A^\top)\,\mathrm{diag}(\sqrt w\, B c)\, J`: the
    gradient :math:`J^\top r` is exact and Gauss-Newton converges to the
    minimum of the projected objective.  ``prior=False``: no prior rows
    (``root`` is zero), so ``J`` is ``(n_out, P)``.
    """
    good = ivar > 0
    sw = jnp.sqrt(jnp.where(good, ivar, 0.0))
    f, jac = jacobian(params, z)
    if basis is None:
        r = jnp.where(good, sw * (y - f), 0.0)
        jr = -sw[:, None] * jac
    else:
        design, factor, c = _projection(sw, f, jnp.where(good, y, 0.0), basis)
        r = jnp.where(good, sw * y - design @ c, 0.0)
        x = (sw * (basis @ c))[:, None] * jac
        jr = -(x - design @ solvers.scaled_cho_solve(factor, design.T @ x))
    if not prior:
        return r, jr
    return jnp.concatenate([r, root @ (z - mean)]), jnp.concatenate([jr, root])


def _finish(z, chi2, n_good, converged, iterations, precision_at_z, fallback, *, has_prior, covariance):
    """Flag and replace non-finite or data-free results; never return NaN."""
    p = z.shape[0]
    ok = jnp.all(jnp.isfinite(z)) & jnp.isfinite(chi2) & (n_good > 0)
    chi2_out = jnp.where(ok, chi2, jnp.where(n_good > 0, jnp.inf, 0.0))
    dof = n_good - p
    reduced = jnp.where(dof > 0, chi2_out / jnp.maximum(dof, 1), jnp.inf)
    cov = None
    if covariance:
        cov = _cholesky_solve(precision_at_z, jnp.eye(p, dtype=z.dtype))
        defined = jnp.all(jnp.isfinite(cov)) & (ok | (has_prior & (n_good == 0)))
        cov = jnp.where(defined, cov, jnp.diag(jnp.full(p, jnp.inf, z.dtype)))
    return LatentFit(
        jnp.where(ok, z, fallback), chi2_out, reduced, converged & ok, jnp.asarray(iterations, jnp.int32), cov
    )


def _fit_one_linear(y, ivar, z0, mean, precision, f0, jac, jac_tri, *, has_prior, covariance):
    """Exact normal-equation solve for one star (decoder ``f0 + jac @ z``), with one refinement step."""
    good = ivar > 0
    dy = jnp.where(good, y - f0, 0.0)
    z, gram = solvers.weighted_lstsq_one(dy, ivar, jnp.zeros_like(z0), jac, jac_tri, precision, precision @ mean)
    chi2 = jnp.sum(jnp.where(good, ivar, 0.0) * jnp.square(dy - jac @ z))
    fallback = mean if has_prior else z0
    return _finish(
        z, chi2, jnp.sum(good), jnp.array(True), 1, gram, fallback, has_prior=has_prior, covariance=covariance
    )


def _fit_one(
    params, y, ivar, z0, mean, precision, root, basis, *, decode, jacobian, method, options, has_prior, covariance
):
    """Iterative fit for one star."""
    args = (params, y, ivar, mean, root)
    res_fn = partial(_residual, decode=decode, basis=basis)
    jac_fn = None
    if jacobian is not None:
        jac_fn = partial(_residual_and_jacobian, jacobian=jacobian, basis=basis, prior=has_prior)
    if method == "lbfgs":
        objective = lambda z, *a: 0.5 * jnp.sum(jnp.square(res_fn(z, *a)))  # noqa: E731
        sol = solvers.minimize(
            objective,
            z0,
            *args,
            backend=options.backend,
            tol=options.tol,
            maxiter=options.maxiter,
            max_stepsize=options.max_stepsize,
        )
    else:
        sol = solvers.least_squares(
            res_fn,
            z0,
            *args,
            method=method,
            tol=options.tol,
            maxiter=options.maxiter,
            jacobian_fn=jac_fn,
            max_step=options.max_step,
        )
    return _summarise(
        params, y, ivar, z0, mean, precision, root, basis, sol.params, sol.converged, sol.iterations,
        decode=decode, jacobian=jacobian, has_prior=has_prior, covariance=covariance,
    )  # fmt: skip


def _summarise(
    params, y, ivar, z0, mean, precision, root, basis, z, converged, iterations, *, decode, jacobian, has_prior,
    covariance,
):  # fmt: skip
    """chi2, the covariance, the basis coefficients and the flags of one star's iterative solution ``z``."""
    args = (params, y, ivar, mean, root)
    res_fn = partial(_residual, decode=decode, basis=basis)
    n_out = y.shape[0]
    chi2 = jnp.sum(jnp.square(res_fn(z, *args)[:n_out]))
    hess = None
    if covariance:
        if jacobian is None:
            jac = jax.jacfwd(res_fn)(z, *args)[:n_out]
        else:
            jac = _residual_and_jacobian(z, *args, jacobian=jacobian, basis=basis, prior=has_prior)[1][:n_out]
        hess = jac.T @ jac + precision
    fallback = mean if has_prior else z0
    fit = _finish(
        z, chi2, jnp.sum(ivar > 0), converged, iterations, hess, fallback, has_prior=has_prior, covariance=covariance
    )
    if basis is None:
        return fit
    good = ivar > 0
    sw = jnp.sqrt(jnp.where(good, ivar, 0.0))
    c = _projection(sw, decode(params, fit.z), jnp.where(good, y, 0.0), basis)[2]
    dof = jnp.sum(good) - z.shape[0] - basis.shape[1]  # the coefficients are parameters too
    reduced = jnp.where(dof > 0, fit.chi2 / jnp.maximum(dof, 1), jnp.inf)
    return fit._replace(reduced_chi2=reduced, coefficients=jnp.where(jnp.all(jnp.isfinite(c)), c, 0.0))


def _star_params(params, ctx):
    """The decoder's first argument for one star: ``params``, or ``(params, ctx)`` with a per-star context."""
    return params if ctx is None else (params, ctx)


def _fit_pooled(
    params, y, ivar, z0, mean, precision, root, basis, ctx, *, decode, jacobian, options, has_prior, covariance
):  # fmt: skip
    """Dense Gauss-Newton of a chunk on ``options.slots`` refilling lanes (:func:`solvers.pooled_gauss_newton`)."""

    def res_fn(z, y, ivar, c, params, mean, root):
        return _residual(z, _star_params(params, c), y, ivar, mean, root, decode, basis)

    jac_fn = None
    if jacobian is not None:

        def jac_fn(z, y, ivar, c, params, mean, root):
            return _residual_and_jacobian(z, _star_params(params, c), y, ivar, mean, root, jacobian, basis, has_prior)

    z, iterations, err = solvers.pooled_gauss_newton(
        res_fn, z0, (y, ivar, ctx), (params, mean, root), slots=options.slots, tol=options.tol,
        maxiter=options.maxiter, jacobian_fn=jac_fn, max_step=options.max_step,
    )  # fmt: skip
    converged = (err <= options.tol) & jnp.all(jnp.isfinite(z), axis=1)
    one = partial(_summarise, decode=decode, jacobian=jacobian, has_prior=has_prior, covariance=covariance)
    rows = (y, ivar, z0, z, converged, iterations, ctx)  # in batches of the lanes' size: bounded memory
    return jax.lax.map(
        lambda r: one(_star_params(params, r[6]), *r[:3], mean, precision, root, basis, *r[3:6]), rows,
        batch_size=options.slots,
    )  # fmt: skip


@partial(jax.jit, static_argnames=("decode", "jacobian", "method", "options", "has_prior", "covariance"))
def fit_chunk(
    params, y, ivar, z0, mean, precision, root, basis, ctx=None, *, decode, jacobian, method, options, has_prior,
    covariance,
):  # fmt: skip
    """``vmap`` of the one-star fit over a chunk of stars ``(chunk, ...)``, in the dtype of ``z0``."""
    y, ivar = y.astype(z0.dtype), ivar.astype(z0.dtype)
    static = {"has_prior": has_prior, "covariance": covariance}
    if method == "linear":
        p = z0.shape[1]
        zero = jnp.zeros(p, y.dtype)
        f0 = decode(params, zero)
        jac = jax.jacfwd(decode, argnums=1)(params, zero)
        tri = np.triu_indices(p)
        jac_tri = jac[:, tri[0]] * jac[:, tri[1]]  # (n_out, P(P+1)/2): the Gram matrix is one matmul per chunk
        one = partial(_fit_one_linear, **static)
        return jax.vmap(one, in_axes=(0, 0, 0, None, None, None, None, None))(
            y, ivar, z0, mean, precision, f0, jac, jac_tri
        )
    if method == "dense_gauss_newton" and options.slots is not None and options.slots < y.shape[0]:
        return _fit_pooled(
            params, y, ivar, z0, mean, precision, root, basis, ctx, decode=decode, jacobian=jacobian,
            options=options, **static,
        )  # fmt: skip
    one = partial(_fit_one, decode=decode, jacobian=jacobian, method=method, options=options, **static)
    p_axes = None if ctx is None else (None, 0)
    return jax.vmap(one, in_axes=(p_axes, 0, 0, 0, None, None, None, None))(
        _star_params(params, ctx), y, ivar, z0, mean, precision, root, basis
    )
