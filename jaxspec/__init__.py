"""jaxspec: JAX-native, functional data-driven generative models for stellar spectra.

Data layer: :class:`Spectra`, :class:`Labels` (``jaxspec.data``), loaders for
APOGEE and Gaia XP files, built-in mock surveys (``jaxspec.data.mock``).
Model files: :mod:`jaxspec.io`.  The shared engine (``jaxspec.optim``):
:func:`fit_latents` for per-star latent fits, :func:`make_train_step` and
``fit`` for training.  The model families (Lux, RSCA, scatter VAE, flows,
Cycle-StarNet) arrive in ``jaxspec.models``.
"""

from jaxspec import io
from jaxspec._version import __version__
from jaxspec.data.containers import Labels, Spectra
from jaxspec.optim import fit_latents, make_train_step

__all__ = ["Labels", "Spectra", "__version__", "fit_latents", "io", "make_train_step"]
