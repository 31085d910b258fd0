"""jaxspec: JAX-native, functional data-driven generative models for stellar spectra.

Data layer: :class:`Spectra`, :class:`Labels` (``jaxspec.data``), loaders for
APOGEE and Gaia XP files, built-in mock surveys (``jaxspec.data.mock``).
Model files: :mod:`jaxspec.io`.  The model families (Lux, RSCA, scatter VAE,
flows, Cycle-StarNet) and the shared engine arrive in ``jaxspec.models`` and
``jaxspec.optim``.
"""

from jaxspec import io
from jaxspec._version import __version__
from jaxspec.data.containers import Labels, Spectra

__all__ = ["Labels", "Spectra", "__version__", "io"]
