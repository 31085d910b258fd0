r"""Scatter variational auto-encoder (sVAE) for Gaia XP coefficients (Laroche & Speagle 2023).

An unsupervised generative model of the 110 BP/RP coefficients of a star.
After normalisation by the G flux and standardisation
(:func:`preprocess`), an encoder maps a star's coefficients :math:`x` to a
Gaussian :math:`q(z|x) = \mathcal{N}(\mu, \mathrm{diag}\,e^{\log\sigma^2})`
in :math:`n_z = 6` dimensions; a decoder maps :math:`z` to the reconstruction
:math:`\hat x`, and a second decoder with its own weights to a per-star,
per-coefficient intrinsic scatter :math:`s > 0` (softplus).  The loss per star
(Eqs. 1-5 of the paper), with :math:`N` the star's used coefficients,

.. math::
    \mathcal{L} = \frac{1}{2N}\sum_{i=1}^{N}\frac{(x_i - \hat x_i)^2}{\sigma_{x,i}^2 + s_i^2}
    + \frac{1}{2N}\sum_{i=1}^{N}\log(\sigma_{x,i}^2 + s_i^2)
    + \frac{1}{2 n_z}\sum_{j=1}^{n_z}\left(\mu_j^2 + e^{\log\sigma_j^2} - 1 - \log\sigma_j^2\right),

:math:`\hat x, s` decoded from one draw :math:`z = \mu + e^{\log\sigma^2/2}\epsilon`,
is averaged over a minibatch and minimised by SGD with momentum
(:func:`fit`, through :func:`jaxspec.optim.train.make_train_step` and
:func:`jaxspec.optim.train_loop`).

Units: :func:`decode`, :func:`encode` work in standardised units;
:func:`reconstruct` returns e-/s (archive units, like ``coefficients``);
:func:`sample` returns G-flux-normalised coefficients (multiply by a G flux).

Simplifications and additions
-----------------------------
- Masked coefficients (missing band, NaN, error <= 0) enter the encoder as 0
  (the training mean) and drop out of the loss; the paper has no missing data.
- The learning-rate decay is not specified in the paper: exponential,
  :math:`0.1 \times 0.97^{\mathrm{epoch}}` (smooth in steps) by default.
  The gradient's global norm is clipped at 10 (``config.clip_norm``), a
  guard against divergence of SGD at this rate; it is idle in normal training.
- As in the paper the encoder sees the coefficients only, not their errors.
  The standardisation uses every star given to :func:`fit` (the validation
  stars too).
- ``full_covariance=True`` (not in the paper, which drops off-diagonal terms):
  :math:`r^\top V^{-1} r + \log\det V` with :math:`V` the standardised
  coefficient covariance plus :math:`\mathrm{diag}(s^2)`, one 110x110 Cholesky
  per star and step (about 4e5 flops per star, ~1000x the diagonal loss, and
  48 kB of covariance per star in memory).
- :func:`anomaly_score` (rare populations): the loss at the posterior mean
  :math:`z = \mu` (no sampling), or its reduced :math:`\chi^2` alone.
- Weights start at NNX defaults (LeCun normal), not PyTorch's.
"""

from jaxspec.metrics import roc_auc
from jaxspec.models._common import FitResult
from jaxspec.models.scatter_vae._data import Batch, Stats, preprocess
from jaxspec.models.scatter_vae._eval import LatentCoverage, ResidualStats, latent_coverage, residual_stats
from jaxspec.models.scatter_vae._model import (
    Model,
    Reconstruction,
    anomaly_score,
    decode,
    encode,
    fit,
    normalised_residuals,
    reconstruct,
    sample,
)
from jaxspec.models.scatter_vae._net import Config, Params, batch_loss, init_params, make_optimizer

__all__ = [
    "Batch",
    "Config",
    "FitResult",
    "LatentCoverage",
    "Model",
    "Params",
    "Reconstruction",
    "ResidualStats",
    "Stats",
    "anomaly_score",
    "batch_loss",
    "decode",
    "encode",
    "fit",
    "init_params",
    "latent_coverage",
    "make_optimizer",
    "normalised_residuals",
    "preprocess",
    "reconstruct",
    "residual_stats",
    "roc_auc",
    "sample",
]
