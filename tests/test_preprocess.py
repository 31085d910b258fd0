"""Lux preprocessing rules and standardisation."""

from __future__ import annotations

import numpy as np
import pytest

from jaxspec.data.containers import Labels, Spectra
from jaxspec.data.preprocess import (
    Standardizer,
    apply_pixel_mask,
    fill_missing_labels,
    fit_standardizer,
    mask_bad_pixels,
)
from tests.conftest import assert_allclose


def test_mask_bad_pixels_follows_the_lux_rule():
    flux = np.array([[1.0, 0.0, 0.95, 0.9, 1.02]])
    ivar = np.array([[400.0, 400.0, 0.09, 0.1, 0.0]])
    out = mask_bad_pixels(Spectra(flux, ivar=ivar))
    # zero flux and ivar < 0.1 are bad; ivar == 0.1 is kept; ivar == 0 stays masked
    np.testing.assert_array_equal(out.ivar > 0, [[True, False, False, True, False]])
    np.testing.assert_array_equal(out.flux[0, [1, 2, 4]], [1.0, 1.0, 1.0])
    assert out.flux[0, 3] == pytest.approx(0.9)
    stricter = mask_bad_pixels(Spectra(flux, ivar=ivar), min_ivar=1.0)
    assert not (stricter.ivar[0, 3] > 0)
    with pytest.raises(ValueError, match="min_ivar"):
        mask_bad_pixels(Spectra(flux, ivar=ivar), min_ivar=-1)


def test_apply_pixel_mask_broadcasts_and_validates():
    s = Spectra(np.ones((3, 4)), ivar=np.ones((3, 4)))
    out = apply_pixel_mask(s, np.array([True, False, False, True]))
    np.testing.assert_array_equal(out.ivar, np.tile([0.0, 1.0, 1.0, 0.0], (3, 1)))
    with pytest.raises(ValueError, match=r"mask: expected shape \(4,\)"):
        apply_pixel_mask(s, np.ones(5, bool))
    with pytest.raises(TypeError, match="mask: expected a boolean"):
        apply_pixel_mask(s, np.ones(4))


def test_fill_missing_labels_uses_measured_median_or_given_center():
    values = np.array([[1.0, 10.0], [2.0, np.nan], [9.0, 30.0], [np.nan, 20.0]])
    lab = Labels(values, err=np.ones_like(values), names=["a", "b"])
    filled = fill_missing_labels(lab)
    np.testing.assert_array_equal(filled, [[1.0, 10.0], [2.0, 20.0], [9.0, 30.0], [2.0, 20.0]])
    np.testing.assert_array_equal(fill_missing_labels(lab, center=[-1.0, -2.0])[[1, 3]], [[2.0, -2.0], [-1.0, 20.0]])
    assert np.array_equal(lab.ivar == 0, np.isnan(values))  # the weights did not change


def test_percentile_standardizer_matches_numpy_on_measured_entries():
    rng = np.random.default_rng(1)
    values = rng.normal([4500.0, 2.0, 0.1], [300.0, 0.5, 0.05], size=(500, 3))
    values[rng.random(values.shape) < 0.1] = np.nan
    values[0, 0] = 1e6  # an outlier barely moves a percentile-based scale
    lab = Labels(values, err=np.full_like(values, 0.01), names=["TEFF", "LOGG", "MG_FE"], dtype=np.float64)
    st = fit_standardizer(lab)
    for j in range(3):
        col = values[:, j][np.isfinite(values[:, j])]
        assert st.center[j] == pytest.approx(np.median(col))
        lo, hi = np.percentile(col, [2.5, 97.5])
        assert st.scale[j] == pytest.approx((hi - lo) / 4)
    z = st.transform(lab)
    assert_allclose(st.inverse(np.asarray(z.values))[lab.observed], lab.values[lab.observed], dtype=np.float64)
    # errors scale with the values: err_std * scale == err
    assert_allclose(st.inverse_err(np.asarray(z.err))[lab.observed], lab.err[lab.observed], dtype=np.float64)
    np.testing.assert_array_equal(z.ivar == 0, lab.ivar == 0)


def test_moment_standardizer_on_spectra_and_arrays():
    flux = np.array([[1.0, 2.0], [3.0, 2.0], [5.0, 2.0]])
    st = fit_standardizer(Spectra(flux, ivar=np.ones_like(flux)), method="moments")
    np.testing.assert_allclose(st.center, [3.0, 2.0])
    np.testing.assert_allclose(st.scale, [np.std([1.0, 3.0, 5.0]), 1.0])  # zero spread -> scale 1
    z = st.transform(Spectra(flux, ivar=np.ones_like(flux)))
    np.testing.assert_allclose(z.flux[:, 0], (flux[:, 0] - 3.0) / np.std([1.0, 3.0, 5.0]), rtol=1e-6)
    assert isinstance(st, Standardizer)
    with pytest.raises(ValueError, match="x: expected 2 columns"):
        st.transform(Spectra(np.ones((1, 3)), ivar=np.ones((1, 3))))


def test_standardizer_errors():
    lab = Labels([[1.0, np.nan], [2.0, np.nan]], err=np.ones((2, 2)), names=["a", "b"])
    with pytest.raises(ValueError, match="column 'b' has no measured entry"):
        fit_standardizer(lab)
    with pytest.raises(ValueError, match="method"):
        fit_standardizer(np.ones((3, 2)), method="mad")


# issue 14: careless arguments to the preprocessing helpers -------------------------------------------------
@pytest.mark.parametrize("fill", [np.nan, np.inf])
def test_issue14_mask_bad_pixels_refuses_a_non_finite_fill_value(fill):
    s = Spectra([[1.0, 0.0]], ivar=[[1.0, 1.0]])
    with pytest.raises(ValueError, match="fill_value: expected a finite value, found"):
        mask_bad_pixels(s, fill_value=fill)  # would have put NaN in flux
    with pytest.raises(ValueError, match="fill_value: expected a value within the range of float32"):
        mask_bad_pixels(Spectra([[1.0, 0.0]], ivar=[[1.0, 1.0]], dtype=np.float32), fill_value=1e39)


@pytest.mark.parametrize("min_ivar", [np.nan, np.inf, -0.1])
def test_issue14_mask_bad_pixels_refuses_a_bad_min_ivar(min_ivar):
    s = Spectra([[1.0, 0.5]], ivar=[[100.0, 0.01]])
    with pytest.raises(ValueError, match=r"min_ivar: expected a finite value >= 0, found"):
        mask_bad_pixels(s, min_ivar=min_ivar)  # NaN masked nothing
    with pytest.raises(TypeError, match="min_ivar: expected a number, found str"):
        mask_bad_pixels(s, min_ivar="0.1")
    with pytest.raises(TypeError, match="spectra: expected Spectra, found ndarray"):
        mask_bad_pixels(np.ones((1, 2)))


def test_issue14_standardizer_refuses_raw_arrays_of_the_wrong_width():
    st = fit_standardizer(np.array([[1.0, 10.0], [3.0, 30.0]]), method="moments")
    with pytest.raises(ValueError, match=r"x: expected an array \(\.\.\., 2\), 2 columns .* found shape \(3, 1\)"):
        st.transform(np.ones((3, 1)))  # broadcast to (3, 2) before
    with pytest.raises(ValueError, match=r"x: expected an array \(\.\.\., 2\).* found shape \(2, 3\)"):
        st.transform(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"x: expected an array \(\.\.\., 2\).* found shape \(\)"):
        st.inverse(0.5)
    with pytest.raises(ValueError, match=r"x: expected an array \(\.\.\., 2\).* found shape \(4, 1\)"):
        st.inverse(np.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"err: expected an array \(\.\.\., 2\).* found shape \(3,\)"):
        st.inverse_err(np.ones(3))
    np.testing.assert_allclose(st.transform(np.array([[2.0, 20.0]])), [[0.0, 0.0]])
    np.testing.assert_allclose(st.inverse(np.array([0.0, 1.0])), [2.0, 30.0])
