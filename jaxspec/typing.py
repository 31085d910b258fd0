"""Shape aliases of the public signatures (jaxtyping when installed).

``Flux`` is ``Float[Array, "*stars pix"]`` and so on: the pure functions of a
model (the forward models, ``decode``) take and return arrays with any leading
batch axes, one star being ``(pix,)``; batch verbs take containers
(:class:`~jaxspec.data.containers.Spectra`, :class:`~jaxspec.data.containers.Labels`).
jaxtyping is a test extra, not a runtime dependency: without it the aliases
degrade to ``jax.Array`` so annotations stay valid; with it,
``isinstance(x, Flux)`` checks the shape (``tests/test_typing.py`` does so for
every forward model).
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

Flux = Float[Array, "*stars pix"]
"""Flux, continuum-normalised unless a loader says otherwise, ``(..., n_pix)``."""
Ivar = Float[Array, "*stars pix"]
"""Inverse variance of the flux; 0 = masked."""
PixelMask = Bool[Array, "*stars pix"]
"""``True`` = bad pixel."""
Wavelength = Float[Array, " pix"]
"""Vacuum wavelength in Angstrom."""
LabelValues = Float[Array, "*stars labels"]
"""Stellar labels, physical units, ``(..., n_labels)``."""
LabelIvar = Float[Array, "*stars labels"]
Latents = Float[Array, "*stars latent"]
"""A latent-variable model's latents, ``(..., P)``."""
Key = PRNGKeyArray
