r"""The Payne: a neural-network emulator of synthetic spectra (Ting, Conroy, Rix & Cargile 2019, ApJ 879, 69).

A star's ``M`` physical labels :math:`y` (Teff, logg, abundances, ...) are
scaled to the emulator's box,

.. math::

    s = \frac{y - x_{\min}}{x_{\max} - x_{\min}} - \frac12 \in [-\tfrac12, \tfrac12]^M,

and a multilayer perceptron gives the continuum-normalised flux of all ``L``
pixels.  Two public formats exist, both ``.npz`` files (:func:`load` tells
them apart by their arrays, :func:`save_payne_format` writes each back bit for
bit):

* the 2019 per-pixel format, one small network per pixel with ``H`` sigmoid
  hidden units (the paper's network; :class:`PerPixel`),

  .. math::

      f_l(s) = w^{(1)}_l \cdot \sigma\bigl(W^{(0)}_l s + b^{(0)}_l\bigr) + b^{(1)}_l ;

* the single network of the current releases (300 LeakyReLU units per hidden
  layer for the 25-label APOGEE emulator, O'Briain et al. 2021, Section 3.1;
  a tuple of :class:`Layer`),

  .. math::

      f(s) = W_{k-1}\,\phi\bigl(\cdots \phi(W_0 s + b_0) \cdots\bigr) + b_{k-1}, \qquad
      \phi(x) = \max(x, 0.01\,x).

:func:`decode` (physical labels) and :func:`decode_scaled` (scaled labels) are
the pure forward model, written for one star and ``vmap``-ed;
:func:`predict_spectra` is the batch verb (chunked, compiled once per chunk
shape, out-of-box and missing labels flagged).  The model keeps its label
names, box and wavelength grid; ``jaxspec.io.save`` / ``jaxspec.io.load``
round-trip it exactly.

:func:`fit` trains a single network of the current format on a synthetic grid
with The Payne's recipe (:class:`Config`: two hidden layers of 300 units, the
box of the training labels, L1 loss over the measured pixels,

.. math::

    \mathcal{L}_1 = \frac{\sum_{n,l} m_{nl}\, |f_{nl} - f(s_n)_l|}{\sum_{n,l} m_{nl}},

RAdam at a learning rate of :math:`10^{-4}` on batches of 512, the weights of
the best validation loss kept) through the engine's train step and loop.

:func:`fit_labels` is The Payne's fitter for a whole survey: every star's
scaled labels (bounded to the box by :math:`s = \tfrac12\tanh u`) and radial
velocity (:math:`v = 5\tanh w` km/s, relativistic Doppler factor, linear
interpolation on the model's grid) minimise

.. math::

    \chi^2 = \sum_l w_l \bigl(f_l - \mathrm{NN}(s)(\lambda_l / D(v))\bigr)^2

through the engine's per-star optimiser (dense damped Gauss-Newton, exact
Jacobians, vmapped and chunked), with the Laplace covariance in the physical
labels and RV (:class:`LabelFit`); :func:`predict_labels` is the contract's
verb over it.
"""

from jaxspec.models.payne._config import Config
from jaxspec.models.payne._doppler import RV_MAX, shift_spectrum
from jaxspec.models.payne._doppler import stencil as doppler_stencil
from jaxspec.models.payne._files import NETWORK_LABEL_NAMES, PER_PIXEL_LABEL_NAMES, load, save_payne_format
from jaxspec.models.payne._fit import fit
from jaxspec.models.payne._fit_labels import continuum_basis, fit_labels, observed_spectra, predict_labels
from jaxspec.models.payne._label_fit import ON_BOUND, LabelFit, apply_mask, as_prediction, label_fit
from jaxspec.models.payne._model import (
    LEAKY_SLOPE,
    Layer,
    Model,
    PerPixel,
    decode,
    decode_scaled,
    scale_labels,
    unscale_labels,
)
from jaxspec.models.payne._predict import predict_spectra

__all__ = [
    "LEAKY_SLOPE",
    "NETWORK_LABEL_NAMES",
    "ON_BOUND",
    "PER_PIXEL_LABEL_NAMES",
    "RV_MAX",
    "Config",
    "LabelFit",
    "Layer",
    "Model",
    "PerPixel",
    "apply_mask",
    "as_prediction",
    "continuum_basis",
    "decode",
    "decode_scaled",
    "doppler_stencil",
    "fit",
    "fit_labels",
    "label_fit",
    "load",
    "observed_spectra",
    "predict_labels",
    "predict_spectra",
    "save_payne_format",
    "scale_labels",
    "shift_spectrum",
    "unscale_labels",
]
