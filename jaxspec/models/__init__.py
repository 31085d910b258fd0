"""Model families, one module each (``from jaxspec.models import lux``).

``lux_cv`` (cross-validation of Lux hyper-parameters) and ``lux_mlp`` (Lux with
a small MLP for one output) build on ``lux``.
"""

from jaxspec.models import lux, lux_cv, lux_mlp

__all__ = ["lux", "lux_cv", "lux_mlp"]
