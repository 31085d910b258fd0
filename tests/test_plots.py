"""Figures: they draw what they are given (gaps broken, masked pixels apart)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxspec import Labels, Spectra
from jaxspec.data._grids import apogee_wavelength
from jaxspec.plots import (
    plot_abundance_plane,
    plot_derivative_spectra,
    plot_kiel,
    plot_label_comparison,
    plot_spectra,
    plot_spectrum_fit,
)
from jaxspec.plots._mpl import broken_line, gap_positions

plt = pytest.importorskip("matplotlib.pyplot")


def test_chip_gaps_are_found_andbroken_line():
    w = apogee_wavelength(7514)
    gaps = gap_positions(w)
    np.testing.assert_array_equal(gaps, [3027, 3027 + 2495])  # the two APOGEE chip gaps
    x, y = broken_line(w, np.ones_like(w), gaps)
    assert x.size == w.size + 2
    assert np.isnan(y).sum() == 2


def test_plot_spectra_draws_good_and_masked_pixels_separately():
    w = apogee_wavelength(7514)
    flux = np.ones((2, w.size))
    ivar = np.ones((2, w.size))
    ivar[1, :100] = 0
    s = Spectra(flux, ivar=ivar, wavelength=w)
    lab = Labels([[4800.0, 2.5], [np.nan, 3.0]], err=np.ones((2, 2)), names=["TEFF", "LOGG"])
    fig = plot_spectra(s, labels=lab)
    ax = fig.axes[0]
    assert len(ax.lines) == 3  # star 0: good; star 1: good + masked
    masked = ax.lines[2].get_ydata()
    assert np.isfinite(masked).sum() == 100
    assert "TEFF ?" in ax.texts[1].get_text()
    plt.close(fig)


NAMES = ["TEFF", "LOGG", "FE_H", "MG_FE", "C_FE"]


def _labels(n=40, seed=0, err=None):
    rng = np.random.default_rng(seed)
    v = np.column_stack(
        [rng.uniform(4000, 5200, n), rng.uniform(1, 3.5, n), rng.normal(-0.2, 0.3, n), rng.normal(0.1, 0.1, n)]
    )
    v = np.column_stack([v, rng.normal(0, 0.1, n)])
    e = np.array([50.0, 0.05, 0.01, 0.02, 0.03]) * np.ones_like(v) if err is None else err
    return Labels(v, err=e, names=NAMES, dtype=np.float64)


def test_plot_label_comparison_prints_bias_rmse_and_reference_error():
    ref = _labels()
    pred = ref.replace(values=np.asarray(ref.values) + np.array([10.0, 0, 0, 0, 0]))
    fig = plot_label_comparison(pred, ref, ncols=2)
    assert len(fig.axes) == 5  # 3x2 grid, the spare panel removed
    text = fig.axes[0].texts[0].get_text()
    assert "bias = 10\n" in text and "RMSE = 10\n" in text and text.endswith("= 50")
    assert "bias = 0\n" in fig.axes[1].texts[0].get_text()
    plt.close(fig)
    # arrays with explicit names and errors; a subset of Labels by name
    fig = plot_label_comparison(
        np.asarray(pred.values)[:, :2],
        np.asarray(ref.values)[:, :2],
        names=["a", "b"],
        reference_err=np.full((40, 2), 0.5),
    )
    assert len(fig.axes) == 2 and fig.axes[1].texts[0].get_text().endswith("= 0.5")
    plt.close(fig)
    fig = plot_label_comparison(pred, ref, names=["FE_H"])
    assert len(fig.axes) == 1 and "[Fe/H]" in fig.axes[0].get_xlabel()
    plt.close(fig)
    # reference in another column order (and with a missing entry) is matched by name
    ref_err = np.array([50.0, 0.05, 0.01, 0.02, 0.03]) * np.ones((40, 5))
    ref_err[0, 2] = np.nan
    shuffled = Labels(np.asarray(ref.values)[:, ::-1], err=ref_err[:, ::-1], names=NAMES[::-1], dtype=np.float64)
    fig = plot_label_comparison(pred, shuffled)
    assert [ax.get_xlabel() for ax in fig.axes[:2]] == ["$T_{\\rm eff}$ [K] (reference)", "$\\log g$ (reference)"]
    assert fig.axes[0].texts[0].get_text().endswith("= 50")
    assert len(fig.axes[2].collections[0].get_offsets()) == 39
    plt.close(fig)


def test_plot_label_comparison_bad_names():
    ref = _labels()
    with pytest.raises(ValueError, match=r"names: expected label names among .*found \['NOPE'\]"):
        plot_label_comparison(ref, ref, names=["NOPE"])
    with pytest.raises(ValueError, match="names: expected 5 names"):
        plot_label_comparison(np.asarray(ref.values), np.asarray(ref.values), names=["a"])


def test_plot_kiel_inverts_axes_and_needs_its_labels():
    lab = _labels()
    fig = plot_kiel(lab)
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # the diagram and its colour bar
    assert ax.xaxis_inverted() and ax.yaxis_inverted()
    assert len(ax.collections[0].get_offsets()) == 40
    plt.close(fig)
    with pytest.raises(ValueError, match=r"labels: expected labels \['TEFF'\]"):
        plot_kiel(lab.select(["LOGG", "FE_H"]))
    with pytest.raises(TypeError, match="labels: expected Labels"):
        plot_kiel(np.asarray(lab.values))


def test_plot_abundance_plane_skips_missing_stars():
    err = np.array([50.0, 0.05, 0.01, 0.02, 0.03]) * np.ones((40, 5))
    err[:3, 3] = np.nan  # three stars without [Mg/Fe]
    fig = plot_abundance_plane(_labels(err=err))
    ax = fig.axes[0]
    assert len(fig.axes) == 1 and len(ax.collections[0].get_offsets()) == 37
    assert ax.get_xlabel() == "[Fe/H]" and ax.get_ylabel() == "[Mg/Fe]"
    plt.close(fig)
    with pytest.raises(ValueError, match="NA_FE"):
        plot_abundance_plane(_labels(), y="NA_FE")


def test_plot_spectrum_fit_data_model_and_residuals():
    w = apogee_wavelength(7514)
    rng = np.random.default_rng(1)
    model = 1 - 0.1 * rng.random((2, w.size))
    ivar = np.full((2, w.size), 1e4)
    ivar[1, :50] = 0
    s = Spectra(model + rng.normal(size=model.shape) / 100, ivar=ivar, wavelength=w)
    fig = plot_spectrum_fit(s, model, index=1, wave_range=(15100, 17000))
    ax, rax = fig.axes
    assert len(fig.axes) == 2
    data_line = ax.lines[0].get_ydata()
    assert np.isnan(data_line).sum() >= 50 + 2  # masked pixels and two chip gaps not drawn
    assert "chi^2_r" in ax.get_title()
    assert len(rax.lines) == 4  # residuals and 0, +-1
    plt.close(fig)
    with pytest.raises(ValueError, match=r"model_flux: expected shape \(2, 7514\), found shape \(1, 7514\)"):
        plot_spectrum_fit(s, model[:1])
    with pytest.raises(ValueError, match="index: expected an int in"):
        plot_spectrum_fit(s, model, index=2)


def test_plot_derivative_spectra_rows_and_lines():
    w = np.linspace(15200.0, 15300.0, 50)
    der = np.random.default_rng(2).normal(size=(3, 50))
    lines = {"MG_FE": [15240.0, 15260.0, 99999.0], "NOT_DRAWN": [15250.0]}
    fig = plot_derivative_spectra(w, der, ["TEFF", "FE_H", "MG_FE"], select=["FE_H", "MG_FE"], lines=lines)
    assert len(fig.axes) == 2
    assert len(fig.axes[1].lines) == 1 + 2 + 1  # zero line, two line markers in range, derivative
    assert len(fig.axes[0].lines) == 2
    np.testing.assert_array_equal(fig.axes[1].lines[-1].get_ydata(), der[2])
    plt.close(fig)
    with pytest.raises(ValueError, match=r"select: .*found \['MN_FE'\]"):
        plot_derivative_spectra(w, der, ["TEFF", "FE_H", "MG_FE"], select=["MN_FE"])
    with pytest.raises(ValueError, match="names: expected 3 names"):
        plot_derivative_spectra(w, der, ["TEFF"])
    with pytest.raises(ValueError, match=r"wavelength: expected shape \(50,\)"):
        plot_derivative_spectra(w[:10], der, ["TEFF", "FE_H", "MG_FE"])
