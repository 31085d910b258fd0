"""Cycle-StarNet figures draw what they are given: the training history, residual panels, recovered lines."""

from __future__ import annotations

import numpy as np
import pytest

from jaxspec.models import cycle_starnet as cs
from jaxspec.models._common import FitResult
from jaxspec.plots import cycle_starnet as cplots

plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_training_history_draws_every_distance_and_adversarial_term():
    terms = ("rec_synth", "cycle_synth", "rec_obs", "cycle_obs", "adv_synth", "adv_obs")
    history = {f"generator/{k}": np.array([4.0, 2.0, 1.0]) * (i + 1) for i, k in enumerate(terms)}
    history.update({f"critic/{k}": np.full(3, 0.7) for k in ("real_synth", "fake_synth", "real_obs", "fake_obs")})
    history["val_loss"] = np.array([30.0, 20.0, 15.0])
    fig = cplots.training_history(FitResult(None, history, False, {"steps_per_pass": 10}))
    top, bottom = fig.axes
    np.testing.assert_allclose(top.lines[2].get_ydata(), [12.0, 6.0, 3.0])  # rec_obs
    np.testing.assert_allclose(top.lines[0].get_xdata(), [10, 20, 30])  # iterations
    np.testing.assert_allclose(top.lines[4].get_ydata(), [30.0, 20.0, 15.0])
    assert len(bottom.lines) == 7  # six terms and log 2
    with pytest.raises(TypeError, match="fit"):
        cplots.training_history(FitResult(None, {"loss": np.ones(2)}, False, {}))


def test_residuals_panels_show_the_pixelwise_mean_and_mean_absolute_residual():
    wave = np.concatenate([np.linspace(15100, 15200, 50), np.linspace(15900, 16000, 50)])
    obs = np.ones((20, 100))
    good = obs - 0.01
    ivar = np.full(obs.shape, 1e4)
    ivar[0, 5] = 0.0
    fig = cplots.residuals(wave, obs, {"A": good, "B": obs + 0.02 * (np.arange(100) % 2)}, ivar=ivar)
    a, b = fig.axes[:2]
    x, mean = a.lines[0].get_xdata(), a.lines[0].get_ydata()
    assert np.isnan(x).sum() == 1  # broken at the chip gap
    np.testing.assert_allclose(mean[np.isfinite(mean)], 1.0)  # (1 - 0.99) * 100
    assert "bias 1" in a.get_title()
    np.testing.assert_allclose(b.lines[1].get_ydata()[:4], [0.0, 2.0, 0.0, 2.0])
    rel = cplots.residuals(wave, obs, {"A": good}, relative=True)
    np.testing.assert_allclose(rel.axes[0].lines[0].get_ydata()[:3], -0.01)
    with pytest.raises(ValueError, match="models"):
        cplots.residuals(wave, obs, {"A": good[:, :50]})


def test_missing_lines_shades_features_in_their_label_colour():
    wave = np.linspace(15100, 15200, 64)
    diff = np.zeros((64, 3))
    diff[30:35, 2] = -0.3
    jac = cs.LineJacobians(np.zeros((64, 3)), np.zeros((64, 3)), diff, ("TEFF", "LOGG", "FE_H"))
    found = cs.features(diff, threshold=0.01, label_names=jac.label_names)
    syn = np.ones(64)
    sent = syn - 0.2 * (np.abs(np.arange(64) - 32) < 3)
    fig = cplots.missing_lines(wave, syn, sent, jac, found, truth=sent)
    axes = fig.axes
    np.testing.assert_allclose(axes[2].lines[0].get_ydata(), sent - syn)
    assert len(axes[2].patches) == 1 and len(axes[3].lines) == 1  # the FE_H feature and its label's line
    np.testing.assert_allclose(axes[3].lines[0].get_ydata(), diff[:, 2])
    with pytest.raises(ValueError, match="pixels"):
        cplots.missing_lines(wave[:10], syn, sent, jac)
