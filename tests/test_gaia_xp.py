"""Gaia DR3 XP_CONTINUOUS reader: formats, missing bands, the covariance convention, bad files."""

from __future__ import annotations

import base64
import gzip
import re

import numpy as np
import pytest
from astropy.table import MaskedColumn, Table

from jaxspec.data.gaia_xp import N_COEFF, N_CORR, XPSpectra, read_xp_continuous, unpack_correlations
from tests.conftest import assert_allclose

FORMATS = {".csv": "csv", ".ecsv": "ecsv", ".fits": "fits", ".xml": "votable"}
MISSING_BP_SOURCE = 5405570973190252288
FIELDS = ("coefficients", "errors", "correlations", "standard_deviation", "chi_squared")
COUNTS = ("source_id", "band_present", "degrees_of_freedom", "n_measurements", "n_relevant_bases")


# -- real archive files (GaiaXPy's test files, ../shared/data/gaia_xp) ---------------------------------------------
@pytest.fixture(scope="module")
def xp_files(shared_data):
    files = sorted((shared_data / "gaia_xp").iterdir())
    assert {f.suffix for f in files} == set(FORMATS), "expected csv, ecsv, fits and xml files"
    return files


@pytest.fixture(scope="module")
def xp_read(xp_files) -> dict:
    """Every file read once: ``{path: XPSpectra}``."""
    return {f: read_xp_continuous(f) for f in xp_files}


@pytest.fixture(scope="module")
def raw_fits(xp_files) -> Table:
    """The missing-BP FITS file as astropy gives it, untouched, for explicit reference computations."""
    return Table.read(next(f for f in xp_files if f.name == "XP_CONTINUOUS_RAW_with_missing_BP.fits"))


def test_every_file_reads_with_expected_shapes(xp_read):
    for path, xp in xp_read.items():
        n = 3 if "missing_BP" in path.name else 2
        assert xp.n_sources == n, path.name
        assert xp.source_id.dtype == np.int64 and xp.band_present.dtype == bool
        assert xp.coefficients.shape == xp.errors.shape == (n, 2 * N_COEFF)
        assert xp.correlations.shape == (n, 2, N_CORR)
        assert xp.standard_deviation.shape == xp.n_relevant_bases.shape == (n, 2)
        assert xp.phot_g_mean_flux is None
        assert np.all(xp.n_relevant_bases[xp.band_present] > 0)


def test_all_formats_give_the_same_numbers(xp_read):
    for stem in {p.stem for p in xp_read}:
        by_format = {FORMATS[p.suffix]: xp for p, xp in xp_read.items() if p.stem == stem}
        assert set(by_format) == set(FORMATS.values()), stem
        ref = by_format["csv"]
        for fmt, xp in by_format.items():
            # float32 archive columns are rounded through float32 on reading, so the text and binary
            # formats agree exactly, not just to a tolerance
            for name in FIELDS + COUNTS:
                np.testing.assert_array_equal(getattr(xp, name), getattr(ref, name), err_msg=f"{stem} {fmt} {name}")
            np.testing.assert_allclose(xp.covariance(), ref.covariance(), rtol=1e-12, atol=0)


def test_sources_shared_between_files_agree(xp_read):
    both = [xp for p, xp in xp_read.items() if p.suffix == ".fits"]
    two, three = sorted(both, key=lambda xp: xp.n_sources)
    rows = [int(np.flatnonzero(three.source_id == s)[0]) for s in two.source_id]
    np.testing.assert_array_equal(three.take(rows).coefficients, two.coefficients)
    np.testing.assert_array_equal(three.take(rows).covariance(), two.covariance())


def test_missing_bp_source_is_kept_flagged_and_masked(xp_read):
    for path, xp in xp_read.items():
        if "missing_BP" not in path.name:
            continue
        row = int(np.flatnonzero(xp.source_id == MISSING_BP_SOURCE)[0])
        assert xp.band_present[row].tolist() == [False, True], path.name
        assert np.all(np.isnan(xp.coefficients[row, :N_COEFF])) and np.all(np.isnan(xp.errors[row, :N_COEFF]))
        assert np.isnan(xp.standard_deviation[row, 0]) and xp.n_relevant_bases[row, 0] == 0
        assert np.all(np.isfinite(xp.coefficients[row, N_COEFF:]))

        cov = xp.covariance()
        assert np.all(np.isfinite(cov))
        assert not cov[row, :N_COEFF, :].any() and not cov[row, :, :N_COEFF].any()
        rp = cov[row, N_COEFF:, N_COEFF:]
        np.testing.assert_array_equal(rp, xp.covariance("rp")[row])
        np.linalg.cholesky(rp)  # intact: positive definite
        np.testing.assert_array_equal(np.diag(rp), xp.errors[row, N_COEFF:] ** 2)

        spectra = xp.to_spectra()
        assert spectra.n_stars == xp.n_sources and spectra.wavelength is None
        assert np.all(spectra.ivar[row, :N_COEFF] == 0) and np.all(spectra.flux[row, :N_COEFF] == 0)
        assert np.all(spectra.ivar[row, N_COEFF:] > 0)
        assert_allclose(spectra.flux[row, N_COEFF:], xp.coefficients[row, N_COEFF:])
        assert_allclose(1 / np.sqrt(spectra.ivar[row, N_COEFF:]), xp.errors[row, N_COEFF:])


# -- the covariance convention, pinned ---------------------------------------------------------------------------
def test_packing_is_the_lower_triangle_row_by_row():
    packed = np.arange(1, N_CORR + 1) / 1e4
    r = unpack_correlations(packed)
    assert r.shape == (N_COEFF, N_COEFF)
    # R[1,0], R[2,0], R[2,1], R[3,0], R[3,1], ... ; row i starts at i(i-1)/2
    for (i, j), k in {
        (1, 0): 0,
        (2, 0): 1,
        (2, 1): 2,
        (3, 0): 3,
        (3, 1): 4,
        (3, 2): 5,
        (54, 0): 1431,
        (54, 53): 1484,
    }.items():
        assert r[i, j] == r[j, i] == packed[k]
    np.testing.assert_array_equal(np.diag(r), 1.0)
    np.testing.assert_array_equal(
        unpack_correlations([[0.5], [-0.25]]), [[[1, 0.5], [0.5, 1]], [[1, -0.25], [-0.25, 1]]]
    )
    with pytest.raises(ValueError, match=r"packed: expected n\(n-1\)/2 values.*found \(1484,\)"):
        unpack_correlations(np.zeros(1484))


def test_real_correlations_are_positive_definite_only_with_this_packing(xp_read):
    xp = next(xp for p, xp in xp_read.items() if p.name == "XP_CONTINUOUS_RAW_with_missing_BP.fits")
    for row, band in zip(*np.nonzero(xp.band_present), strict=True):
        packed = xp.correlations[row, band]
        assert np.linalg.eigvalsh(unpack_correlations(packed)).min() > 0
        transposed = np.zeros((N_COEFF, N_COEFF))
        transposed[np.triu_indices(N_COEFF, k=1)] = packed  # upper triangle row by row: the wrong reading
        transposed += transposed.T + np.eye(N_COEFF)
        assert np.linalg.eigvalsh(transposed).min() < 0


def test_covariance_matches_an_explicit_computation_from_the_raw_columns(xp_read, raw_fits):
    xp = next(xp for p, xp in xp_read.items() if p.name == "XP_CONTINUOUS_RAW_with_missing_BP.fits")
    full, formal = xp.covariance(), xp.covariance(formal=True)
    for row in range(len(raw_fits)):
        for b, band in enumerate(("bp", "rp")):
            if not xp.band_present[row, b]:
                continue
            e = np.asarray(raw_fits[f"{band}_coefficient_errors"][row], np.float64)
            rho = np.asarray(raw_fits[f"{band}_coefficient_correlations"][row], np.float64)
            sigma = float(raw_fits[f"{band}_standard_deviation"][row])
            block = slice(b * N_COEFF, (b + 1) * N_COEFF)
            # one entry by hand: (3, 1) is the 5th packed value
            assert full[row, block, block][3, 1] == pytest.approx(rho[4] * e[3] * e[1], rel=1e-12)
            corr = np.eye(N_COEFF)
            corr[np.tril_indices(N_COEFF, -1)] = rho
            corr = np.tril(corr) + np.tril(corr, -1).T
            expected = np.diag(e) @ corr @ np.diag(e)
            np.testing.assert_allclose(full[row, block, block], expected, rtol=1e-12, atol=0)
            # GaiaXPy's unit-weight matrix: the errors divided by the fit's standard deviation
            gaiaxpy = np.diag(e / sigma) @ corr @ np.diag(e / sigma)
            np.testing.assert_allclose(formal[row, block, block], gaiaxpy, rtol=1e-12, atol=0)
            chi2, dof = float(raw_fits[f"{band}_chi_squared"][row]), int(raw_fits[f"{band}_degrees_of_freedom"][row])
            assert sigma == pytest.approx(np.sqrt(chi2 / dof), rel=1e-6)


def test_covariance_invariants(xp_read):
    for path, xp in xp_read.items():
        for formal in (False, True):
            cov = xp.covariance(formal=formal)
            np.testing.assert_array_equal(cov, np.swapaxes(cov, 1, 2))
            assert not cov[:, :N_COEFF, N_COEFF:].any(), "BP-RP cross terms must be zero"
            scale = np.repeat(xp.standard_deviation, N_COEFF, axis=1) if formal else 1.0
            var = np.where(np.repeat(xp.band_present, N_COEFF, axis=1), (xp.errors / scale) ** 2, 0.0)
            np.testing.assert_allclose(np.diagonal(cov, axis1=1, axis2=2), var, rtol=1e-12, atol=0, err_msg=path.name)
            for row, b in zip(*np.nonzero(xp.band_present), strict=True):
                block = slice(b * N_COEFF, (b + 1) * N_COEFF)
                np.linalg.cholesky(cov[row, block, block])
        np.testing.assert_array_equal(xp.covariance("bp"), xp.covariance()[:, :N_COEFF, :N_COEFF])
        np.testing.assert_array_equal(xp.covariance("RP"), xp.covariance()[:, N_COEFF:, N_COEFF:])


# -- synthetic tables: round trips and bad input (no ../shared needed) ------------------------------------------
def _synthetic(n: int = 3, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    cols = {"source_id": np.arange(n, dtype=np.int64) + 10**18}
    for band in ("bp", "rp"):
        a = rng.normal(size=(n, N_COEFF, N_COEFF + 10))
        c = a @ np.swapaxes(a, 1, 2)
        d = np.sqrt(np.diagonal(c, axis1=1, axis2=2))
        rho = (c / d[:, :, None] / d[:, None, :])[:, *np.tril_indices(N_COEFF, -1)]
        cols[f"{band}_coefficients"] = rng.normal(size=(n, N_COEFF)) * 100
        cols[f"{band}_coefficient_errors"] = rng.uniform(0.5, 2.0, size=(n, N_COEFF)).astype(np.float32)
        cols[f"{band}_coefficient_correlations"] = rho.astype(np.float32)
        cols[f"{band}_standard_deviation"] = rng.uniform(1.0, 1.3, size=n).astype(np.float32)
        cols[f"{band}_n_relevant_bases"] = np.full(n, 40, np.int16)
    return cols


def _as_text(a) -> list[str]:
    return ["(" + ", ".join(repr(float(v)) for v in row) + ")" for row in a]


def _write_csv(path, cols: dict, *, blank_bp: int | None = None, blank_text: str | None = None) -> None:
    """Arrays as "(a, b, ...)" strings, like the archive; row ``blank_bp`` without BP: every ``bp_`` cell empty
    (the arrays masked, or ``blank_text``), as the archive writes a missing band."""
    table = Table()
    for name, a in cols.items():
        cells = MaskedColumn(_as_text(a), dtype=object) if a.ndim == 2 else MaskedColumn(a)
        if blank_bp is not None and name.startswith("bp_"):
            if blank_text is None or a.ndim == 1:
                cells.mask[blank_bp] = True
            else:
                cells[blank_bp] = blank_text
        table[name] = cells
    table.write(path, format="ascii.csv")


def test_synthetic_round_trip_in_all_formats(tmp_path):
    cols = _synthetic()
    _write_csv(tmp_path / "s.csv", cols)
    Table(cols).write(tmp_path / "s.fits")  # fixed-length array columns
    Table(cols).write(tmp_path / "s.xml", format="votable")
    Table(cols).write(tmp_path / "s.ecsv")
    _write_csv(tmp_path / "s.txt", cols)
    e = np.concatenate([cols["bp_coefficient_errors"], cols["rp_coefficient_errors"]], axis=1).astype(np.float64)
    for name in ("s.csv", "s.fits", "s.xml", "s.ecsv"):
        xp = read_xp_continuous(tmp_path / name)
        np.testing.assert_array_equal(xp.source_id, cols["source_id"])
        np.testing.assert_array_equal(xp.coefficients[:, :N_COEFF], cols["bp_coefficients"])
        np.testing.assert_array_equal(xp.errors, e)
        assert np.all(xp.chi_squared != xp.chi_squared) and np.all(xp.n_measurements == 0)  # optional, absent
        rho = unpack_correlations(cols["rp_coefficient_correlations"].astype(np.float64))
        er = cols["rp_coefficient_errors"].astype(np.float64)
        np.testing.assert_allclose(xp.covariance("rp"), er[:, :, None] * rho * er[:, None, :], rtol=1e-12, atol=0)
    xp = read_xp_continuous(tmp_path / "s.txt", format="csv")
    np.testing.assert_array_equal(xp.errors, e)


@pytest.mark.parametrize("blank_text", [None, "()", "[]", "null"])
def test_synthetic_missing_band_and_optional_columns(tmp_path, blank_text):
    cols = _synthetic() | {"phot_g_mean_flux": np.array([1e4, 2e4, 3e4])}
    _write_csv(tmp_path / "m.csv", cols, blank_bp=2, blank_text=blank_text)
    xp = read_xp_continuous(tmp_path / "m.csv")
    assert xp.band_present.tolist() == [[True, True], [True, True], [False, True]]
    np.testing.assert_array_equal(xp.phot_g_mean_flux, cols["phot_g_mean_flux"])
    assert xp.n_relevant_bases.tolist() == [[40, 40], [40, 40], [0, 40]]
    assert repr(xp) == "XPSpectra(n_sources=3, with_bp=2, with_rp=3)"
    sub = xp.take(xp.band_present[:, 0])
    assert isinstance(sub, XPSpectra) and sub.n_sources == 2 and sub.band_present.all()
    with pytest.raises(ValueError, match="read-only"):
        xp.coefficients[0, 0] = 1.0


def _broken(tmp_path, name: str, edit) -> str:
    cols = _synthetic()
    edit(cols)
    _write_csv(tmp_path / name, cols)
    return str(tmp_path / name)


BAD_VALUES = {
    "54 coefficients": (
        lambda c: c.update(bp_coefficients=c["bp_coefficients"][:, :54]),
        r"'bp_coefficients', row 0 \(source_id 1000000000000000000\): expected 55 values, found 54",
    ),
    "1484 correlations": (
        lambda c: c.update(rp_coefficient_correlations=c["rp_coefficient_correlations"][:, 1:]),
        r"'rp_coefficient_correlations', row 0 .*expected 1485 values, found 1484",
    ),
    "no errors column": (
        lambda c: c.pop("bp_coefficient_errors"),
        r"'bp_coefficient_errors': required column is missing",
    ),
    "no sigma column": (
        lambda c: c.pop("rp_standard_deviation"),
        r"'rp_standard_deviation': required column is missing",
    ),
    "negative error": (
        lambda c: c["rp_coefficient_errors"].__setitem__((1, 7), -0.5),
        r"'rp_coefficient_errors', row 1 .*expected finite errors > 0, found -0.5 at element 7",
    ),
    "zero sigma": (
        lambda c: c["bp_standard_deviation"].__setitem__(2, 0.0),
        r"'bp_standard_deviation', row 2 .*expected a finite value > 0, found 0",
    ),
    "correlation > 1": (
        lambda c: c["bp_coefficient_correlations"].__setitem__((0, 3), 1.5),
        r"'bp_coefficient_correlations', row 0 .*expected values in \[-1, 1\], found 1.5 at element 3",
    ),
    "non-integer source_id": (
        lambda c: c.update(source_id=np.array(["a", "b", "c"])),
        r"'source_id': expected integers, found dtype <U1",
    ),
    # issue 14, defect 4: errors, sigma and chi^2 that are not finite, or finite but beyond the archive's float32
    "inf error": (
        lambda c: c["bp_coefficient_errors"].__setitem__((1, 4), np.inf),
        r"'bp_coefficient_errors', row 1 .*expected finite errors > 0, found inf at element 4",
    ),
    "error beyond float32": (
        lambda c: c.update(rp_coefficient_errors=c["rp_coefficient_errors"] * np.array([[1.0], [1e39], [1.0]])),
        r"'rp_coefficient_errors', row 1 .*expected values within the range of float32, found [\d.]+e\+38 at element 0",
    ),
    "inf sigma": (
        lambda c: c["rp_standard_deviation"].__setitem__(0, np.inf),
        r"'rp_standard_deviation', row 0 .*expected a finite value > 0, found inf",
    ),
    "sigma beyond float32": (
        lambda c: c.update(bp_standard_deviation=np.array([1.0, 1.0, 1e40])),
        r"'bp_standard_deviation', row 2 .*expected values within the range of float32, found 1e\+40",
    ),
    "inf chi_squared": (
        lambda c: c.update(bp_chi_squared=np.array([10.0, np.inf, 10.0])),
        r"'bp_chi_squared', row 1 .*expected a finite value >= 0, found inf",
    ),
    "nan in the coefficients": (
        lambda c: c["rp_coefficients"].__setitem__((2, 54), np.nan),
        r"'rp_coefficients', row 2 .*expected finite values, found nan at element 54",
    ),
    # issue 14, defect 6: counts are integers in range, not whatever int64 makes of them
    "n_relevant_bases 1e30": (
        lambda c: c.update(bp_n_relevant_bases=np.array([40.0, 1e30, 40.0])),
        r"'bp_n_relevant_bases', row 1 .*expected an integer in \[0, 55\], found 1e\+30",
    ),
    "n_relevant_bases 56": (
        lambda c: c["rp_n_relevant_bases"].__setitem__(2, 56),
        r"'rp_n_relevant_bases', row 2 .*expected an integer in \[0, 55\], found 56",
    ),
    "n_relevant_bases -1": (
        lambda c: c["rp_n_relevant_bases"].__setitem__(0, -1),
        r"'rp_n_relevant_bases', row 0 .*expected an integer in \[0, 55\], found -1",
    ),
    "n_relevant_bases 2.5": (
        lambda c: c.update(bp_n_relevant_bases=np.array([40.0, 40.0, 2.5])),
        r"'bp_n_relevant_bases', row 2 .*expected an integer in \[0, 55\], found 2.5",
    ),
    "negative n_measurements": (
        lambda c: c.update(rp_n_measurements=np.array([900, -3, 900])),
        r"'rp_n_measurements', row 1 .*expected an integer in \[0, 2147483647\], found -3",
    ),
    "degrees_of_freedom 1e30": (
        lambda c: c.update(bp_degrees_of_freedom=np.array([1e30, 900.0, 900.0])),
        r"'bp_degrees_of_freedom', row 0 .*expected an integer in \[0, 2147483647\], found 1e\+30",
    ),
    "n_parameters 54": (
        lambda c: c.update(bp_n_parameters=np.array([55, 54, 55])),
        r"'bp_n_parameters', row 1 .*expected 55, found 54",
    ),
}


@pytest.mark.parametrize(("edit", "pattern"), BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_values_name_file_column_and_row(tmp_path, edit, pattern):
    path = _broken(tmp_path, "broken.csv", edit)
    with pytest.raises(ValueError, match=re.escape(path) + ": column " + pattern):
        read_xp_continuous(path)


def test_non_numeric_text_and_empty_sources(tmp_path):
    path = tmp_path / "text.csv"
    _write_csv(path, _synthetic())
    path.write_text(path.read_text().replace("(", "(abc, ", 1))
    with pytest.raises(
        ValueError, match=re.escape(str(path)) + r".*'bp_coefficients', row 0 .*comma-separated numbers"
    ):
        read_xp_continuous(path)
    cols = _synthetic()
    _write_csv(tmp_path / "none.csv", {k: v for k, v in cols.items() if not k.startswith("rp_")}, blank_bp=1)
    with pytest.raises(ValueError, match="rp_coefficients': required column is missing"):
        read_xp_continuous(tmp_path / "none.csv")


def test_source_with_no_band_is_an_error(tmp_path):
    cols = _synthetic(2)
    table = Table()
    for name, a in cols.items():
        if name == "source_id":
            table[name] = a
        else:  # row 1: every cell of both bands empty
            table[name] = MaskedColumn(_as_text(a) if a.ndim == 2 else a, mask=[False, True])
    table.write(tmp_path / "empty.csv", format="ascii.csv")
    with pytest.raises(ValueError, match=r"row 1 \(source_id 1000000000000000001\): expected BP or RP coefficients"):
        read_xp_continuous(tmp_path / "empty.csv")


def test_unreadable_files_name_the_file(tmp_path, xp_files):
    fits = next(f for f in xp_files if f.suffix == ".fits")
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(fits.read_bytes()[: fits.stat().st_size // 2])
    with pytest.raises(ValueError, match=re.escape(str(truncated)) + r": cannot read as fits .*truncated"):
        read_xp_continuous(truncated)
    truncated.write_bytes(fits.read_bytes()[:2000])  # inside the primary header
    with pytest.raises(ValueError, match=re.escape(str(truncated)) + r": cannot read as fits .*corrupt"):
        read_xp_continuous(truncated)
    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(b"not a fits file" * 10)
    with pytest.raises(ValueError, match=re.escape(str(garbage)) + ": cannot read as fits"):
        read_xp_continuous(garbage)
    xml = next(f for f in xp_files if f.suffix == ".xml")
    cut = tmp_path / "cut.xml"
    cut.write_bytes(xml.read_bytes()[:5000])
    with pytest.raises(ValueError, match=re.escape(str(cut)) + ": cannot read as votable"):
        read_xp_continuous(cut)


def test_format_and_path_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.csv: no such file"):
        read_xp_continuous(tmp_path / "nowhere.csv")
    (tmp_path / "data.dat").write_text("x\n")
    with pytest.raises(ValueError, match=r"data.dat: cannot tell the format from the suffix; pass format="):
        read_xp_continuous(tmp_path / "data.dat")
    with pytest.raises(ValueError, match=r"format: expected one of \['csv', 'ecsv', 'fits', 'votable'\], found 'hdf5'"):
        read_xp_continuous(tmp_path / "data.dat", format="hdf5")
    (tmp_path / "header.csv").write_text("source_id,bp_coefficients\n")
    with pytest.raises(ValueError, match=r"header.csv: no rows"):
        read_xp_continuous(tmp_path / "header.csv")
    xp = read_xp_continuous(_broken(tmp_path, "ok.csv", lambda c: None))
    with pytest.raises(ValueError, match=r"band: expected 'bp', 'rp' or None, found 'g'"):
        xp.covariance("g")


# -- damaged files: nothing dropped, padded or half-read silently (issue 14, defect 1) ---------------------------
def _real(xp_files, name: str):
    return next(f for f in xp_files if f.name == name)


def _cut_csv_rows(data: bytes) -> dict[str, bytes]:
    """XP_CONTINUOUS_RAW.csv (2 sources) cut short in the ways a download or a careless edit cuts it."""
    last = data.rindex(b"\n", 0, len(data) - 1) + 1  # start of the last row (line 3)
    arrays = [i for i in range(last, len(data)) if data.startswith(b'"(', i)]  # bp c/e/r, rp c/e/r
    assert len(arrays) == 6
    return {
        "inside the last array": data[: arrays[5] + 1000],
        "before the RP arrays": data[: arrays[3]],
        "before the RP arrays, line ended": data[: arrays[3]] + b"\n",
        "before the RP arrays, no comma": data[: arrays[3] - 1] + b"\n",
        "the final line end": data[:-1],
    }


CSV_CUTS = {
    "inside the last array": r"row 1 \(line 3\): expected a closing quote, found the end of the file",
    "before the RP arrays": r"row 1 \(line 3\): expected 26 comma-separated fields as in the header, found 22",
    "before the RP arrays, line ended": r"row 1 \(line 3\): expected 26 comma-separated fields .*, found 22",
    "before the RP arrays, no comma": r"row 1 \(line 3\): expected 26 comma-separated fields .*, found 21",
    "the final line end": r"row 1 \(line 3\): expected a line end after the last field, found the end of the file",
}


@pytest.mark.parametrize("cut", CSV_CUTS)
def test_csv_cut_short_is_an_error_naming_file_and_row(tmp_path, xp_files, cut):
    data = _real(xp_files, "XP_CONTINUOUS_RAW.csv").read_bytes()
    path = tmp_path / "cut.csv"
    path.write_bytes(_cut_csv_rows(data)[cut])
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": " + CSV_CUTS[cut]):
        read_xp_continuous(path)


def test_csv_cut_at_a_row_boundary_reads_the_rows_before_it_exactly(tmp_path, xp_files, xp_read):
    src = _real(xp_files, "XP_CONTINUOUS_RAW_with_missing_BP.csv")
    data = src.read_bytes()
    for k in (1, 2):
        end = [i for i, b in enumerate(data) if b == ord("\n")][k] + 1
        (tmp_path / "head.csv").write_bytes(data[:end])
        xp, ref = read_xp_continuous(tmp_path / "head.csv"), xp_read[src].take(slice(0, k))
        for name in FIELDS + COUNTS:
            np.testing.assert_array_equal(getattr(xp, name), getattr(ref, name), err_msg=name)


def test_csv_quote_and_bracket_damage(tmp_path):
    path = tmp_path / "q.csv"
    _write_csv(path, _synthetic())
    text = path.read_text()
    row1 = text.index("\n") + 1
    cases = {
        # a quote lost in the middle of the file: the rest of the line no longer splits into 26 fields
        text[:row1]
        + text[row1:].replace('"', "", 1): r"row 0 \(line 2\): expected a closing quote, found the end of the line",
        # a line break inside a row splits it in two short rows
        text[:row1]
        + text[row1:].replace(",", "\n", 1): r"row 0 \(line 2\): expected 11 comma-separated fields .*, found 1 ",
        # "(...]" and "(..." are not arrays
        text.replace(
            '"(', '"[', 1
        ): r"'bp_coefficients', row 0 .*expected an array in \(\.\.\.\) or \[\.\.\.\], found '\[",
        text.replace(
            ')"', '"', 1
        ): r"'bp_coefficients', row 0 .*expected an array in \(\.\.\.\) or \[\.\.\.\], found '\(",
        # a line too many fields long
        text[:-1] + ",1\n": r"row 2 \(line 4\): expected \d+ comma-separated fields as in the header, found \d+",
    }
    for content, pattern in cases.items():
        path.write_text(content)
        with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + pattern):
            read_xp_continuous(path)


def test_a_band_is_all_or_nothing(tmp_path):
    """The archive leaves every cell of a missing band empty; a half-empty band is damage, not a missing band."""
    path = tmp_path / "half.csv"

    def write(blank: dict[str, int]):
        table = Table()
        for name, a in _synthetic().items():
            cells = MaskedColumn(_as_text(a), dtype=object) if a.ndim == 2 else MaskedColumn(a)
            if name in blank:
                cells.mask[blank[name]] = True
            table[name] = cells
        table.write(path, format="ascii.csv", overwrite=True)

    write({"bp_coefficients": 1})
    with pytest.raises(
        ValueError,
        match=r"'bp_coefficient_errors', row 1 .*expected an empty cell \(as bp_coefficients is empty\), found an arr",
    ):
        read_xp_continuous(path)
    arrays = ("rp_coefficients", "rp_coefficient_errors", "rp_coefficient_correlations")
    write(dict.fromkeys(arrays, 2))
    with pytest.raises(
        ValueError,
        match=r"'rp_standard_deviation', row 2 .*expected an empty cell \(as rp_coefficients is empty\), found 1\.\d+",
    ):
        read_xp_continuous(path)
    write({"rp_coefficient_correlations": 0})
    with pytest.raises(
        ValueError,
        match=r"'rp_coefficient_correlations', row 0 .*expected an array \(as rp_coefficients is present\), found an e",
    ):
        read_xp_continuous(path)
    write({"bp_n_relevant_bases": 0})
    with pytest.raises(
        ValueError,
        match=r"'bp_n_relevant_bases', row 0 .*expected a value \(as bp_coefficients is present\), found an empty cell",
    ):
        read_xp_continuous(path)
    write(dict.fromkeys((*arrays, "rp_standard_deviation", "rp_n_relevant_bases"), 2))  # the whole band: fine
    assert read_xp_continuous(path).band_present.tolist() == [[True, True], [True, True], [True, False]]


def test_ecsv_cut_short_is_an_error(tmp_path, xp_files):
    data = _real(xp_files, "XP_CONTINUOUS_RAW.ecsv").read_bytes()
    path = tmp_path / "cut.ecsv"
    for content in (data[:-1], data[:-4]):  # the last value intact or cut, no final line end
        path.write_bytes(content)
        with pytest.raises(ValueError, match=re.escape(str(path)) + r": last line \(line 169\): expected a line end"):
            read_xp_continuous(path)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": "):
        read_xp_continuous(path)


def _with_stream(xml: str, edit) -> str:
    """The VOTable text with its base64 BINARY2 stream decoded, edited and encoded again."""
    m = re.search(r"(<STREAM encoding='base64'>\s*)(.*?)(\s*</STREAM>)", xml, re.S)
    raw = base64.b64decode(m.group(2))
    return xml[: m.start(2)] + base64.b64encode(edit(raw)).decode() + xml[m.end(2) :]


def test_votable_binary_row_cut_short_is_an_error(tmp_path, xp_files):
    xml = _real(xp_files, "XP_CONTINUOUS_RAW.xml").read_text()
    path = tmp_path / "cut.xml"
    for cut in (1, 100, 10000):  # astropy's reader drops a row cut anywhere, without a word
        path.write_text(_with_stream(xml, lambda raw, cut=cut: raw[:-cut]))
        with pytest.raises(
            ValueError, match=re.escape(str(path)) + r": row 1: expected a complete row in the BINARY2 stream"
        ):
            read_xp_continuous(path)
    path.write_text(_with_stream(xml, lambda raw: raw + raw[:60]))  # a stray partial row at the end
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": row 2: expected a complete row"):
        read_xp_continuous(path)


def test_fits_longer_than_its_headers_is_an_error(tmp_path, xp_files):
    data = _real(xp_files, "XP_CONTINUOUS_RAW.fits").read_bytes()
    path = tmp_path / "long.fits"
    heap = len(data) - 2880  # inside the heap: the arrays after it are shifted
    for content in (data + b"\0" * 100, data + b"\0" * 2880, data[:heap] + data[heap - 500 : heap] + data[heap:]):
        path.write_bytes(content)
        with pytest.raises(
            ValueError, match=re.escape(str(path)) + ": cannot read as fits: the file does not match its headers"
        ):
            read_xp_continuous(path)


def test_damaged_compressed_fits_is_an_error(tmp_path, xp_files):
    """astropy.io.fits never reaches the gzip checksum: a flipped byte would give other numbers silently."""
    data = gzip.compress(_real(xp_files, "XP_CONTINUOUS_RAW.fits").read_bytes())
    path = tmp_path / "XP.fits.gz"
    path.write_bytes(data)
    assert read_xp_continuous(path).n_sources == 2
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 1
    for content in (bytes(flipped), data[:-3]):
        path.write_bytes(content)
        with pytest.raises(ValueError, match=re.escape(str(path)) + r": cannot read as fits \((BadGzipFile|EOFError)"):
            read_xp_continuous(path)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": cannot read as fits \(EOFError"):
        read_xp_continuous(path)


def test_damaged_fits_header_is_a_value_error_naming_the_file(tmp_path, xp_files):
    """astropy raises an AttributeError on a TFORM card of a column with TNULL whose name is damaged."""
    data = bytearray(_real(xp_files, "XP_CONTINUOUS_RAW_with_missing_BP.fits").read_bytes())
    data[data.index(b"TFORM3  ")] = ord("h")
    path = tmp_path / "damaged.fits"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": cannot read as fits \(AttributeError"):
        read_xp_continuous(path)
