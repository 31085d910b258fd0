"""Deprecated alias of :mod:`jaxspec.models.lux.cv` (removed in the next release)."""

import warnings

from jaxspec.models.lux.cv import *  # noqa: F403
from jaxspec.models.lux.cv import __all__  # noqa: F401

warnings.warn("jaxspec.models.lux_cv is deprecated; use jaxspec.models.lux.cv", DeprecationWarning, stacklevel=2)
