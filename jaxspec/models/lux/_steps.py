r"""The block steps of Lux training, each exact (closed form) where the problem is linear.

Notation (one training set of ``N`` stars): standardised labels
:math:`\ell` ``(N, M)`` with weights :math:`w^\ell` (inverse variances, 0 =
missing), fluxes :math:`f` ``(N, L)`` with inverse variances :math:`w^f`,
latents :math:`z` ``(N, P)``, transforms :math:`A` ``(M, P)`` and :math:`B`
``(L, P)``, per-pixel log scatter :math:`\ln s` ``(L,)``.  The objective
(negative log-likelihood up to constants, plus the L2 penalty) is

.. math::

    g = \tfrac12 \sum_{n,m} w^\ell_{nm} (\ell_{nm} - A_m z_n)^2
      + \tfrac12 \sum_{n,\lambda} \Bigl[\frac{(f_{n\lambda} - B_\lambda z_n)^2}{\sigma^2_{n\lambda} + s^2_\lambda}
        + \ln(\sigma^2_{n\lambda} + s^2_\lambda)\Bigr]
      + \Omega \sum_{n,p} z_{np}^2 ,

the sum over measured pixels only.  At fixed :math:`s` each of the A-, B- and
z-steps is a weighted linear least-squares problem, solved exactly by
:func:`jaxspec.optim.solvers.weighted_lstsq` from the current values (so
directions the data leave unconstrained keep their current value, as the
paper's Gauss-Newton solver started there would).  The scatter step is
separable over pixels: :func:`jaxspec.optim.scatter.scatter_step`, a
vectorised Fisher-scoring iteration on :math:`u_\lambda = \ln s^2_\lambda`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxspec.optim.latents import PRECISION_PER_OMEGA
from jaxspec.optim.scatter import flux_weights, scatter_step
from jaxspec.optim.solvers import weighted_lstsq

__all__ = ["a_step", "b_step", "flux_weights", "objective", "scatter_step", "z_step"]


def a_step(a, z, labels, label_w, *, batch_size=None):
    """Transform rows (one per output) at fixed latents: ``a`` ``(n_out, P)`` from ``labels`` ``(N, n_out)``."""
    return weighted_lstsq(z, labels.T, label_w.T, a, batch_size=batch_size)[0]


def b_step(b, z, flux, flux_w, *, batch_size=None):
    """The same solve for the flux transform (one problem per pixel)."""
    return a_step(b, z, flux, flux_w, batch_size=batch_size)


def z_step(z, a, b, labels, label_w, flux, flux_w, omega, *, batch_size=None):
    """Latents at fixed transforms from labels and fluxes together, with penalty :math:`\\Omega\\lVert z\\rVert^2`."""
    p = z.shape[1]
    design = jnp.concatenate([a, b])
    y = jnp.concatenate([labels, flux], axis=1)
    w = jnp.concatenate([label_w, flux_w], axis=1)
    precision = PRECISION_PER_OMEGA * omega * jnp.eye(p, dtype=z.dtype)
    return weighted_lstsq(design, y, w, z, precision=precision, batch_size=batch_size)[0]


@jax.jit
def objective(a, b, ln_s, z, labels, label_w, flux, ivar, omega):
    """The terms of :math:`g`: label chi2, flux chi2 (with scatter), flux log-variance term and penalty."""
    label_chi2 = jnp.sum(label_w * jnp.square(labels - z @ a.T))
    w = flux_weights(ivar, ln_s)
    good = ivar > 0
    flux_chi2 = jnp.sum(w * jnp.square(flux - z @ b.T))
    log_var = jnp.sum(jnp.where(good, -jnp.log(jnp.where(good, w, 1.0)), 0.0))
    penalty = omega * jnp.sum(jnp.square(z))
    return {"label_chi2": label_chi2, "flux_chi2": flux_chi2, "flux_log_var": log_var, "penalty": penalty}
