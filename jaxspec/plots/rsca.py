"""The RSCA paper's figures (de Mijolla & Ness 2021, Fig. 3 and the rate against K)."""

from __future__ import annotations

import math

import numpy as np

from jaxspec.plots._mpl import require_matplotlib

__all__ = ["plot_rate_vs_components", "plot_rsca_dimensions"]


def plot_rsca_dimensions(embedding, fe_h, *, cluster_ids=None, n_dims: int = 4, ncols: int = 2, s: float = 4.0):
    """The most discriminating RSCA dimensions against [Fe/H], clusters coloured (paper Fig. 3).

    Parameters
    ----------
    embedding : ``(N, K)``
        Stars in RSCA space with the columns sorted from most to least
        discriminating (``rsca.transform(model, spectra, n_dims)`` or
        ``rsca.embed(metric, feats, n_dims)`` give them so).
    fe_h : ``(N,)``
        [Fe/H] of each star, dex; stars with NaN are not drawn.
    cluster_ids : int ``(N,)``, optional
        Cluster of each star, ``-1`` for the field (drawn grey, underneath);
        ``None`` draws every star grey.
    n_dims : int
        Panels, one per dimension, ``1 <= n_dims <= K``.
    ncols : int
        Panels per row.
    s : float
        Marker size of the field; members are drawn three times larger.

    Returns
    -------
    matplotlib.figure.Figure
        ``n_dims`` axes: x = [Fe/H], y = RSCA dimension ``i`` (1 = most discriminating).
    """
    plt = require_matplotlib()
    emb = np.asarray(embedding, dtype=np.float64)
    if emb.ndim != 2:
        raise ValueError(f"embedding: expected a 2-D array (n_stars, n_dims), found shape {emb.shape}")
    fe_h = np.asarray(fe_h, dtype=np.float64)
    if fe_h.shape != (emb.shape[0],):
        raise ValueError(f"fe_h: expected shape ({emb.shape[0]},), found {fe_h.shape}")
    if not 1 <= int(n_dims) <= emb.shape[1]:
        raise ValueError(f"n_dims: expected 1 <= n_dims <= {emb.shape[1]}, found {n_dims}")
    ids = np.full(emb.shape[0], -1) if cluster_ids is None else np.asarray(cluster_ids)
    if ids.shape != (emb.shape[0],):
        raise ValueError(f"cluster_ids: expected shape ({emb.shape[0]},), found {ids.shape}")
    n_dims = int(n_dims)
    ncols = min(int(ncols), n_dims)
    nrows = math.ceil(n_dims / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), squeeze=False, sharex=True)
    for extra in axes.flat[n_dims:]:
        extra.remove()
    ok = np.isfinite(fe_h)
    field = ok & (ids < 0)
    clusters = np.unique(ids[ok & (ids >= 0)])
    cmap = plt.get_cmap("tab20" if clusters.size > 10 else "tab10")
    for i, ax in enumerate(axes.flat[:n_dims]):
        ax.scatter(fe_h[field], emb[field, i], s=s, c="0.7", lw=0, label="field" if i == 0 else None)
        for j, c in enumerate(clusters):
            rows = ok & (ids == c)
            ax.scatter(fe_h[rows], emb[rows, i], s=3 * s, color=cmap(j % cmap.N), lw=0)
        ax.set_ylabel(f"RSCA dimension {i + 1}")
        if i >= n_dims - ncols:
            ax.set_xlabel("[Fe/H]")
    if field.any():
        axes.flat[0].legend(loc="best", fontsize="small", markerscale=2)
    fig.suptitle("most discriminating RSCA dimensions (clusters coloured)")
    fig.tight_layout()
    return fig


def plot_rate_vs_components(n_components, rates_spectra, *, rate_labels=None, rates_raw=None, ax=None):
    """Doppelganger rate against the number of PCA components kept, with the abundance baseline.

    Parameters
    ----------
    n_components : int ``(L,)``
        Numbers of PPCA components ``K`` (x axis).
    rates_spectra : ``(L,)``
        Leave-one-cluster-out RSCA rates from spectra at each ``K``.
    rate_labels : float, optional
        The same rate on abundance labels: a horizontal dashed line.
    rates_raw : ``(L,)``, optional
        Rates in the raw (unscaled) PPCA latents, for comparison.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
        Log-scale y axis when every rate drawn is positive.
    """
    plt = require_matplotlib()
    k = np.asarray(n_components)
    rates = np.asarray(rates_spectra, dtype=np.float64)
    if k.ndim != 1 or rates.shape != k.shape:
        raise ValueError(
            f"rates_spectra: expected one rate per entry of n_components {k.shape}, found shape {rates.shape}"
        )
    raw = None if rates_raw is None else np.asarray(rates_raw, dtype=np.float64)
    if raw is not None and raw.shape != k.shape:
        raise ValueError(f"rates_raw: expected shape {k.shape}, found {raw.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 3.8))
    ax.plot(k, rates, "o-", color="C0", label="RSCA on spectra")
    drawn = [rates]
    if raw is not None:
        ax.plot(k, raw, "s--", color="C1", label="raw PPCA latents")
        drawn.append(raw)
    if rate_labels is not None:
        ax.axhline(float(rate_labels), color="k", ls=":", label="RSCA on abundance labels")
        drawn.append(np.array([float(rate_labels)]))
    values = np.concatenate(drawn)
    if np.all(np.isfinite(values) & (values > 0)):
        ax.set_yscale("log")
    ax.set_xlabel("number of PCA components $K$")
    ax.set_ylabel("doppelganger rate")
    ax.legend(loc="best", fontsize="small")
    return ax.figure
