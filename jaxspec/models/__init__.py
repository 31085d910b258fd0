"""Model families, one subpackage each, imported on first use (``from jaxspec.models import lux``).

``lux`` (Horta et al. 2025; ``lux.cv`` cross-validation, ``lux.mlp`` one
nonlinear output), ``ppca`` (probabilistic PCA with missing data), ``rsca``
(de Mijolla & Ness 2021, on ``ppca``), ``scatter_vae`` (Laroche & Speagle
2023), ``cannon`` (the quadratic Cannon, the supervised baseline) and
``payne`` (The Payne's spectral emulator, Ting et al. 2019) and ``flows``
(normalizing flows of spectra and labels, "Mendis", Ciuca & Ting 2022) and
``cycle_starnet`` (domain adaptation from synthetic to observed spectra on The
Payne's emulator, O'Briain et al. 2021).
Importing this package imports none of them (so neither flax nor optax).
"""

from __future__ import annotations

import importlib

__all__ = ["cannon", "cycle_starnet", "flows", "lux", "payne", "ppca", "rsca", "scatter_vae"]

_DEPRECATED = {"lux_cv": "lux.cv", "lux_mlp": "lux.mlp"}


def __getattr__(name: str):
    if name in __all__ or name in _DEPRECATED:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
