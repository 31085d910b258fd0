"""Outlier scores of a flow: NLL, typicality and the likelihood ratio against a PPCA background."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxspec import Labels, Spectra
from jaxspec.metrics import roc_auc
from jaxspec.models import flows
from tests.test_flows import NAMES, gaussian, tiny


@pytest.fixture(scope="module")
def scored():
    spectra, labels, _ = gaussian(400, seed=4)
    model = flows.fit(spectra[:300], labels[:300], key=jax.random.key(0), config=tiny(epochs=8), progress=False).model
    ref = flows.reference(model, spectra[300:350], labels[300:350], key=jax.random.key(1), n_components=3)
    return model, ref, spectra[350:], labels[350:]


@pytest.mark.slow  # float32 pass only (CI time): one flow fit
def test_scores_separate_shifted_stars_and_flag_the_too_typical(scored):
    model, ref, spectra, labels = scored
    flux = np.asarray(spectra.flux).copy()
    flux[:25, 2] += 6 * np.asarray(model.spread)[2]  # a line 6 training sds deeper in one pixel
    outliers = Spectra(flux, np.asarray(spectra.ivar), spectra.wavelength)
    s = flows.outlier_scores(model, outliers, labels, ref, progress=False)
    positive = np.arange(50) < 25
    for score in (s.nll, s.typicality, s.background_nll):
        assert roc_auc(score, positive) > 0.95
    # on Gaussian data the flow is the background's Gaussian, so their ratio cancels the outlier too
    assert roc_auc(s.likelihood_ratio, positive) < 0.8
    # the exact centre of the training set is the most likely point: low NLL, but untypical
    centre = np.asarray(model.center, np.float64)[None]
    star = flows.outlier_scores(
        model, Spectra(centre[:, :5], np.ones((1, 5))), Labels(centre[:, 5:], np.ones((1, 2)), names=NAMES), ref
    )
    # (in 7 dimensions the mode lies d/2 = 3.5 nats below the mean NLL, sqrt(d/2) = 1.9 sds: typicality > 1;
    # at the paper's 2408 dimensions the gap is about 35 sds)
    assert star.nll[0] < np.min(s.nll[25:]) and star.typicality[0] > 1
    np.testing.assert_array_equal(s.masked_fraction, 0.0)


@pytest.mark.slow
def test_likelihood_ratio_is_the_difference_of_the_two_densities(scored):
    model, ref, spectra, labels = scored
    s = flows.outlier_scores(model, spectra, labels, ref, progress=False)
    np.testing.assert_allclose(s.likelihood_ratio, s.nll - s.background_nll, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(s.typicality, np.abs(s.nll - ref.nll_mean) / ref.nll_std, rtol=1e-12)
    with pytest.raises(TypeError, match="ref: expected a flows.Reference"):
        flows.outlier_scores(model, spectra, labels, (1.0, 2.0, None))
