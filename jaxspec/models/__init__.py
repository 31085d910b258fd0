"""Model families, one module each (``from jaxspec.models import lux``)."""

from jaxspec.models import lux

__all__ = ["lux"]
