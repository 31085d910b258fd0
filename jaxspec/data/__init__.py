"""What comes in: containers, preprocessing, file loaders, mock data.

Loaders and the mock generator are submodules (``jaxspec.data.apogee``,
``jaxspec.data.gaia_xp``, ``jaxspec.data.mock``), imported on use.
"""

from jaxspec.data.containers import Labels, Spectra, concatenate, train_test_split
from jaxspec.data.preprocess import (
    Standardizer,
    apply_pixel_mask,
    fill_missing_labels,
    fit_standardizer,
    mask_bad_pixels,
)

__all__ = [
    "Labels",
    "Spectra",
    "Standardizer",
    "apply_pixel_mask",
    "concatenate",
    "fill_missing_labels",
    "fit_standardizer",
    "mask_bad_pixels",
    "train_test_split",
]
