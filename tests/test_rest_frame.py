"""``jaxspec.data.rest_frame.to_rest_frame``: observed spectra moved to the rest frame on their own grid."""

from __future__ import annotations

import numpy as np
import pytest

from jaxspec import Spectra
from jaxspec.data._grids import apogee_wavelength
from jaxspec.data.rest_frame import C_KMS, chips, to_rest_frame

WAVE = apogee_wavelength(7214)


def _doppler(v):
    return np.sqrt((1 + v / C_KMS) / (1 - v / C_KMS))


def _smooth(wave):
    """A smooth rest-frame 'spectrum' (interpolation error ~1e-7) with some structure."""
    return 1.0 - 0.2 * np.sin(wave / 40.0) ** 2


def test_observed_then_rest_frame_gives_the_rest_spectrum_back():
    v = np.array([-47.4, 0.0, 17.6])
    rest = _smooth(WAVE)
    observed = np.stack([_smooth(WAVE / _doppler(x)) for x in v])  # the rest-frame flux of lambda / D
    out = to_rest_frame(Spectra(observed, np.full(observed.shape, 1e4), WAVE, dtype=np.float64), v)
    good = np.asarray(out.ivar) > 0
    np.testing.assert_allclose(np.asarray(out.flux)[good], np.broadcast_to(rest, good.shape)[good], atol=2e-6)
    # exactly the pixels whose query leaves their chip are lost (about |v| / 4.14 km/s per chip), none at rest
    c = chips(WAVE)
    for i, x in enumerate(v):
        q = WAVE * _doppler(x)
        outside = np.zeros(WAVE.size, bool)
        for k in range(3):
            inchip = c == k
            outside |= inchip & ((q < WAVE[inchip].min()) | (q > WAVE[inchip].max()))
        np.testing.assert_array_equal(~good[i], outside)
    assert (~good).sum(axis=1).tolist()[1] == 0 and 30 < (~good[0]).sum() < 40
    np.testing.assert_array_equal(np.asarray(out.flux)[1], observed[1])


def test_variance_is_propagated_and_masks_spread_to_the_pixels_that_use_them():
    flux = np.ones((1, WAVE.size))
    ivar = np.full((1, WAVE.size), 4.0)
    ivar[0, 1000] = 0.0
    # half a pixel: every rest pixel is the mean of two observed ones
    half = 0.5 * np.log(WAVE[1] / WAVE[0])
    v = C_KMS * np.tanh(half)  # D = exp(half)
    out = to_rest_frame(Spectra(flux, ivar, WAVE, dtype=np.float64), v)
    w = np.asarray(out.ivar)[0]
    inner = np.r_[10:990, 1010:2900]
    np.testing.assert_allclose(w[inner], 1 / (0.25 / 4 + 0.25 / 4), rtol=1e-4)  # t ~ 1/2 within the chip
    assert w[1000] == 0 and w[999] == 0 and w[1001] > 0  # the masked pixel and the one drawing on it
    assert np.all(np.asarray(out.flux)[0][w > 0] == pytest.approx(1.0))


def test_chips_and_bad_input():
    c = chips(WAVE)
    assert np.bincount(c).tolist() == [2920, 2400, 1894]
    spectra = Spectra(np.ones((2, WAVE.size)), np.ones((2, WAVE.size)), WAVE)
    with pytest.raises(ValueError, match="rv"):
        to_rest_frame(spectra, [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="rv"):
        to_rest_frame(spectra, np.nan)
    with pytest.raises(ValueError, match="rv"):
        to_rest_frame(spectra, 3e5)
    with pytest.raises(ValueError, match="spectra"):
        to_rest_frame(Spectra(np.ones((1, 5)), np.ones((1, 5))), 1.0)
    with pytest.raises(TypeError, match="spectra"):
        to_rest_frame(np.ones((1, 5)), 1.0)
