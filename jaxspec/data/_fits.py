"""FITS reading with errors that name the file: astropy's failures and truncation warnings become ``OSError``."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning


def fits_call(path: Path, load: Callable):
    """``load()``, with astropy's exceptions and truncation warnings turned into ``OSError`` naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    failure = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = load()
        except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError) as exc:
            failure = exc
    broken = [str(w.message) for w in caught if issubclass(w.category, AstropyUserWarning)]
    broken = [m for m in broken if re.search("truncat|corrupt", m)]
    if failure is not None or broken:
        reasons = [*dict.fromkeys(broken), *([f"{type(failure).__name__}: {failure}"] if failure else [])]
        raise OSError(f"{path}: not a readable FITS file (corrupt or truncated?): {'; '.join(reasons)}") from failure
    for w in caught:  # whatever else astropy said about this file still reaches the user, with the file's name
        warnings.warn(f"{path}: {w.message}", w.category, stacklevel=3)
    return out


def read_images(path: Path, fields: tuple[str, ...]) -> tuple[fits.Header, list[tuple[fits.Header, np.ndarray]]]:
    """The primary header and ``(header, data)`` of HDU1..len(fields), checked to be same-shape images."""

    def load():
        with fits.open(path, memmap=False) as hdul:
            n_hdu = len(hdul)
            hdus = [
                (h.header.copy(), np.array(h.data) if h.is_image and h.data is not None else type(h).__name__)
                for h in hdul[: len(fields) + 1]
            ]
        return hdus, n_hdu

    hdus, n_hdu = fits_call(path, load)
    out = []
    for i, field in enumerate(fields, start=1):
        where = f"{path}: HDU{i} ({field})"
        if i >= n_hdu:
            raise ValueError(f"{where}: missing; expected HDU1-{len(fields)} = {', '.join(fields)}, found {n_hdu} HDUs")
        header, data = hdus[i]
        if isinstance(data, str):
            raise ValueError(f"{where}: expected a non-empty image HDU, found {data}")
        if not np.issubdtype(data.dtype, np.number) or data.ndim not in (1, 2) or data.size == 0:
            raise ValueError(f"{where}: expected a 1-D or 2-D numeric image, found shape {data.shape}, {data.dtype}")
        if i > 1 and data.shape != out[0][1].shape:
            raise ValueError(f"{where}: expected shape {out[0][1].shape} like HDU1, found {data.shape}")
        out.append((header, data))
    return hdus[0][0], out
