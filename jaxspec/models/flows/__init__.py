"""Normalizing flows for stellar spectra ("Mendis", Ciuca & Ting 2022): in construction (issue 16).

So far the two GLOW layers of a block as ``distrax`` bijectors
(:mod:`jaxspec.models.flows._bijectors`): ActNorm and the invertible 1x1
mixing in LU form.  The spline couplings, the flow, its fit and the
applications follow; this package is not yet a registered family.
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

__all__ = ["ActNorm", "ActNormParams", "LUFixed", "LUMixing", "LUParams", "actnorm_init", "lu_init", "lu_matrix"]
