"""Deprecated alias of :mod:`jaxspec.models.lux.mlp` (removed in the next release)."""

import warnings

from jaxspec.models.lux.mlp import *  # noqa: F403
from jaxspec.models.lux.mlp import __all__  # noqa: F401

warnings.warn("jaxspec.models.lux_mlp is deprecated; use jaxspec.models.lux.mlp", DeprecationWarning, stacklevel=2)
