r"""Gaia DR3 ``XP_CONTINUOUS`` tables: BP/RP basis-function coefficients and covariances.

The Gaia archive delivers the mean BP and RP spectra of ``xp_continuous_mean_spectrum``
(DataLink retrieval type ``XP_CONTINUOUS``) as csv, ecsv, FITS or VOTable.  Per band a
source has 55 coefficients of the Hermite basis (archive units, e-/s), their 55 errors
and the :math:`55 \times 54 / 2 = 1485` correlations of a symmetric matrix with unit
diagonal.  csv stores the arrays as strings ``"(c0, c1, ...)"``, ecsv as JSON-style
strings (astropy parses them), FITS and VOTable as variable-length arrays.  A source may
lack one band: its cells are then empty or masked.

Covariance convention
---------------------
We follow the reference tool, GaiaXPy (gaia-dpci/GaiaXPy):

* Packing (``gaiaxpy/core/generic_functions.py``: ``array_to_symmetric_matrix`` and
  ``correlation_to_covariance``): the 1485 values fill the strictly lower triangle row
  by row, ``R[1,0], R[2,0], R[2,1], R[3,0], ...`` (numpy's ``tril_indices(55, k=-1)``),
  which is the upper triangle read column by column; the matrix is mirrored and its
  diagonal set to one.  The sample files confirm it: packed this way every correlation
  matrix is positive definite, packed the transposed way none is.
* Scaling (``gaiaxpy/spectrum/utils.py``: ``_correlation_to_covariance_dr3int5``): in
  GaiaXPy's reading of the DR3 product, the published ``*_coefficient_errors``
  :math:`e_i` already include the factor ``*_standard_deviation``
  :math:`\sigma = \sqrt{\chi^2 / \mathrm{dof}}` of the least-squares fit (the sample
  files satisfy this relation for sigma).  GaiaXPy divides sigma out and keeps the
  unit-weight matrix :math:`K_{ij} = \rho_{ij} (e_i/\sigma)(e_j/\sigma)` as a spectrum's ``covariance``
  (its tests match K to the covariances of DPAC's internal product); when it propagates
  K to sampled fluxes it multiplies the errors by :math:`\sigma` again
  (``SampledSpectrum._sample_error``), i.e. it uses :math:`\sigma^2 K`.

So the covariance that goes with the published errors is
:math:`C = \sigma^2 K = \mathrm{diag}(e)\, R\, \mathrm{diag}(e)`, with diagonal
:math:`e_i^2`: :meth:`XPSpectra.covariance` returns C, and GaiaXPy's K with
``formal=True``.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import re
import warnings
import zlib
from pathlib import Path
from typing import NamedTuple
from xml.etree import ElementTree

import numpy as np
from astropy.table import Table
from astropy.utils.data import get_readable_fileobj

from jaxspec.data.containers import Spectra

__all__ = ["BANDS", "N_COEFF", "N_CORR", "XPSpectra", "read_xp_continuous", "unpack_correlations"]

BANDS = ("bp", "rp")
N_COEFF = 55
N_CORR = N_COEFF * (N_COEFF - 1) // 2

_FORMATS = {"csv": "ascii.csv", "ecsv": "ascii.ecsv", "fits": "fits", "votable": "votable"}
_SUFFIXES = {
    ".csv": "csv",
    ".ecsv": "ecsv",
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".xml": "votable",
    ".vot": "votable",
    ".votable": "votable",
}


def unpack_correlations(packed) -> np.ndarray:
    """Full correlation matrices from the archive's packed lower triangles.

    Parameters
    ----------
    packed : array, shape ``(..., n (n - 1) / 2)``
        Off-diagonal correlations, lower triangle row by row (``1485`` for ``n = 55``).

    Returns
    -------
    numpy.ndarray, shape ``(..., n, n)``, float64
        Symmetric, unit diagonal; NaN input stays NaN.

    Examples
    --------
    >>> unpack_correlations([0.1, 0.2, 0.3])
    array([[1. , 0.1, 0.2],
           [0.1, 1. , 0.3],
           [0.2, 0.3, 1. ]])
    """
    packed = np.asarray(packed, dtype=np.float64)
    m = packed.shape[-1] if packed.ndim else 0
    n = (1 + math.isqrt(1 + 8 * m)) // 2
    if m < 1 or n * (n - 1) // 2 != m:
        raise ValueError(f"packed: expected n(n-1)/2 values in the last axis (1485 for n=55), found {packed.shape}")
    rows, cols = np.tril_indices(n, k=-1)
    out = np.empty((*packed.shape[:-1], n, n))
    out[..., rows, cols] = packed
    out[..., cols, rows] = packed
    out[..., np.arange(n), np.arange(n)] = 1.0
    return out


class XPSpectra(NamedTuple):
    r"""Gaia DR3 XP continuous spectra of ``n`` sources (host numpy arrays, read-only).

    Band axes are ordered ``(BP, RP)``; in a missing band the float fields are NaN,
    the counts 0 and ``band_present`` is False.

    Attributes
    ----------
    source_id : int64, ``(n,)``
    coefficients : float64, ``(n, 110)``
        BP coefficients 0-54 then RP 0-54, e-/s in the basis (archive units).
    errors : float64, ``(n, 110)``
        Published 1-sigma errors :math:`e` (they include ``standard_deviation``).
    correlations : float64, ``(n, 2, 1485)``
        Packed correlations, see :func:`unpack_correlations`.
    standard_deviation : float64, ``(n, 2)``
        :math:`\sigma = \sqrt{\chi^2/\mathrm{dof}}` of each band's least-squares fit.
    band_present : bool, ``(n, 2)``
    chi_squared : float64, ``(n, 2)``
    degrees_of_freedom, n_measurements, n_relevant_bases : int64, ``(n, 2)``
        From the archive; 0 where the band (or the optional column) is missing.
        Only the first ``n_relevant_bases`` coefficients are significant.
    phot_g_mean_flux : float64 ``(n,)`` or None
        Only if the table has the column (it lives in ``gaia_source``).
    """

    source_id: np.ndarray
    coefficients: np.ndarray
    errors: np.ndarray
    correlations: np.ndarray
    standard_deviation: np.ndarray
    band_present: np.ndarray
    chi_squared: np.ndarray
    degrees_of_freedom: np.ndarray
    n_measurements: np.ndarray
    n_relevant_bases: np.ndarray
    phot_g_mean_flux: np.ndarray | None = None

    @property
    def n_sources(self) -> int:
        return self.source_id.shape[0]

    def take(self, index) -> XPSpectra:
        """The sources at ``index`` (int, slice, index array or boolean mask), e.g. to chunk."""
        idx = np.atleast_1d(np.arange(self.n_sources)[index])
        return XPSpectra(*(None if f is None else _frozen(f[idx]) for f in self))

    def covariance(self, band: str | None = None, *, formal: bool = False) -> np.ndarray:
        r"""Coefficient covariance matrices, float64.

        .. math:: C_{ij} = \rho_{ij}\, e_i e_j \quad(\texttt{formal=False}), \qquad
                  K_{ij} = C_{ij} / \sigma^2 \quad(\texttt{formal=True})

        Parameters
        ----------
        band : {"bp", "rp"} or None
            One band: shape ``(n, 55, 55)``.  None: both, block diagonal
            ``(n, 110, 110)`` (BP then RP, zero cross terms).
        formal : bool
            False: the covariance that goes with ``errors`` (diagonal ``errors**2``).
            True: GaiaXPy's unit-weight matrix, divided by ``standard_deviation**2``.

        A missing band gives a zero block (check ``band_present``).  Memory is
        ``n * 110**2 * 8`` bytes: chunk large tables with :meth:`take`.
        """
        if band is None:
            bands = (0, 1)
        elif isinstance(band, str) and band.lower() in BANDS:
            bands = (BANDS.index(band.lower()),)
        else:
            raise ValueError(f"band: expected 'bp', 'rp' or None, found {band!r}")
        size = len(bands) * N_COEFF
        out = np.zeros((self.n_sources, size, size))
        for k, b in enumerate(bands):
            ok = self.band_present[:, b]
            e = self.errors[ok, b * N_COEFF : (b + 1) * N_COEFF]
            if formal:
                e = e / self.standard_deviation[ok, b, None]
            block = slice(k * N_COEFF, (k + 1) * N_COEFF)
            # outer product first: e_i e_j == e_j e_i exactly, so the result is exactly symmetric
            out[ok, block, block] = (e[:, :, None] * e[:, None, :]) * unpack_correlations(self.correlations[ok, b])
        return out

    def to_spectra(self, *, dtype=None) -> Spectra:
        """The coefficients as ``Spectra`` (no wavelength grid), diagonal errors only.

        ``flux`` holds the 110 coefficients, ``ivar = 1 / errors**2``; a missing band
        is masked (``ivar == 0``, placeholder flux 0).  Correlations are dropped: use
        :meth:`covariance` for a full likelihood.
        """
        return Spectra(self.coefficients, wavelength=None, err=self.errors, fill_value=0.0, dtype=dtype)

    def __repr__(self) -> str:
        bp, rp = (int(k) for k in self.band_present.sum(axis=0))
        return f"XPSpectra(n_sources={self.n_sources}, with_bp={bp}, with_rp={rp})"


def read_xp_continuous(path: str | os.PathLike, *, format: str | None = None) -> XPSpectra:
    """Read a Gaia DR3 ``XP_CONTINUOUS`` table as downloaded from the archive.

    Parameters
    ----------
    path : str or path-like
        csv, ecsv, FITS or VOTable file (optionally ``.gz``).
    format : {"csv", "ecsv", "fits", "votable"}, optional
        Overrides the guess from the suffix (``.csv``, ``.ecsv``, ``.fits``/``.fit``/``.fts``,
        ``.xml``/``.vot``/``.votable``).

    Returns
    -------
    XPSpectra
        One entry per row, in file order.  Sources with one band missing are kept
        and flagged in ``band_present``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is damaged or is not an XP table; the message names the file and,
        where there is one, the column and the row.  Nothing is dropped or padded
        silently:

        * a cut-short or malformed row: a csv row with more or fewer fields than the
          header or an unclosed quote, a csv or ecsv file whose last line has no line
          end, a VOTable binary stream that ends inside a row, a FITS file whose length
          does not match its headers, a compressed (``.gz``) file that fails its checksum;
        * a missing required column, an array of the wrong length (55 coefficients
          and errors, 1485 correlations; ``*_n_parameters``, if present, must be 55),
          non-numeric text;
        * a band that is half there: a source lacks a band only if all of that band's
          cells are empty (as in the archive), so an empty ``bp_coefficients`` next to
          a filled ``bp_standard_deviation`` is an error, and so is the reverse;
        * a bad value: coefficients that are not finite, errors that are not finite
          and > 0, ``standard_deviation`` not finite and > 0, ``chi_squared`` not
          finite and >= 0, correlations outside [-1, 1], a value beyond the range of
          the archive's float32 type, counts (``*_n_relevant_bases``,
          ``*_degrees_of_freedom``, ``*_n_measurements``) that are not integers in
          ``[0, 55]`` (``n_relevant_bases``) or ``[0, 2**31 - 1]``, a source with
          neither band.

        The archive never writes such values, so one of them means a damaged or
        edited file, and the whole read is refused rather than one source flagged:
        the caller learns which file and row to fix, and :meth:`XPSpectra.covariance`
        is finite for every source that is read.
    """
    path = Path(path)
    fmt = _guess_format(path, format)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    t = _Columns(path, _read_table(path, fmt))
    bands = [_read_band(t, band) for band in BANDS]
    present = np.stack([b.pop("present") for b in bands], axis=1)
    t.check("bp_coefficients", ~present.any(axis=1), None, "BP or RP coefficients (both bands are missing)")
    joined = {k: np.concatenate([b.pop(k) for b in bands], axis=1) for k in ("coefficients", "errors")}
    stacked = {k: np.stack([b[k] for b in bands], axis=1) for k in bands[0]}
    g = t.scalars("phot_g_mean_flux", np.float64) if "phot_g_mean_flux" in t.names else None
    xp = XPSpectra(source_id=t.source_ids(), band_present=present, phot_g_mean_flux=g, **joined, **stacked)
    return XPSpectra(*(None if f is None else _frozen(f) for f in xp))


_MAX_COUNT = 2**31 - 1


def _read_band(t: _Columns, band: str) -> dict[str, np.ndarray]:
    """One band's fields, validated where the band is present, NaN (floats) or 0 (counts) elsewhere."""
    coef = f"{band}_coefficients"
    c, has = t.arrays(coef, N_COEFF, np.float64)
    e, has_e = t.arrays(f"{band}_coefficient_errors", N_COEFF, np.float32)
    r, has_r = t.arrays(f"{band}_coefficient_correlations", N_CORR, np.float32)
    scalars = {
        "standard_deviation": t.scalars(f"{band}_standard_deviation", np.float32),
        "chi_squared": t.scalars(f"{band}_chi_squared", np.float32, required=False),
        "degrees_of_freedom": t.counts(f"{band}_degrees_of_freedom"),
        "n_measurements": t.counts(f"{band}_n_measurements"),
        "n_relevant_bases": t.counts(f"{band}_n_relevant_bases", high=N_COEFF),
        "n_parameters": t.counts(f"{band}_n_parameters", low=N_COEFF, high=N_COEFF),
    }
    # a band is all or nothing: the archive leaves every cell of a missing band empty
    for name, filled in ((f"{band}_coefficient_errors", has_e), (f"{band}_coefficient_correlations", has_r)):
        t.check(name, has & ~filled, None, f"an array (as {coef} is present)")
        t.check(name, ~has & filled, None, f"an empty cell (as {coef} is empty)", found="an array")
    for field, v in scalars.items():
        name = f"{band}_{field}"
        if name in t.names:
            t.check(name, has & np.isnan(v), None, f"a value (as {coef} is present)", found="an empty cell or NaN")
            t.check(name, ~has & ~np.isnan(v), v, f"an empty cell (as {coef} is empty)")
    s, chi2 = scalars["standard_deviation"], scalars["chi_squared"]
    t.check(coef, has[:, None] & ~np.isfinite(c), c, "finite values")
    t.check(f"{band}_coefficient_errors", has[:, None] & ~(np.isfinite(e) & (e > 0)), e, "finite errors > 0")
    t.check(f"{band}_coefficient_correlations", has[:, None] & ~(np.abs(r) <= 1), r, "values in [-1, 1]")
    t.check(f"{band}_standard_deviation", has & ~(np.isfinite(s) & (s > 0)), s, "a finite value > 0")
    t.check(
        f"{band}_chi_squared", has & ~np.isnan(chi2) & ~(np.isfinite(chi2) & (chi2 >= 0)), chi2, "a finite value >= 0"
    )
    del scalars["n_parameters"]
    fields = {"coefficients": c, "errors": e, "correlations": r} | scalars
    out = {}
    for name, v in fields.items():
        keep = has.reshape(-1, *([1] * (v.ndim - 1)))
        if name in ("degrees_of_freedom", "n_measurements", "n_relevant_bases"):
            out[name] = np.where(keep & ~np.isnan(v), v, 0).astype(np.int64)
        else:
            out[name] = np.where(keep, v, np.nan)
    return out | {"present": has}


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _guess_format(path: Path, format: str | None) -> str:
    if format is not None:
        if format not in _FORMATS:
            raise ValueError(f"format: expected one of {sorted(_FORMATS)}, found {format!r}")
        return format
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    if not suffixes or suffixes[-1] not in _SUFFIXES:
        raise ValueError(f"{path}: cannot tell the format from the suffix; pass format= one of {sorted(_FORMATS)}")
    return _SUFFIXES[suffixes[-1]]


try:
    from lzma import LZMAError as _LZMAError
except ImportError:  # a Python built without lzma reads no .xz file either
    _LZMAError = OSError

# what gzip, bz2 and lzma raise on a damaged stream
_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, _LZMAError)
# astropy.io.fits only warns when the file is longer or shorter than its headers say
_FITS_DAMAGE = re.compile(r"File may have been truncated|extra padding|extra bytes after the last HDU")


def _read_table(path: Path, fmt: str) -> Table:
    """``Table.read`` that names the file on failure and refuses what astropy would silently drop or pad.

    Warnings are recorded while astropy reads, so that under ``-W error`` a damaged
    file still ends in astropy's own error (with its files closed), whose message we
    extend with the warnings (e.g. "File may have been truncated").  After a
    successful read they are issued again unchanged, except the FITS warnings that
    the file's length does not match its headers, which are an error here.

    astropy's csv reader pads a short row with masked cells and may drop a row cut
    inside a quoted field, its VOTable reader stops without a word at a binary row cut
    short, and its FITS reader never checks a gzip checksum: :func:`_check_text`,
    :func:`_check_votable_streams` and :func:`_check_compressed` check the file
    independently.
    """
    rows = _check_text(path, fmt) if fmt in ("csv", "ecsv") else None
    if fmt == "fits":
        _check_compressed(path, fmt)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = Table.read(path, format=_FORMATS[fmt])
        except MemoryError:
            raise
        except Exception as exc:  # astropy's readers raise almost any type on a damaged file (AttributeError, ...)
            notes = "".join(f"; {w.message}" for w in caught)
            raise ValueError(f"{path}: cannot read as {fmt} ({type(exc).__name__}: {exc}{notes})") from exc
    if fmt == "fits":
        damage = [str(w.message) for w in caught if _FITS_DAMAGE.search(str(w.message))]
        if damage:
            raise ValueError(f"{path}: cannot read as fits: the file does not match its headers ({'; '.join(damage)})")
    if fmt == "votable":
        _check_votable_streams(path)
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if len(table) == 0:
        raise ValueError(f"{path}: no rows (expected at least one source)")
    if rows is not None and rows != len(table):
        raise ValueError(
            f"{path}: expected {rows} rows (the data lines of the file), found {len(table)} in the table read"
        )
    return table


_COMPRESSED = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz


def _check_compressed(path: Path, fmt: str) -> None:
    """Decompress a compressed file to its end, so that its checksum is verified.

    astropy.io.fits reads a gzip file only as far as the headers say and never reaches
    the gzip checksum, so a damaged ``.fits.gz`` would be read without complaint (the
    text and VOTable readers read to the end, where gzip checks it).
    """
    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic.startswith(_COMPRESSED):
        return
    try:
        with get_readable_fileobj(str(path), encoding="binary") as raw:
            while raw.read(1 << 22):
                pass
    except (*_DECOMPRESS_ERRORS, ValueError) as exc:
        raise ValueError(f"{path}: cannot read as {fmt} ({type(exc).__name__}: {exc})") from exc


_QUOTED = re.compile(r'"(?:[^"]|"")*"')
_LINE_ENDS = ("\n", "\r")


def _check_text(path: Path, fmt: str) -> int | None:
    """csv: the number of data rows, each with a line end and as many fields as the header; ecsv: a line end at the end.

    A quoted field may not span lines (the archive writes one source per line).
    """
    fields, rows, number, line = None, 0, 0, ""
    try:
        with get_readable_fileobj(str(path), encoding="binary") as raw:
            lines = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
            for number, line in enumerate(lines, 1):
                if fmt != "csv" or not line.strip():
                    continue
                where = f"{path}: {'the header' if fields is None else f'row {rows}'} (line {number})"
                bare = _QUOTED.sub("", line)
                if '"' in bare:
                    end = "line" if line.endswith(_LINE_ENDS) else "file (the file is cut short)"
                    raise ValueError(f"{where}: expected a closing quote, found the end of the {end}")
                if fields is None:
                    fields = bare.count(",") + 1
                elif bare.count(",") + 1 != fields:
                    raise ValueError(
                        f"{where}: expected {fields} comma-separated fields as in the header, "
                        f"found {bare.count(',') + 1} (the row is cut short or malformed)"
                    )
                else:
                    rows += 1
    except _DECOMPRESS_ERRORS as exc:
        raise ValueError(f"{path}: cannot read as {fmt} ({type(exc).__name__}: {exc})") from exc
    if line.strip() and not line.endswith(_LINE_ENDS):
        where = f"row {rows - 1}" if fmt == "csv" and rows else "last line"
        raise ValueError(
            f"{path}: {where} (line {number}): expected a line end after the last field, "
            "found the end of the file (the file is cut short)"
        )
    return rows if fmt == "csv" else None


# bytes per element of the VOTable datatypes in BINARY/BINARY2 streams ("bit": one per 8 elements)
_VO_BYTES = {
    "boolean": 1,
    "unsignedByte": 1,
    "short": 2,
    "int": 4,
    "long": 8,
    "char": 1,
    "unicodeChar": 2,
    "float": 4,
    "double": 8,
    "floatComplex": 8,
    "doubleComplex": 16,
    "bit": 0,
}


def _check_votable_streams(path: Path) -> None:
    """Every inline base64 BINARY/BINARY2 stream ends at a row boundary (astropy drops a cut-off row silently)."""
    stack, fields = [], []
    try:
        with get_readable_fileobj(str(path), encoding="binary") as f:
            for event, el in ElementTree.iterparse(f, events=("start", "end")):
                tag = el.tag.rpartition("}")[2]
                if event == "start":
                    fields = [] if tag == "TABLE" else fields
                    stack.append(tag)
                    continue
                stack.pop()
                parent = stack[-1] if stack else None
                if tag == "FIELD" and parent == "TABLE":
                    fields.append((el.get("datatype"), el.get("arraysize")))
                elif tag == "STREAM" and parent in ("BINARY", "BINARY2") and _inline_base64(el):
                    _walk_binary(path, base64.b64decode(el.text or ""), fields, parent)
                if tag in ("STREAM", "TR"):
                    el.clear()
    except (*_DECOMPRESS_ERRORS, ElementTree.ParseError, binascii.Error) as exc:
        raise ValueError(f"{path}: cannot read as votable ({type(exc).__name__}: {exc})") from exc


def _inline_base64(stream) -> bool:
    return stream.get("href") is None and stream.get("encoding", "base64") == "base64"


def _walk_binary(path: Path, data: bytes, fields: list, kind: str) -> None:
    """Step through the rows of a decoded stream; a row that runs past the end is an error naming it."""
    specs = []  # (bytes per element or 0 for bits, fixed elements per value, variable length?)
    for datatype, arraysize in fields:
        if datatype not in _VO_BYTES:
            return  # astropy read it, so this is a type we do not know: leave the check to astropy
        dims = (arraysize or "1").split("x")
        variable = dims[-1].endswith("*")
        try:
            n = math.prod(int(d.rstrip("*") or 1) for d in (dims[:-1] if variable else dims))
        except ValueError:
            return
        specs.append((_VO_BYTES[datatype], n, variable))
    pos, row, end = 0, 0, len(data)
    flags = (len(specs) + 7) // 8 if kind == "BINARY2" else 0
    while pos < end:
        pos += flags
        for size, n, variable in specs:
            if variable:
                if pos + 4 > end:
                    pos = end + 1
                    break
                n = n * int.from_bytes(data[pos : pos + 4], "big")
                pos += 4
            pos += n * size if size else (n + 7) // 8
        if pos > end:
            raise ValueError(
                f"{path}: row {row}: expected a complete row in the {kind} stream, found the end of the stream "
                "inside it (the row is cut short or the stream is corrupted)"
            )
        row += 1


class _Columns:
    """Column access on a table read from ``path``, with errors that name file, column and row."""

    def __init__(self, path: Path, table: Table):
        self.path, self.table, self.n = path, table, len(table)
        self.names = {name.lower(): name for name in table.colnames}

    def fail(self, name: str, message: str, row: int | None = None):
        where = ""
        if row is not None:
            sid = np.ma.getdata(self.table[self.names["source_id"]])[row] if "source_id" in self.names else "?"
            where = f", row {row} (source_id {sid})"
        raise ValueError(f"{self.path}: column {name!r}{where}: {message}")

    def column(self, name: str):
        if name not in self.names:
            self.fail(name, f"required column is missing; found {', '.join(self.table.colnames)}")
        return self.table[self.names[name]]

    def check(self, name: str, bad: np.ndarray, values, expected: str, found: str | None = None) -> None:
        """Fail at the first ``bad`` entry, quoting ``values`` there (or ``found``; None: the cell is empty)."""
        if np.any(bad):
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            if found is None:
                found = "an empty cell" if values is None else f"{float(values[first]):.8g}"
            element = f" at element {first[1]}" if len(first) > 1 else ""
            self.fail(name, f"expected {expected}, found {found}{element}", row=first[0])

    def source_ids(self) -> np.ndarray:
        col = self.column("source_id")
        if np.ma.getmaskarray(col).any():
            self.fail("source_id", "expected an id in every row, found empty cells")
        data = np.asarray(np.ma.getdata(col))
        if data.dtype.kind not in "iu":
            self.fail("source_id", f"expected integers, found dtype {data.dtype}")
        return data.astype(np.int64)

    def rounded(self, name: str, values: np.ndarray, dtype) -> np.ndarray:
        """``values`` (float64) rounded through the archive's ``dtype``; a finite value beyond its range is an error."""
        with np.errstate(over="ignore"):
            out = values.astype(dtype).astype(np.float64)
        self.check(
            name, np.isfinite(values) & ~np.isfinite(out), values, f"values within the range of {np.dtype(dtype)}"
        )
        return out

    def scalars(self, name: str, dtype, required: bool = True) -> np.ndarray:
        """Float64 values rounded through the archive's ``dtype``; NaN where empty (or if not ``required``, absent)."""
        if not required and name not in self.names:
            return np.full(self.n, np.nan)
        col = self.column(name)
        mask = np.ma.getmaskarray(col)
        data = np.asarray(np.ma.getdata(col))
        if data.ndim != 1:
            self.fail(name, f"expected one number per row, found a column of shape {data.shape}")
        out = np.full(self.n, np.nan)
        try:
            out[~mask] = data[~mask].astype(np.float64)
        except (TypeError, ValueError):
            self.fail(name, f"expected numbers, found {data[~mask][:1]} (dtype {data.dtype})")
        return self.rounded(name, out, dtype)

    def counts(self, name: str, *, low: int = 0, high: int = _MAX_COUNT) -> np.ndarray:
        """An optional count column as float64: integers in ``[low, high]``, NaN where empty or absent."""
        values = self.scalars(name, np.float64, required=False)
        ok = np.isnan(values) | ((values >= low) & (values <= high) & (values == np.round(values)))
        self.check(name, ~ok, values, f"an integer in [{low}, {high}]" if low < high else f"{low}")
        return values

    def arrays(self, name: str, size: int, dtype) -> tuple[np.ndarray, np.ndarray]:
        """``(values (n, size) float64 rounded through dtype, present (n,) bool)``."""
        col = self.column(name)
        mask, data = np.ma.getmaskarray(col), np.ma.getdata(col)
        out, present = np.full((self.n, size), np.nan), np.zeros(self.n, bool)
        if data.ndim == 2 and data.dtype.kind in "fiu":  # fixed-length array column
            if data.shape[1] != size:
                self.fail(name, f"expected {size} values per row, found {data.shape[1]}")
            present = ~mask.all(axis=1) if mask.ndim == 2 else ~mask
            out = np.where(mask | ~present[:, None], np.nan, data.astype(np.float64))
        else:
            if data.ndim != 1:
                self.fail(name, f"expected one array per row, found a column of shape {data.shape}")
            for i, cell in enumerate(data):
                values = None if mask[i] else self._parse(cell, name, i)
                if values is None:
                    continue
                if values.size != size:
                    self.fail(name, f"expected {size} values, found {values.size}", row=i)
                out[i], present[i] = values, True
        return self.rounded(name, out, dtype), present

    def _parse(self, cell, name: str, row: int) -> np.ndarray | None:
        """One cell as a float64 array, or None when empty; strings like ``(1, 2)`` or ``[1, 2]``."""
        if isinstance(cell, bytes):
            cell = cell.decode("utf-8", errors="replace")
        if isinstance(cell, str):
            short = cell if len(cell) < 60 else cell[:57] + "..."
            text = cell.strip()
            closing = {"(": ")", "[": "]"}.get(text[:1])
            if closing is not None or text.endswith((")", "]")):
                if closing is None or len(text) < 2 or not text.endswith(closing):
                    self.fail(name, f"expected an array in (...) or [...], found {short!r}", row=row)
                text = text[1:-1]
            if text.strip().lower() in ("", "null", "none", "--"):
                return None
            try:
                return np.array(text.split(","), dtype=np.float64)
            except ValueError:
                self.fail(name, f"expected comma-separated numbers, found {short!r}", row=row)
        if cell is None or (isinstance(cell, float | np.floating) and np.isnan(cell)):
            return None
        if np.ndim(cell) == 0:
            self.fail(name, f"expected an array, found {cell!r}", row=row)
        values = np.ma.asarray(cell)
        if values.size == 0 or np.ma.getmaskarray(values).all():
            return None
        try:
            return np.ma.filled(values.astype(np.float64), np.nan).ravel()
        except (TypeError, ValueError):
            self.fail(name, f"expected numbers, found dtype {values.dtype}", row=row)
