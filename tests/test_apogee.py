"""APOGEE readers: small FITS files in the real aspcapStar / apStar / allStar layouts, written with astropy."""

from __future__ import annotations

import re

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import MaskedColumn, Table

from jaxspec.data import _grids
from jaxspec.data.apogee import (
    PIXMASK_BITS,
    pixmask_value,
    read_allstar,
    read_apstar,
    read_aspcapstar,
    read_spectra,
)
from tests.conftest import assert_allclose

N = _grids.N_PIX_FULL
GRID = {"CRVAL1": 4.179, "CDELT1": 6e-6, "CRPIX1": 1, "CTYPE1": "LOG-LINEAR", "DC-FLAG": 1}


def _image(data, **cards) -> fits.ImageHDU:
    hdu = fits.ImageHDU(np.asarray(data))
    hdu.header.update({**GRID, **cards})
    return hdu


def _on_chips(values: np.ndarray, n_pix: int = 7514) -> np.ndarray:
    """Values given on the ``n_pix`` chip grid, zeros in the gaps of the 8575-pixel grid (float32)."""
    full = np.zeros((*values.shape[:-1], N), np.float32)
    full[..., _grids.chip_indices(n_pix)] = values
    return full


def write_aspcapstar(path, flux, err, *, header=None, extra=True):
    """aspcapStar layout: HDU0 header only; HDU1 flux, HDU2 error, HDU3 best fit (8575,); HDU4 parameter table."""
    hdus = [fits.PrimaryHDU(), _image(flux, **(header or {})), _image(err, **(header or {}))]
    if extra:
        hdus += [_image(np.ones_like(flux)), fits.BinTableHDU(Table({"APOGEE_ID": ["2M0"], "TEFF": [4800.0]}))]
    fits.HDUList(hdus).writeto(path)
    return path


def write_apstar(path, flux, err, mask, *, nvisits):
    """apStar layout: HDU0 header (NVISITS, grid); HDU1 flux, HDU2 error (float32), HDU3 bitmask (int16)."""
    primary = fits.PrimaryHDU()
    primary.header["NVISITS"] = nvisits
    primary.header.update(GRID)  # the IDL writer repeats the grid in HDU0
    hdus = [primary, _image(np.float32(flux), BUNIT="Flux (10^-17 erg/s/cm^2/Ang)")]
    hdus += [_image(np.float32(err)), _image(np.int16(mask), BUNIT="Flag Mask (bitwise)")]
    fits.HDUList(hdus).writeto(path)
    return path


@pytest.fixture
def spectrum():
    rng = np.random.default_rng(0)
    flux = _on_chips(rng.uniform(0.6, 1.1, 7514))
    err = _on_chips(rng.uniform(0.005, 0.02, 7514))
    return flux, err


# -- aspcapStar -----------------------------------------------------------------------------------------
def test_aspcapstar_full_grid_round_trip(tmp_path, spectrum):
    flux, err = spectrum
    s = read_aspcapstar(write_aspcapstar(tmp_path / "aspcapStar-2M0.fits", flux, err), n_pix=None)
    assert (s.n_stars, s.n_pix) == (1, N)
    np.testing.assert_array_equal(s.wavelength, _grids.full_wavelength())
    gap = flux == 0
    np.testing.assert_array_equal(s.mask[0], gap)  # the chip gaps (zeros) are masked, nothing else
    np.testing.assert_array_equal(np.asarray(s.flux[0])[~gap], flux[~gap])
    assert_allclose(np.asarray(s.ivar[0])[~gap], 1.0 / np.float64(err[~gap]) ** 2, rtol=1e-5)


@pytest.mark.parametrize("n_pix", [7514, 7214])
def test_aspcapstar_trims_chip_gaps(tmp_path, spectrum, n_pix):
    flux, err = spectrum
    s = read_aspcapstar(write_aspcapstar(tmp_path / "a.fits", flux, err), n_pix=n_pix)
    idx = _grids.chip_indices(n_pix)
    np.testing.assert_array_equal(s.wavelength, _grids.apogee_wavelength(n_pix))
    np.testing.assert_array_equal(np.asarray(s.flux[0]), flux[idx])
    assert_allclose(s.err[0], err[idx], rtol=1e-6)
    assert not np.asarray(s.mask).any()


def test_file_already_on_a_trimmed_grid_is_recognised(tmp_path, spectrum):
    flux, err = spectrum
    idx = _grids.chip_indices(7514)
    path = write_aspcapstar(tmp_path / "t.fits", flux[idx], err[idx], extra=False)  # header still says 4.179, 6e-6
    s = read_aspcapstar(path, n_pix=7514)
    np.testing.assert_array_equal(np.asarray(s.flux[0]), flux[idx])
    np.testing.assert_array_equal(s.wavelength, _grids.apogee_wavelength(7514))
    s = read_aspcapstar(path, n_pix=7214)  # 7214 is a subset of 7514
    np.testing.assert_array_equal(np.asarray(s.flux[0]), flux[_grids.chip_indices(7214)])
    assert read_aspcapstar(path, n_pix=None).n_pix == 7514
    small = tmp_path / "t7214.fits"
    fits.HDUList(
        [
            fits.PrimaryHDU(),
            fits.ImageHDU(flux[_grids.chip_indices(7214)]),
            fits.ImageHDU(err[_grids.chip_indices(7214)]),
        ]
    ).writeto(small)
    np.testing.assert_array_equal(read_aspcapstar(small, n_pix=7214).wavelength, _grids.apogee_wavelength(7214))
    with pytest.raises(
        ValueError, match=r"t7214\.fits: HDU1 \(flux\): a 7214-pixel grid lacks pixels of the requested n_pix=7514"
    ):
        read_aspcapstar(small, n_pix=7514)


def test_other_log_grid_kept_with_n_pix_none(tmp_path):
    path = tmp_path / "other.fits"
    hdr = {"CRVAL1": 4.2, "CDELT1": 1e-5, "CRPIX1": 3}
    write_aspcapstar(path, np.ones(50, np.float32), np.full(50, 0.1, np.float32), header=hdr, extra=False)
    s = read_aspcapstar(path, n_pix=None)
    np.testing.assert_allclose(s.wavelength, 10 ** (4.2 + 1e-5 * (np.arange(50) - 2)), rtol=1e-12)
    with pytest.raises(
        ValueError, match=r"other\.fits: HDU1 \(flux\) header CRVAL1/CDELT1 = 4.2/1e-05: not the APOGEE grid"
    ):
        read_aspcapstar(path)


def test_real_payne_spectrum_through_aspcapstar(tmp_path, shared_data):
    """A real continuum-normalised APOGEE spectrum (The Payne, 7214 grid) in the DR17 aspcapStar layout."""
    data = np.load(shared_data / "payne" / "spectrum_ap_id_2M13012770+5754582_.npz")
    flux, err = data["spectrum"], data["spec_err"]
    path = write_aspcapstar(
        tmp_path / "aspcapStar-2M13012770+5754582.fits", _on_chips(flux, 7214), _on_chips(err, 7214)
    )
    s = read_aspcapstar(path, n_pix=7214)
    np.testing.assert_array_equal(np.asarray(s.flux[0], np.float64), flux.astype(np.float64))  # exact
    assert_allclose(s.err[0], err, rtol=1e-6)
    np.testing.assert_array_equal(s.wavelength, _grids.apogee_wavelength(7214))
    payne_wave = np.load(shared_data / "payne" / "apogee_wavelength.npz")["wavelength"]
    np.testing.assert_allclose(s.wavelength, payne_wave, rtol=1e-12, atol=0)  # their grid, to float rounding


def test_real_visit_spectra_through_apstar(tmp_path, shared_data):
    """Three real visit spectra of one star, in the multi-visit apStar layout (combined rows first)."""
    data = np.load(shared_data / "payne" / "visit_spectra_ap_id_2M06133561+2433362_.npz")
    visits, errs = data["spectra"].astype(np.float32), data["spec_errs"].astype(np.float32)
    w = 1.0 / errs.astype(np.float64) ** 2
    combined = (w * visits).sum(0) / w.sum(0)
    flux = _on_chips(np.vstack([combined, combined, visits]), 7214)
    err = _on_chips(np.vstack([w.sum(0) ** -0.5, w.sum(0) ** -0.5, errs]), 7214)
    path = write_apstar(tmp_path / "apStar-2M06133561+2433362.fits", flux, err, np.zeros(flux.shape), nvisits=3)
    s = read_apstar(path, rows="visits", n_pix=7214)
    assert s.n_stars == 3
    np.testing.assert_array_equal(np.asarray(s.flux, np.float64), visits.astype(np.float64))
    assert_allclose(s.err, errs, rtol=1e-6)
    assert_allclose(read_apstar(path, n_pix=7214).flux[0], combined, rtol=1e-6)


# -- apStar ---------------------------------------------------------------------------------------------
def test_apstar_single_visit_is_1d(tmp_path, spectrum):
    flux, err = spectrum
    path = write_apstar(tmp_path / "apStar-1.fits", flux * 300, err * 300, np.zeros(N), nvisits=1)
    with fits.open(path) as hdul:
        assert hdul[1].data.shape == (N,)
    for rows in ("combined", "visits", [0]):
        s = read_apstar(path, rows=rows)
        assert s.n_stars == 1
        np.testing.assert_array_equal(np.asarray(s.flux[0]), flux[_grids.chip_indices(7514)] * np.float32(300))
    with pytest.raises(ValueError, match=r"apStar-1\.fits: HDU1 \(flux\): rows \[1\] out of range"):
        read_apstar(path, rows=[1])


def test_apstar_multi_visit_rows_combined_first(tmp_path):
    rows = np.arange(1.0, 6.0)[:, None] * np.ones(N)  # row r holds r + 1: 2 combined rows, then 3 visits
    path = write_apstar(tmp_path / "apStar-3.fits", rows, 0.1 * rows, np.zeros((5, N)), nvisits=3)
    assert read_apstar(path).flux.tolist() == [[1.0] * 7514]  # row 0: pixel-weighted combination
    np.testing.assert_array_equal(np.asarray(read_apstar(path, rows="visits").flux)[:, 0], [3.0, 4.0, 5.0])
    np.testing.assert_array_equal(np.asarray(read_apstar(path, rows=[1, 4]).flux)[:, 0], [2.0, 5.0])
    with pytest.raises(ValueError, match="rows: expected 'combined', 'visits'"):
        read_apstar(path, rows="all")
    with pytest.raises(TypeError, match="rows: expected"):
        read_apstar(path, rows=[0.5])


def test_apstar_bitmask_default_and_custom_bits(tmp_path):
    flux, err, mask = np.full(N, 250.0), np.full(N, 5.0), np.zeros(N, np.int16)
    pix = _grids.chip_indices(7514)
    bad_default = pix[[10 * b for b in range(8)]]  # bits 0-7, one pixel each
    mask[bad_default] = 1 << np.arange(8)
    mask[pix[100]] = 1 << 9  # PERSIST_HIGH: kept by default
    mask[pix[101]] = 1 << 12  # SIG_SKYLINE
    mask[pix[102]] = np.int16(-(1 << 15))  # bit 15 of an int16 mask (negative): no sign extension into bit 16+
    flux[pix[200]], err[pix[201]] = 0.0, np.nan
    path = write_apstar(tmp_path / "apStar-mask.fits", flux, err, mask, nvisits=1)
    masked = np.flatnonzero(np.asarray(read_apstar(path).mask[0]))
    np.testing.assert_array_equal(masked, np.sort([*range(0, 80, 10), 200, 201]))
    custom = np.flatnonzero(np.asarray(read_apstar(path, bad_bits=["SIG_SKYLINE", 9]).mask[0]))
    np.testing.assert_array_equal(custom, [100, 101, 200, 201])
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(read_apstar(path, bad_bits=[16]).mask[0])), [200, 201])
    assert np.asarray(read_apstar(path, bad_bits=[15]).mask[0]).sum() == 3
    assert read_apstar(path, bad_bits=()).mask.sum() == 2  # only zero flux / NaN error


def test_pixmask_bits():
    assert PIXMASK_BITS[:8] == ("BADPIX", "CRPIX", "SATPIX", "UNFIXABLE", "BADDARK", "BADFLAT", "BADERR", "NOSKY")
    assert pixmask_value([]) == 0 and pixmask_value(["NOSKY"]) == 128
    for bad in (["NOPE"], [64], [-1], [True]):
        with pytest.raises(ValueError, match="bad_bits"):
            pixmask_value(bad)


def test_read_spectra_stacks_files(tmp_path, spectrum, capsys):
    flux, err = spectrum
    paths = [write_aspcapstar(tmp_path / f"s{i}.fits", flux * (1 + 0.1 * i), err) for i in range(3)]
    s = read_spectra(paths, progress=True)
    assert "reading aspcapStar" in capsys.readouterr().err
    assert (s.n_stars, s.n_pix) == (3, 7514)
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(np.asarray(s.flux[i]), np.asarray(read_aspcapstar(p).flux[0]))
    ap = [write_apstar(tmp_path / f"ap{i}.fits", flux * 100, err * 100, np.zeros(N), nvisits=1) for i in range(2)]
    assert read_spectra(ap, kind="apStar", n_pix=7214, progress=False).flux.shape == (2, 7214)
    idx = _grids.chip_indices(7514)
    trimmed = write_aspcapstar(tmp_path / "trimmed.fits", flux[idx], err[idx], extra=False)
    with pytest.raises(ValueError, match=r"trimmed\.fits: HDU1 \(flux\): wavelength grid .* differs from that of"):
        read_spectra([paths[0], trimmed], n_pix=None, progress=False)
    with pytest.raises(ValueError, match="kind"):
        read_spectra(paths, kind="apVisit")
    with pytest.raises(ValueError, match="paths: expected at least one file"):
        read_spectra([])


# -- allStar --------------------------------------------------------------------------------------------
def write_allstar(path):
    t = Table()
    t["APOGEE_ID"] = ["2M00000002+7417074", "2M00000019-1924498 ", "VESTA", "2M00000032+5737103"]
    t["TEFF"] = np.array([4800.0, -9999.0, 5772.0, 4500.0], np.float32)
    t["TEFF_ERR"] = np.array([50.0, 60.0, np.nan, 40.0], np.float32)
    t["LOGG"] = MaskedColumn([2.5, 3.0, 4.4, 1.5], mask=[False, False, False, True], dtype=np.float32)
    t["LOGG_ERR"] = np.array([0.05, 0.06, 0.01, 0.04], np.float32)
    t["FE_H"] = np.array([-0.2, np.nan, 0.0, 0.1], np.float32)
    t["FE_H_ERR"] = np.array([0.01, 0.02, -9999.0, 0.01], np.float32)
    t["NVISITS"] = MaskedColumn([3, 1, 40, 2], mask=[False, False, True, False], dtype=np.int32)  # TNULL
    t["ASPCAPFLAG"] = np.array([0, 1, 0, 0], np.int64)
    t["FPARAM"] = np.zeros((4, 9), np.float32)
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(t)]).writeto(path)
    return path


def test_allstar_labels_and_missing(tmp_path):
    cat = read_allstar(write_allstar(tmp_path / "allStar.fits"), ["TEFF", "LOGG", "FE_H"])
    assert cat.labels.names == ("TEFF", "LOGG", "FE_H")
    assert cat.ids.tolist() == ["2M00000002+7417074", "2M00000019-1924498", "VESTA", "2M00000032+5737103"]
    expected = np.array([[4800.0, 2.5, -0.2], [np.nan, 3.0, np.nan], [np.nan, 4.4, np.nan], [4500.0, np.nan, 0.1]])
    assert_allclose(cat.labels.as_nan(), expected, dtype=cat.labels.values.dtype, equal_nan=True)
    assert_allclose(cat.labels.err[0], [50.0, 0.05, 0.01], dtype=cat.labels.values.dtype)


def test_allstar_without_errors_where_and_ids(tmp_path):
    path = write_allstar(tmp_path / "allStar.fits")
    cat = read_allstar(path, ["NVISITS", "TEFF"], err_suffix=None, id_column=None)
    np.testing.assert_array_equal(np.asarray(cat.labels.ivar), [[1, 1], [1, 0], [0, 1], [1, 1]])  # TNULL, -9999
    assert cat.ids.tolist() == [0, 1, 2, 3]
    by_flag = read_allstar(path, ["TEFF"], where=lambda t: t["ASPCAPFLAG"] == 0)
    assert by_flag.ids.tolist() == ["2M00000002+7417074", "VESTA", "2M00000032+5737103"]
    assert read_allstar(path, ["TEFF"], where=np.array([False, False, True, True])).ids.tolist()[0] == "VESTA"
    assert read_allstar(path, ["TEFF"], where=[3]).labels.as_nan().tolist() == [[4500.0]]
    with pytest.raises(
        ValueError, match=r"where: expected a \(4,\) boolean mask or row indices for .*allStar\.fits: HDU1"
    ):
        read_allstar(path, ["TEFF"], where=np.array([True, False]))
    with pytest.raises(ValueError, match="where: selects no rows"):
        read_allstar(path, ["TEFF"], where=np.zeros(4, bool))
    with pytest.raises(ValueError, match=r"where: failed on .*allStar\.fits: HDU1: KeyError"):
        read_allstar(path, ["TEFF"], where=lambda t: t["NOPE"] > 0)


# -- every error names the file and the field -----------------------------------------------------------
def test_missing_corrupt_and_truncated_files(tmp_path, spectrum):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.fits: no such file"):
        read_aspcapstar(tmp_path / "nowhere.fits")
    garbage = tmp_path / "garbage.fits"
    garbage.write_bytes(b"not a FITS file at all " * 200)
    with pytest.raises(OSError, match=r"garbage\.fits: not a readable FITS file"):
        read_aspcapstar(garbage)
    flux, err = spectrum
    good = write_apstar(tmp_path / "full.fits", flux, err, np.zeros(N), nvisits=1).read_bytes()
    for cut in (len(good) // 2, 5000, len(good) - 100):
        (tmp_path / "cut.fits").write_bytes(good[:cut])
        with pytest.raises(OSError, match=r"cut\.fits: not a readable FITS file \(corrupt or truncated\?\)"):
            read_apstar(tmp_path / "cut.fits")
    table = write_allstar(tmp_path / "allStar.fits").read_bytes()
    (tmp_path / "allStar-cut.fits").write_bytes(table[: len(table) - 1000])
    with pytest.raises(OSError, match=r"allStar-cut\.fits: not a readable FITS file"):
        read_allstar(tmp_path / "allStar-cut.fits", ["TEFF"])


def test_wrong_hdu_layout(tmp_path, spectrum):
    flux, err = spectrum
    one = tmp_path / "one.fits"
    fits.HDUList([fits.PrimaryHDU(), _image(flux)]).writeto(one)
    with pytest.raises(ValueError, match=r"one\.fits: HDU2 \(error\): missing"):
        read_aspcapstar(one)
    table = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU(Table({"FLUX": flux})), _image(err)]).writeto(table)
    with pytest.raises(
        ValueError, match=r"table\.fits: HDU1 \(flux\): expected a non-empty image HDU, found BinTableHDU"
    ):
        read_aspcapstar(table)
    no_mask = write_aspcapstar(tmp_path / "nomask.fits", flux, err, extra=False)
    with pytest.raises(ValueError, match=r"nomask\.fits: HDU3 \(bitmask\): missing"):
        read_apstar(no_mask)
    float_mask = tmp_path / "floatmask.fits"
    fits.HDUList([fits.PrimaryHDU(), _image(flux), _image(err), _image(np.zeros(N))]).writeto(float_mask)
    with pytest.raises(ValueError, match=r"floatmask\.fits: HDU3 \(bitmask\): expected an integer"):
        read_apstar(float_mask)
    two_d = write_aspcapstar(tmp_path / "twod.fits", np.vstack([flux, flux]), np.vstack([err, err]), extra=False)
    with pytest.raises(ValueError, match=r"twod\.fits: HDU1 \(flux\): expected a 1-D spectrum"):
        read_aspcapstar(two_d)
    allstar = write_allstar(tmp_path / "allStar.fits")
    with pytest.raises(ValueError, match=r"allStar\.fits: HDU0: expected a binary table .* found PrimaryHDU"):
        read_allstar(allstar, ["TEFF"], hdu=0)
    with pytest.raises(ValueError, match=r"allStar\.fits: HDU5: expected a binary table .* found 2 HDUs"):
        read_allstar(allstar, ["TEFF"], hdu=5)


def test_mismatched_array_lengths(tmp_path, spectrum):
    flux, err = spectrum
    path = write_aspcapstar(tmp_path / "spec.fits", flux, err[:100], extra=False)
    with pytest.raises(
        ValueError, match=re.escape("spec.fits: HDU2 (error): expected shape (8575,) like HDU1, found (100,)")
    ):
        read_aspcapstar(path)
    path = write_apstar(tmp_path / "ap.fits", np.ones((5, N)), np.ones((5, N)), np.zeros((4, N)), nvisits=3)
    with pytest.raises(ValueError, match=re.escape("ap.fits: HDU3 (bitmask): expected shape (5, 8575) like HDU1")):
        read_apstar(path)
    path = write_apstar(tmp_path / "nv.fits", np.ones((5, N)), np.ones((5, N)), np.zeros((5, N)), nvisits=4)
    with pytest.raises(ValueError, match=r"nv\.fits: HDU0 header NVISITS: 4 visits"):
        read_apstar(path)


def test_all_nan_rows_and_negative_errors(tmp_path, spectrum):
    flux, err = spectrum
    path = write_aspcapstar(tmp_path / "nan.fits", np.full(N, np.nan, np.float32), err, extra=False)
    with pytest.raises(ValueError, match=r"nan\.fits: HDU1 \(flux\): row 0 has no usable pixel"):
        read_aspcapstar(path)
    visits = np.ones((4, N), np.float32)
    visits[3] = np.nan
    path = write_apstar(tmp_path / "ap-nan.fits", visits, np.ones((4, N)), np.zeros((4, N)), nvisits=2)
    assert read_apstar(path, rows=[0, 2]).n_stars == 2
    with pytest.raises(ValueError, match=r"ap-nan\.fits: HDU1 \(flux\): row 3 has no usable pixel"):
        read_apstar(path, rows="visits")
    neg = err.copy()
    neg[1000] = -0.01
    with pytest.raises(
        ValueError, match=r"neg\.fits: HDU2 \(error\): expected errors >= 0, found a negative one at row 0, pixel 1000"
    ):
        read_aspcapstar(write_aspcapstar(tmp_path / "neg.fits", flux, neg, extra=False))


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ({"CTYPE1": "Pixel"}, "CTYPE1: expected 'LOG-LINEAR'"),
        ({"DC-FLAG": 0}, "DC-FLAG: expected 1"),
        ({"CRVAL1": 15100.0, "CTYPE1": "LOG"}, "expected log10"),
        ({"CRVAL1": "4.179 log"}, "CRVAL1: expected a number"),
    ],
)
def test_header_must_describe_a_log_lambda_grid(tmp_path, spectrum, header, match):
    flux, err = spectrum
    path = write_aspcapstar(tmp_path / "hdr.fits", flux, err, header=header, extra=False)
    with pytest.raises(ValueError, match=r"hdr\.fits: HDU1 \(flux\) header .*" + re.escape(match)):
        read_aspcapstar(path, n_pix=None)


def test_missing_grid_keywords(tmp_path, spectrum):
    flux, err = spectrum
    path = tmp_path / "bare.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(flux), fits.ImageHDU(err)]).writeto(path)
    with pytest.raises(ValueError, match=r"bare\.fits: HDU1 \(flux\) header CRVAL1/CDELT1: missing"):
        read_aspcapstar(path)


def test_allstar_column_errors(tmp_path):
    path = write_allstar(tmp_path / "allStar.fits")
    with pytest.raises(ValueError, match=r"allStar\.fits: HDU1 column 'TEF': not found; close: TEFF"):
        read_allstar(path, ["TEF"])
    with pytest.raises(ValueError, match=r"allStar\.fits: HDU1 column 'ASPCAPFLAG_ERR': not found \(the error of"):
        read_allstar(path, ["ASPCAPFLAG"])
    with pytest.raises(TypeError, match=r"allStar\.fits: HDU1 column 'FPARAM': expected one number per row"):
        read_allstar(path, ["FPARAM"], err_suffix=None)
    with pytest.raises(TypeError, match=r"allStar\.fits: HDU1 column 'APOGEE_ID': expected one number per row"):
        read_allstar(path, ["APOGEE_ID"], err_suffix=None)
    with pytest.raises(ValueError, match=r"allStar\.fits: HDU1 columns \['TEFF', 'TEFF'\]: names: expected unique"):
        read_allstar(path, ["TEFF", "TEFF"])
    t = Table({"APOGEE_ID": ["a", "b"], "TEFF": [4000.0, 5000.0], "TEFF_ERR": [10.0, -5.0]})
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(t)]).writeto(tmp_path / "neg.fits")
    with pytest.raises(
        ValueError, match=r"neg\.fits: HDU1 column 'TEFF_ERR': expected errors > 0 .* found -5 at row 1"
    ):
        read_allstar(tmp_path / "neg.fits", ["TEFF"])


# issue 14: careless arguments to the allStar and apStar readers ----------------------------------------------
def test_issue14_allstar_refuses_an_empty_err_suffix(tmp_path):
    path = write_allstar(tmp_path / "allStar.fits")
    with pytest.raises(ValueError, match=r"err_suffix: expected a non-empty suffix .*found ''"):
        read_allstar(path, ["TEFF"], err_suffix="")  # each value was its own error: TEFF 4800 +- 4800
    with pytest.raises(TypeError, match="err_suffix: expected a str .*found int"):
        read_allstar(path, ["TEFF"], err_suffix=1)


def test_issue14_allstar_hdu_by_number_or_extension_name(tmp_path):
    path = write_allstar(tmp_path / "allStar.fits")
    with pytest.raises(
        ValueError,
        match=r"hdu: no extension named '1' in .*allStar\.fits \(an int selects an HDU by position\); "
        r"found: HDU0 'PRIMARY', HDU1 ''",
    ):
        read_allstar(path, ["TEFF"], hdu="1")  # blamed the file before
    with pytest.raises(
        TypeError, match=r"hdu: expected an int \(HDU number\) or a str \(extension name\), found float"
    ):
        read_allstar(path, ["TEFF"], hdu=1.0)
    with pytest.raises(ValueError, match="hdu: expected an int >= 0, found -1"):
        read_allstar(path, ["TEFF"], hdu=-1)
    named = tmp_path / "named.fits"
    table = fits.table_to_hdu(Table({"APOGEE_ID": ["a"], "TEFF": [4800.0], "TEFF_ERR": [50.0]}))
    table.name = "ALLSTAR"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros(3)), table]).writeto(named)
    assert read_allstar(named, ["TEFF"], hdu="allstar").labels.values.tolist() == [[4800.0]]
    assert read_allstar(named, ["TEFF"], hdu=2).ids.tolist() == ["a"]
    with pytest.raises(ValueError, match=r"named\.fits: HDU1: expected a binary table .* found ImageHDU"):
        read_allstar(named, ["TEFF"], hdu=1)


def test_issue14_allstar_with_no_rows_blames_the_file(tmp_path):
    empty = tmp_path / "empty.fits"
    t = Table(
        {"APOGEE_ID": np.array([], "U18"), "TEFF": np.array([], np.float32), "TEFF_ERR": np.array([], np.float32)}
    )
    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(t)]).writeto(empty)
    with pytest.raises(ValueError, match=r"empty\.fits: no rows in HDU1"):
        read_allstar(empty, ["TEFF"])  # said "where: selects no rows" though no where was given


@pytest.mark.parametrize(
    ("bad_bits", "match"),
    [
        (255, r"bad_bits: expected an iterable of bit numbers or names, found int 255; .*\[0, 1, 2, 3, 4, 5, 6, 7\]"),
        (np.int64(4), r"found int 4; the mask value 4 is bad_bits=\[2\]"),
        (None, "bad_bits: expected an iterable of bit numbers or names, found NoneType None"),
        (2.0, "found float 2.0"),
    ],
)
def test_issue14_bad_bits_must_be_an_iterable(tmp_path, spectrum, bad_bits, match):
    with pytest.raises(TypeError, match=match):
        pixmask_value(bad_bits)  # "'int' object is not iterable" before
    flux, err = spectrum
    path = write_apstar(tmp_path / "ap.fits", flux, err, np.zeros(N), nvisits=1)
    with pytest.raises(TypeError, match="bad_bits: expected an iterable"):
        read_apstar(path, bad_bits=bad_bits)
    aspcap = write_aspcapstar(tmp_path / "a.fits", flux, err, extra=False)
    with pytest.raises(TypeError, match="bad_bits: expected an iterable"):
        read_spectra([aspcap], bad_bits=bad_bits, progress=False)  # checked even where unused
    assert pixmask_value("SATPIX") == 4  # a bare str is one bit name
