r"""The Payne's label fitter for a whole survey: bounded labels and a radial velocity, every star at once.

For each star, minimise over the scaled labels :math:`s \in [-\tfrac12, \tfrac12]^M`
and (``rv=True``) a radial velocity :math:`v \in [-5, 5]` km/s

.. math::

    \chi^2(s, v) = \sum_l w_l \bigl(f_l - \tilde f_l(s, v)\bigr)^2, \qquad
    \tilde f(s, v)(\lambda) = \mathrm{NN}(s)\bigl(\lambda / D(v)\bigr), \qquad
    D(v) = \sqrt{\frac{1 + v/c}{1 - v/c}},

with :math:`w` the inverse variances (0 = masked; a ``mask`` enters as 0, The
Payne's "infinite errors").  The rest-frame emulator spectrum is linearly
interpolated at :math:`\lambda / D` on the model's grid (The Payne's
``doppler_shift``).  Bounds come from a smooth reparametrisation,
:math:`s = \tfrac12\tanh u`, :math:`v = 5\tanh w`, started at the centre of the
box :math:`u = w = 0` as the reference does; the fit is the engine's per-star
optimiser (:func:`jaxspec.optim.fit_latents`, dense damped Gauss-Newton with
exact autodiff Jacobians, vmapped, chunked, compiled once per chunk shape).

The Laplace covariance is taken in the physical parameters, not in
:math:`(u, w)`: :math:`C = (J^\top W J)^{-1}` with :math:`J` the Jacobian of
:math:`\tilde f` with respect to :math:`(s, v)` at the optimum, then scaled to
physical labels by :math:`x_{\max} - x_{\min}`.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.data._checks import check_int
from jaxspec.data.containers import Spectra
from jaxspec.data.rest_frame import chips
from jaxspec.models._common import CHUNK_SIZE, LabelPrediction, check_finite_measured, check_stars
from jaxspec.models.payne._doppler import C_KMS, RV_MAX, log_chips, scan_chi2, shift_spectrum, stencil
from jaxspec.models.payne._label_fit import LabelFit, apply_mask, as_prediction, label_fit
from jaxspec.models.payne._linearise import (
    n_labels_of,
    observed,
    pixel_major,
    rest_spectrum,
    value,
    value_and_jacobian,
)
from jaxspec.models.payne._model import Model, PerPixel, compute_dtype, one_star
from jaxspec.optim import solvers
from jaxspec.optim.chunks import map_chunks
from jaxspec.optim.latents import FitOptions, fit_latents

__all__ = [
    "C_KMS",
    "DEFAULT_OPTIONS",
    "RV_MAX",
    "continuum_basis",
    "fit_labels",
    "observed_spectra",
    "predict_labels",
]

#: The velocities (km/s) at which :func:`fit_labels` checks each star's best-fit spectrum for a lower
#: chi2 (``rv_scan=True``): every 0.25 km/s over the RV box.
RV_SCAN = np.linspace(-RV_MAX, RV_MAX, 41)
#: A restart from the scan starts at most this fraction of the RV bound (``arctanh`` stays finite).
RV_START_LIMIT = 0.98
#: Stars per ``vmap`` inside a chunk's covariance and RV-scan passes (``jax.lax.map`` batches: each
#: star's ``(L, P)`` Jacobian stays in cache instead of a chunk's worth of them in memory).
_BATCH = 16
#: Default solver options: the tolerance is on the step in the unbounded ``(u, w)``; each chunk is solved on
#: 16 refilling lanes (:class:`~jaxspec.optim.FitOptions` ``slots``).
DEFAULT_OPTIONS = FitOptions(tol=1e-4, maxiter=100, slots=16, max_step=2.0)


# -- one star -------------------------------------------------------------------------------


def _physical(z, n_labels: int):
    """``(s, v)`` of the unbounded ``z = (u, w)``: ``s = tanh(u) / 2``, ``v = 5 tanh(w)`` (``v = 0`` without RV)."""
    s = 0.5 * jnp.tanh(z[:n_labels])
    v = RV_MAX * jnp.tanh(z[n_labels]) if z.shape[0] > n_labels else jnp.zeros((), z.dtype)
    return s, v


def _model_sv(args, s, v):
    """The observed-frame spectrum ``(L,)`` of scaled labels ``s`` at velocity ``v``."""
    params, wavelength, offsets, index = args
    flux = one_star(params, s)
    if wavelength is None:
        return flux
    return shift_spectrum(flux, wavelength, offsets, index, v)


def _decode(args, z):
    """One star's observed-frame spectrum from its unbounded ``z`` (one function object: compiled once)."""
    s, v = _physical(z, n_labels_of(args[0]))
    return _model_sv(args, s, v)


def _stencil_jacobian(args, s, v, with_rv: bool):
    """``J`` of the stencil-shifted spectrum w.r.t. ``(s[, v])`` by ``jax.jacfwd`` (any grid)."""
    m = s.shape[0]
    theta = jnp.concatenate([s, v[None]]) if with_rv else s
    return jax.jacfwd(lambda th: _model_sv(args, th[:m], th[m] if with_rv else v))(theta)


def _closed_form_jacobian(args, s, v, with_rv: bool):
    """``J`` w.r.t. ``(s[, v])`` in closed form (:func:`jaxspec.models.payne._linearise.observed`)."""
    params, chips = args
    return observed(params, chips if with_rv else None, s, v)[1]


@partial(jax.jit, static_argnames=("jacobian", "decode"))
def _laplace_chunk(rows, args, basis, *, jacobian, decode):
    r"""Per star: ``(s, v)``, and the covariance of ``(s[, v])`` from ``(J^T W J)^-1``, ``J`` w.r.t. ``(s[, v])``.

    With a continuum ``basis`` (coefficients ``c`` in ``rows``), ``J`` is
    that of the continuum-scaled model projected off the continuum's columns
    :math:`A = \mathrm{diag}(\sqrt w f) B`: the covariance of the labels
    marginal over the continuum.
    """
    z, ivar, coefficients = rows
    m = n_labels_of(args[0])
    with_rv = z.shape[1] > m

    def one(z, ivar, c):
        s, v = _physical(z, m)
        theta = jnp.concatenate([s, v[None]]) if with_rv else s
        jac = jacobian(args, s, v, with_rv)
        sw = jnp.sqrt(jnp.where(ivar > 0, ivar, 0.0))
        if basis is None:
            x = sw[:, None] * jac
            hess = x.T @ x
        else:
            x = (sw * (basis @ c))[:, None] * jac
            design = (sw * decode(args, z))[:, None] * basis
            factor = solvers.scaled_cholesky(design.T @ design)
            hess = x.T @ x - (design.T @ x).T @ solvers.scaled_cho_solve(factor, design.T @ x)
        p = hess.shape[0]
        scale = jnp.sqrt(jnp.where(jnp.diagonal(hess) > 0, jnp.diagonal(hess), 1.0))
        a = hess / scale[:, None] / scale[None, :] + jnp.finfo(z.dtype).eps * jnp.eye(p, dtype=z.dtype)
        cov = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(a, lower=True), jnp.eye(p, dtype=z.dtype))
        cov = cov / scale[:, None] / scale[None, :]
        ok = jnp.all(jnp.isfinite(cov)) & jnp.all(jnp.diagonal(hess) > 0)
        cov = jnp.where(ok, cov, jnp.diag(jnp.full(p, jnp.inf, z.dtype)))
        return theta, cov

    return jax.lax.map(lambda a: one(*a), (z, ivar, coefficients), batch_size=_BATCH)


# -- inputs ----------------------------------------------------------------------------------


def _check_model(model, rv: bool) -> None:
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a payne.Model, found {type(model).__name__}")
    if rv and model.wavelength is None:
        raise ValueError(
            "model: rv=True needs the model's wavelength grid (model.wavelength is None); "
            "load it with payne.load(path, wavelength=...) or fit with rv=False"
        )


def _spectra_arrays(model: Model, spectra, mask, dtype) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(spectra, Spectra):
        raise TypeError(f"spectra: expected a Spectra, found {type(spectra).__name__}")
    check_stars(spectra.n_stars, "spectra")
    if spectra.n_pix != model.n_pix:
        raise ValueError(
            f"spectra: expected {model.n_pix} pixels (the model's grid), found {spectra.n_pix}; "
            "resample the spectra onto the model's grid first"
        )
    grid, wave = spectra.wavelength, model.wavelength
    if grid is not None and wave is not None and not np.allclose(grid, wave, rtol=1e-7, atol=0):
        raise ValueError(
            f"spectra: wavelength grid differs from the model's ({wave[0]:.3f}-{wave[-1]:.3f} A); "
            "resample the spectra onto the model's grid first"
        )
    check_finite_measured(spectra.flux, spectra.ivar, "spectra")
    ivar = apply_mask(spectra.ivar, mask)
    good = ivar > 0
    flux = np.where(good, np.asarray(spectra.flux), 0.0)  # a copy: the caller's arrays are never edited
    return flux.astype(dtype), ivar.astype(dtype)


def _starts(n_starts: int, n_params: int) -> np.ndarray:
    """``(n_starts, P)`` starting ``z``: the centre, then a Latin hypercube (fixed seed: deterministic) over
    half the box's half-width, ``|s| < 0.25`` and ``|v| < 2.5`` km/s."""
    z = np.zeros((n_starts, n_params))
    if n_starts > 1:
        rng = np.random.default_rng(20190701)
        k = n_starts - 1
        cells = np.stack([rng.permutation(k) for _ in range(n_params)], axis=1)
        frac = (cells + rng.uniform(size=(k, n_params))) / k  # in [0, 1)
        theta = frac - 0.5  # fractions of the half-width in [-0.5, 0.5): s = theta / 2, v = 5 theta
        z[1:] = np.arctanh(theta)
    return z


class _Forward(NamedTuple):
    """The fit's static functions and their arguments (one function object each: compiled once)."""

    decode: object  # (args, z) -> observed spectrum
    jacobian: object  # (args, z) -> (spectrum, J w.r.t. z), or None for jax.jacfwd
    laplace: object  # (args, s, v, with_rv) -> J w.r.t. (s[, v])
    rest: object  # (args, s) -> rest-frame spectrum
    scan: object  # (args, spectrum, flux, ivar) -> chi2 at each velocity of RV_SCAN
    args: tuple


def _stencil_rest(args, s):
    return one_star(args[0], s)


def _stencil_scan(args, spectrum, flux, ivar):
    shifted = jax.vmap(lambda v: shift_spectrum(spectrum, *args[1:], v))(jnp.asarray(RV_SCAN, spectrum.dtype))
    return jnp.sum(ivar * jnp.square(flux - shifted), axis=1)


def _closed_form_rest(args, s):
    return rest_spectrum(args[0], s)


def _closed_form_scan(args, spectrum, flux, ivar):
    return scan_chi2(spectrum, args[1], flux, ivar, RV_SCAN)


def _forward(model: Model, rv: bool, dtype) -> _Forward:
    r"""The fit's forward model: closed-form Jacobians where the grid allows.

    Without an RV, or with one on a grid uniform in :math:`\ln\lambda` within
    each chip (APOGEE's), the spectrum and its Jacobian come from
    :mod:`jaxspec.models.payne._linearise` (per-pixel weights pixel-major,
    the shift by static slices); on any other grid the general stencil
    shift with ``jax.jacfwd``.
    """
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype), model.params)
    chips = log_chips(model.wavelength) if rv else None
    if rv and chips is None:
        offsets, index = stencil(model.wavelength, dtype)
        args = (params, jnp.asarray(model.wavelength, dtype), jnp.asarray(offsets), jnp.asarray(index))
        return _Forward(_decode, None, _stencil_jacobian, _stencil_rest, _stencil_scan, args)
    if isinstance(params, PerPixel):
        params = pixel_major(params)
    return _Forward(
        value, value_and_jacobian, _closed_form_jacobian, _closed_form_rest, _closed_form_scan, (params, chips)
    )


@partial(jax.jit, static_argnames=("rest", "scan"))
def _scan_chunk(rows, args, *, rest, scan):
    """Per star ``(RV_SCAN,)``: chi2 of the best-fit rest-frame spectrum shifted to each velocity of the scan."""
    z, flux, ivar = rows
    m = n_labels_of(args[0])

    def one(z, flux, ivar):
        return scan(args, rest(args, 0.5 * jnp.tanh(z[:m])), flux, ivar)

    return jax.lax.map(lambda a: one(*a), (z, flux, ivar), batch_size=_BATCH)


def _pad_to(rows: tuple, size: int) -> tuple:
    """Repeat the last row until every array has at least ``size`` rows (one chunk shape: no recompilation)."""
    n = rows[0].shape[0]
    if n >= size:
        return rows
    take = np.concatenate([np.arange(n), np.full(size - n, n - 1)])
    return tuple(x[take] for x in rows)


def _rescue_rv(solve, fwd: _Forward, flux, ivar, fit: tuple, chunk: int, basis) -> tuple:
    """Refit the stars whose best-fit spectrum matches better at another velocity of the scan.

    For every star, the rest-frame spectrum of its fitted labels is shifted
    to each velocity of :data:`RV_SCAN`; where one gives a lower chi2 than
    the fit, the star is fitted again from its labels and that velocity, and
    the lower-chi2 fit is kept.  This finds the stars that stopped in a
    local minimum of the RV (a pixel's width is about 4 km/s).  With a
    continuum, the scan divides the spectrum by the fitted one (an upper
    bound of the chi2 with the continuum refitted at each velocity).
    """
    z, chi2 = fit[0], fit[1]
    scan_flux, scan_ivar = flux, ivar
    if basis is not None:
        cont = fit[4] @ basis.T
        ok = cont > 0
        scan_flux = np.where(ok, flux / np.where(ok, cont, 1.0), 0.0).astype(flux.dtype)
        scan_ivar = np.where(ok, ivar * cont * cont, 0.0).astype(ivar.dtype)
    scan = map_chunks(
        partial(_scan_chunk, rest=fwd.rest, scan=fwd.scan),
        (z, scan_flux, scan_ivar),
        fwd.args,
        chunk_size=chunk,
        to_host=True,
    )
    scan = np.asarray(scan, np.float64)
    todo = np.flatnonzero(np.isfinite(chi2) & (scan.min(axis=1) < chi2))
    if todo.size == 0:
        return fit
    m = z.shape[1] - 1
    z0 = z[todo].copy()
    v0 = RV_SCAN[np.argmin(scan[todo], axis=1)]
    z0[:, m] = np.arctanh(np.clip(v0 / RV_MAX, -RV_START_LIMIT, RV_START_LIMIT))
    rows = _pad_to((flux[todo], ivar[todo], z0), min(chunk, flux.shape[0]))
    new = tuple(x[: todo.size] for x in solve(*rows))
    better = np.isfinite(new[1]) & (new[1] < chi2[todo])
    out = tuple(x.copy() for x in fit)
    for old, fresh in zip(out, new, strict=True):
        old[todo[better]] = fresh[better]
    return out


def continuum_basis(model: Model, degree: int) -> np.ndarray:
    r"""``(L, C (degree + 1))``: Chebyshev polynomials :math:`T_0 .. T_d` of each chip, zero off it.

    On each chip (of :func:`jaxspec.data.rest_frame.chips`; one chip without
    a wavelength grid) the argument runs over :math:`[-1, 1]` with the pixel
    index, as The Payne's continuum normalisation does
    (``utils.get_apogee_continuum``, degree 4).
    """
    n = model.n_pix
    chip = np.zeros(n, np.int64) if model.wavelength is None else chips(model.wavelength)
    columns = []
    for c in range(int(chip.max()) + 1):
        idx = np.flatnonzero(chip == c)
        x = np.zeros(n)
        x[idx] = np.linspace(-1.0, 1.0, idx.size) if idx.size > 1 else 0.0
        t = np.polynomial.chebyshev.chebvander(x, degree)  # (L, d + 1)
        t[chip != c] = 0.0
        columns.append(t)
    return np.concatenate(columns, axis=1)


# -- many stars ------------------------------------------------------------------------------


def fit_labels(
    model: Model,
    spectra: Spectra,
    *,
    rv: bool = True,
    mask=None,
    n_starts: int = 1,
    rv_scan: bool = True,
    continuum: int | None = None,
    options: FitOptions | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
) -> LabelFit:
    r"""Fit every star's labels (and radial velocity) with the emulator, The Payne's fitter vmapped.

    Minimises :math:`\sum_l w_l (f_l - \mathrm{NN}(s)(\lambda_l / D(v)))^2`
    over the scaled labels :math:`s = \tfrac12\tanh u \in [-\tfrac12, \tfrac12]^M`
    and :math:`v = 5\tanh w` km/s (module docstring), starting at the
    centre of the box, by dense damped Gauss-Newton on the whitened
    residuals (:func:`jaxspec.optim.fit_latents`, exact Jacobians by
    autodiff; one compilation per chunk shape).

    Parameters
    ----------
    model : payne.Model
    spectra : Spectra ``(n, L)``
        Continuum-normalised spectra on the model's grid (same pixel count
        and, where both have one, the same wavelength grid); NaN flux is
        masked by the container.  Nothing is normalised here.
    rv : bool
        Fit a radial velocity in :math:`[-5, 5]` km/s (needs
        ``model.wavelength``).  The rest-frame emulator spectrum is linearly
        interpolated at :math:`\lambda/D`; a shifted pixel beyond the end
        of its chip takes the chip's end value (no interpolation across a
        chip gap).  ``rv=False``: the spectra are taken at rest.
    mask : bool array ``(L,)`` or ``(n, L)``, optional
        ``True`` excludes a pixel (weight 0, The Payne's infinite errors).
        The Payne's ``apogee_mask.npz`` (``apogee_mask``) holds ``True`` for
        the 875 pixels it removes: pass it as it is.  The caller's arrays
        are never edited.
    continuum : int, optional
        Also fit a continuum: the emulator's spectrum times a Chebyshev
        polynomial of this degree on each detector chip
        (:func:`continuum_basis`; The Payne normalises with degree 4), its
        coefficients eliminated in closed form inside the objective
        (variable projection, :func:`jaxspec.optim.fit_latents`'s
        ``scale_basis``): for spectra that are not continuum-normalised, or
        normalised differently from the emulator's grid.  The covariance of
        the labels is then marginal over the continuum, and ``reduced_chi2``
        counts its coefficients as parameters.  None (default): the spectra
        are taken as normalised, as The Payne's fitter does.
    n_starts : int
        Starts per star: the centre, plus ``n_starts - 1`` points of a Latin
        hypercube (fixed seed: deterministic) over :math:`|s| < 0.25`,
        :math:`|v| < 2.5` km/s; the fit of lowest chi2 is kept.  All
        starts of all stars are one vmapped fit (cost ``n_starts`` times).
        From the centre alone (the reference's start) a few stars stop in
        a local minimum, mostly in RV (1.6% of 1,000 planted stars at SNR
        50-200 with the shipped emulator: converged, reduced chi2 > 1,
        RV off by up to a few km/s); ``n_starts=4`` removed them all there.
    options : FitOptions, optional
        Tolerance (step norm in the unbounded parameters) and iteration
        cap; default :data:`DEFAULT_OPTIONS` (``tol=1e-4``,
        ``maxiter=100``).  ``chunk_size`` overrides its chunk size.
    chunk_size : int
        Fits per compiled chunk.
    progress : bool

    Returns
    -------
    LabelFit

    Raises
    ------
    TypeError, ValueError
        A model that is not a ``payne.Model``, ``rv=True`` on a model without
        a wavelength grid (naming ``model``), spectra that are not a
        ``Spectra`` or not on the model's grid (naming ``spectra``), a bad
        ``mask``, ``n_starts < 1``.
    """
    if not isinstance(rv, bool | np.bool_):
        raise TypeError(f"rv: expected a bool, found {type(rv).__name__}")
    _check_model(model, bool(rv))
    if isinstance(n_starts, bool) or not isinstance(n_starts, int | np.integer) or n_starts < 1:
        raise ValueError(f"n_starts: expected an int >= 1, found {n_starts!r}")
    if continuum is not None:
        check_int(continuum, "continuum", minimum=0)
        if continuum > 10:
            raise ValueError(f"continuum: expected a polynomial degree from 0 to 10, found {continuum}")
    options = DEFAULT_OPTIONS if options is None else options
    if not isinstance(options, FitOptions):
        raise TypeError(f"options: expected FitOptions, found {type(options).__name__}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise ValueError(f"chunk_size: expected an int >= 1, found {chunk_size!r}")
    dtype = np.dtype(compute_dtype(model))
    flux, ivar = _spectra_arrays(model, spectra, mask, dtype)
    n, m = flux.shape[0], model.n_labels
    p = m + int(bool(rv))
    fwd = _forward(model, bool(rv), dtype)

    basis = None if continuum is None else continuum_basis(model, continuum)

    def solve(rows_f, rows_w, z0):
        res = fit_latents(
            fwd.decode,
            fwd.args,
            (rows_f, rows_w),
            z0.astype(dtype),
            method="dense_gauss_newton",
            options=options._replace(chunk_size=int(chunk_size)),
            progress=progress,
            jacobian=fwd.jacobian,
            scale_basis=basis,
        )
        coefficients = np.zeros((len(z0), 0), dtype) if basis is None else np.asarray(res.coefficients)
        return (
            np.asarray(res.z),
            np.asarray(res.chi2, np.float64),
            np.asarray(res.reduced_chi2, np.float64),
            np.asarray(res.converged),
            coefficients,
        )

    starts = _starts(int(n_starts), p)
    k = starts.shape[0]
    rows_f = np.repeat(flux, k, axis=0) if k > 1 else flux
    rows_w = np.repeat(ivar, k, axis=0) if k > 1 else ivar
    fit = tuple(x.reshape(n, k, *x.shape[1:]) for x in solve(rows_f, rows_w, np.tile(starts, (n, 1))))
    # the lowest chi2 of the finite fits (a failed start has chi2 inf); ties go to the earliest start
    best = np.argmin(np.where(np.isfinite(fit[1]), fit[1], np.inf), axis=1)
    fit = tuple(x[np.arange(n), best] for x in fit)
    if rv and rv_scan:
        fit = _rescue_rv(solve, fwd, flux, ivar, fit, int(chunk_size), basis)
    z, chi2, reduced, converged, coefficients = fit

    theta, cov = map_chunks(
        partial(_laplace_chunk, jacobian=fwd.laplace, decode=fwd.decode),
        (z, ivar, coefficients),
        fwd.args,
        None if basis is None else jnp.asarray(basis),
        chunk_size=int(chunk_size),
        to_host=True,
        desc="payne.fit_labels",
    )
    continuum_flux = None if basis is None else coefficients @ basis.T
    return label_fit(model, theta, cov, chi2, reduced, converged, np.sum(ivar > 0, axis=1), rv=bool(rv),
                     dtype=dtype, continuum=continuum_flux)  # fmt: skip


@partial(jax.jit, static_argnames="spectrum")
def _observed_chunk(rows, args, *, spectrum):
    s, v = rows
    return jax.vmap(lambda s, v: spectrum(args, s, v))(s, v)


def _closed_form_observed(args, s, v):
    params, chips = args
    return observed(params, chips, s, v)[0] if chips is not None else rest_spectrum(params, s)


def observed_spectra(model: Model, labels, rv=None, *, chunk_size: int = CHUNK_SIZE) -> np.ndarray:
    r"""The emulator's spectra ``(n, L)`` at physical ``labels`` ``(n, M)``, seen at radial velocities ``rv``.

    Exactly the fitter's model (:func:`fit_labels`: linear interpolation at
    :math:`\lambda / D(v)` within each chip, a chip's end value beyond it):
    ``observed_spectra(model, fit.labels.values, fit.rv)`` (times
    ``fit.continuum`` when one was fitted) is the best-fit spectrum of each
    star; with made-up labels and velocities, mock observed spectra.  Labels
    outside the box are evaluated as they are (the network extrapolates).

    Parameters
    ----------
    model : payne.Model
    labels : array ``(n, M)``
    rv : float or array ``(n,)``, optional
        km/s, ``|rv| <= 5`` (the fitter's box); None: the rest frame.
    chunk_size : int

    Returns
    -------
    numpy array ``(n, L)`` in the model's compute dtype.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a payne.Model, found {type(model).__name__}")
    values = np.asarray(labels, np.float64)
    if values.ndim != 2 or values.shape[1] != model.n_labels or not np.all(np.isfinite(values)):
        raise ValueError(f"labels: expected finite values of shape (n, {model.n_labels}), found {values.shape}")
    n = values.shape[0]
    velocity = np.zeros(n) if rv is None else np.broadcast_to(np.asarray(rv, np.float64), (n,))
    if not np.all(np.abs(velocity) <= RV_MAX):
        raise ValueError(f"rv: expected velocities within +-{RV_MAX} km/s (the fitter's box), found {velocity.max()}")
    with_rv = rv is not None
    _check_model(model, with_rv)
    dtype = np.dtype(compute_dtype(model))
    fwd = _forward(model, with_rv, dtype)
    spectrum = _model_sv if fwd.jacobian is None else _closed_form_observed
    lo, hi = np.asarray(model.x_min, np.float64), np.asarray(model.x_max, np.float64)
    s = ((values - lo) / (hi - lo) - 0.5).astype(dtype)
    out = map_chunks(
        partial(_observed_chunk, spectrum=spectrum), (s, velocity.astype(dtype)), fwd.args,
        chunk_size=int(chunk_size), to_host=True,
    )  # fmt: skip
    return np.asarray(out)


def predict_labels(
    model: Model,
    spectra: Spectra,
    *,
    rv: bool = True,
    mask=None,
    n_starts: int = 1,
    options: FitOptions | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
) -> LabelPrediction:
    """The contract verb: :func:`fit_labels` as a :class:`~jaxspec.models._common.LabelPrediction`.

    Same arguments.  A flagged star (not converged too) has ``ivar`` 0 (its
    labels missing) and an ``inf`` covariance diagonal; ``z`` is
    None (the labels are the model's inputs).  The RV and the other fields
    are in :func:`fit_labels`' result.
    """
    fit = fit_labels(
        model,
        spectra,
        rv=rv,
        mask=mask,
        n_starts=n_starts,
        options=options,
        chunk_size=chunk_size,
        progress=progress,
    )
    return as_prediction(fit)
