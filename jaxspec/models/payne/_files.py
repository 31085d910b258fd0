"""The Payne's own ``.npz`` files: read either public format (detected from its arrays), write one back exactly.

The two formats (arrays named as The Payne names them; ``L`` pixels, ``M`` labels, ``H`` hidden units):

* per-pixel (Ting et al. 2019): ``w_array_0 (L, H, M)``, ``b_array_0 (L, H)``,
  ``w_array_1 (L, H)``, ``b_array_1 (L,)``;
* single network (the current releases): ``w_array_i (out, in)`` and
  ``b_array_i (out,)`` for ``i = 0 .. k-1``, any ``k >= 1``, ``in`` of the
  first layer ``M`` and ``out`` of the last ``L``;

both with ``x_min``, ``x_max`` ``(M,)``.  A file must hold exactly the arrays of
one format: another entry (a third per-pixel layer, a stray array) would be
dropped on the way back, so it is refused rather than ignored.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from jaxspec import io
from jaxspec.data._grids import apogee_wavelength
from jaxspec.models.payne._model import Layer, Model, PerPixel

__all__ = ["NETWORK_LABEL_NAMES", "PER_PIXEL_LABEL_NAMES", "load", "save_payne_format"]

#: The labels of the shipped 2019 per-pixel APOGEE emulator (5 labels): Teff (K), logg (dex), [Fe/H],
#: [alpha/Fe] (dex), broadening (km/s); jaxspec's (APOGEE allStar) spelling.
PER_PIXEL_LABEL_NAMES = ("TEFF", "LOGG", "FE_H", "ALPHA_FE", "VBROAD")

#: The 25 labels of the single-network APOGEE emulator of The Payne's current release, in its input order
#: (the docstring of its ``fitting.py``): Teff (K), logg, vmicro (km/s), 20 [X/H] (dex), 12C/13C, and the
#: macroturbulent broadening (km/s; "vbroad" in O'Briain et al. 2021).
NETWORK_LABEL_NAMES = (
    "TEFF", "LOGG", "VMICRO",
    "C_H", "N_H", "O_H", "NA_H", "MG_H", "AL_H", "SI_H", "P_H", "S_H", "K_H",
    "CA_H", "TI_H", "V_H", "CR_H", "MN_H", "FE_H", "CO_H", "NI_H", "CU_H", "GE_H",
    "C12_C13", "VMACRO",
)  # fmt: skip

_BOX = ("x_min", "x_max")
_PER_PIXEL = ("w_array_0", "b_array_0", "w_array_1", "b_array_1")


def _fail(path: Path, what: str) -> ValueError:
    return ValueError(f"{path}: not a Payne emulator file ({what})")


def _describe(arrays: dict) -> str:
    return ", ".join(f"{k} {arrays[k].shape}" for k in sorted(arrays)) or "no arrays"


def _network_depth(path: Path, arrays: dict) -> int:
    """The number of layers ``k`` of a single-network file: ``w_array_0..k-1`` and ``b_array_0..k-1``, no gap."""
    found = {k for k in arrays if re.fullmatch(r"[wb]_array_\d+", k)}
    k = 0
    while f"w_array_{k}" in arrays:
        k += 1
    want = {f"{c}_array_{i}" for i in range(k) for c in "wb"}
    if found != want:
        raise _fail(
            path,
            f"a single network needs w_array_i and b_array_i for i = 0..k-1 with no gap; "
            f"missing {sorted(want - found)}, unexpected {sorted(found - want)}",
        )
    return k


def _params(path: Path, arrays: dict) -> PerPixel | tuple:
    """The weights of the file's format, every shape checked against ``x_min``'s ``M``."""
    if "w_array_0" not in arrays:
        raise _fail(path, f"expected w_array_0 and the arrays of its format, found {_describe(arrays)}")
    m = arrays["x_min"].shape[0] if arrays["x_min"].ndim == 1 else -1
    rank = arrays["w_array_0"].ndim
    if rank == 3:
        known = {*_PER_PIXEL, *_BOX}
        if set(arrays) != known:
            raise _fail(
                path,
                f"the per-pixel format (w_array_0 3-D) holds exactly {sorted(known)}; "
                f"missing {sorted(known - set(arrays))}, unexpected {sorted(set(arrays) - known)}",
            )
        n_pix, hidden = arrays["w_array_0"].shape[:2]
        want = {"w_array_0": (n_pix, hidden, m), "b_array_0": (n_pix, hidden), "w_array_1": (n_pix, hidden)}
        want["b_array_1"] = (n_pix,)
        params = PerPixel(*(arrays[k] for k in _PER_PIXEL))
    elif rank == 2:
        k = _network_depth(path, {a: v for a, v in arrays.items() if a not in _BOX})
        extra = set(arrays) - {*_BOX, *(f"{c}_array_{i}" for i in range(k) for c in "wb")}
        if extra:
            raise _fail(path, f"the single-network format holds w_array_i, b_array_i, x_min, x_max; found {extra}")
        sizes = [m] + [arrays[f"w_array_{i}"].shape[0] if arrays[f"w_array_{i}"].ndim else -1 for i in range(k)]
        want = {f"w_array_{i}": (sizes[i + 1], sizes[i]) for i in range(k)}
        want.update({f"b_array_{i}": (sizes[i + 1],) for i in range(k)})
        params = tuple(Layer(arrays[f"w_array_{i}"], arrays[f"b_array_{i}"]) for i in range(k))
    else:
        raise _fail(
            path,
            f"w_array_0 is 3-D (L, H, M) in the per-pixel format and 2-D (hidden, M) in the single-network "
            f"format, found shape {arrays['w_array_0'].shape}",
        )
    want.update({"x_min": (m,), "x_max": (m,)})
    bad = [f"{k} {arrays[k].shape} (expected {s})" for k, s in want.items() if arrays[k].shape != s]
    if m < 1 or bad:
        got = f"x_min {arrays['x_min'].shape}" if m < 1 else ", ".join(bad)
        raise _fail(path, f"shapes that do not fit together: {got}")
    return params


def _check_values(path: Path, arrays: dict) -> None:
    for key in sorted(arrays):
        a = arrays[key]
        if a.dtype.kind != "f":
            raise _fail(path, f"{key} is {a.dtype}, expected a floating-point array")
        if 0 in a.shape:
            raise _fail(path, f"{key} has an empty axis, shape {a.shape}")
        bad = int(np.count_nonzero(~np.isfinite(a)))
        if bad:
            raise _fail(path, f"{key} holds {bad} NaN or infinite of {a.size} values")
    lo, hi = arrays["x_min"], arrays["x_max"]
    if np.any(hi <= lo):
        i = int(np.flatnonzero(hi <= lo)[0])
        raise _fail(path, f"expected x_max > x_min for every label, found label {i}: x_min {lo[i]}, x_max {hi[i]}")


def _default_names(params, m: int) -> tuple:
    if isinstance(params, PerPixel) and m == len(PER_PIXEL_LABEL_NAMES):
        return PER_PIXEL_LABEL_NAMES
    if isinstance(params, tuple) and m == len(NETWORK_LABEL_NAMES):
        return NETWORK_LABEL_NAMES
    return tuple(f"label_{i}" for i in range(m))


def load(path: str | os.PathLike, *, label_names=None, wavelength=None, max_bytes: int | None = io.MAX_BYTES) -> Model:
    r"""Read a Payne emulator ``.npz`` of either public format (never unpickling).

    Parameters
    ----------
    path : str or path-like
    label_names : sequence of ``M`` str, optional
        The labels in the network's input order.  Default: the 5 labels of
        the 2019 APOGEE emulator (:data:`PER_PIXEL_LABEL_NAMES`) for a
        5-label per-pixel file, the 25 of the current release
        (:data:`NETWORK_LABEL_NAMES`) for a 25-label single network,
        otherwise ``label_0 .. label_{M-1}``.  A Payne file does not name its
        labels: pass them for any other emulator.
    wavelength : array ``(L,)``, optional
        The grid in vacuum Angstrom.  Default: for ``L = 7214`` the APOGEE
        grid that The Payne uses (DR12 chip trimming of
        :math:`\log_{10}\lambda = 4.179 + 6\times10^{-6}\, i`, the grid
        jaxspec's APOGEE loader gives; it agrees with The Payne's
        ``apogee_wavelength.npz`` to :math:`4\times10^{-13}` relative); for
        any other ``L`` no grid (None): a Payne file stores none.
    max_bytes : int or None
        The most bytes the file's arrays may take uncompressed.

    Returns
    -------
    Model
        ``file_format`` ``"per_pixel"`` or ``"network"``; arrays in their
        file dtypes, on the default device (:func:`jaxspec.io.on_device`).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Naming the file: not an ``.npz`` archive, an object (pickled) entry,
        arrays of neither format (missing or unexpected entries, wrong ranks,
        shapes that do not fit together), non-float, NaN or infinite values,
        ``x_max <= x_min``, or ``label_names`` / ``wavelength`` that do not
        fit the file.
    """
    path = Path(path)
    arrays = io.read_npz(path, max_bytes=max_bytes)
    missing = [k for k in _BOX if k not in arrays]
    if missing:
        raise _fail(path, f"missing {missing}; found {_describe(arrays)}")
    params = _params(path, arrays)
    _check_values(path, arrays)
    m = arrays["x_min"].shape[0]
    names = _default_names(params, m) if label_names is None else label_names
    if isinstance(names, str) or not hasattr(names, "__len__") or len(names) != m:
        raise ValueError(f"label_names: expected {m} names (the file's labels), found {names!r}")
    n_pix = (params.b1 if isinstance(params, PerPixel) else params[-1].b).shape[0]
    if wavelength is None and n_pix == 7214:
        wavelength = apogee_wavelength(7214)
    if wavelength is not None:
        wave = np.asarray(wavelength)
        if wave.dtype.kind not in "iuf" or wave.shape != (n_pix,):
            raise ValueError(
                f"wavelength: expected a real array of shape ({n_pix},) (the file's pixels), "
                f"found {wave.dtype} {wave.shape}"
            )
        wavelength = wave.astype(np.float64)
    return io.on_device(Model(params, arrays["x_min"], arrays["x_max"], tuple(names), wavelength))


def save_payne_format(model: Model, path: str | os.PathLike) -> Path:
    """Write ``model`` as a Payne ``.npz`` of the format it came in (``model.file_format``), atomically.

    The arrays keep their names (``w_array_i``, ``b_array_i``, ``x_min``,
    ``x_max``), shapes, dtypes and values, so ``load`` then ``save_payne_format``
    gives back the original file's arrays bit for bit (The Payne's own code
    reads it).  Label names and the wavelength grid have no place in the
    format and are not written: pass them to :func:`load` again.

    Parameters
    ----------
    model : Model
    path : str or path-like
        Destination (``.npz`` appended if missing); its folder must exist.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a payne.Model, found {type(model).__name__}")
    path = io.npz_destination(path)
    p = model.params
    if isinstance(p, PerPixel):
        arrays = {"w_array_0": p.w0, "w_array_1": p.w1, "b_array_0": p.b0, "b_array_1": p.b1}
    else:
        arrays = {f"w_array_{i}": layer.w for i, layer in enumerate(p)}
        arrays.update({f"b_array_{i}": layer.b for i, layer in enumerate(p)})
    arrays.update(x_min=model.x_min, x_max=model.x_max)
    io.write_npz(path, {k: np.asarray(v) for k, v in arrays.items()})
    return path
