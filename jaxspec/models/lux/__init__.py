r"""Lux: a generative, multi-output, latent-variable model of stellar labels and spectra.

Horta, Price-Whelan, Hogg, Ness & Casey (2025).  Each star :math:`n` has a
latent vector :math:`z_n` of length ``P``; its labels and fluxes are linear in it:

.. math::

    \ell_n = A z_n + \epsilon_\ell,\quad \epsilon_\ell \sim \mathcal N(0, \sigma_\ell^2), \qquad
    f_n = B z_n + \epsilon_f,\quad \epsilon_f \sim \mathcal N(0, \sigma_f^2 + s^2),

with ``A`` ``(M, P)``, ``B`` ``(L, P)``, ``M < P < L``, and a per-pixel
scatter ``s``.  Labels enter standardised (centre = median, scale =
(97.5th - 2.5th percentile)/4); missing labels and bad pixels have zero
weight (``ivar == 0``), never a filler value.

Training (:func:`fit`, configured by :class:`Config`) follows the paper:
``z_n = [1, rescaled labels, 0, ...]``, ``A, B ~ U(0, 1)``, ``ln s = -8``; Agenda 1 (5 iterations of the A-, B- and
z-steps, no scatter, no penalty); Agenda 2 (once: scatter, B, then z with the
penalty :math:`\Omega \sum z^2`).  Every block step is solved exactly in closed
form (:mod:`jaxspec.models.lux._steps`); the paper's Gauss-Newton and L-BFGS
solvers converge to the same block optima.  Test step: latents of new stars
from fluxes (:func:`predict_labels`) or labels (:func:`predict_spectra`) with
the engine's :func:`jaxspec.optim.fit_latents` (:func:`encode`), unpenalised as
in the paper's Eqs. 10-11 unless ``omega`` is given; its Laplace covariance
gives the label uncertainties (the paper's 10 resamplings estimate the same).

Beyond the paper: several spectral outputs (pass a sequence of ``Spectra``,
e.g. two instruments; a star missing one passes ``None`` at prediction),
per-label wavelength masks (``label_masks``), and a per-label model scatter
calibrated on the training set and added to the predicted label variances.
Cross-validation over ``P`` and ``Omega`` is :func:`jaxspec.models.lux.cv.cross_validate`;
one nonlinear output is :mod:`jaxspec.models.lux.mlp`.  :func:`decode` is the
forward model, a pure function of the model pytree.
"""

from __future__ import annotations

import importlib

from jaxspec.models._common import FitResult, LabelPrediction, SpectraPrediction
from jaxspec.models.lux._fit import calibrate_scatter, fit
from jaxspec.models.lux._model import Config, Model, Params, decode
from jaxspec.models.lux._predict import derivative_spectra, encode, predict_labels, predict_spectra

__all__ = [
    "Config",
    "FitResult",
    "LabelPrediction",
    "Model",
    "Params",
    "SpectraPrediction",
    "calibrate_scatter",
    "cv",
    "decode",
    "derivative_spectra",
    "encode",
    "fit",
    "mlp",
    "predict_labels",
    "predict_spectra",
]

_SUBMODULES = ("cv", "mlp")  # imported on first use: mlp needs flax


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
