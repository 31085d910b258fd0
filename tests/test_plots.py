"""Figures: they draw what they are given (gaps broken, masked pixels apart)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxspec import Labels, Spectra
from jaxspec.data._grids import apogee_wavelength
from jaxspec.plots import _broken, _gap_positions, plot_spectra

plt = pytest.importorskip("matplotlib.pyplot")


def test_chip_gaps_are_found_and_broken():
    w = apogee_wavelength(7514)
    gaps = _gap_positions(w)
    np.testing.assert_array_equal(gaps, [3027, 3027 + 2495])  # the two APOGEE chip gaps
    x, y = _broken(w, np.ones_like(w), gaps)
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
