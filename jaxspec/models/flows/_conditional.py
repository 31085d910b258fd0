r"""Spectra drawn from :math:`p(S \mid y)`: exactly (structured flows) or by HMC in the base space (joint flows).

**Structured flows** factor the density as :math:`p(y)\,p(S \mid y)`: a draw is
the spectrum flow's inverse of a standard normal draw with the context ``y``,
exact and in one pass.

**Joint flows** (the paper's) have no such factor.  Their conditional is
sampled by Hamiltonian Monte Carlo in the flow's base space, where the
trained flow makes the joint density nearly a standard normal.  The chains
target

.. math::

    \pi(z) \propto \mathcal N(z; 0, I)\,
    \exp\!\Big(-\frac{\lVert g_y(z) - u_y^\star \rVert^2}{2 \epsilon^2}\Big),

with :math:`g = f^{-1}` the flow's inverse, :math:`g_y` its label part (in
standardised units) and :math:`u_y^\star` the standardised labels conditioned
on.  The draws :math:`g_S(z)` then follow :math:`p(S \mid y)` with ``y``
known to :math:`\epsilon` (standardised units: ``MCMC.label_tolerance``
times each label's training spread), which tends to the exact conditional
as :math:`\epsilon \to 0`; for a Gaussian joint density it is the Gaussian
conditional on a label measured with error :math:`\epsilon` (the Schur
complement with :math:`\Sigma_{yy} + \epsilon^2 I`), which the tests check.
A small :math:`\epsilon` makes three directions of the base space stiff; the
step size adapts to them during warm-up.

Convergence: every chain starts from the base image of (the training mean
spectrum, ``y``) plus a standard normal jitter, and the split
:math:`\hat R` (Gelman et al. 2013, BDA3 Sec. 11.4) of every pixel over the
chains' post-warm-up draws is returned; its maximum over pixels above about
1.01 means the chains have not mixed (run longer or with more leapfrog steps).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxspec.data._checks import check_float, check_int, check_key
from jaxspec.data.containers import Labels
from jaxspec.models.flows._model import Model, joint_to_base, sample_standard, spectra_from_base, unstandardise
from jaxspec.models.flows._predict import check_model
from jaxspec.typing import Key

__all__ = ["MCMC", "ConditionalDraws", "sample_spectra", "split_r_hat"]


class MCMC(NamedTuple):
    """Settings of the joint flows' conditional sampler (module docstring).

    ``chains`` run in parallel (``vmap``); each takes ``warmup`` adaptation
    steps (step size by Robbins-Monro towards ``target_accept``) and then
    ``ceil(n_samples / chains)`` draws, every one a trajectory of ``leapfrog``
    steps.  ``label_tolerance``: :math:`\\epsilon` in units of each label's
    training spread.
    """

    chains: int = 16
    warmup: int = 300
    leapfrog: int = 16
    target_accept: float = 0.75
    label_tolerance: float = 0.05
    step_size: float = 0.05

    def checked(self) -> MCMC:
        check_int(self.chains, "mcmc.chains", minimum=2)
        check_int(self.warmup, "mcmc.warmup", minimum=1)
        check_int(self.leapfrog, "mcmc.leapfrog", minimum=1)
        check_float(self.target_accept, "mcmc.target_accept", low=0.0, open_low=True)
        if not self.target_accept < 1:
            raise ValueError(f"mcmc.target_accept: expected a value in (0, 1), found {self.target_accept!r}")
        check_float(self.label_tolerance, "mcmc.label_tolerance", low=0.0, open_low=True)
        check_float(self.step_size, "mcmc.step_size", low=0.0, open_low=True)
        return self


class ConditionalDraws(NamedTuple):
    """Draws of spectra given labels.

    ``spectra (n_labels, n_samples, L)`` flux; for the joint flows' sampler
    also ``r_hat (n_labels,)`` (the largest split R-hat over pixels),
    ``acceptance (n_labels,)`` (mean acceptance after warm-up) and
    ``step_size (n_labels,)``; None for exact draws.
    """

    spectra: np.ndarray
    r_hat: np.ndarray | None = None
    acceptance: np.ndarray | None = None
    step_size: np.ndarray | None = None


def split_r_hat(draws) -> np.ndarray:
    """Split :math:`\\hat R` of ``draws (chains, n, ...)`` per trailing entry (each chain's halves as two chains)."""
    draws = np.asarray(draws, np.float64)
    half = draws.shape[1] // 2
    if half < 2:
        raise ValueError(f"draws: expected at least 4 draws per chain, found {draws.shape[1]}")
    x = np.concatenate([draws[:, :half], draws[:, half : 2 * half]], axis=0)
    n = x.shape[1]
    means = x.mean(axis=1)
    between = n * means.var(axis=0, ddof=1)
    within = x.var(axis=1, ddof=1).mean(axis=0)
    var = (n - 1) / n * within + between / n
    return np.sqrt(var / np.where(within > 0, within, np.inf))


def _labels_array(model: Model, labels) -> np.ndarray:
    if isinstance(labels, Labels):
        if set(model.label_names) - set(labels.names):
            raise ValueError(f"labels: expected the model's labels {list(model.label_names)}, found {labels.names}")
        if not np.all(np.asarray(labels.select(model.label_names).ivar) > 0):
            raise ValueError("labels: expected every label of every star measured (ivar > 0)")
        return np.asarray(labels.select(model.label_names).values, np.float64)
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"labels: expected Labels or a real array (n, {model.n_labels}), found dtype {arr.dtype}")
    arr = np.atleast_2d(arr).astype(np.float64)
    if arr.ndim != 2 or arr.shape[1] != model.n_labels:
        raise ValueError(f"labels: expected shape (n, {model.n_labels}) in the order {model.label_names}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("labels: expected finite values")
    return arr


@functools.partial(jax.jit, static_argnums=3)
def _exact(model: Model, u_y, key, n: int):
    z = jax.random.normal(key, (n, model.n_pix), model.center.dtype)
    u_s = spectra_from_base(model, z, jnp.broadcast_to(u_y, (n, model.n_labels)))
    return unstandardise(model, jnp.concatenate([u_s, jnp.broadcast_to(u_y, (n, model.n_labels))], axis=-1))


def _hmc(model: Model, u_y, key, mcmc: MCMC, n_draws: int):
    """The chains for one condition: ``(u_S draws (chains, n_draws, L), acceptance, step size)``."""
    eps = mcmc.label_tolerance
    dtype = model.center.dtype

    def log_target(z):
        u = sample_standard(model, z)
        return -0.5 * jnp.sum(z * z) - 0.5 * jnp.sum(jnp.square((u[model.n_pix :] - u_y) / eps))

    grad = jax.value_and_grad(log_target)

    def trajectory(z, key, step):
        p0 = jax.random.normal(key, z.shape, dtype)
        lp0, g0 = grad(z)

        def leap(carry, _):
            z, p, g = carry
            p = p + 0.5 * step * g
            z = z + step * p
            lp, g = grad(z)
            p = p + 0.5 * step * g
            return (z, p, g), lp

        (z1, p1, _), lps = jax.lax.scan(leap, (z, p0, g0), None, length=mcmc.leapfrog)
        log_ratio = lps[-1] - lp0 - 0.5 * jnp.sum(p1 * p1) + 0.5 * jnp.sum(p0 * p0)
        accept = jnp.minimum(1.0, jnp.exp(jnp.where(jnp.isfinite(log_ratio), log_ratio, -jnp.inf)))
        take = jax.random.uniform(jax.random.fold_in(key, 1), (), dtype) < accept
        return jnp.where(take, z1, z), accept

    chains = jax.vmap(trajectory, in_axes=(0, 0, None))
    k_init, k_warm, k_draw = jax.random.split(key, 3)
    start = jnp.concatenate([jnp.zeros(model.n_pix, dtype), u_y])
    z0 = joint_to_base(model, start)[0] + jax.random.normal(k_init, (mcmc.chains, model.dim), dtype)

    def warm(carry, t):
        z, log_step = carry
        z, acc = chains(z, jax.random.split(jax.random.fold_in(k_warm, t), mcmc.chains), jnp.exp(log_step))
        rate = 1.0 / (t + 10.0) ** 0.6
        return (z, log_step + rate * (jnp.mean(acc) - mcmc.target_accept) * 4.0), log_step

    (z, _), trail = jax.lax.scan(
        warm, (z0, jnp.log(jnp.asarray(mcmc.step_size, dtype))), jnp.arange(mcmc.warmup, dtype=dtype)
    )
    step = jnp.exp(jnp.mean(trail[mcmc.warmup // 2 :]))

    def draw(z, t):
        z, acc = chains(z, jax.random.split(jax.random.fold_in(k_draw, t), mcmc.chains), step)
        return z, (sample_standard(model, z)[:, : model.n_pix], acc)

    _, (u_s, acc) = jax.lax.scan(draw, z, jnp.arange(n_draws))
    return jnp.swapaxes(u_s, 0, 1), jnp.mean(acc), step


_hmc_jit = jax.jit(_hmc, static_argnums=(3, 4))


def sample_spectra(
    model: Model,
    labels,
    key: Key,
    n_samples: int,
    *,
    mcmc: MCMC = MCMC(),  # noqa: B008 - immutable
    progress: bool = True,
) -> ConditionalDraws:
    r"""``n_samples`` spectra from :math:`p(S \mid y)` for each row of ``labels`` (module docstring).

    Parameters
    ----------
    model : flows.Model
    labels : Labels or array ``(n, M)``
        Physical units, the model's order for an array; every value measured.
    key : jax.random key
        Condition ``i`` draws from ``fold_in(key, i)``.
    n_samples : int
        Draws per condition (joint flows: rounded up to a multiple of ``mcmc.chains``).
    mcmc : MCMC
        The joint flows' sampler settings (unused by structured flows).
    progress : bool

    Returns
    -------
    ConditionalDraws
    """
    check_model(model)
    check_key(key)
    n_samples = check_int(n_samples, "n_samples", minimum=1)
    y = _labels_array(model, labels)
    center, spread = np.asarray(model.center, np.float64), np.asarray(model.spread, np.float64)
    u_y = ((y - center[model.n_pix :]) / spread[model.n_pix :]).astype(np.asarray(model.center).dtype)
    exact = model.config.kind == "structured"
    if not exact:
        if not isinstance(mcmc, MCMC):
            raise TypeError(f"mcmc: expected a flows.MCMC, found {type(mcmc).__name__}")
        mcmc = mcmc.checked()
        n_draws = math.ceil(n_samples / mcmc.chains)
        if n_draws < 4:
            raise ValueError(f"n_samples: expected at least {4 * mcmc.chains} (4 draws per chain), found {n_samples}")
    out, r_hat, acc, steps = [], [], [], []
    for i in tqdm(range(len(y)), disable=not progress, desc="p(S | y)", unit="condition"):
        k = jax.random.fold_in(key, i)
        if exact:
            out.append(np.asarray(_exact(model, u_y[i], k, n_samples))[:, : model.n_pix])
            continue
        u_s, a, s = _hmc_jit(model, jnp.asarray(u_y[i]), k, mcmc, n_draws)
        u_s = np.asarray(u_s, np.float64)
        r_hat.append(float(np.max(split_r_hat(u_s))))
        flux = center[: model.n_pix] + spread[: model.n_pix] * u_s.reshape(-1, model.n_pix)
        out.append(flux)
        acc.append(float(a))
        steps.append(float(s))
    spectra = np.stack(out)
    if exact:
        return ConditionalDraws(spectra)
    return ConditionalDraws(spectra, np.asarray(r_hat), np.asarray(acc), np.asarray(steps))
