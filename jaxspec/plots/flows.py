r"""Figures of the Mendis flows (Ciuca & Ting 2022): training, correlation structure, outlier scores.

:func:`training_history` draws the negative log-likelihood per star by epoch;
:func:`correlation_matrices` the paper's Fig. 2, the correlation matrix of
:math:`p(S \mid y)` beside the same matrix re-indexed by the components of its
:math:`|\rho| > 0.8` graph; :func:`roc_curves` and :func:`score_histograms` the
outlier scores of ordinary stars against each outlier class (Fig. 3), from
:func:`jaxspec.models.flows.outlier_scores`.
"""

from __future__ import annotations

import math

import numpy as np

from jaxspec import metrics
from jaxspec.plots._mpl import require_matplotlib

__all__ = ["SCORES", "correlation_matrices", "roc_curves", "score_histograms", "training_history"]

#: The scores of :class:`jaxspec.models.flows.OutlierScores` drawn by default, with their legend names.
SCORES = {
    "nll": "flow NLL",
    "typicality": "typicality",
    "likelihood_ratio": "likelihood ratio",
    "background_nll": "PPCA NLL (baseline)",
}


def training_history(fit):
    """Training (and validation) negative log-likelihood per star against epoch, the kept epoch marked.

    ``fit``: the ``FitResult`` of :func:`jaxspec.models.flows.fit`.
    Returns the ``Figure``; its one ``Axes`` has ``lines[0]`` the training
    loss and ``lines[1]`` the validation loss (when there is one), in the
    standardised units of ``history["nll_std"]`` (nats per star; the data
    units differ by a constant).
    """
    plt = require_matplotlib()
    history = getattr(fit, "history", None)
    if not isinstance(history, dict) or "nll_std" not in history:
        raise TypeError(f"fit: expected the FitResult of flows.fit, found {type(fit).__name__}")
    train = np.asarray(history["nll_std"], np.float64)
    epochs = np.arange(train.size)
    fig, ax = plt.subplots(figsize=(5.0, 3.4), layout="constrained")
    ax.plot(epochs, train, "o-", ms=3, color="k", label="training")
    if "val_loss" in history:
        val = np.asarray(history["val_loss"], np.float64) - (np.asarray(history["loss"], np.float64) - train)
        ax.plot(epochs, val, "s-", ms=3, color="C3", label="validation")
        best = fit.aux.get("best_epoch") if isinstance(fit.aux, dict) else None
        if best is not None and 0 <= int(best) < val.size:
            ax.axvline(int(best), color="0.6", lw=0.8, ls="--", label=f"kept (epoch {int(best)})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("NLL per star [nats, standardised]")
    ax.legend(fontsize=8)
    return fig


def correlation_matrices(corr, graph=None, *, threshold: float = 0.8, min_size: int = 3):
    r"""The correlation matrix of :math:`p(S \mid y)` and the same matrix re-indexed by its graph components.

    Parameters
    ----------
    corr : array ``(L, L)``
        :func:`jaxspec.models.flows.conditional_correlation`.
    graph : flows.CorrelationGraph, optional
        Its components; computed with ``threshold`` and ``min_size`` when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        Two ``Axes`` (``images[0]`` each: the matrix in pixel order, then in
        the graph's order with a box around each component) and a colour bar.
    """
    plt = require_matplotlib()
    from matplotlib.patches import Rectangle

    from jaxspec.models.flows import correlation_graph

    corr = np.asarray(corr, np.float64)
    if graph is None:
        graph = correlation_graph(corr, threshold=threshold, min_size=min_size)
    elif np.shape(graph.reordered) != corr.shape:
        raise ValueError(f"graph: expected the graph of a {corr.shape} matrix, found {np.shape(graph.reordered)}")
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.6), layout="constrained")
    style = {"cmap": "RdBu_r", "vmin": -1.0, "vmax": 1.0, "interpolation": "nearest"}
    image = axes[0].imshow(corr, **style)
    axes[0].set_title(r"corr$(S \mid y)$, pixel order", fontsize=9)
    axes[0].set_xlabel("pixel")
    axes[0].set_ylabel("pixel")
    axes[1].imshow(graph.reordered, **style)
    start = 0
    for pixels in graph.components:
        size = len(pixels)
        axes[1].add_patch(Rectangle((start - 0.5, start - 0.5), size, size, fill=False, ec="k", lw=0.6))
        start += size
    axes[1].set_title(f"re-indexed: {len(graph.components)} components, {start} pixels", fontsize=9)
    axes[1].set_xlabel("pixel (graph order)")
    fig.colorbar(image, ax=axes, shrink=0.8, label="correlation")
    return fig


def _checked(ordinary, outliers: dict, scores) -> tuple[list[str], list[str]]:
    if not isinstance(outliers, dict) or not outliers:
        raise TypeError(f"outliers: expected a dict of class name -> OutlierScores, found {type(outliers).__name__}")
    names = list(SCORES if scores is None else scores)
    if bad := [s for s in names if s not in SCORES]:
        raise ValueError(f"scores: expected names among {list(SCORES)}, found {bad}")
    for what in (ordinary, *outliers.values()):
        if not all(hasattr(what, s) for s in names):
            raise TypeError(f"ordinary, outliers: expected flows.OutlierScores, found {type(what).__name__}")
    return names, list(outliers)


def _pair(ordinary, outlier, score: str) -> tuple[np.ndarray, np.ndarray]:
    """Finite scores of the ordinary stars then the class, and which are the class's."""
    a = np.asarray(getattr(ordinary, score), np.float64)
    b = np.asarray(getattr(outlier, score), np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    return np.r_[a, b], np.r_[np.zeros(a.size, bool), np.ones(b.size, bool)]


def roc_curves(ordinary, outliers: dict, *, scores=None, ncols: int = 3):
    """ROC curves of each outlier class against the ordinary stars, one curve per score, AUCs in the legend.

    Parameters
    ----------
    ordinary : flows.OutlierScores
        Scores of stars like the training set (held out).
    outliers : dict of str to flows.OutlierScores
        Scores of each outlier class, by name.
    scores : sequence of str, optional
        Which scores (keys of :data:`SCORES`; default all).
    ncols : int

    Returns
    -------
    matplotlib.figure.Figure
        One ``Axes`` per class, ``lines[k]`` the ROC curve of ``scores[k]``
        (stars with a NaN score are left out).
    """
    plt = require_matplotlib()
    names, classes = _checked(ordinary, outliers, scores)
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols: expected an int >= 1, found {ncols!r}")
    ncol = min(ncols, len(classes))
    nrows = math.ceil(len(classes) / ncol)
    fig, axes = plt.subplots(nrows, ncol, figsize=(3.4 * ncol, 3.3 * nrows), squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.ravel()):
        if i >= len(classes):
            ax.remove()
            continue
        for k, score in enumerate(names):
            s, positive = _pair(ordinary, outliers[classes[i]], score)
            fpr, tpr = metrics.roc_curve(s, positive)
            auc = metrics.roc_auc(s, positive)
            ax.plot(fpr, tpr, color=f"C{k}", lw=1.0, label=f"{SCORES[score]}: {auc:.3f}")
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.6, ls=":")
        ax.set_title(classes[i], fontsize=9)
        ax.set_xlabel("false-positive rate")
        ax.set_ylabel("true-positive rate")
        ax.legend(fontsize=6.5, loc="lower right", title="AUC", title_fontsize=7)
    return fig


def score_histograms(ordinary, outliers: dict, *, score: str = "nll", bins: int = 40):
    """Histograms of one score for the ordinary stars and each outlier class (the paper's Fig. 3 for ``"nll"``).

    Returns the ``Figure``; its ``Axes`` holds one step histogram per group
    (``patches``), ordinary stars first, on a symmetric-log axis when the
    scores span several decades.
    """
    plt = require_matplotlib()
    _checked(ordinary, outliers, [score])
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins: expected an int >= 1, found {bins!r}")
    groups = {"ordinary": np.asarray(getattr(ordinary, score), np.float64)}
    groups.update({name: np.asarray(getattr(o, score), np.float64) for name, o in outliers.items()})
    groups = {k: v[np.isfinite(v)] for k, v in groups.items()}
    values = np.concatenate(list(groups.values()))
    if values.size == 0:
        raise ValueError(f"{score}: expected finite scores, found none")
    wide = values.max() - values.min() > 1e3 * max(np.std(groups["ordinary"]), 1e-12)
    edges = np.linspace(values.min(), values.max(), bins + 1)
    if wide:
        low = max(values.min(), 1e-12) if values.min() > 0 else None
        if low is not None:
            edges = np.geomspace(low, values.max(), bins + 1)
    fig, ax = plt.subplots(figsize=(5.4, 3.6), layout="constrained")
    for k, (name, v) in enumerate(groups.items()):
        ax.hist(v, bins=edges, histtype="step", color="k" if k == 0 else f"C{k - 1}", label=f"{name} ({v.size})")
    if wide and values.min() > 0:
        ax.set_xscale("log")
    ax.set_xlabel(SCORES[score])
    ax.set_ylabel("stars")
    ax.legend(fontsize=7)
    return fig
