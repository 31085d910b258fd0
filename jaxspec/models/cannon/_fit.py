"""Training the Cannon: the exact theta step and the maximum-likelihood scatter step, alternated."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxspec.data._checks import check_key
from jaxspec.data.containers import Spectra
from jaxspec.data.preprocess import fit_standardizer
from jaxspec.models._common import FitResult, on_device
from jaxspec.models.cannon._data import label_values, spectra_arrays
from jaxspec.models.cannon._model import Config, Model, n_terms
from jaxspec.models.cannon._predict import design
from jaxspec.optim.scatter import scatter_step
from jaxspec.optim.solvers import weighted_lstsq

__all__ = ["fit"]


@jax.jit
def _theta_step(theta, scatter, dsg, flux, ivar):
    """Exact weighted least squares per pixel at fixed scatter (weights :math:`1/(\\sigma^2 + s^2)`)."""
    w = ivar / (1.0 + ivar * jnp.square(scatter))
    return weighted_lstsq(dsg, flux.T, w.T, theta)[0]


@jax.jit
def _scatter_step(theta, scatter, dsg, flux, ivar):
    """Maximum-likelihood scatter per pixel at fixed theta, in units of the pixel's residual rms.

    The shared Fisher-scoring step keeps :math:`\\ln s` in a fixed window, so
    each pixel is first divided by its residual rms ``c``: the window then
    means :math:`e^{-12} c \\le s \\le e^3 c` whatever the flux units.
    """
    good = ivar > 0
    r2 = jnp.where(good, jnp.square(flux - dsg @ theta.T), 0.0)
    c = jnp.sqrt(jnp.sum(r2, axis=0) / jnp.maximum(jnp.sum(good, axis=0), 1))
    c = jnp.where(c > 0, c, 1.0)
    ln_s0 = jnp.log(jnp.maximum(scatter / c, 1e-30))
    ln_s = scatter_step(ln_s0, theta / c[:, None], dsg, flux / c, ivar * jnp.square(c))
    return c * jnp.exp(ln_s)


@jax.jit
def _objective(theta, scatter, dsg, flux, ivar):
    """:math:`g(\\theta, s)` over measured pixels (see the module docstring)."""
    good = ivar > 0
    var = jnp.where(good, 1.0 / jnp.where(good, ivar, 1.0) + jnp.square(scatter), 1.0)
    r2 = jnp.square(flux - dsg @ theta.T)
    return 0.5 * jnp.sum(jnp.where(good, r2 / var + jnp.log(var), 0.0))


def fit(spectra, labels, *, key=None, config: Config = Config(), progress: bool = True) -> FitResult:  # noqa: B008
    """Train a Cannon: exact per-pixel :math:`\\theta` and maximum-likelihood scatter, alternated.

    Parameters
    ----------
    spectra : Spectra or (flux, ivar)
        Arrays ``(N, D)``; ``ivar == 0`` marks a masked pixel (zero weight;
        its flux is never read, NaN allowed there).
    labels : Labels or array ``(N, M)``
        Physical units.  A star with any missing label (Labels ``ivar == 0``,
        NaN in an array) or no measured pixel is left out of training.
    key : jax.random key, optional
        Not used: the fit is deterministic (accepted so every family's ``fit``
        has one shape).
    config : Config
        Iterations and tolerance.
    progress : bool
        Show a progress bar over iterations.

    Returns
    -------
    FitResult
        ``model``; ``history["objective"]``: :math:`g` after the zero-scatter
        solve, then after each iteration; ``converged``: the tolerance was met;
        ``aux["n_used"]``: the training stars used.

    Raises
    ------
    TypeError, ValueError
        Wrong types or shapes, bad ivar, non-finite measured flux, an
        infinite label, fewer usable stars than ``Q``, a bad config or key.
    """
    if not isinstance(config, Config):
        raise TypeError(f"config: expected a cannon.Config, found {type(config).__name__}")
    if key is not None:
        check_key(key)
    values, names = label_values(labels)
    flux, ivar = spectra_arrays(spectra)
    if values.shape[0] != flux.shape[0]:
        raise ValueError(f"labels: expected {flux.shape[0]} stars (as spectra), found {values.shape[0]}")
    used = np.all(np.isfinite(values), axis=1) & np.any(ivar > 0, axis=1)
    q = n_terms(values.shape[1])
    if used.sum() < q:
        raise ValueError(
            f"labels: expected at least Q = {q} training stars with every label and a pixel measured "
            f"({values.shape[1]} labels), found {int(used.sum())}"
        )
    std = fit_standardizer(values[used], method="percentile")
    dsg = design(tuple(std), values[used])
    flux, ivar = jnp.asarray(flux[used]), jnp.asarray(ivar[used])
    n_good = float(jnp.sum(ivar > 0))
    scatter = jnp.zeros(flux.shape[1], flux.dtype)
    theta = _theta_step(jnp.zeros((flux.shape[1], q), flux.dtype), scatter, dsg, flux, ivar)
    history, converged = [float(_objective(theta, scatter, dsg, flux, ivar))], False
    bar = tqdm(range(config.n_iter), disable=not progress, desc="cannon fit", unit="iter")
    for _ in bar:
        scatter = _scatter_step(theta, scatter, dsg, flux, ivar)
        theta = _theta_step(theta, scatter, dsg, flux, ivar)
        history.append(float(_objective(theta, scatter, dsg, flux, ivar)))
        bar.set_postfix(objective=history[-1])
        if abs(history[-1] - history[-2]) <= config.tol * n_good:
            converged = True
            break
    bar.close()
    wave = spectra.wavelength if isinstance(spectra, Spectra) else None
    model = Model(theta, scatter, jnp.asarray(std.center), jnp.asarray(std.scale), tuple(names), config, wave)
    return FitResult(on_device(model), {"objective": np.asarray(history)}, converged, {"n_used": int(used.sum())})
