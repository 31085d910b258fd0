r"""``fit_latents``: per-star latent (or label) optimisation, vmapped, chunked, sharded.

For a decoder :math:`f_\theta(z)` mapping ``P`` latents to ``n_out`` outputs
(pixels, label values), each star's latents minimise

.. math::

    L(z) = \tfrac12 \sum_{i=1}^{n_\mathrm{out}} w_i \bigl(y_i - f_\theta(z)_i\bigr)^2
           + \tfrac12 (z - \mu)^\top \Lambda (z - \mu),

with ``w = ivar`` (0 = masked) and a Gaussian prior of mean :math:`\mu` and
precision :math:`\Lambda`; no prior is :math:`\Lambda = 0`.

**The L2 penalty, one convention for the engine and every family.** A
penalty of strength :math:`\Omega` adds :math:`\Omega\lVert z\rVert^2` to the
negative log-likelihood :math:`\tfrac12\chi^2`, as in the Lux paper's
objective (Horta et al. 2025, Eqs. 7-8: :math:`g = -\ln\mathcal L + \Omega
\sum_p z_p^2`); it is the Gaussian prior :math:`\mu = 0`,
:math:`\Lambda = 2\Omega I` (:data:`PRECISION_PER_OMEGA`), built by
:meth:`GaussianPrior.l2`.

The objective is written for one star and ``jax.vmap``-ed once.  Stars are
processed in chunks of a fixed shape (the last chunk padded with
:func:`jaxspec.optim.sharding.pad_rows`), so memory stays bounded and the chunk
function compiles once; each chunk is split over the ``"data"`` axis of a
device mesh (a no-op on one device).

Methods
-------
``"linear"``
    The decoder is affine in ``z`` (declared by the caller, not detected):
    :math:`f(z) = f(0) + J z`.  The normal equations
    :math:`(J^\top W J + \Lambda) z = J^\top W (y - f(0)) + \Lambda\mu` are
    solved by Cholesky after Jacobi scaling (unit diagonal) with a small
    jitter, never by an explicit inverse, plus one step of iterative
    refinement on the directly computed residual, so float32 stays accurate
    (:func:`jaxspec.optim.solvers.weighted_lstsq`).
``"gauss_newton"``, ``"levenberg_marquardt"``, ``"dense_gauss_newton"``
    Nonlinear least squares on the whitened residuals (see
    :func:`jaxspec.optim.solvers.least_squares`); the dense Gauss-Newton
    (``jacfwd`` Jacobian, Cholesky, adaptive damping) is the fastest for a
    few latents and many pixels.
``"lbfgs"``
    L-BFGS on :math:`L(z)` (:func:`jaxspec.optim.solvers.minimize`), backend
    ``"jaxopt"`` or ``"optax"`` from :class:`FitOptions`.

Differentiation with respect to ``params`` (and the data): the linear solve is
differentiated directly (it is a Cholesky solve); the iterative methods use
**implicit differentiation** at the solution (jaxopt's ``custom_root``), not
unrolled iterations.  A ``decode`` function is a static argument of the
compiled chunk function: pass the same function object on every call to
avoid recompiling.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxspec.data.containers import Labels, Spectra, default_float
from jaxspec.optim import sharding, solvers
from jaxspec.optim.chunks import map_chunks

__all__ = ["METHODS", "PRECISION_PER_OMEGA", "FitOptions", "GaussianPrior", "LatentFit", "fit_latents"]

METHODS = ("linear", "gauss_newton", "levenberg_marquardt", "dense_gauss_newton", "lbfgs")

#: The L2 penalty :math:`\Omega\lVert z\rVert^2` beside :math:`\tfrac12\chi^2` is the precision :math:`2\Omega I`.
PRECISION_PER_OMEGA = 2.0


class GaussianPrior(NamedTuple):
    r"""Gaussian prior on one star's latents: :math:`z \sim \mathcal N(\mu, \Lambda^{-1})`.

    Attributes
    ----------
    mean : array, shape ``(P,)``
        Prior mean :math:`\mu`.
    precision : array, shape ``(P, P)``
        Symmetric positive semi-definite precision :math:`\Lambda`.
    """

    mean: Any
    precision: Any

    @classmethod
    def l2(cls, omega: float, n_latents: int) -> GaussianPrior:
        r"""The L2 penalty :math:`\Omega\lVert z\rVert^2` (Lux paper Eq. 7): mean 0, precision :math:`2\Omega I`.

        Examples
        --------
        >>> GaussianPrior.l2(3.0, 2).precision.tolist()
        [[6.0, 0.0], [0.0, 6.0]]
        """
        if isinstance(omega, bool) or not isinstance(omega, int | float | np.integer | np.floating) or not omega >= 0:
            raise ValueError(f"omega: expected a number >= 0, found {omega!r}")
        return cls(np.zeros(n_latents), PRECISION_PER_OMEGA * float(omega) * np.eye(n_latents))


class FitOptions(NamedTuple):
    """Solver options for :func:`fit_latents`.

    Attributes
    ----------
    tol : float
        Stopping tolerance of the iterative methods (Gauss-Newton: step norm;
        Levenberg-Marquardt and L-BFGS: gradient norm).
    maxiter : int
        Iteration cap per star.
    chunk_size : int
        Stars per compiled chunk (rounded up to a multiple of the device count).
    backend : {"jaxopt", "optax"}
        L-BFGS implementation for ``method="lbfgs"``.
    max_stepsize : float
        Largest L-BFGS line-search step.
    slots : int or None
        ``method="dense_gauss_newton"`` only: solve each chunk on this many
        lanes that take the next star as soon as theirs has finished
        (:func:`jaxspec.optim.solvers.pooled_gauss_newton`), instead of one
        ``vmap`` whose every star waits for the chunk's slowest.  Each star
        gets the same iterates; the fit is then not differentiable.  None
        (default): the ``vmap``, with implicit derivatives.
    max_step : float or None
        ``method="dense_gauss_newton"`` only: the longest step (2-norm in
        ``z``) the Gauss-Newton takes, a trust radius
        (:func:`jaxspec.optim.solvers.least_squares`).  None (default): no cap.
    """

    tol: float = 1e-6
    maxiter: int = 100
    chunk_size: int = 1024
    backend: str = "jaxopt"
    max_stepsize: float = 1e3
    slots: int | None = None
    max_step: float | None = None


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
def _fit_chunk(
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


# -- validation ------------------------------------------------------------------


def _split_data(data) -> tuple[Any, Any]:
    if isinstance(data, Spectra):
        return data.flux, data.ivar
    if isinstance(data, Labels):
        return data.values, data.ivar
    if isinstance(data, tuple | list) and len(data) == 2:
        return data[0], data[1]
    raise TypeError(f"data: expected Spectra, Labels or a (y, ivar) pair of arrays, found {type(data).__name__}")


def _check_data(y, ivar) -> tuple[np.ndarray, np.ndarray]:
    y, ivar = np.asarray(y), np.asarray(ivar)
    if y.ndim != 2 or ivar.shape != y.shape:
        raise ValueError(f"data: expected y and ivar of one shape (n_stars, n_out), found {y.shape} and {ivar.shape}")
    if y.shape[0] == 0 or y.shape[1] == 0:
        raise ValueError(f"data: expected at least one star and one output, found shape {y.shape}")
    if np.any(~(ivar >= 0)) or np.any(np.isposinf(ivar)):
        raise ValueError("data: expected ivar finite and >= 0 (0 = masked), found a negative, NaN or inf value")
    if not np.all(np.isfinite(y) | (ivar == 0)):
        raise ValueError("data: expected finite y wherever ivar > 0, found NaN or inf")
    return y, ivar


def _check_prior(prior, p: int, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if prior is None:
        zeros = np.zeros((p, p), dtype)
        return np.zeros(p, dtype), zeros, zeros
    if not isinstance(prior, GaussianPrior):
        raise TypeError(f"prior: expected a GaussianPrior or None, found {type(prior).__name__}")
    mean, prec = np.asarray(prior.mean, np.float64), np.asarray(prior.precision, np.float64)
    if mean.shape != (p,) or prec.shape != (p, p):
        raise ValueError(f"prior: expected mean ({p},) and precision ({p}, {p}), found {mean.shape} and {prec.shape}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(prec))):
        raise ValueError("prior: expected finite mean and precision")
    if not np.allclose(prec, prec.T, rtol=1e-6, atol=1e-12 * max(np.abs(prec).max(), 1.0)):
        raise ValueError("prior: expected a symmetric precision matrix")
    evals, evecs = np.linalg.eigh(0.5 * (prec + prec.T))
    if evals.min() < -1e-8 * max(evals.max(), 1.0):
        raise ValueError(f"prior: expected a positive semi-definite precision, found eigenvalue {evals.min():.3g}")
    root = (evecs * np.sqrt(np.clip(evals, 0.0, None))) @ evecs.T  # symmetric square root
    return mean.astype(dtype), prec.astype(dtype), root.astype(dtype)


def _check_options(method: str, options: FitOptions) -> None:
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, found {method!r}")
    if not isinstance(options, FitOptions):
        raise TypeError(f"options: expected FitOptions, found {type(options).__name__}")
    if not isinstance(options.chunk_size, int) or options.chunk_size < 1:
        raise ValueError(f"options.chunk_size: expected an int >= 1, found {options.chunk_size!r}")
    if options.backend not in solvers.MINIMIZE_BACKENDS:
        raise ValueError(f"options.backend: expected one of {solvers.MINIMIZE_BACKENDS}, found {options.backend!r}")
    if not options.tol > 0:
        raise ValueError(f"options.tol: expected a positive tolerance, found {options.tol!r}")
    if isinstance(options.maxiter, bool) or not isinstance(options.maxiter, int) or options.maxiter < 1:
        raise ValueError(f"options.maxiter: expected an int >= 1, found {options.maxiter!r}")
    if options.slots is not None:
        if isinstance(options.slots, bool) or not isinstance(options.slots, int) or options.slots < 1:
            raise ValueError(f"options.slots: expected None or an int >= 1, found {options.slots!r}")
        if method != "dense_gauss_newton":
            raise ValueError(f"options.slots: only method='dense_gauss_newton' has slots, found method={method!r}")
    if options.max_step is not None:
        step = options.max_step
        if isinstance(step, bool) or not isinstance(step, int | float) or not step > 0:
            raise ValueError(f"options.max_step: expected None or a positive number, found {options.max_step!r}")
        if method != "dense_gauss_newton":
            raise ValueError(f"options.max_step: only method='dense_gauss_newton' takes one, found method={method!r}")


# -- many stars ------------------------------------------------------------------


def fit_latents(
    decode: Callable,
    params,
    data,
    z0,
    *,
    prior: GaussianPrior | None = None,
    method: str = "gauss_newton",
    options: FitOptions = FitOptions(),  # noqa: B008 - an immutable NamedTuple
    covariance: bool = False,
    mesh: Mesh | None = None,
    progress: bool = True,
    jacobian: Callable | None = None,
    scale_basis=None,
    context=None,
) -> LatentFit:
    r"""Fit each star's latents ``z`` to its data through a decoder (see the module docstring for the equation).

    Parameters
    ----------
    decode : callable
        ``decode(params, z) -> f``: one star's ``z`` of shape ``(P,)`` to its
        prediction of shape ``(n_out,)`` (same units as the data).  Static for
        compilation: reuse the same function object between calls.
    params : pytree
        Decoder parameters (shared by all stars); differentiable.
    data : Spectra, Labels or (y, ivar)
        Observations and inverse variances, ``(n_stars, n_out)``; ``ivar >= 0``,
        0 = masked.
    z0 : array ``(P,)`` or ``(n_stars, P)``
        Starting latents (ignored by ``"linear"`` except as the fallback
        without a prior).
    prior : GaussianPrior, optional
        Gaussian prior on ``z`` (``GaussianPrior.l2(omega, P)`` for the L2
        penalty :math:`\Omega\lVert z\rVert^2`); default none.
    method : {"linear", "gauss_newton", "levenberg_marquardt", "dense_gauss_newton", "lbfgs"}
        ``"linear"`` requires a decoder affine in ``z`` (declared, not checked).
    options : FitOptions
        Tolerance, iteration cap, chunk size, L-BFGS backend and step size.
    covariance : bool
        Also return the Laplace covariance :math:`(J^\top W J + \Lambda)^{-1}`.
    mesh : jax.sharding.Mesh, optional
        Mesh whose ``"data"`` axis splits the stars (default
        :func:`jaxspec.optim.sharding.data_mesh`, all devices).
    progress : bool
        Show a progress bar over chunks.
    jacobian : callable, optional
        ``jacobian(params, z) -> (f, J)``: the decoder's output and its
        Jacobian :math:`\partial f / \partial z` ``(n_out, P)`` in closed
        form, for ``method="dense_gauss_newton"`` (a ``ValueError`` with any
        other method): it replaces ``jax.jacfwd(decode)`` in every iteration
        and in the covariance, where a hand-written Jacobian is much cheaper
        (:mod:`jaxspec.models.payne`'s fitter).  It must agree with
        ``decode``, which still gives the implicit derivatives.  Static, like
        ``decode``.
    scale_basis : array ``(n_out, K)``, optional
        Multiply each star's prediction by :math:`B c`, a combination of
        these columns with coefficients :math:`c` of its own (a continuum
        polynomial per detector chip, say), eliminated in closed form inside
        the objective (variable projection: for each ``z``, :math:`c` is the
        weighted least-squares best fit).  Iterative methods only; the
        coefficients come back in ``LatentFit.coefficients``.
    context : pytree of arrays ``(n_stars, ...)``, optional
        Per-star constants of the decoder (held fixed, not fitted): ``decode``
        (and ``jacobian``) then get ``(params, context_of_the_star)`` in place
        of ``params``, e.g. an observed star's own latent vector that a
        transfer network needs beside the fitted labels.  Iterative methods
        only.

    Returns
    -------
    LatentFit
        ``z``, ``chi2``, ``reduced_chi2``, ``converged``, ``iterations`` and
        optionally ``covariance``.

    Raises
    ------
    TypeError, ValueError
        For an unknown ``method``/``options``, ``data`` of the wrong type or
        with negative/non-finite ``ivar``, a decoder output whose shape does
        not match ``data``, a non-finite ``z0`` or an invalid ``prior``.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    >>> decode = lambda A, z: A @ z
    >>> y = np.array([[1.0, 2.0, 2.0]])
    >>> fit = fit_latents(decode, A, (y, np.ones_like(y)), np.zeros(2), method="linear", progress=False)
    >>> np.round(np.asarray(fit.z), 4).tolist(), bool(fit.converged[0])
    ([[1.0, 1.0]], True)
    """
    _check_options(method, options)
    y, ivar = _check_data(*_split_data(data))
    n, n_out = y.shape
    dtype = default_float()
    z0 = np.asarray(z0, dtype=dtype)
    if z0.ndim == 1:
        z0 = np.broadcast_to(z0, (n, z0.shape[0]))
    if z0.ndim != 2 or z0.shape[0] != n or z0.shape[1] == 0:
        raise ValueError(f"z0: expected shape (P,) or ({n}, P) with P >= 1, found {np.shape(z0)}")
    if not np.all(np.isfinite(z0)):
        raise ValueError("z0: expected finite starting latents, found NaN or inf")
    p = z0.shape[1]
    decode_args = params
    if context is not None:
        if method == "linear":
            raise ValueError("context: the 'linear' method takes none (the decoder is shared by every star)")
        leaves = jax.tree_util.tree_leaves(context)
        if not leaves or any(np.ndim(a) == 0 or np.shape(a)[0] != n for a in leaves):
            shapes = [np.shape(a) for a in leaves]
            raise ValueError(f"context: expected arrays with a leading axis of {n} (one row per star), found {shapes}")
        decode_args = (
            params,
            jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], a.dtype), context),
        )
    try:
        out = jax.eval_shape(decode, decode_args, jax.ShapeDtypeStruct((p,), dtype))
    except Exception as exc:
        raise ValueError(f"decode: failed on latents of shape ({p},) (from z0): {exc}") from exc
    if not hasattr(out, "shape") or tuple(out.shape) != (n_out,):
        raise ValueError(
            f"decode: expected an output of shape ({n_out},) per star to match data, found {getattr(out, 'shape', out)}"
        )
    mean, precision, root = _check_prior(prior, p, dtype)
    basis = None
    if scale_basis is not None:
        if method == "linear":
            raise ValueError("scale_basis: the 'linear' method takes none (the model is then not linear in z)")
        basis = np.asarray(scale_basis, dtype)
        if basis.ndim != 2 or basis.shape[0] != n_out or basis.shape[1] == 0 or not np.all(np.isfinite(basis)):
            raise ValueError(
                f"scale_basis: expected a finite array of shape ({n_out}, K), K >= 1, found {np.shape(scale_basis)}"
            )
    if jacobian is not None:
        if method != "dense_gauss_newton":
            raise ValueError(f"jacobian: only method='dense_gauss_newton' takes one, found method={method!r}")
        try:
            f_jac = jax.eval_shape(jacobian, decode_args, jax.ShapeDtypeStruct((p,), dtype))
        except Exception as exc:
            raise ValueError(f"jacobian: failed on latents of shape ({p},) (from z0): {exc}") from exc
        shapes = tuple(getattr(x, "shape", None) for x in f_jac) if isinstance(f_jac, tuple) else None
        if shapes != ((n_out,), (n_out, p)):
            raise ValueError(f"jacobian: expected (f, J) of shapes ({n_out},) and ({n_out}, {p}), found {shapes}")

    mesh = sharding.data_mesh() if mesh is None else mesh
    static = {
        "decode": decode,
        "jacobian": jacobian,
        "method": method,
        "options": options,
        "has_prior": prior is not None,
    }

    def one_chunk(rows):
        y, ivar, z0, ctx = rows
        return _fit_chunk(params, y, ivar, z0, mean, precision, root, basis, ctx, covariance=covariance, **static)

    return map_chunks(
        one_chunk,
        (y, ivar, z0, context),
        chunk_size=options.chunk_size,
        mesh=mesh,
        progress=progress,
        desc="fit_latents",
    )
