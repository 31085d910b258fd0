"""jaxspec: JAX-native, functional data-driven generative models for stellar spectra.

Data layer: :class:`Spectra`, :class:`Labels` (``jaxspec.data``), loaders for
APOGEE and Gaia XP files, built-in mock surveys (``jaxspec.data.mock``).
Model files: :mod:`jaxspec.io`.  The shared engine (``jaxspec.optim``):
:func:`fit_latents` for per-star latent fits, :func:`make_train_step` and
``train_loop`` for training.  The model families (Lux, RSCA, scatter VAE, ...)
are in ``jaxspec.models``.  The engine and the families are imported on first
use, so importing a loader loads neither flax, optax nor jaxopt.
"""

from __future__ import annotations

import importlib

from jaxspec import io
from jaxspec._version import __version__
from jaxspec.data.containers import Labels, Spectra

__all__ = ["Labels", "Spectra", "__version__", "fit_latents", "io", "make_train_step"]

_LAZY = {"fit_latents": "jaxspec.optim", "make_train_step": "jaxspec.optim"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
