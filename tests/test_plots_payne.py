"""Payne figures draw what they are given: a fit per chip with residuals, label recovery; the Doppler shift."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import Labels, Spectra
from jaxspec.models import payne
from jaxspec.plots.payne import fit_residuals, label_recovery

plt = pytest.importorskip("matplotlib.pyplot")

NAMES = ("TEFF", "LOGG")


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _grid() -> np.ndarray:
    """Three chips of 10 pixels, uniform in ln(lambda) within each, with gaps between them."""
    return np.concatenate([15200.0 * np.exp(1.4e-5 * np.arange(10)) + 300.0 * c for c in range(3)])


def _model() -> payne.Model:
    rng = np.random.default_rng(0)
    layers = (
        payne.Layer(jnp.asarray(rng.normal(size=(4, 2)), jnp.float32), jnp.zeros(4, jnp.float32)),
        payne.Layer(jnp.asarray(0.05 * rng.normal(size=(30, 4)), jnp.float32), jnp.full(30, 0.9, jnp.float32)),
    )
    return payne.Model(layers, jnp.array([4000.0, 1.0]), jnp.array([5000.0, 3.0]), NAMES, _grid())


def _fit(n: int, values: np.ndarray, *, flagged=None) -> payne.LabelFit:
    cov = np.zeros((n, 2, 2))
    cov[:, 0, 0], cov[:, 1, 1] = 20.0**2, 0.1**2
    flags = np.zeros(n, bool) if flagged is None else np.asarray(flagged)
    return payne.LabelFit(
        Labels(values, ivar=1.0 / np.diagonal(cov, axis1=1, axis2=2), names=NAMES, dtype=np.float64),
        cov,
        np.linspace(-2.0, 2.0, n),
        np.full(n, 0.5),
        np.full(n, 30.0),
        np.full(n, 1.1),
        ~flags,
        np.zeros(n, bool),
        flags,
    )


def test_fit_residuals_one_pair_of_panels_per_chip_with_the_shifted_model():
    model = _model()
    values = np.array([[4500.0, 2.0], [4200.0, 2.5], [4800.0, 1.5]])
    fit = _fit(3, values)
    expected = np.asarray(payne.observed_spectra(model, values, fit.rv), np.float64)
    flux = expected + 0.01
    ivar = np.full(flux.shape, 1e4)
    ivar[1, 3] = 0.0
    mask = np.zeros(30, bool)
    mask[25] = True
    spectra = Spectra(flux, ivar=ivar, wavelength=model.wavelength, dtype=np.float64)
    fig = fit_residuals(model, spectra, fit, 1, mask=mask)
    assert len(fig.axes) == 6  # 3 chips x (flux, residuals)
    top, bottom = fig.axes[0], fig.axes[3]
    data, model_line = top.lines[:2]
    np.testing.assert_allclose(model_line.get_xdata(), model.wavelength[:10])
    np.testing.assert_allclose(model_line.get_ydata(), expected[1, :10], rtol=1e-6)
    assert np.isnan(data.get_ydata()[3]) and np.isfinite(data.get_ydata()).sum() == 9
    np.testing.assert_allclose(bottom.lines[0].get_ydata()[[0, 1, 2, 4]], 1.0, rtol=1e-4)  # 0.01 * 100
    assert np.isnan(fig.axes[2].lines[0].get_ydata()[5])  # pixel 25 masked in the fit
    assert "RV 0.00 km/s" in fig._suptitle.get_text() and "TEFF 4200" in fig._suptitle.get_text()

    zoom = fit_residuals(model, spectra, fit, -1, wave_range=(15480.0, 15600.0))
    assert len(zoom.axes) == 2
    np.testing.assert_allclose(zoom.axes[0].lines[1].get_ydata(), expected[2, 10:20], rtol=1e-6)


def test_fit_residuals_bad_input_names_the_argument():
    model = _model()
    fit = _fit(2, np.array([[4500.0, 2.0], [4200.0, 2.5]]))
    spectra = Spectra(np.ones((2, 30)), ivar=np.ones((2, 30)), wavelength=model.wavelength)
    with pytest.raises(ValueError, match="index"):
        fit_residuals(model, spectra, fit, 2)
    with pytest.raises(ValueError, match="fit"):
        fit_residuals(model, spectra[:1], fit, 0)
    with pytest.raises(ValueError, match="wave_range"):
        fit_residuals(model, spectra, fit, 0, wave_range=(1000.0, 2000.0))
    with pytest.raises(TypeError, match="spectra"):
        fit_residuals(model, np.ones((2, 30)), fit, 0)


def test_label_recovery_draws_fit_minus_truth_with_errors_and_skips_flagged_stars():
    truth = np.array([[4500.0, 2.0], [4200.0, 2.5], [4800.0, 1.5], [4100.0, 1.1]])
    fitted = truth + np.array([[10.0, 0.1], [-20.0, 0.0], [5.0, -0.1], [0.0, 0.0]])
    fit = _fit(4, fitted, flagged=[False, False, False, True])
    rv_true = fit.rv - 0.25
    fig = label_recovery(Labels(truth[:, ::-1], err=np.ones((4, 2)), names=NAMES[::-1]), fit, rv=rv_true)
    assert len(fig.axes) == 3  # TEFF, LOGG, RV
    teff, logg, rv = fig.axes
    np.testing.assert_allclose(teff.lines[0].get_xydata(), np.c_[truth[:3, 0], [10.0, -20.0, 5.0]])
    np.testing.assert_allclose(logg.lines[0].get_ydata(), [0.1, 0.0, -0.1], atol=1e-12)
    np.testing.assert_allclose(rv.lines[0].get_ydata(), 0.25)
    assert teff.get_xlabel() == "TEFF (true)" and rv.get_xlabel() == "RV [km/s] (true)"
    assert "RMSE = 13.2" in teff.texts[0].get_text()  # sqrt((100 + 400 + 25) / 3)
    assert "pull std = 0.00" in rv.texts[0].get_text()  # the same pull, 0.25 / 0.5, for every star
    assert "1 flagged" in fig._suptitle.get_text()

    one = label_recovery(truth, fit, names=["LOGG"], ncols=1)  # an array in the fit's order
    assert len(one.axes) == 1


def test_label_recovery_bad_input_names_the_argument():
    fit = _fit(2, np.array([[4500.0, 2.0], [4200.0, 2.5]]))
    with pytest.raises(ValueError, match="names"):
        label_recovery(np.zeros((2, 2)), fit, names=["FE_H"])
    with pytest.raises(ValueError, match="truth"):
        label_recovery(np.zeros((3, 2)), fit)
    with pytest.raises(ValueError, match="truth"):
        label_recovery(Labels([[1.0], [2.0]], err=[[1.0], [1.0]], names=["TEFF"]), fit)
    with pytest.raises(ValueError, match="rv"):
        label_recovery(np.zeros((2, 2)), fit, rv=[1.0])
    with pytest.raises(ValueError, match="ncols"):
        label_recovery(np.zeros((2, 2)), fit, ncols=0)
