"""Lux on the built-in mock survey: the derivative spectra point at the right element's lines."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxspec.data import mock
from jaxspec.models import lux

NAMES = ("TEFF", "LOGG", "FE_H", "MG_FE", "AL_FE", "MN_FE")


@pytest.fixture(scope="module")
def mock_fit():
    survey = mock.survey(jax.random.key(1), 400, chunk_size=400, progress=False)
    result = lux.fit(survey.spectra, survey.labels.select(NAMES), key=jax.random.key(0), progress=False)
    return survey, result


@pytest.mark.slow
@pytest.mark.parametrize(("name", "element"), [("MG_FE", "MG"), ("AL_FE", "AL")])
def test_derivative_spectra_peak_on_element_lines(mock_fit, name, element):
    survey, result = mock_fit
    deriv = lux.derivative_spectra(result.model)
    assert deriv.shape == (len(NAMES), survey.spectra.n_pix) and np.all(np.isfinite(deriv))
    wave = survey.spectra.wavelength
    lines = mock.line_list().wavelength[mock.line_list().element == element]
    dlnw = np.median(np.diff(np.log(wave)))
    top = np.argsort(-np.abs(deriv[NAMES.index(name)]))[:5]
    pixels_to_line = np.array([np.min(np.abs(np.log(wave[i] / lines))) / dlnw for i in top])
    # the single largest response sits on a line of that element; nearly all of the top five do
    assert pixels_to_line[0] <= 2.0, (wave[top], pixels_to_line)
    assert np.sum(pixels_to_line <= 2.0) >= 4, (wave[top], pixels_to_line)
