r"""Label fitting with Cycle-StarNet for every star at once (Section 4.1.5, Eqs. 9-11).

Three objectives, each minimised over the emulator's scaled labels
:math:`s = \tfrac12\tanh u \in [-\tfrac12, \tfrac12]^M` (and, with ``rv=True``, a
radial velocity :math:`v = 5\tanh w` km/s applied to the emulator's spectrum
as The Payne's fitter does), on the pixels the networks see:

* ``"emulator"`` (Eq. 9, "Kurucz fitting"): the observed spectrum against the
  emulator, :math:`\sum_l \iota_l (f_l - \mathrm{Payne}(s)_l)^2`; The Payne's
  fitter (:func:`jaxspec.models.payne.fit_labels`) with the cropped pixels
  masked.
* ``"synthetic"`` (Eq. 10): the observed spectrum sent to the synthetic
  domain against the emulator, :math:`\lVert T_{o\to s}(f) -
  \mathrm{Payne}(s)\rVert^2`, every pixel with the weight
  :math:`1/e_{synth}^2` (``config.synthetic_err``: an unweighted norm, as
  Eq. 10 writes it, in units that make its chi2 comparable); The Payne's
  fitter again.
* ``"transfer"`` (Eq. 11, the paper's default): the observed spectrum against
  the emulator's spectrum sent to the observed domain with the star's own
  split latent held fixed,
  :math:`\sum_l \iota_l \bigl(f_l - T_{s\to o}(\mathrm{Payne}(s), z_{sp})_l\bigr)^2`,
  through the engine's per-star optimiser (dense damped Gauss-Newton, exact
  Jacobians by ``jax.jacfwd`` through the emulator and the networks, every
  star vmapped, chunked, compiled once; the star's :math:`z_{sp}` enters as
  per-star context).

The Laplace covariance of the labels is :math:`(J^\top W J)^{-1}` at the
optimum, with :math:`J` taken with respect to :math:`(s, v)` (the fit's
covariance in :math:`(u, w)` mapped through the diagonal Jacobian of the
``tanh``), then scaled to physical units.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxspec.data.containers import Labels, Spectra
from jaxspec.models import payne
from jaxspec.models._common import CHUNK_SIZE, LabelPrediction
from jaxspec.models.cycle_starnet._data import check_spectra
from jaxspec.models.cycle_starnet._model import Model, model_graphdefs, over_leading
from jaxspec.models.cycle_starnet._networks import decode_obs, encode_synth
from jaxspec.models.cycle_starnet._predict import check_model, check_z_sp, encode, transfer
from jaxspec.optim.latents import FitOptions, fit_latents

__all__ = ["DEFAULT_OPTIONS", "METHODS", "emulate", "fit_labels", "predict_labels"]

#: ``method`` of :func:`fit_labels`: Eq. 11, Eq. 9, Eq. 10.
METHODS = ("transfer", "emulator", "synthetic")
#: The transfer fit's solver options (as The Payne's fitter's: step norm 1e-4 in the unbounded parameters).
DEFAULT_OPTIONS = FitOptions(tol=1e-4, maxiter=100, slots=16, max_step=2.0)


def _check_emulator(model: Model) -> payne.Model:
    if model.emulator is None:
        raise ValueError(
            "model: has no emulator (model.emulator is None); train with cycle_starnet.fit(..., emulator=...) "
            "or attach one with dataclasses.replace(model, emulator=...)"
        )
    return model.emulator


def _shift_args(model: Model, rv: bool, dtype):
    if not rv:
        return None
    if model.wavelength is None:
        raise ValueError("model: rv=True needs the model's wavelength grid (model.wavelength is None)")
    offsets, index = payne.doppler_stencil(model.wavelength, dtype)
    return jnp.asarray(model.wavelength, dtype), jnp.asarray(offsets), jnp.asarray(index)


def _emulated_obs(model: Model, shift, s, v, z_sp):
    """One star: :math:`T_{s\\to o}(\\mathrm{Payne}(s)` at velocity ``v``, its ``z_sp``), flux ``(n_net,)``."""
    f = payne.decode_scaled(model.emulator, s)
    if shift is not None:
        f = payne.shift_spectrum(f, *shift, v)
    mean, std = model.norm[0].astype(f.dtype), model.norm[1].astype(f.dtype)
    x = (f[model.kept] - mean) / std
    gd = model_graphdefs(model, x.dtype)
    gen = model.params.generator
    return decode_obs(gd, gen, encode_synth(gd, gen, x), z_sp) * std + mean


def _decode_transfer(args, z):
    """The transfer fit's decoder: ``args = ((model, shift), z_sp)``, ``z = (u[, w])``."""
    (model, shift), z_sp = args
    m = model.emulator.n_labels
    s = 0.5 * jnp.tanh(z[:m])
    v = payne.RV_MAX * jnp.tanh(z[m]) if z.shape[0] > m else jnp.zeros((), z.dtype)
    return _emulated_obs(model, shift, s, v, z_sp)


def emulate(model: Model, labels, z_sp, rv=None):
    r"""The calibrated model :math:`T_{s\to o}(\mathrm{Payne}(y))`: flux ``(..., n_net)`` of physical labels.

    Parameters
    ----------
    model : Model
        With an emulator.
    labels : array ``(..., M)``
        Physical labels in the emulator's order (``model.emulator.label_names``).
    z_sp : array ``(..., n_z, split_z)``
        The split latents (an observed star's: its instrument and conditions).
    rv : array ``(...)``, optional
        km/s, applied to the emulator's spectrum before the transfer.

    A pure function (``jax.jit``, ``jax.vmap``, ``jax.grad``; the line
    finder differentiates it).
    """
    emu = _check_emulator(model)
    labels = jnp.asarray(labels)
    dtype = jnp.result_type(labels.dtype, jnp.float32)
    s = payne.scale_labels(emu, labels).astype(dtype)
    z_sp = jnp.broadcast_to(jnp.asarray(z_sp, dtype), (*s.shape[:-1], *np.shape(z_sp)[-2:]))
    shift = _shift_args(model, rv is not None, dtype)
    v = jnp.zeros(s.shape[:-1], dtype) if rv is None else jnp.broadcast_to(jnp.asarray(rv, dtype), s.shape[:-1])
    return over_leading(lambda a, b, c: _emulated_obs(model, shift, a, b, c), s, v, z_sp, ranks=(1, 0, 2))


def _outside(model: Model) -> np.ndarray:
    out = np.ones(model.n_pix, bool)
    out[model.kept] = False
    return out


def _physical_start(model: Model, start, n: int, p: int) -> np.ndarray:
    if start is None:
        return np.zeros((n, p))
    emu = model.emulator
    values = np.asarray(start.values if isinstance(start, Labels) else start, np.float64)
    if values.shape not in ((emu.n_labels,), (n, emu.n_labels)) or not np.all(np.isfinite(values)):
        raise ValueError(f"start: expected finite labels of shape ({n}, {emu.n_labels}), found {values.shape}")
    lo, hi = np.asarray(emu.x_min, np.float64), np.asarray(emu.x_max, np.float64)
    s = np.clip((values - lo) / (hi - lo) - 0.5, -0.49, 0.49)
    z = np.zeros((n, p))
    z[:, : emu.n_labels] = np.arctanh(2.0 * s)
    return z


def fit_labels(
    model: Model,
    spectra: Spectra,
    *,
    method: str = "transfer",
    rv: bool = False,
    mask=None,
    start=None,
    z_sp=None,
    n_starts: int = 1,
    options: FitOptions | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
) -> payne.LabelFit:
    r"""Fit every star's labels by Eq. 11 (``"transfer"``), Eq. 9 (``"emulator"``) or Eq. 10 (``"synthetic"``).

    Parameters
    ----------
    model : Model
        A trained Cycle-StarNet with its emulator (``model.emulator``).
    spectra : Spectra ``(n, n_pix)``
        Observed spectra on the model's input grid; only the pixels the
        networks see (``model.kept``) enter any of the three fits.
    method : {"transfer", "emulator", "synthetic"}
    rv : bool
        Also fit a radial velocity in :math:`[-5, 5]` km/s, applied to the
        emulator's spectrum (needs ``model.wavelength``).  Default False: the
        networks were trained on the observed spectra as they are, so
        spectra in the same frame need none.
    mask : bool array ``(n_pix,)`` or ``(n, n_pix)``, optional
        True excludes a pixel (The Payne's convention).
    start : Labels or array ``(n, M)`` or ``(M,)``, optional
        Physical starting labels of the ``"transfer"`` fit (e.g. the
        ``"emulator"`` fit's, or a catalogue's, as the authors' code starts);
        default the centre of the emulator's box.
    z_sp : array ``(n, n_z, split_z)``, optional
        ``"transfer"``: the split latents held fixed; default each star's own
        (``encode(model, spectra).z_sp``).
    n_starts : int
        ``"emulator"`` and ``"synthetic"``: The Payne fitter's starts.
    options : FitOptions, optional
        Solver options; default :data:`DEFAULT_OPTIONS` for ``"transfer"``,
        The Payne's for the others.
    chunk_size : int
    progress : bool

    Returns
    -------
    payne.LabelFit
        Labels (physical, the emulator's names) with Laplace uncertainties,
        covariance, ``rv``/``rv_err``, ``chi2`` and ``reduced_chi2`` over the
        fitted pixels, ``converged``, ``on_bound``, ``flagged``.  A star with
        no measured pixel gets every label missing and is flagged.
    """
    model = check_model(model)
    emu = _check_emulator(model)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, found {method!r}")
    if not isinstance(rv, bool | np.bool_):
        raise TypeError(f"rv: expected a bool, found {type(rv).__name__}")
    spectra = check_spectra(spectra, model.n_pix, model.wavelength, "spectra")
    ivar = payne.apply_mask(np.array(spectra.ivar, np.float64), mask)  # a copy: edited below
    ivar[:, _outside(model)] = 0.0
    payne_kwargs = {"rv": bool(rv), "n_starts": n_starts, "chunk_size": chunk_size, "progress": progress}
    if options is not None:
        payne_kwargs["options"] = options
    if method != "transfer" and (start is not None or z_sp is not None):
        raise ValueError(f"start, z_sp: only the 'transfer' fit takes them, found method={method!r}")
    if method == "emulator":
        observed = Spectra(np.asarray(spectra.flux), ivar=ivar, wavelength=model.wavelength)
        return payne.fit_labels(emu, observed, **payne_kwargs)
    if method == "synthetic":
        sent = transfer(model, spectra, "obs->synth", chunk_size=chunk_size, progress=progress)
        flux = np.ones((spectra.n_stars, model.n_pix))
        flux[:, model.kept] = sent
        # every pixel the networks give counts (they fill the masked ones), but for a mask's and the crop's
        excluded = _outside(model) | (np.zeros(model.n_pix, bool) if mask is None else np.asarray(mask))
        weight = np.where(excluded, 0.0, model.config.synthetic_err**-2) * np.ones_like(flux)
        weight[np.sum(ivar > 0, axis=1) == 0] = 0.0  # nothing measured: nothing to send
        return payne.fit_labels(emu, Spectra(flux, ivar=weight, wavelength=model.wavelength), **payne_kwargs)
    return _fit_transfer(model, spectra, ivar, rv=bool(rv), start=start, z_sp=z_sp, options=options,
                         chunk_size=chunk_size, progress=progress)  # fmt: skip


def _fit_transfer(model, spectra, ivar, *, rv, start, z_sp, options, chunk_size, progress) -> payne.LabelFit:
    emu = model.emulator
    n, m = spectra.n_stars, emu.n_labels
    p = m + int(rv)
    options = DEFAULT_OPTIONS if options is None else options
    if not isinstance(options, FitOptions):
        raise TypeError(f"options: expected FitOptions, found {type(options).__name__}")
    if z_sp is None:
        z_sp = encode(model, spectra, chunk_size=chunk_size, progress=progress).z_sp
    z_sp = np.ascontiguousarray(check_z_sp(model, z_sp, n))
    dtype = np.dtype(z_sp.dtype)
    kept = model.kept
    flux = np.where(ivar > 0, np.asarray(spectra.flux, np.float64), 0.0)[:, kept].astype(dtype)
    weights = ivar[:, kept].astype(dtype)
    z0 = _physical_start(model, start, n, p).astype(dtype)
    fit = fit_latents(
        _decode_transfer, (model, _shift_args(model, rv, dtype)), (flux, weights), z0, method="dense_gauss_newton",
        options=options._replace(chunk_size=int(chunk_size)), covariance=True, progress=progress,
        context=jnp.asarray(z_sp),
    )  # fmt: skip
    z = np.asarray(fit.z, np.float64)
    # the covariance of theta = (tanh(u) / 2[, 5 tanh(w)]) from that of z = (u[, w]): J_z = J_theta diag(g)
    grad = np.concatenate([0.5 / np.cosh(z[:, :m]) ** 2, payne.RV_MAX / np.cosh(z[:, m:]) ** 2], axis=1)
    cov = np.asarray(fit.covariance, np.float64) * grad[:, :, None] * grad[:, None, :]
    theta = np.concatenate([0.5 * np.tanh(z[:, :m]), payne.RV_MAX * np.tanh(z[:, m:])], axis=1)
    return payne.label_fit(emu, theta, cov, fit.chi2, fit.reduced_chi2, np.asarray(fit.converged),
                           np.sum(weights > 0, axis=1), rv=rv, dtype=dtype)  # fmt: skip


def predict_labels(model: Model, spectra: Spectra, *, method: str = "transfer", chunk_size: int = CHUNK_SIZE,
                   progress: bool = True, **kwargs) -> LabelPrediction:  # fmt: skip
    """The contract verb: :func:`fit_labels` (same arguments) as a :class:`~jaxspec.models._common.LabelPrediction`;
    a flagged star has its labels missing (``ivar`` 0) and an ``inf`` covariance diagonal."""
    return payne.as_prediction(fit_labels(model, spectra, method=method, chunk_size=chunk_size, progress=progress,
                                          **kwargs))  # fmt: skip
