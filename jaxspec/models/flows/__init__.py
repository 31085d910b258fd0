"""Normalizing flows for stellar spectra ("Mendis", Ciuca & Ting 2022): in construction (issue 16).

So far the layers of a block as ``distrax`` bijectors: ActNorm and the
invertible 1x1 mixing in LU form (:mod:`jaxspec.models.flows._bijectors`), and
the rational-quadratic spline coupling of both halves in turn
(:mod:`jaxspec.models.flows._coupling`), and the flow of stacked blocks
with its exact ``log_prob`` (:mod:`jaxspec.models.flows._flow`).  The
model, its fit and the applications follow; this package is not yet a registered family.
"""

from jaxspec.models.flows._bijectors import (
    ActNorm,
    ActNormParams,
    LUFixed,
    LUMixing,
    LUParams,
    actnorm_init,
    lu_init,
    lu_matrix,
)
from jaxspec.models.flows._coupling import CouplingParams, SplineSpec, coupling, coupling_graphdefs, init_coupling
from jaxspec.models.flows._flow import (
    BlockParams,
    FlowSpec,
    base_log_prob,
    from_base,
    init_actnorm,
    init_blocks,
    log_prob,
    n_parameters,
    parameter_shapes,
    to_base,
)

__all__ = [
    "ActNorm",
    "ActNormParams",
    "BlockParams",
    "CouplingParams",
    "FlowSpec",
    "LUFixed",
    "LUMixing",
    "LUParams",
    "SplineSpec",
    "actnorm_init",
    "base_log_prob",
    "coupling",
    "coupling_graphdefs",
    "from_base",
    "init_actnorm",
    "init_blocks",
    "init_coupling",
    "log_prob",
    "lu_init",
    "lu_matrix",
    "n_parameters",
    "parameter_shapes",
    "to_base",
]
