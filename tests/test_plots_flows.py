"""Flows figures draw what they are given: the training history, both correlation matrices, ROC curves, histograms."""

from __future__ import annotations

import numpy as np
import pytest

from jaxspec import metrics
from jaxspec.models import flows
from jaxspec.models._common import FitResult
from jaxspec.plots import flows as fplots

plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _scores(rng, n: int, shift: float) -> flows.OutlierScores:
    nll = rng.normal(shift, 1.0, n)
    nll[0] = np.nan  # a star without a measured pixel
    return flows.OutlierScores(nll, np.abs(nll), nll - 0.5 * shift, rng.normal(shift / 2, 1.0, n), np.zeros(n))


def test_training_history_draws_both_losses_in_standardised_units_and_the_kept_epoch():
    history = {
        "loss": np.array([10.0, 8.0, 7.0]),
        "nll_std": np.array([4.0, 2.0, 1.0]),
        "val_loss": np.array([9.0, 8.5, 8.8]),
        "grad_norm": np.ones(3),
    }
    fig = fplots.training_history(FitResult(None, history, False, {"best_epoch": 1}))
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [4.0, 2.0, 1.0])
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [3.0, 2.5, 2.8])  # val_loss less the constant 6
    assert ax.lines[2].get_xdata()[0] == 1
    with pytest.raises(TypeError, match="fit"):
        fplots.training_history({"loss": 1})


def test_correlation_matrices_reindex_by_the_components_and_box_them():
    corr = np.eye(7)
    for block in ([1, 4, 6], [0, 5]):
        corr[np.ix_(block, block)] = 0.9
    np.fill_diagonal(corr, 1.0)
    fig = fplots.correlation_matrices(corr, min_size=2)
    left, right = fig.axes[:2]
    np.testing.assert_array_equal(left.images[0].get_array(), corr)
    order = [1, 4, 6, 0, 5, 2, 3]
    np.testing.assert_array_equal(right.images[0].get_array(), corr[order][:, order])
    assert [p.get_width() for p in right.patches] == [3, 2]
    assert "2 components, 5 pixels" in right.get_title()
    graph = flows.correlation_graph(corr)
    assert len(fplots.correlation_matrices(corr, graph).axes[1].patches) == 1
    with pytest.raises(ValueError, match="graph"):
        fplots.correlation_matrices(corr[:5, :5], graph)


def test_roc_curves_one_panel_per_class_aucs_in_the_legend():
    rng = np.random.default_rng(0)
    ordinary = _scores(rng, 300, 0.0)
    outliers = {"far": _scores(rng, 200, 4.0), "near": _scores(rng, 200, 0.5)}
    fig = fplots.roc_curves(ordinary, outliers, ncols=2)
    assert [ax.get_title() for ax in fig.axes] == ["far", "near"]
    assert len(fig.axes[0].lines) == len(fplots.SCORES) + 1
    ok_a, ok_b = np.isfinite(ordinary.nll), np.isfinite(outliers["near"].nll)
    s = np.r_[ordinary.nll[ok_a], outliers["near"].nll[ok_b]]
    positive = np.r_[np.zeros(ok_a.sum(), bool), np.ones(ok_b.sum(), bool)]
    fpr, tpr = metrics.roc_curve(s, positive)
    np.testing.assert_allclose(fig.axes[1].lines[0].get_xdata(), fpr)
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), tpr)
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert labels[0] == f"flow NLL: {metrics.roc_auc(s, positive):.3f}"
    one = fplots.roc_curves(ordinary, outliers, scores=["typicality"])
    assert len(one.axes[0].lines) == 2
    with pytest.raises(ValueError, match="scores"):
        fplots.roc_curves(ordinary, outliers, scores=["nll", "energy"])
    with pytest.raises(TypeError, match="outliers"):
        fplots.roc_curves(ordinary, [outliers["far"]])


def test_score_histograms_one_histogram_per_group_without_nan():
    rng = np.random.default_rng(1)
    ordinary = _scores(rng, 300, 5.0)
    outliers = {"far": _scores(rng, 100, 5e4)}
    fig = fplots.score_histograms(ordinary, outliers)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"  # the classes span decades
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["ordinary (299)", "far (99)"]
    assert len(ax.patches) == 2
    with pytest.raises(ValueError, match="bins"):
        fplots.score_histograms(ordinary, outliers, bins=0)
