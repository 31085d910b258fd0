r"""Per-pixel intrinsic scatter: effective weights and the maximum-likelihood scatter step.

A model with per-pixel scatter :math:`s_\lambda` says a measured flux is
:math:`f \sim \mathcal N(\hat f, \sigma^2 + s^2)`, so each pixel enters a fit
with the effective inverse variance :math:`1/(\sigma^2 + s^2)`
(:func:`flux_weights`), and at fixed residuals the scatter is the
maximum-likelihood solution of a one-parameter problem per pixel
(:func:`scatter_step`).  Lux and the Cannon both use these.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["LN_S_MAX", "LN_S_MIN", "flux_weights", "flux_weights_np", "scatter_step"]

#: Window of :math:`\ln s` kept by :func:`scatter_step`: :math:`e^{-12} \approx 6\times10^{-6}` (far below any
#: flux error, i.e. no scatter) to :math:`e^{3} \approx 20` (far above any continuum-normalised flux).
LN_S_MIN, LN_S_MAX = -12.0, 3.0
_MAX_STEP = 3.0  # largest Fisher-scoring step in u = ln s^2 (a factor e^1.5 in s): damps the first iterations


def flux_weights(ivar: jax.Array, ln_s: jax.Array) -> jax.Array:
    r"""Effective inverse variance :math:`1/(\sigma^2 + s^2) = w/(1 + w s^2)` ``(..., L)``; 0 stays 0."""
    return ivar / (1.0 + ivar * jnp.exp(2.0 * ln_s))


def flux_weights_np(ivar: np.ndarray, ln_s) -> np.ndarray:
    r""":func:`flux_weights` for host arrays, written into one new array (no temporaries of the data's size)."""
    s2 = np.exp(2.0 * np.asarray(ln_s, np.float64)).astype(ivar.dtype)
    w = np.multiply(ivar, s2)
    w += 1.0
    return np.divide(ivar, w, out=w)


@partial(jax.jit, static_argnames=("maxiter",))
def scatter_step(ln_s, b, z, flux, ivar, *, maxiter: int = 40, tol: float = 1e-4):
    r"""Per-pixel scatter at fixed ``b``, ``z``: maximum likelihood of :math:`\mathcal N(f | Bz, \sigma^2 + s^2)`.

    Fisher scoring on :math:`u = \ln s^2` (gradient
    :math:`\tfrac12\sum_n s^2 (1/v_n - r_n^2/v_n^2)`, expected Hessian
    :math:`\tfrac12 \sum_n s^4/v_n^2`, :math:`v_n = \sigma_n^2 + s^2`), steps
    clipped to 3 in :math:`u` and :math:`\ln s` kept in
    [:data:`LN_S_MIN`, :data:`LN_S_MAX`]; a pixel with no measured star keeps
    its value.  Stops when every pixel's step is below ``tol`` or after
    ``maxiter`` iterations.

    Parameters
    ----------
    ln_s : array ``(L,)``
        Starting log scatter.
    b : array ``(L, P)``; z : array ``(N, P)``
        The model flux is ``z @ b.T``.
    flux, ivar : arrays ``(N, L)``
        ``ivar == 0``: masked.

    Returns
    -------
    array ``(L,)``
        :math:`\ln s`.
    """
    good = ivar > 0
    r2 = jnp.where(good, jnp.square(flux - z @ b.T), 0.0)
    var = jnp.where(good, 1.0 / jnp.where(good, ivar, 1.0), 0.0)

    def body(carry):
        u, _, it = carry
        s2 = jnp.exp(u)
        inv_v = jnp.where(good, 1.0 / (var + s2), 0.0)
        grad = 0.5 * s2 * jnp.sum(inv_v - r2 * inv_v**2, axis=0)
        fisher = 0.5 * s2**2 * jnp.sum(inv_v**2, axis=0)
        step = jnp.clip(-grad / jnp.maximum(fisher, jnp.finfo(u.dtype).tiny), -_MAX_STEP, _MAX_STEP)
        step = jnp.where(fisher > 0, step, 0.0)
        u_new = jnp.clip(u + step, 2 * LN_S_MIN, 2 * LN_S_MAX)
        return u_new, jnp.max(jnp.abs(u_new - u)), it + 1

    def cond(carry):
        return (carry[1] > tol) & (carry[2] < maxiter)

    u0 = 2.0 * jnp.clip(ln_s, LN_S_MIN, LN_S_MAX)
    u, _, _ = jax.lax.while_loop(cond, body, (u0, jnp.array(jnp.inf, u0.dtype), 0))
    return 0.5 * u
