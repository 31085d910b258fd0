"""Scatter-VAE figures draw what they are given."""

from __future__ import annotations

import numpy as np
import pytest

from jaxspec import plots
from jaxspec.data.containers import Labels
from jaxspec.plots.svae import plot_latent_projections, plot_residuals_vs_labels

plt = pytest.importorskip("matplotlib.pyplot")

RNG = np.random.default_rng(0)
N = 40
LABELS = Labels(
    np.c_[RNG.uniform(4000, 6000, N), RNG.uniform(1, 5, N), RNG.uniform(-1, 0.3, N)],
    err=np.ones((N, 3)),
    names=("TEFF", "LOGG", "FE_H"),
)


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_binned_median_line_is_the_median_of_each_label_bin():
    """The drawn median line of the sVAE row: at each bin centre, the median of the pooled residuals in that bin."""
    teff = np.asarray(LABELS.values[:, 0], np.float64)
    r = RNG.normal(size=(N, 3)) + (teff[:, None] - 5000.0) / 500.0  # a planted trend with Teff
    fig = plots.plot_residuals_vs_labels(LABELS, r, bins=4)
    line = next(ln for ln in fig.axes[0].lines if ln.get_label() == "median, 16-84%")
    edges = np.linspace(teff.min(), teff.max(), 5)
    which = np.clip(np.searchsorted(edges, teff, side="right") - 1, 0, 3)
    want = [np.median(r[which == b]) for b in range(4)]
    np.testing.assert_allclose(line.get_xdata(), 0.5 * (edges[1:] + edges[:-1]))
    np.testing.assert_allclose(line.get_ydata(), want)
    assert np.all(np.diff(line.get_ydata()) > 0)  # the planted trend


def test_residuals_three_rows_one_column_per_label():
    r_s, r_c = RNG.normal(size=(N, 4)), 2 * RNG.normal(size=(N, 4))
    r_c[0, 0] = 50.0  # clipped to the axis
    fig = plot_residuals_vs_labels(
        LABELS, r_s, r_c, scatter_svae=RNG.uniform(0.1, 1, (N, 4)), scatter_cannon=np.full(4, 2.0), bins=4
    )
    axes = np.array(fig.axes).reshape(3, 3)
    ylabels = [ax.get_ylabel() for ax in axes[:, 0]]
    assert ylabels == ["sVAE normalised residual", "Cannon normalised residual", "scatter"]
    assert axes[-1, 0].get_xlabel().startswith("$T_")
    pooled = axes[1, 0].collections[0].get_offsets()
    assert pooled.shape == (4 * N, 2) and pooled[:, 1].max() == 6.0
    assert axes[0, 1].get_ylim() == (-6.0, 6.0)
    assert axes[2, 2].get_yscale() == "log"
    cannon_line = [ln for ln in axes[2, 0].lines if ln.get_label() == "Cannon population scatter"]
    assert len(cannon_line) == 1 and cannon_line[0].get_ydata()[0] == pytest.approx(2.0)
    assert axes[-1, 1].xaxis_inverted()  # log g decreases to the right, as in a Kiel diagram


def test_residuals_one_model_selected_coefficients_and_array_labels():
    r = RNG.normal(size=(N, 110))
    fig = plot_residuals_vs_labels(LABELS.as_nan()[:, :2], r, label_names=["TEFF", "LOGG"], coefficients=[2, 57])
    assert len(fig.axes) == 2
    assert fig.axes[0].collections[0].get_offsets().shape == (2 * N, 2)
    assert "[2, 57]" in fig._suptitle.get_text()


def test_residuals_bad_input():
    r = RNG.normal(size=(N, 3))
    with pytest.raises(ValueError, match="resid_svae"):
        plot_residuals_vs_labels(LABELS, r[:5])
    with pytest.raises(ValueError, match="resid_cannon"):
        plot_residuals_vs_labels(LABELS, r, r[:, :2])
    with pytest.raises(ValueError, match="scatter_svae"):
        plot_residuals_vs_labels(LABELS, r, scatter_svae=r[:, :1])
    with pytest.raises(ValueError, match="label_names"):
        plot_residuals_vs_labels(np.zeros((N, 2)), r, label_names=["TEFF"])


def test_latent_projections_lower_triangle_labelled_on_top():
    z = RNG.normal(size=(N, 4))
    lab = np.arange(N) < 10
    fig = plot_latent_projections(z, lab)
    assert len(fig.axes) == 6  # 4 * 3 / 2 pairs
    first = fig.axes[0]
    unl, labd = first.collections
    np.testing.assert_allclose(unl.get_offsets(), z[10:][:, [0, 1]])
    np.testing.assert_allclose(labd.get_offsets(), z[:10][:, [0, 1]])
    assert first.get_xlabel() == "" and first.get_ylabel() == "$z_1$"
    assert fig.axes[-1].get_xlabel() == "$z_2$"


def test_latent_projections_coloured_by_a_label_with_subsample_and_bad_input():
    z = RNG.normal(size=(N, 6))
    lab = np.arange(N) % 2 == 0
    teff = LABELS.as_nan()[:, 0]
    fig = plot_latent_projections(z, lab, color=teff, color_label="TEFF", dims=[0, 2, 5], max_points=5)
    assert len(fig.axes) == 3 + 1  # 3 pairs and the colour bar
    assert fig.axes[-1].get_ylabel() == "TEFF"
    assert all(len(c.get_offsets()) == 5 for c in fig.axes[0].collections)
    assert len(plot_latent_projections(z).axes) == 15  # 6 latents: the paper's 15 projections
    with pytest.raises(ValueError, match="dims"):
        plot_latent_projections(z, dims=[0, 0])
    with pytest.raises(ValueError, match="labelled"):
        plot_latent_projections(z, np.zeros(N))
    with pytest.raises(ValueError, match="color"):
        plot_latent_projections(z, lab, color=teff[:3])
    with pytest.raises(ValueError, match="z"):
        plot_latent_projections(z[:, :1])
