"""APOGEE wavelength grids and chip-gap trimming (vacuum Angstrom).

APOGEE stores spectra on one log-lambda grid of 8575 pixels,
``log10(lambda) = 4.179 + 6e-6 * i``.  Three detector chips leave two gaps; the
DR13-DR17 data products trim them to 7514 pixels, DR11-DR12 (and The Payne)
to 7214 pixels.  The index ranges are half-open ``[start, stop)`` into the
8575-pixel grid.
"""

from __future__ import annotations

import numpy as np

LOGLAM0 = 4.179
DLOGLAM = 6e-6
N_PIX_FULL = 8575

CHIP_RANGES: dict[int, tuple[tuple[int, int], ...]] = {
    7514: ((246, 3274), (3585, 6080), (6344, 8335)),
    7214: ((322, 3242), (3648, 6048), (6412, 8306)),
}


def full_wavelength(n_pix: int = N_PIX_FULL, loglam0: float = LOGLAM0, dloglam: float = DLOGLAM) -> np.ndarray:
    """Wavelengths (vacuum Angstrom, float64) of a log-lambda grid, shape ``(n_pix,)``."""
    return 10.0 ** (loglam0 + dloglam * np.arange(n_pix))


def chip_indices(n_pix: int) -> np.ndarray:
    """Indices into the 8575-pixel grid kept by the ``n_pix`` (7514 or 7214) trimming.

    >>> chip_indices(7514).shape, chip_indices(7214).shape
    ((7514,), (7214,))
    """
    if n_pix not in CHIP_RANGES:
        raise ValueError(f"n_pix: expected one of {sorted(CHIP_RANGES)}, found {n_pix!r}")
    return np.concatenate([np.arange(a, b) for a, b in CHIP_RANGES[n_pix]])


def apogee_wavelength(n_pix: int = 7514) -> np.ndarray:
    """Vacuum wavelengths (Angstrom) of the trimmed APOGEE grid, shape ``(n_pix,)``.

    >>> w = apogee_wavelength(7514)
    >>> round(float(w[0]), 2), round(float(w[-1]), 2)
    (15152.21, 16943.53)
    """
    return full_wavelength()[chip_indices(n_pix)]
