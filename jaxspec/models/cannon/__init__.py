r"""The Cannon: a quadratic, data-driven model of spectra given labels (Ness et al. 2015).

Each pixel (or XP coefficient) :math:`j` of star :math:`n` is quadratic in the
star's ``M`` labels, with a per-pixel intrinsic scatter :math:`s_j \ge 0`:

.. math::

    f_{nj} = \theta_j \cdot v(\ell_n) + \epsilon_{nj}, \qquad
    \epsilon_{nj} \sim \mathcal N(0, \sigma_{nj}^2 + s_j^2), \qquad
    v(\ell) = [1,\ x_1, \ldots, x_M,\ x_a x_b\ (a \le b)],\quad x = (\ell - \mathrm{pivot}) / \mathrm{scale},

``Q = 1 + M + M(M+1)/2`` terms; pivot = median and scale =
:math:`(p_{97.5} - p_{2.5})/4` of the training labels (a reparametrisation for
conditioning only: a quadratic in ``x`` is a quadratic in :math:`\ell`).

Training (:func:`fit`) minimises the negative log-likelihood over measured
pixels (``ivar > 0``) of stars with every label measured,

.. math::

    g(\theta, s) = \tfrac12 \sum_{n,j} \Bigl[\frac{(f_{nj} - \theta_j \cdot v_n)^2}{\sigma_{nj}^2 + s_j^2}
                   + \ln(\sigma_{nj}^2 + s_j^2)\Bigr],

by block coordinate descent: at fixed ``s`` each :math:`\theta_j` is the exact
weighted least-squares solve (:func:`jaxspec.optim.solvers.weighted_lstsq`,
all pixels at once); at fixed :math:`\theta` each :math:`s_j` maximises the
likelihood by Fisher scoring on :math:`\ln s_j^2`
(:func:`jaxspec.optim.scatter.scatter_step`).  The last block is always a
:math:`\theta` step, so the returned :math:`\theta` is the exact solve at the
returned ``s``.  The test step (:func:`predict_labels`) fits each star's labels
by dense Gauss-Newton through :func:`jaxspec.optim.fit_latents`.
"""

from jaxspec.models.cannon._fit import fit
from jaxspec.models.cannon._model import Config, Model, decode, n_terms
from jaxspec.models.cannon._predict import design, normalised_residuals, predict_labels, predict_spectra

__all__ = [
    "Config",
    "Model",
    "decode",
    "design",
    "fit",
    "n_terms",
    "normalised_residuals",
    "predict_labels",
    "predict_spectra",
]
