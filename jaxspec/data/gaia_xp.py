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

import math
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from astropy.table import Table

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
    ValueError, TypeError
        If the file cannot be parsed, a required column is missing, or a value is bad
        (wrong array length, non-numeric text, non-positive errors or ``standard_deviation``,
        correlations outside [-1, 1], a source with neither band); the message names the
        file, the column and the row.
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


def _read_band(t: _Columns, band: str) -> dict[str, np.ndarray]:
    """One band's fields, validated where the band is present, NaN (floats) or 0 (counts) elsewhere."""
    c, has = t.arrays(f"{band}_coefficients", N_COEFF, np.float64)
    e, has_e = t.arrays(f"{band}_coefficient_errors", N_COEFF, np.float32)
    r, has_r = t.arrays(f"{band}_coefficient_correlations", N_CORR, np.float32)
    s = t.scalars(f"{band}_standard_deviation", np.float32)
    t.check(f"{band}_coefficient_errors", has & ~has_e, None, f"an array (as {band}_coefficients is present)")
    t.check(f"{band}_coefficient_correlations", has & ~has_r, None, f"an array (as {band}_coefficients is present)")
    t.check(f"{band}_coefficients", has[:, None] & ~np.isfinite(c), c, "finite values")
    t.check(f"{band}_coefficient_errors", has[:, None] & ~(e > 0), e, "errors > 0")
    t.check(f"{band}_coefficient_correlations", has[:, None] & ~(np.abs(r) <= 1), r, "values in [-1, 1]")
    t.check(f"{band}_standard_deviation", has & ~(s > 0), s, "a value > 0")
    fields = {
        "coefficients": c,
        "errors": e,
        "correlations": r,
        "standard_deviation": s,
        "chi_squared": t.scalars(f"{band}_chi_squared", np.float32, required=False),
        "degrees_of_freedom": t.counts(f"{band}_degrees_of_freedom"),
        "n_measurements": t.counts(f"{band}_n_measurements"),
        "n_relevant_bases": t.counts(f"{band}_n_relevant_bases"),
    }
    out = {}
    for name, v in fields.items():
        keep = has.reshape(-1, *([1] * (v.ndim - 1)))
        out[name] = np.where(keep, v, np.nan if v.dtype.kind == "f" else 0)
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


def _read_table(path: Path, fmt: str) -> Table:
    """``Table.read`` that names the file on failure.

    Warnings are recorded while astropy reads, so that under ``-W error`` a damaged
    file still ends in astropy's own error (with its files closed), whose message we
    extend with the warnings (e.g. "File may have been truncated").  After a
    successful read they are issued again unchanged.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            table = Table.read(path, format=_FORMATS[fmt])
        except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
            notes = "".join(f"; {w.message}" for w in caught)
            raise ValueError(f"{path}: cannot read as {fmt} ({type(exc).__name__}: {exc}{notes})") from exc
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if len(table) == 0:
        raise ValueError(f"{path}: no rows (expected at least one source)")
    return table


class _Columns:
    """Column access on a table read from ``path``, with errors that name file, column and row."""

    def __init__(self, path: Path, table: Table):
        self.path, self.table, self.n = path, table, len(table)
        self.names = {name.lower(): name for name in table.colnames}

    def fail(self, name: str, message: str, row: int | None = None, error=ValueError):
        where = ""
        if row is not None:
            sid = np.ma.getdata(self.table[self.names["source_id"]])[row] if "source_id" in self.names else "?"
            where = f", row {row} (source_id {sid})"
        raise error(f"{self.path}: column {name!r}{where}: {message}")

    def column(self, name: str):
        if name not in self.names:
            self.fail(name, f"required column is missing; found {', '.join(self.table.colnames)}")
        return self.table[self.names[name]]

    def check(self, name: str, bad: np.ndarray, values: np.ndarray | None, expected: str) -> None:
        """Fail at the first ``bad`` entry, quoting ``values`` there (None: the cell is empty)."""
        if np.any(bad):
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            found = "an empty cell" if values is None else f"{float(values[first]):.8g}"
            element = f" at element {first[1]}" if len(first) > 1 else ""
            self.fail(name, f"expected {expected}, found {found}{element}", row=first[0])

    def source_ids(self) -> np.ndarray:
        col = self.column("source_id")
        if np.ma.getmaskarray(col).any():
            self.fail("source_id", "expected an id in every row, found empty cells")
        data = np.asarray(np.ma.getdata(col))
        if data.dtype.kind not in "iu":
            self.fail("source_id", f"expected integers, found dtype {data.dtype}", error=TypeError)
        return data.astype(np.int64)

    def scalars(self, name: str, dtype, required: bool = True) -> np.ndarray:
        """Float64 values rounded through the archive's ``dtype``; NaN where empty."""
        if not required and name not in self.names:
            return np.full(self.n, np.nan)
        col = self.column(name)
        mask = np.ma.getmaskarray(col)
        data = np.asarray(np.ma.getdata(col))
        out = np.full(self.n, np.nan)
        try:
            out[~mask] = data[~mask].astype(dtype)
        except (TypeError, ValueError):
            self.fail(name, f"expected numbers, found {data[~mask][:1]} (dtype {data.dtype})", error=TypeError)
        return out

    def counts(self, name: str) -> np.ndarray:
        values = self.scalars(name, np.float64, required=False)
        return np.where(np.isfinite(values), values, 0).astype(np.int64)

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
        return out.astype(dtype).astype(np.float64), present

    def _parse(self, cell, name: str, row: int) -> np.ndarray | None:
        """One cell as a float64 array, or None when empty; strings like ``(1, 2)`` or ``[1, 2]``."""
        if isinstance(cell, bytes):
            cell = cell.decode("utf-8", errors="replace")
        if isinstance(cell, str):
            text = cell.strip()
            if text.startswith(("(", "[")) and text.endswith((")", "]")):
                text = text[1:-1]
            if text.strip().lower() in ("", "null", "none", "--"):
                return None
            try:
                return np.array(text.split(","), dtype=np.float64)
            except ValueError:
                short = cell if len(cell) < 60 else cell[:57] + "..."
                self.fail(name, f"expected comma-separated numbers, found {short!r}", row=row)
        if cell is None or (isinstance(cell, float | np.floating) and np.isnan(cell)):
            return None
        if np.ndim(cell) == 0:
            self.fail(name, f"expected an array, found {cell!r}", row=row, error=TypeError)
        values = np.ma.asarray(cell)
        if values.size == 0 or np.ma.getmaskarray(values).all():
            return None
        try:
            return np.ma.filled(values.astype(np.float64), np.nan).ravel()
        except (TypeError, ValueError):
            self.fail(name, f"expected numbers, found dtype {values.dtype}", row=row, error=TypeError)
