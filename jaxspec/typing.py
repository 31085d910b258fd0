"""Shape aliases for annotations (jaxtyping when installed).

``Flux`` is ``Float[Array, "stars pix"]`` and so on.  jaxtyping is a test
extra, not a runtime dependency: without it the aliases degrade to
``jax.Array`` so annotations stay valid; with it, tests may switch on runtime
shape checks (``jaxtyping.jaxtyped`` with a type checker).
"""

from __future__ import annotations

import jax

try:
    from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray
except ImportError:  # pragma: no cover - exercised only without the test extra

    class _Dims:
        """``Float[Array, "stars pix"]`` -> ``jax.Array`` when jaxtyping is absent."""

        def __class_getitem__(cls, item):
            return jax.Array

    Array = jax.Array
    Float = Int = Bool = _Dims
    PRNGKeyArray = jax.Array

__all__ = [
    "Array",
    "Flux",
    "Ivar",
    "Key",
    "LabelIvar",
    "LabelValues",
    "Latents",
    "PixelMask",
    "Wavelength",
]

Flux = Float[Array, "stars pix"]
"""Flux, continuum-normalised unless a loader says otherwise, ``(n_stars, n_pix)``."""
Ivar = Float[Array, "stars pix"]
"""Inverse variance of the flux; 0 = masked."""
PixelMask = Bool[Array, "stars pix"]
"""``True`` = bad pixel."""
Wavelength = Float[Array, " pix"]
"""Vacuum wavelength in Angstrom."""
LabelValues = Float[Array, "stars labels"]
LabelIvar = Float[Array, "stars labels"]
Latents = Float[Array, "stars latent"]
Key = PRNGKeyArray
