"""RSCA figures draw what they are given."""

from __future__ import annotations

import numpy as np
import pytest

from jaxspec.plots.rsca import plot_rate_vs_components, plot_rsca_dimensions

plt = pytest.importorskip("matplotlib.pyplot")


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_rsca_dimensions_one_panel_per_dimension_clusters_over_grey_field():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 5))
    fe_h = rng.normal(size=30)
    fe_h[3] = np.nan  # not drawn
    ids = np.r_[np.repeat([0, 1], 5), np.full(20, -1)]
    fig = plot_rsca_dimensions(emb, fe_h, cluster_ids=ids, n_dims=3)
    axes = fig.axes
    assert len(axes) == 3
    assert [ax.get_ylabel() for ax in axes] == [f"RSCA dimension {i}" for i in (1, 2, 3)]
    assert axes[-1].get_xlabel() == "[Fe/H]"
    field, c0, c1 = axes[1].collections
    np.testing.assert_allclose(field.get_offsets(), np.c_[fe_h[10:], emb[10:, 1]][np.isfinite(fe_h[10:])])
    np.testing.assert_allclose(c0.get_offsets(), np.c_[fe_h[:5], emb[:5, 1]][np.isfinite(fe_h[:5])])
    assert c1.get_offsets().shape == (5, 2)
    assert field.get_facecolor()[0][:3] == pytest.approx([0.7] * 3)


def test_rsca_dimensions_without_clusters_and_bad_input():
    emb = np.zeros((4, 2))
    fig = plot_rsca_dimensions(emb, np.arange(4.0), n_dims=1)
    assert len(fig.axes) == 1 and len(fig.axes[0].collections) == 1
    with pytest.raises(ValueError, match="n_dims"):
        plot_rsca_dimensions(emb, np.arange(4.0), n_dims=3)
    with pytest.raises(ValueError, match="fe_h"):
        plot_rsca_dimensions(emb, np.arange(3.0), n_dims=2)
    with pytest.raises(ValueError, match="cluster_ids"):
        plot_rsca_dimensions(emb, np.arange(4.0), cluster_ids=[0, 1], n_dims=2)


def test_rate_vs_components_draws_curves_and_baseline():
    k = [5, 10, 20]
    fig = plot_rate_vs_components(k, [0.1, 0.05, 0.02], rate_labels=0.04, rates_raw=[0.2, 0.15, 0.1])
    (ax,) = fig.axes
    spectra, raw = ax.lines[:2]
    np.testing.assert_allclose(spectra.get_xydata(), np.c_[k, [0.1, 0.05, 0.02]])
    np.testing.assert_allclose(raw.get_ydata(), [0.2, 0.15, 0.1])
    assert ax.lines[2].get_ydata()[0] == pytest.approx(0.04)  # axhline
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel().startswith("number of PCA components")
    assert ax.get_ylabel() == "doppelganger rate"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "RSCA on spectra",
        "raw PPCA latents",
        "RSCA on abundance labels",
    ]


def test_rate_vs_components_linear_with_a_zero_rate_and_given_axes():
    _, ax = plt.subplots()
    fig = plot_rate_vs_components([1, 2], [0.0, 0.1], ax=ax)
    assert fig is ax.figure and len(ax.lines) == 1 and ax.get_yscale() == "linear"
    with pytest.raises(ValueError, match="rates_spectra"):
        plot_rate_vs_components([1, 2], [0.1])
