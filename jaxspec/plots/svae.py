"""The scatter-VAE paper's figures (Laroche & Speagle 2023, Figs. 2 and 3)."""

from __future__ import annotations

import itertools

import numpy as np

from jaxspec.data.containers import Labels
from jaxspec.plots._mpl import require_matplotlib

__all__ = ["plot_latent_projections", "plot_residuals_vs_labels"]

_UNITS = {"TEFF": "$T_\\mathrm{eff}$ [K]", "LOGG": "$\\log g$", "FE_H": "[Fe/H]"}


def _label_columns(labels, names) -> tuple[np.ndarray, tuple]:
    if isinstance(labels, Labels):
        if names is not None:
            labels = labels.select(list(names))
        return labels.as_nan(), tuple(labels.names)
    values = np.asarray(labels, np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"labels: expected Labels or an array (n, M), found shape {values.shape}")
    names = tuple(names) if names is not None else tuple(f"label {i}" for i in range(values.shape[1]))
    if len(names) != values.shape[1]:
        raise ValueError(f"label_names: expected {values.shape[1]} names (one per column), found {len(names)}")
    return values, names


def _columns(a, n: int, name: str, coefficients) -> np.ndarray:
    a = np.asarray(a, np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) or ({n}, k) (stars first, as labels), found {a.shape}")
    return a if coefficients is None else a[:, coefficients]


def _binned(ax, x, r, bins, color, label):
    """Median and 16-84% band of ``r`` (pooled over its columns) in bins of ``x``."""
    from jaxspec.models.scatter_vae import residual_stats  # imported on use: it loads flax

    st = residual_stats(r, x, bins=bins)
    mid = 0.5 * (st.edges[1:] + st.edges[:-1])
    ok = st.count > 0
    ax.fill_between(mid[ok], st.p16[ok], st.p84[ok], color=color, alpha=0.25, lw=0)
    ax.plot(mid[ok], st.median[ok], color=color, lw=1.5, label=label)


def plot_residuals_vs_labels(
    labels,
    resid_svae,
    resid_cannon=None,
    *,
    label_names=None,
    coefficients=None,
    scatter_svae=None,
    scatter_cannon=None,
    bins: int = 12,
    ylim: float = 6.0,
):
    r"""Normalised residuals of the sVAE (and the Cannon) against stellar labels (paper Fig. 2).

    One column per label.  Rows: sVAE residuals; Cannon residuals (if
    given); scatter (if ``scatter_svae`` is given).  Residual panels show the
    residuals of every star (pooled over the chosen coefficients, clipped to
    ``±ylim``) with the binned median and 16-84% band; the dashed lines mark
    the band of a unit Gaussian.  The scatter row shows the sVAE's per-star
    scatter (median over the coefficients of each star, binned median and
    16-84% band) against the Cannon's population scatter (median over the
    coefficients, grey line), on a log axis.

    Parameters
    ----------
    labels : Labels or array ``(n, M)``
        Stellar labels of the ``n`` stars (NaN = missing, not drawn).
    resid_svae : ``(n,)`` or ``(n, k)``
        :math:`(x - \hat x)/\sqrt{\sigma_x^2 + s^2}` of the sVAE (NaN = masked).
    resid_cannon : same shape, optional
        The Cannon's normalised residuals of the same stars.
    label_names : sequence of str, optional
        Which labels of a ``Labels`` (default: all), or the names of an array's columns.
    coefficients : int or sequence of int, optional
        Columns of the residuals (and scatter) to show, e.g. ``[2, 57]`` for the
        3rd BP and RP coefficients; default: all, pooled.
    scatter_svae : ``(n, k)``, optional
        The sVAE's per-star scatter :math:`s` (same units as the Cannon's).
    scatter_cannon : ``(k,)``, optional
        The Cannon's population scatter per coefficient.
    bins : int
        Equal-width bins per label.
    ylim : float
        Residual axes span ``[-ylim, ylim]``.

    Returns
    -------
    matplotlib.figure.Figure
        ``n_rows * M`` axes, row-major.
    """
    plt = require_matplotlib()
    values, names = _label_columns(labels, label_names)
    n = values.shape[0]
    coefficients = None if coefficients is None else np.atleast_1d(np.asarray(coefficients, int))
    rows = [("sVAE", _columns(resid_svae, n, "resid_svae", coefficients), "C0")]
    if resid_cannon is not None:
        rows.append(("Cannon", _columns(resid_cannon, n, "resid_cannon", coefficients), "C1"))
    if rows[-1][1].shape != rows[0][1].shape:
        raise ValueError(
            f"resid_cannon: expected the shape of resid_svae {rows[0][1].shape}, found {rows[-1][1].shape}"
        )
    scat = None
    if scatter_svae is not None:
        scat = _columns(scatter_svae, n, "scatter_svae", coefficients)
        if scat.shape != rows[0][1].shape:
            raise ValueError(f"scatter_svae: expected the shape of resid_svae {rows[0][1].shape}, found {scat.shape}")
    if scatter_cannon is not None:
        scatter_cannon = np.atleast_1d(np.asarray(scatter_cannon, np.float64))
        scatter_cannon = scatter_cannon if coefficients is None else scatter_cannon[coefficients]
    n_rows = len(rows) + (scat is not None)
    m = len(names)
    fig, axes = plt.subplots(n_rows, m, figsize=(3.4 * m, 2.5 * n_rows), squeeze=False, sharex="col")
    for j, name in enumerate(names):
        x = values[:, j]
        ok = np.isfinite(x)
        if not ok.any():
            raise ValueError(f"labels: column {name} has no finite value")
        for i, (model, r, color) in enumerate(rows):
            ax = axes[i, j]
            xs = np.repeat(x[ok], r.shape[1])
            ax.scatter(xs, np.clip(r[ok].ravel(), -ylim, ylim), s=1, c="0.6", alpha=0.3, lw=0, rasterized=True)
            _binned(ax, x[ok], r[ok], bins, color, "median, 16-84%")
            for y in (-1, 1):
                ax.axhline(y, color="k", ls="--", lw=0.6)
            ax.axhline(0, color="k", lw=0.6)
            ax.set_ylim(-ylim, ylim)
            if j == 0:
                ax.set_ylabel(f"{model} normalised residual")
        if scat is not None:
            ax = axes[-1, j]
            per_star = np.nanmedian(scat, axis=1)
            use = ok & np.isfinite(per_star) & (per_star > 0)
            ax.scatter(x[use], per_star[use], s=1, c="0.6", alpha=0.3, lw=0, rasterized=True)
            _binned(ax, x[use], per_star[use], bins, "C2", "sVAE per-star scatter")
            if scatter_cannon is not None:
                ax.axhline(float(np.nanmedian(scatter_cannon)), color="0.3", lw=2, label="Cannon population scatter")
            ax.set_yscale("log")
            if j == 0:
                ax.set_ylabel("scatter")
                ax.legend(loc="best", fontsize="x-small")
        axes[-1, j].set_xlabel(_UNITS.get(name, name))
        if name == "LOGG":
            axes[-1, j].invert_xaxis()
    which = "all coefficients" if coefficients is None else f"coefficients {coefficients.tolist()}"
    fig.suptitle(f"normalised residuals against labels ({which})")
    fig.tight_layout()
    return fig


def plot_latent_projections(
    z,
    labelled=None,
    *,
    color=None,
    color_label: str | None = None,
    dims=None,
    max_points: int = 5000,
    seed: int = 0,
    s: float = 2.0,
):
    """Pairwise 2-d projections of the latents, labelled stars over unlabelled ones (paper Fig. 3).

    Parameters
    ----------
    z : ``(n, n_z)``
        Latents (e.g. posterior means from ``scatter_vae.encode``).
    labelled : bool ``(n,)``, optional
        Stars with labels (drawn orange, on top; the others blue, as in the
        paper).  None: every star blue.
    color : ``(n,)``, optional
        A label to colour the labelled stars by (NaN: not drawn), with a
        colour bar; the unlabelled stars are then grey.
    color_label : str, optional
        Name of ``color`` for the colour bar.
    dims : sequence of int, optional
        Latent dimensions to show (default all, at least 2).
    max_points : int
        At most this many stars of each group are drawn (random subsample).
    seed : int
        Seed of the subsample.
    s : float
        Marker size.

    Returns
    -------
    matplotlib.figure.Figure
        One axis per pair of dimensions, ``len(dims) * (len(dims) - 1) / 2``
        (the lower triangle of a grid), plus the colour bar's if ``color``.
    """
    plt = require_matplotlib()
    z = np.asarray(z, np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"z: expected shape (n, n_z) with n_z >= 2, found {z.shape}")
    n = z.shape[0]
    dims = list(range(z.shape[1])) if dims is None else [int(d) for d in dims]
    if len(dims) < 2 or len(set(dims)) != len(dims) or not all(0 <= d < z.shape[1] for d in dims):
        raise ValueError(f"dims: expected at least 2 distinct dimensions in [0, {z.shape[1]}), found {dims}")
    lab = np.zeros(n, bool) if labelled is None else np.asarray(labelled)
    if lab.shape != (n,) or lab.dtype != bool:
        raise ValueError(f"labelled: expected a bool array of shape ({n},), found {lab.dtype} {lab.shape}")
    c = None if color is None else np.asarray(color, np.float64)
    if c is not None and c.shape != (n,):
        raise ValueError(f"color: expected shape ({n},), found {c.shape}")
    rng = np.random.default_rng(seed)

    def pick(rows):
        idx = np.flatnonzero(rows)
        return idx if idx.size <= max_points else np.sort(rng.choice(idx, max_points, replace=False))

    unl, lab_idx = pick(~lab), pick(lab if c is None else lab & np.isfinite(c))
    k = len(dims) - 1
    fig, axes = plt.subplots(k, k, figsize=(2.3 * k + 1.2, 2.3 * k), squeeze=False)
    mappable, kept = None, []
    for row, col in itertools.product(range(k), range(k)):
        ax = axes[row, col]
        if col > row:
            ax.remove()
            continue
        kept.append(ax)
        dx, dy = dims[col], dims[row + 1]
        ax.scatter(z[unl, dx], z[unl, dy], s=s, lw=0, c="0.75" if c is not None else "C0", alpha=0.5)
        if c is None:
            ax.scatter(z[lab_idx, dx], z[lab_idx, dy], s=s, lw=0, c="C1", alpha=0.5)
        else:
            mappable = ax.scatter(z[lab_idx, dx], z[lab_idx, dy], s=s, lw=0, c=c[lab_idx], cmap="viridis")
        if row == k - 1:
            ax.set_xlabel(f"$z_{dx}$")
        else:
            ax.tick_params(labelbottom=False)
        if col == 0:
            ax.set_ylabel(f"$z_{dy}$")
        else:
            ax.tick_params(labelleft=False)
    handles = [
        plt.Line2D([], [], ls="", marker="o", color="0.75" if c is not None else "C0", label="unlabelled"),
        plt.Line2D([], [], ls="", marker="o", color="C1" if c is None else "C2", label="labelled"),
    ]
    fig.legend(handles=handles, loc="upper right", fontsize="small")
    if mappable is not None:
        fig.colorbar(mappable, ax=kept, label=color_label or "", shrink=0.6)
    fig.suptitle(f"latent projections ({lab.sum()} labelled, {(~lab).sum()} unlabelled stars)")
    return fig
