"""Metrics: hand-computed numbers, masks and missing labels, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from jaxspec import Labels, Spectra
from jaxspec.metrics import bias_rmse, calibration, mean_error, reduced_chi2
from tests.conftest import assert_allclose

PRED = np.array([[5000.0, 2.0], [4800.0, 2.5], [4600.0, 3.1]])
TRUTH = np.array([[4990.0, 2.1], [4820.0, 2.5], [4600.0, 3.0]])


def test_bias_rmse_by_hand():
    r = bias_rmse(PRED, TRUTH)
    assert_allclose(r.bias, [(10 - 20 + 0) / 3, (-0.1 + 0 + 0.1) / 3], dtype=np.float64)
    assert_allclose(r.rmse, [np.sqrt(500 / 3), np.sqrt(0.02 / 3)], dtype=np.float64)
    np.testing.assert_array_equal(r.n, [3, 3])


def test_bias_rmse_mask_and_missing_labels():
    use = np.array([[True, True], [False, True], [True, False]])
    r = bias_rmse(PRED, TRUTH, mask=use)
    assert_allclose(r.bias, [5.0, -0.05], dtype=np.float64)
    np.testing.assert_array_equal(r.n, [2, 2])
    # the same entries missing (ivar == 0) in a Labels reference; NaN there is fine
    truth = Labels(np.where(use, TRUTH, np.nan), err=np.ones_like(TRUTH), names=["TEFF", "LOGG"])
    r2 = bias_rmse(PRED, truth)
    assert_allclose(r2.bias, r.bias, dtype=truth.values.dtype)
    # NaN in pred masked out is allowed too
    r3 = bias_rmse(np.where(use, PRED, np.nan), TRUTH, mask=use)
    assert_allclose(r3.rmse, r.rmse, dtype=np.float64)


def test_bias_rmse_aligns_labels_by_name_and_reports_empty_columns():
    pred = Labels(PRED, err=np.ones_like(PRED), names=["TEFF", "LOGG"], dtype=np.float64)
    truth = Labels(TRUTH[:, ::-1], err=np.ones_like(TRUTH), names=["LOGG", "TEFF"], dtype=np.float64)
    assert_allclose(bias_rmse(pred, truth).bias, bias_rmse(PRED, TRUTH).bias, dtype=np.float64)
    r = bias_rmse(PRED, TRUTH, mask=np.zeros(PRED.shape, bool))
    assert np.isnan(r.bias).all() and np.isnan(r.rmse).all() and (r.n == 0).all()
    other = Labels(TRUTH, err=np.ones_like(TRUTH), names=["TEFF", "FE_H"])
    with pytest.raises(ValueError, match=r"truth: .*LOGG"):
        bias_rmse(pred, other)


@pytest.mark.parametrize(
    ("pred", "truth", "mask", "error", "match"),
    [
        (PRED, TRUTH[:2], None, ValueError, r"truth: expected shape \(3, 2\), found shape \(2, 2\)"),
        (PRED[:, 0], TRUTH[:, 0], None, ValueError, "pred: expected a 2-D array"),
        (np.where(PRED > 4900, np.nan, PRED), TRUTH, None, ValueError, "pred: expected finite .* at star 0, column 0"),
        (PRED, TRUTH, np.ones((3, 2)), TypeError, "mask: expected a boolean array"),
        (PRED, TRUTH, np.ones((2, 2), bool), ValueError, "mask: expected shape"),
        (PRED.astype(str), TRUTH, None, TypeError, "pred: expected a real numeric array"),
    ],
)
def test_bias_rmse_bad_input(pred, truth, mask, error, match):
    with pytest.raises(error, match=match):
        bias_rmse(pred, truth, mask=mask)


def test_reduced_chi2_by_hand_and_from_spectra():
    data = np.array([[1.0, 0.8, 0.9, 1.0], [1.0, 1.0, 1.0, 1.0]])
    ivar = np.array([[100.0, 25.0, 0.0, 4.0], [1.0, 0.0, 0.0, 0.0]])
    model = np.array([[0.9, 0.8, 5.0, 0.5], [0.0, 1.0, 1.0, 1.0]])
    chi2 = 100 * 0.01 + 0 + 4 * 0.25  # = 2 over 3 good pixels
    assert_allclose(reduced_chi2(data, ivar, model), [chi2 / 3, 1.0], dtype=np.float64)
    assert_allclose(reduced_chi2(data, ivar, model, n_params=1), [chi2 / 2, np.inf], dtype=np.float64)
    s = Spectra(data, ivar=ivar, dtype=np.float64)
    assert_allclose(reduced_chi2(s, model=model), [chi2 / 3, 1.0], dtype=np.float64)
    # NaN where ivar == 0 is ignored
    assert np.isfinite(reduced_chi2(np.where(ivar > 0, data, np.nan), ivar, model)).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ivar": -np.ones((1, 3))}, ValueError, "ivar: expected finite values >= 0"),
        ({"model": np.ones((1, 2))}, ValueError, r"model: expected shape \(1, 3\), found shape \(1, 2\)"),
        (
            {"model": np.full((1, 3), np.nan)},
            ValueError,
            "model: expected finite values where ivar > 0, found NaN or inf first at star 0",
        ),
        ({"n_params": -1}, ValueError, "n_params: expected an int >= 0"),
        ({"model": None}, TypeError, "model: required"),
    ],
)
def test_reduced_chi2_bad_input(kwargs, error, match):
    args = {"ivar": np.ones((1, 3)), "model": np.ones((1, 3))} | kwargs
    with pytest.raises(error, match=match):
        reduced_chi2(np.ones((1, 3)), args["ivar"], args["model"], n_params=kwargs.get("n_params", 0))


def test_reduced_chi2_spectra_takes_no_ivar():
    with pytest.raises(TypeError, match="ivar: expected None when data is Spectra"):
        reduced_chi2(Spectra(np.ones((1, 3)), ivar=np.ones((1, 3))), np.ones((1, 3)), np.ones((1, 3)))


def test_calibration_pull_width():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(4000, 2))
    sigma = np.array([0.1, 0.2]) * np.ones_like(truth)
    pred = truth + rng.normal(size=truth.shape) * np.array([0.1, 0.4])  # label 0 calibrated, label 1 too confident
    assert_allclose(calibration(pred, truth, sigma), [1.0, 2.0], rtol=0.05, atol=0)
    # by hand: pulls (2, 0, -2) and one skipped zero-sigma entry
    p, t = np.array([[0.2], [0.0], [-0.2], [9.0]]), np.zeros((4, 1))
    s = np.array([[0.1], [0.1], [0.1], [0.0]])
    assert_allclose(calibration(p, t, s), [np.sqrt(8 / 3)], dtype=np.float64)
    lab = Labels(p[:3], err=s[:3], names=["X"], dtype=np.float64)
    assert_allclose(calibration(lab, t[:3]), [np.sqrt(8 / 3)], dtype=np.float64)
    assert np.isnan(calibration(p[:1], t[:1], s[:1])).all()  # one entry: no width
    with pytest.raises(TypeError, match="sigma: required"):
        calibration(p, t)


def test_mean_error():
    lab = Labels([[1.0, 2.0], [1.0, np.nan]], err=[[0.1, 0.2], [0.3, 0.4]], names=["A", "B"], dtype=np.float64)
    assert_allclose(mean_error(lab), [0.2, 0.2], dtype=np.float64)
    with pytest.raises(ValueError, match="ivar: expected finite values >= 0"):
        mean_error(np.array([[np.nan]]))


def test_moved_doppelganger_rate_warns_and_still_works():
    import jaxspec.metrics
    from jaxspec.models import rsca

    with pytest.warns(DeprecationWarning, match=r"moved to jaxspec\.models\.rsca\.doppelganger_rate"):
        assert jaxspec.metrics.doppelganger_rate is rsca.doppelganger_rate
