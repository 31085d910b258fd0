"""Training the Cannon: the exact theta step and the maximum-likelihood scatter step, alternated."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxspec.data._checks import check_key
from jaxspec.data.containers import Spectra
from jaxspec.data.preprocess import fit_standardizer
from jaxspec.models._common import FitResult, check_label_columns, check_measured, on_device
from jaxspec.models.cannon._data import label_values, spectra_arrays
from jaxspec.models.cannon._model import Config, Model, n_terms
from jaxspec.models.cannon._predict import design
from jaxspec.optim._units import check_finite_fit, flux_scale, in_unit, power_of_two, rescaled
from jaxspec.optim.scatter import LN_S_MAX, scatter_step
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
        its flux is never read, NaN allowed there).  A pixel measured in no
        training star gets ``theta = 0`` and a scatter of ``e**3`` times the
        flux rms: the model claims nothing there.  Any flux unit: the fit
        runs on ``flux / u`` and ``ivar u**2``, ``u`` the power of two nearest
        the median measured ``|flux|``, and scales ``theta`` and the scatter
        back (exactly), so data times a constant fit the same up to it.
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
        Wrong types or shapes, zero stars, bad ivar, no measured pixel at
        all, non-finite measured flux, an infinite label, a label measured for
        no star, fewer usable stars than ``Q``, a bad config or key; an ivar
        beyond the float range, or a fit that would leave it (the message
        names the flux scale).
    """
    if not isinstance(config, Config):
        raise TypeError(f"config: expected a cannon.Config, found {type(config).__name__}")
    if key is not None:
        check_key(key)
    with np.errstate(over="ignore"):  # an ivar beyond float32 becomes inf here: refused below, naming the scale
        flux, ivar = spectra_arrays(spectra)
    values, names = label_values(labels)
    if values.shape[0] != flux.shape[0]:
        raise ValueError(f"labels: expected {flux.shape[0]} stars (as spectra), found {values.shape[0]}")
    check_measured(ivar, "spectra")
    check_label_columns(np.isfinite(values), names)
    used = np.all(np.isfinite(values), axis=1) & np.any(ivar > 0, axis=1)
    q = n_terms(values.shape[1])
    if used.sum() < q:
        raise ValueError(
            f"labels: expected at least Q = {q} training stars with every label and a pixel measured "
            f"({values.shape[1]} labels), found {int(used.sum())}"
        )
    std = fit_standardizer(values[used], method="percentile")
    dsg = design(tuple(std), values[used])
    # the fit runs on flux / unit, where float32 holds ivar * flux**2 summed over stars; theta and scatter scale back
    unit = power_of_two(flux_scale(flux[used], ivar[used]))
    flux, ivar = (jnp.asarray(a) for a in rescaled(flux[used], ivar[used], unit, "spectra"))
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
    check_finite_fit(unit, "spectra", theta=theta, scatter=scatter)
    unmeasured = ~np.any(np.asarray(ivar) > 0, axis=0)
    if unmeasured.any():  # theta is 0 there; a scatter far above the flux says the model knows nothing there
        rms = float(np.sqrt(np.mean(np.square(np.asarray(flux, np.float64)[np.asarray(ivar) > 0]))))
        big = np.exp(LN_S_MAX) * (rms if rms > 0 else 1.0)
        scatter = jnp.where(jnp.asarray(unmeasured), jnp.asarray(big, scatter.dtype), scatter)
    if unit != 1.0:
        theta, scatter = in_unit(theta, unit, "spectra", "theta"), in_unit(scatter, unit, "spectra", "scatter")
    history = np.asarray(history) + n_good * np.log(unit)  # g in the data's unit: ln(var) gains 2 ln(unit)
    wave = spectra.wavelength if isinstance(spectra, Spectra) else None
    model = Model(theta, scatter, jnp.asarray(std.center), jnp.asarray(std.scale), tuple(names), config, wave)
    return FitResult(on_device(model), {"objective": history}, converged, {"n_used": int(used.sum())})
