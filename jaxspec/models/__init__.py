"""Model families, one module each (``from jaxspec.models import lux``).

``lux_cv`` (cross-validation of Lux hyper-parameters) and ``lux_mlp`` (Lux with
a small MLP for one output) build on ``lux``; ``ppca`` (probabilistic PCA with
missing data) is the compression step of ``rsca`` (de Mijolla & Ness 2021).
"""

from jaxspec.models import lux, lux_cv, lux_mlp, ppca, rsca

__all__ = ["lux", "lux_cv", "lux_mlp", "ppca", "rsca"]
