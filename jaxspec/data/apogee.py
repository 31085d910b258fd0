"""APOGEE DR17 readers: ``aspcapStar``/``apStar`` spectra and ``allStar`` labels.

Layouts (SDSS data model, as written by the APOGEE pipelines):

- ``aspcapStar``: HDU1 the continuum-normalised flux, HDU2 its 1-sigma error,
  1-D on the 8575-pixel log-lambda grid (``CRVAL1``, ``CDELT1``, ``CRPIX1``,
  ``CTYPE1 = 'LOG-LINEAR'``, ``DC-FLAG = 1``), zeros in the chip gaps.
- ``apStar``/``asStar``: HDU1 flux and HDU2 error in 1e-17 erg/s/cm^2/Angstrom
  (NOT continuum-normalised), HDU3 the ``APOGEE_PIXMASK`` bitmask, same grid.
  1-D with one visit; with ``NVISITS > 1`` 2-D ``(NVISITS + 2, 8575)``: row 0
  the combination with per-pixel weights, row 1 with global weights (their mask
  rows are the bitwise OR and AND of the visit masks), then one row per visit.
- ``allStar``: a binary table (HDU1) of labels ``NAME`` with errors ``NAME_ERR``;
  -9999 and NaN mean missing.

Only astropy reads the files.  Every error names the file and the HDU, column
or header keyword at fault.  Spectra are trimmed to the 7514-pixel (DR13-17) or
7214-pixel (DR11-12, The Payne) chip grids of :mod:`jaxspec.data._grids`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from astropy.io import fits
from tqdm import tqdm

from jaxspec.data._checks import check_int
from jaxspec.data._fits import fits_call, read_images
from jaxspec.data._grids import CHIP_RANGES, DLOGLAM, LOGLAM0, N_PIX_FULL, chip_indices, full_wavelength
from jaxspec.data.containers import Labels, Spectra, concatenate

__all__ = ["PIXMASK_BITS", "Catalog", "pixmask_value", "read_allstar", "read_apstar", "read_aspcapstar", "read_spectra"]

#: ``APOGEE_PIXMASK`` bit names (bit ``i`` is ``PIXMASK_BITS[i]``); bits 0-7 mark bad pixels.
PIXMASK_BITS = (
    "BADPIX", "CRPIX", "SATPIX", "UNFIXABLE", "BADDARK", "BADFLAT", "BADERR", "NOSKY",
    "LITTROW_GHOST", "PERSIST_HIGH", "PERSIST_MED", "PERSIST_LOW", "SIG_SKYLINE", "SIG_TELLURIC",
    "NOT_ENOUGH_PSF", "", "FERRE_MASK",
)  # fmt: skip
_BAD_BITS = tuple(range(8))
_MISSING = -9999.0  # allStar sentinel; values at or below it are missing


class Catalog(NamedTuple):
    """Labels read from an ``allStar`` table, with the ids of their stars."""

    labels: Labels
    """``(n_stars, n_labels)``, the requested columns; ``ivar == 0`` where missing."""
    ids: np.ndarray
    """``(n_stars,)`` star ids (str), or file row numbers when ``id_column=None``."""


def pixmask_value(bits: Iterable[int | str]) -> int:
    """The integer with the given ``APOGEE_PIXMASK`` bits set (bit numbers or names).

    ``bits`` is an iterable of bit numbers (0-63) or :data:`PIXMASK_BITS` names; a bare str is one name.
    A bare int is a ``TypeError``: ``255`` could mean bit 255 or the mask value 255 (bits 0-7), so it
    must be spelled out, e.g. ``range(8)``.

    >>> pixmask_value(range(8)), pixmask_value(["BADPIX", "SIG_SKYLINE"])
    (255, 4097)
    """
    if isinstance(bits, int | np.integer) and not isinstance(bits, bool):
        v = int(bits)
        hint = f"; the mask value {v} is bad_bits={[i for i in range(64) if v >> i & 1]}" if 0 < v < 2**64 else ""
        raise TypeError(f"bad_bits: expected an iterable of bit numbers or names, found int {v}{hint}")
    if isinstance(bits, str):
        bits = [bits]
    try:
        bits = list(bits)
    except TypeError:
        raise TypeError(
            f"bad_bits: expected an iterable of bit numbers or names, found {type(bits).__name__} {bits!r}"
        ) from None
    value = 0
    for b in bits:
        if isinstance(b, str):
            if not b or b not in PIXMASK_BITS:
                raise ValueError(f"bad_bits: unknown bit name {b!r}; known: {', '.join(filter(None, PIXMASK_BITS))}")
            b = PIXMASK_BITS.index(b)
        if isinstance(b, bool) or not isinstance(b, int | np.integer) or not 0 <= b < 64:
            raise ValueError(f"bad_bits: expected bit numbers in [0, 63] or bit names, found {b!r}")
        value |= 1 << int(b)
    return value


# -- the wavelength grid and the spectra --------------------------------------------------------------
def _grid(path: Path, header: fits.Header, primary: fits.Header, n: int, n_pix: int | None):
    """Columns of the file's ``n`` pixels kept on the ``n_pix`` grid, and their vacuum wavelengths (Angstrom)."""
    where = f"{path}: HDU1 (flux) header"

    def key(name):
        value = header.get(name, primary.get(name))
        if value is None or name == "CTYPE1":
            return value
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where} {name}: expected a number, found {value!r}") from None

    crval, cdelt, crpix, ctype, dcflag = (key(k) for k in ("CRVAL1", "CDELT1", "CRPIX1", "CTYPE1", "DC-FLAG"))
    if ctype is not None and "LOG" not in str(ctype).upper():
        raise ValueError(f"{where} CTYPE1: expected 'LOG-LINEAR' (a log10 wavelength grid), found {ctype!r}")
    if dcflag is not None and dcflag != 1:
        raise ValueError(f"{where} DC-FLAG: expected 1 (a log10 wavelength grid), found {dcflag:g}")
    grid = f"CRVAL1/CDELT1 = {crval}/{cdelt}"
    loglam0 = None if crval is None else crval + (cdelt or 0.0) * (1.0 - (1.0 if crpix is None else crpix))
    if n in CHIP_RANGES:  # already trimmed, recognised by its length; a header must then agree
        src = chip_indices(n)
        off = None if loglam0 is None else min(abs(loglam0 - LOGLAM0), abs(loglam0 - LOGLAM0 - DLOGLAM * src[0]))
        if (cdelt is not None and abs(cdelt - DLOGLAM) > 1e-6 * DLOGLAM) or (off is not None and off > 1e-3 * DLOGLAM):
            raise ValueError(f"{where} {grid}: {n} pixels, but not the trimmed APOGEE grid ({LOGLAM0}, {DLOGLAM})")
        wave = full_wavelength()[src]
    elif crval is None or cdelt is None:
        raise ValueError(f"{where} CRVAL1/CDELT1: missing; the log10 wavelength grid of {n} pixels needs them")
    elif not (0.0 < loglam0 < 10.0 and 0.0 < cdelt < 0.1):
        raise ValueError(f"{where} {grid}: expected log10(wavelength / Angstrom) and a positive log10 step")
    elif n == N_PIX_FULL and abs(loglam0 - LOGLAM0) < 1e-3 * DLOGLAM and abs(cdelt - DLOGLAM) * n < 1e-3 * DLOGLAM:
        src, wave = np.arange(n), full_wavelength()
    else:
        src, wave = None, full_wavelength(n, loglam0, cdelt)
    if n_pix is None:
        return np.arange(n), wave
    if src is None:
        raise ValueError(f"{where} {grid}: not the APOGEE grid that chip-gap trimming needs (n_pix=None keeps it)")
    dst = chip_indices(n_pix)
    pos = np.minimum(np.searchsorted(src, dst), n - 1)
    if not np.array_equal(src[pos], dst):
        raise ValueError(f"{path}: HDU1 (flux): a {n}-pixel grid lacks pixels of the requested n_pix={n_pix} grid")
    return pos, full_wavelength()[dst]


def _spectra(path: Path, rows: np.ndarray, flux, err, bad, grid: tuple[np.ndarray, np.ndarray]) -> Spectra:
    """``Spectra`` on ``grid = (columns, wavelength)`` from float64 ``flux``, ``err``, ``bad`` (rows, file pixels)."""
    if np.any(err < 0):
        r, p = np.argwhere(err < 0)[0]
        raise ValueError(
            f"{path}: HDU2 (error): expected errors >= 0, found a negative one at row {rows[r]}, pixel {p}"
        )
    cols, wave = grid
    bad = (bad | ~np.isfinite(flux) | ~np.isfinite(err) | (flux == 0) | (err == 0))[:, cols]
    empty = np.flatnonzero(bad.all(axis=1))
    if empty.size:
        raise ValueError(
            f"{path}: HDU1 (flux): row {rows[empty[0]]} has no usable pixel on the {cols.size}-pixel grid "
            "(all NaN, zero, or flagged by HDU2/HDU3)"
        )
    try:
        return Spectra(np.where(bad, np.nan, flux[:, cols]), wavelength=wave, err=np.where(bad, np.nan, err[:, cols]))
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{path}: HDU1/HDU2 (flux/error): {exc}") from exc


def read_aspcapstar(path: str | os.PathLike, *, n_pix: int | None = 7514) -> Spectra:
    """Read an ``aspcapStar`` file: the continuum-normalised spectrum of one star.

    Parameters
    ----------
    path : str or path-like
        HDU1 flux and HDU2 error, 1-D, on the log-lambda grid of the HDU1 header
        (``CRVAL1``, ``CDELT1``); a file already trimmed to 7514 or 7214 pixels
        is recognised by its length.
    n_pix : {7514, 7214} or None
        Chip-gap trimming to the DR13-17 (7514) or DR11-12 (7214) grid, or
        ``None`` to keep the file's grid (8575 pixels for DR16/17).

    Returns
    -------
    Spectra
        Shape ``(1, n_pix)``: flux dimensionless (continuum = 1), wavelength in
        vacuum Angstrom.  Pixels with zero or non-finite flux or error are masked.

    Raises
    ------
    FileNotFoundError, OSError
        Missing, corrupt or truncated file.
    ValueError
        Wrong HDU layout, mismatched shapes, no log-lambda grid in the header,
        negative errors, or no usable pixel (the message names file and HDU).
    """
    path = Path(path)
    primary, [(h1, flux), (_, err)] = read_images(path, ("flux", "error"))
    if flux.ndim != 1:
        raise ValueError(f"{path}: HDU1 (flux): expected a 1-D spectrum, found shape {flux.shape}")
    f, e = np.asarray(flux, np.float64)[None], np.asarray(err, np.float64)[None]
    return _spectra(path, np.arange(1), f, e, np.zeros(f.shape, bool), _grid(path, h1, primary, flux.size, n_pix))


def _apstar_rows(path: Path, rows, primary: fits.Header, shape: tuple[int, ...]) -> np.ndarray:
    """HDU row indices for ``rows``, after checking the flux shape against HDU0 ``NVISITS``."""
    n_rows = 1 if len(shape) == 1 else shape[0]
    nvisits = primary.get("NVISITS")
    if nvisits is not None and nvisits != (1 if len(shape) == 1 else n_rows - 2):
        raise ValueError(
            f"{path}: HDU0 header NVISITS: {nvisits!r} visits need HDU1 (flux) 1-D for one visit, "
            f"else of NVISITS + 2 rows; found shape {shape}"
        )
    if n_rows == 2:
        raise ValueError(f"{path}: HDU1 (flux): expected 1-D (one visit) or 2 combined rows + visits, found {shape}")
    if isinstance(rows, str):
        if rows not in ("combined", "visits"):
            raise ValueError(f"rows: expected 'combined', 'visits' or row indices, found {rows!r}")
        return np.arange(2, n_rows) if rows == "visits" and n_rows > 1 else np.array([0])
    idx = np.atleast_1d(np.asarray(rows))
    if idx.size == 0 or idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise TypeError(f"rows: expected 'combined', 'visits' or a sequence of int, found {rows!r}")
    if np.any((idx < 0) | (idx >= n_rows)):
        raise ValueError(f"{path}: HDU1 (flux): rows {idx.tolist()} out of range [0, {n_rows})")
    return idx


def read_apstar(
    path: str | os.PathLike,
    *,
    rows: str | Sequence[int] = "combined",
    bad_bits: Iterable[int | str] = _BAD_BITS,
    n_pix: int | None = 7514,
) -> Spectra:
    """Read an ``apStar``/``asStar`` file: combined and visit spectra of one star.

    The flux is in 1e-17 erg/s/cm^2/Angstrom and is **not** continuum-normalised:
    normalise it before using a model trained on normalised spectra.

    Parameters
    ----------
    path : str or path-like
        HDU1 flux, HDU2 error, HDU3 ``APOGEE_PIXMASK`` bitmask, each ``(8575,)``
        with one visit or ``(NVISITS + 2, 8575)`` with more.
    rows : {"combined", "visits"} or sequence of int
        ``"combined"``: row 0, the combination with per-pixel weights (its mask
        is the OR of the visit masks); ``"visits"``: the visits (rows 2 on); or
        HDU row indices (row 1 is the combination with global weights).  With
        one visit, every choice gives the single row.
    bad_bits : iterable of int or str
        ``APOGEE_PIXMASK`` bits (numbers or :data:`PIXMASK_BITS` names) that
        mask a pixel; default bits 0-7 (BADPIX ... NOSKY).  A bare str is one
        name; a bare int is refused (bit number or mask value? see
        :func:`pixmask_value`).
    n_pix : {7514, 7214} or None
        Chip-gap trimming as in :func:`read_aspcapstar`.

    Returns
    -------
    Spectra
        Shape ``(n_rows, n_pix)``: flux and errors in 1e-17 erg/s/cm^2/Angstrom,
        rest-frame vacuum wavelength in Angstrom.  Pixels with a bad bit set or
        zero/non-finite flux or error are masked.

    Raises
    ------
    FileNotFoundError, OSError, ValueError
        As :func:`read_aspcapstar`; also a non-integer bitmask, rows out of
        range, or an HDU0 ``NVISITS`` that does not match the array shape.
    """
    path = Path(path)
    badmask = np.uint64(pixmask_value(bad_bits))
    primary, [(h1, flux), (_, err), (_, mask)] = read_images(path, ("flux", "error", "bitmask"))
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"{path}: HDU3 (bitmask): expected an integer APOGEE_PIXMASK image, found {mask.dtype}")
    idx = _apstar_rows(path, rows, primary, flux.shape)
    flux, err, mask = (np.atleast_2d(a)[idx] for a in (flux, err, mask))
    bits = mask.astype(mask.dtype.newbyteorder("="))
    bits = bits.view(bits.dtype.str.replace("i", "u")).astype(np.uint64)  # no sign extension of int16 masks
    grid = _grid(path, h1, primary, flux.shape[1], n_pix)
    return _spectra(path, idx, flux.astype(np.float64), err.astype(np.float64), (bits & badmask) != 0, grid)


def read_spectra(
    paths: Iterable[str | os.PathLike],
    *,
    kind: str = "aspcapStar",
    n_pix: int | None = 7514,
    bad_bits: Iterable[int | str] = _BAD_BITS,
    progress: bool = True,
) -> Spectra:
    """Stack many ``aspcapStar`` (or ``apStar`` combined) spectra, one star per file, on one grid.

    Parameters
    ----------
    paths : iterable of str or path-like
        The files, in the order of the output rows.
    kind : {"aspcapStar", "apStar"}
        ``"apStar"`` (also ``asStar``) gives each file's row 0, in
        1e-17 erg/s/cm^2/Angstrom (not normalised), masked by ``bad_bits``.
    n_pix : {7514, 7214} or None
        Chip-gap trimming (see :func:`read_aspcapstar`).
    bad_bits : iterable of int or str
        ``apStar`` bad-pixel bits (see :func:`read_apstar`).
    progress : bool
        Show a ``tqdm`` progress bar.

    Returns
    -------
    Spectra
        Shape ``(n_files, n_pix)``.

    Raises
    ------
    ValueError
        No paths, an unknown ``kind``, a file whose grid differs from the first
        file's (possible with ``n_pix=None``), or the single-file readers' errors.
    """
    if kind not in ("aspcapStar", "apStar"):
        raise ValueError(f"kind: expected 'aspcapStar' or 'apStar', found {kind!r}")
    pixmask_value(bad_bits)  # a bad bad_bits is an error before any file is read, whatever the kind
    paths = [Path(paths)] if isinstance(paths, str | os.PathLike) else [Path(p) for p in paths]
    if not paths:
        raise ValueError("paths: expected at least one file, found none")
    out: list[Spectra] = []
    for path in tqdm(paths, desc=f"reading {kind}", unit="file", disable=not progress):
        if kind == "aspcapStar":
            s = read_aspcapstar(path, n_pix=n_pix)
        else:
            s = read_apstar(path, bad_bits=bad_bits, n_pix=n_pix)
        if out and not np.array_equal(s.wavelength, out[0].wavelength):
            raise ValueError(
                f"{path}: HDU1 (flux): wavelength grid ({s.n_pix} pixels from {s.wavelength[0]:.2f} A) "
                f"differs from that of {paths[0]} ({out[0].n_pix} pixels from {out[0].wavelength[0]:.2f} A)"
            )
        out.append(s)
    return concatenate(out)


# -- allStar -----------------------------------------------------------------------------------------
def read_allstar(
    path: str | os.PathLike,
    names: Sequence[str],
    *,
    id_column: str | None = "APOGEE_ID",
    err_suffix: str | None = "_ERR",
    hdu: int | str = 1,
    where: np.ndarray | Callable | None = None,
) -> Catalog:
    """Read labels and star ids from an ``allStar`` catalog (a FITS binary table).

    Parameters
    ----------
    path : str or path-like
        The catalog, e.g. ``allStar-dr17-synspec_rev1.fits``; it is memory-mapped
        and only the needed columns are read.
    names : sequence of str
        Label columns with one number per row, e.g. ``["TEFF", "LOGG", "FE_H"]``.
    id_column : str or None
        Column of star ids (whitespace stripped); ``None`` returns file row numbers.
    err_suffix : str or None
        The 1-sigma error of column ``NAME`` is column ``NAME + err_suffix``; an
        absent error column is an error, and so is ``""`` (each value would be
        its own error).  ``None`` reads no errors and gives every measured
        value unit weight (``ivar = 1``).
    hdu : int or str
        HDU of the table: its position (``>= 0``) or its extension name
        (``EXTNAME``, case-insensitive).
    where : bool array ``(n_rows,)``, int array, or callable, optional
        Rows to keep: a mask or row indices, or ``f(table) -> mask`` called with
        the astropy ``FITS_rec``, e.g. ``lambda t: t["ASPCAPFLAG"] == 0``.

    Returns
    -------
    Catalog
        ``labels`` (names as given, in the catalog's units: K, dex, ...) and
        ``ids``.  A label is missing (``ivar == 0``) where its value or its error
        is NaN, masked (``TNULL``) or <= -9999.

    Raises
    ------
    FileNotFoundError, OSError
        Missing, corrupt or truncated file.
    ValueError, TypeError
        Absent, non-numeric or multi-valued columns, a non-table HDU, an
        ``hdu`` that names no extension, an empty table, a bad ``where``, an
        empty ``err_suffix``, or errors <= 0 (the message names file, HDU and
        column).
    """
    path = Path(path)
    if isinstance(names, str) or not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"names: expected a non-empty sequence of column names, found {names!r}")
    if err_suffix is not None and not isinstance(err_suffix, str):
        raise TypeError(f"err_suffix: expected a str (or None for no errors), found {type(err_suffix).__name__}")
    if err_suffix == "":
        raise ValueError(
            "err_suffix: expected a non-empty suffix (the error of NAME is column NAME + err_suffix), found ''; "
            "each value would be its own error (err_suffix=None reads no errors)"
        )
    if isinstance(hdu, bool) or not isinstance(hdu, int | np.integer | str):
        raise TypeError(
            f"hdu: expected an int (HDU number) or a str (extension name), found {type(hdu).__name__} {hdu!r}"
        )
    if isinstance(hdu, str) and not hdu.strip():
        raise ValueError(f"hdu: expected an extension name, found {hdu!r}")
    if not isinstance(hdu, str):
        check_int(hdu, "hdu", minimum=0)
    errs = [] if err_suffix is None else [n + err_suffix for n in names]
    wanted = [*names, *errs, *([] if id_column is None else [id_column])]

    def load():
        with fits.open(path, memmap=True) as hdul:
            if isinstance(hdu, str):
                match = [i for i, h in enumerate(hdul) if h.name.upper() == hdu.strip().upper()]
                if not match:
                    return "no extension", [f"HDU{i} {h.name!r}" for i, h in enumerate(hdul)]
                i = match[0]
            else:
                i = int(hdu)
            if not 0 <= i < len(hdul) or not isinstance(hdul[i], fits.BinTableHDU | fits.TableHDU):
                return "not a table", i, type(hdul[i]).__name__ if 0 <= i < len(hdul) else f"{len(hdul)} HDUs"
            data, cols = hdul[i].data, hdul[i].columns
            n = 0 if data is None else len(data)
            if n == 0:
                return "no rows", i
            try:
                sel = None if where is None else np.asarray(where(data) if callable(where) else where)
            except Exception as exc:  # the user's callable failed: not a FITS problem
                return "where", i, exc
            got = {c: (np.array(data[c]), cols[c].null, cols[c].format) for c in wanted if c in cols.names}
            return "ok", i, (got, list(cols.names), n, sel)

    loaded = fits_call(path, load)
    if loaded[0] == "no extension":
        hint = " (an int selects an HDU by position)" if hdu.strip().isdigit() else ""
        raise ValueError(f"hdu: no extension named {hdu!r} in {path}{hint}; found: {', '.join(loaded[1])}")
    at = f"{path}: HDU{loaded[1]}" + (f" ({hdu!r})" if isinstance(hdu, str) else "")
    if loaded[0] == "not a table":
        raise ValueError(f"{at}: expected a binary table (the allStar catalog), found {loaded[2]}")
    if loaded[0] == "no rows":
        raise ValueError(f"{path}: no rows in HDU{loaded[1]}; expected an allStar table with at least one star")
    if loaded[0] == "where":
        raise ValueError(f"where: failed on {at}: {type(loaded[2]).__name__}: {loaded[2]}") from loaded[2]
    got, available, n_rows, sel = loaded[2]
    for c in wanted:
        if c not in got:
            hint = f" (the error of {c[: -len(err_suffix)]}; err_suffix=None reads no errors)" if c in errs else ""
            near = difflib.get_close_matches(c, available, n=3)
            near = f"close: {', '.join(near)}" if near else f"the table has {len(available)} columns"
            raise ValueError(f"{at} column {c!r}: not found{hint}; {near}")
    try:
        rows = np.arange(n_rows) if sel is None else np.arange(n_rows)[sel].reshape(-1)
    except IndexError as exc:
        raise ValueError(f"where: expected a ({n_rows},) boolean mask or row indices for {at}; {exc}") from None
    if rows.size == 0:
        raise ValueError(f"where: selects no rows of {at}")

    def column(c: str) -> np.ndarray:
        a, null, fmt = got[c]
        if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise TypeError(f"{at} column {c!r}: expected one number per row, found format {fmt!r} (shape {a.shape})")
        v = a[rows].astype(np.float64)
        missing = ~np.isfinite(v) | (v <= _MISSING)
        if np.issubdtype(a.dtype, np.integer) and isinstance(null, int | np.integer):  # TNULL: FITS's masked ints
            missing |= a[rows] == null
        return np.where(missing, np.nan, v)

    values = np.stack([column(n) for n in names], axis=1)
    if err_suffix is None:
        weights = {"ivar": np.isfinite(values).astype(np.float64)}
    else:
        err = np.stack([column(c) for c in errs], axis=1)
        for j in np.flatnonzero((err <= 0).any(axis=0)):
            r = int(np.argmax(err[:, j] <= 0))
            raise ValueError(
                f"{at} column {errs[j]!r}: expected errors > 0 (NaN or -9999 for missing), "
                f"found {err[r, j]:g} at row {rows[r]}"
            )
        weights = {"err": err}
    ids = rows if id_column is None else np.char.strip(np.asarray(got[id_column][0])[rows].astype(str))
    try:
        return Catalog(Labels(values, names=list(names), **weights), ids)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{at} columns {list(names)}: {exc}") from exc
