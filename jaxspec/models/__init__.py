"""Model families, one module each (``from jaxspec.models import lux``).

``lux_cv`` (cross-validation of Lux hyper-parameters) and ``lux_mlp`` (Lux with
a small MLP for one output) build on ``lux``; ``ppca`` (probabilistic PCA with
missing data) is the compression step of ``rsca`` (de Mijolla & Ness 2021);
``cannon`` (the quadratic Cannon) is the supervised baseline of the others;
``scatter_vae`` is the unsupervised model of Gaia XP spectra (Laroche & Speagle 2023).
"""

from jaxspec.models import cannon, lux, lux_cv, lux_mlp, ppca, rsca, scatter_vae

__all__ = ["cannon", "lux", "lux_cv", "lux_mlp", "ppca", "rsca", "scatter_vae"]
