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
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh

from jaxspec.data.containers import Labels, Spectra, default_float
from jaxspec.optim import sharding, solvers
from jaxspec.optim._latent_star import LatentFit, fit_chunk
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
        return fit_chunk(params, y, ivar, z0, mean, precision, root, basis, ctx, covariance=covariance, **static)

    return map_chunks(
        one_chunk,
        (y, ivar, z0, context),
        chunk_size=options.chunk_size,
        mesh=mesh,
        progress=progress,
        desc="fit_latents",
    )
