r"""Normalizing flows for stellar spectra ("Mendis", Ciuca & Ting 2022).

A flow :math:`f` maps a data vector ``x = (S, y)`` (a spectrum's ``L`` pixels,
then ``M`` labels) to a standard normal base variable, so that

.. math::

    \log p(x) = \log \mathcal N(f(x); 0, I) + \log\lvert\det J_f(x)\rvert

is exact.  Each of its blocks is ActNorm (an affine map per dimension,
initialised from the first batch), an invertible 1x1 mixing in LU form
(``W = P L (U + diag(s))``) and a rational-quadratic spline coupling of both
halves in turn (Durkan et al. 2019; conditioner MLPs of three LeakyReLU(0.2)
layers); all three are ``distrax`` bijectors.  ``Config(kind="joint")`` is the
paper's flow of ``x``; ``kind="structured"`` flows ``y`` first and conditions
every spectral coupling on ``y``, so ``p(S, y) = p(y) p(S | y)`` exactly.

Public API: :class:`Config`, :class:`Model`, :func:`fit` (maximum likelihood
through the engine's train step and loop), :func:`log_prob`, :func:`sample`,
:func:`sample_spectra` (draws of :math:`p(S \\mid y)`: exact for structured
flows, HMC in the base space for joint ones), :func:`conditional_correlation`
and :func:`correlation_graph` (the paper's Fig. 2), :func:`reference` and
:func:`outlier_scores` (NLL, typicality, likelihood ratio against a PPCA
background; the paper's Fig. 3) and :func:`component_purity`.  The layers
themselves (:mod:`._bijectors`, :mod:`._coupling`, :mod:`._flow`) are
exported for building other flows.  Figures: :mod:`jaxspec.plots.flows`.
"""

from jaxspec.models.flows._bijectors import (
    ActNorm,
    ActNormParams,
    LUFixed,
    LUMixing,
    LUParams,
    actnorm_init,
    lu_factors,
    lu_init,
    lu_matrix,
)
from jaxspec.models.flows._conditional import MCMC, ConditionalDraws, sample_spectra, split_r_hat
from jaxspec.models.flows._config import Config
from jaxspec.models.flows._correlation import (
    CorrelationGraph,
    Purity,
    component_purity,
    conditional_correlation,
    correlation_graph,
)
from jaxspec.models.flows._coupling import CouplingParams, SplineSpec, coupling, coupling_graphdefs, init_coupling
from jaxspec.models.flows._fit import fit
from jaxspec.models.flows._flow import (
    BlockParams,
    FlowSpec,
    base_log_prob,
    from_base,
    init_actnorm,
    init_blocks,
    init_whitening,
    n_parameters,
    parameter_shapes,
    shrunk_covariance,
    to_base,
)
from jaxspec.models.flows._flow import log_prob as flow_log_prob
from jaxspec.models.flows._model import Model, log_density
from jaxspec.models.flows._ood import OutlierScores, Reference, outlier_scores, reference
from jaxspec.models.flows._predict import Draws, log_prob, sample

__all__ = [
    "MCMC",
    "ActNorm",
    "ActNormParams",
    "BlockParams",
    "ConditionalDraws",
    "Config",
    "CorrelationGraph",
    "CouplingParams",
    "Draws",
    "FlowSpec",
    "LUFixed",
    "LUMixing",
    "LUParams",
    "Model",
    "OutlierScores",
    "Purity",
    "Reference",
    "SplineSpec",
    "actnorm_init",
    "base_log_prob",
    "component_purity",
    "conditional_correlation",
    "correlation_graph",
    "coupling",
    "coupling_graphdefs",
    "fit",
    "flow_log_prob",
    "from_base",
    "init_actnorm",
    "init_blocks",
    "init_coupling",
    "init_whitening",
    "log_density",
    "log_prob",
    "lu_factors",
    "lu_init",
    "lu_matrix",
    "n_parameters",
    "outlier_scores",
    "parameter_shapes",
    "reference",
    "sample",
    "sample_spectra",
    "shrunk_covariance",
    "split_r_hat",
    "to_base",
]
