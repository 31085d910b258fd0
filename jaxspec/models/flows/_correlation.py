r"""The correlation structure of :math:`p(S \mid y)` (the paper's Fig. 2) and its graph of strongly tied pixels.

At fixed labels the spectrum varies only through what the labels do not fix
(the abundances, in the paper's set-up), so pixels whose conditional
correlation is strong respond to the same species.  :func:`conditional_correlation`
estimates the ``L x L`` correlation matrix from draws of :math:`p(S \mid y)`
(:func:`~jaxspec.models.flows.sample_spectra`); :func:`correlation_graph`
links pixels with :math:`|\rho| >` a threshold (0.8, the paper's), finds the
connected components and re-indexes the matrix so each component is a block.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxspec.data._checks import check_float, check_int
from jaxspec.models.flows._conditional import MCMC, sample_spectra
from jaxspec.typing import Key

__all__ = ["CorrelationGraph", "Purity", "component_purity", "conditional_correlation", "correlation_graph"]


class CorrelationGraph(NamedTuple):
    """What :func:`correlation_graph` finds.

    ``components``: pixel indices of each component of at least ``min_size``
    pixels, largest first; ``order (L,)``: a permutation putting those
    components first, in that order, then every other pixel in its own
    order; ``reordered (L, L)``: ``corr[order][:, order]``; ``labels (L,)``:
    each pixel's component (index into ``components``), -1 for the others.
    """

    components: list
    order: np.ndarray
    reordered: np.ndarray
    labels: np.ndarray


def conditional_correlation(
    model,
    labels,
    n_samples: int,
    key: Key,
    *,
    mcmc: MCMC = MCMC(),  # noqa: B008 - immutable
    progress: bool = True,
) -> np.ndarray:
    r"""The ``(L, L)`` correlation matrix of :math:`p(S \mid y)` at one set of labels, from ``n_samples`` draws.

    ``labels``: one star's labels (``Labels`` of one row, or an array ``(M,)``
    in the model's order).  A pixel that does not vary in the draws has
    correlation 0 with the others (and 1 with itself).
    """
    y = np.asarray(labels.values if hasattr(labels, "values") else labels, np.float64)
    draws = sample_spectra(model, labels if y.ndim == 2 else y[None], key, n_samples, mcmc=mcmc, progress=progress)
    if draws.spectra.shape[0] != 1:
        raise ValueError(f"labels: expected one star's labels, found {draws.spectra.shape[0]}")
    s = draws.spectra[0] - draws.spectra[0].mean(axis=0)
    sd = np.sqrt(np.mean(s * s, axis=0))
    z = s / np.where(sd > 0, sd, np.inf)
    corr = z.T @ z / s.shape[0]
    np.fill_diagonal(corr, 1.0)
    return corr


def _components(adjacent: np.ndarray) -> np.ndarray:
    """Connected-component index of every node of a symmetric boolean adjacency matrix (breadth first)."""
    comp = np.full(adjacent.shape[0], -1)
    for seed in range(adjacent.shape[0]):
        if comp[seed] >= 0:
            continue
        label = comp.max() + 1
        comp[seed], frontier = label, np.array([seed])
        while frontier.size:
            reached = adjacent[frontier].any(axis=0) & (comp < 0)
            comp[reached] = label
            frontier = np.flatnonzero(reached)
    return comp


def correlation_graph(corr, *, threshold: float = 0.8, min_size: int = 3) -> CorrelationGraph:
    """Components of the graph linking pixels ``i != j`` with ``|corr[i, j]| > threshold`` (module docstring)."""
    corr = np.asarray(corr, np.float64)
    if corr.ndim != 2 or corr.shape[0] != corr.shape[1]:
        raise ValueError(f"corr: expected a square matrix, found shape {corr.shape}")
    if not np.all(np.isfinite(corr)):
        raise ValueError("corr: expected finite values")
    check_float(threshold, "threshold", low=0.0, open_low=True)
    check_int(min_size, "min_size", minimum=1)
    linked = np.abs(corr) > threshold
    np.fill_diagonal(linked, False)
    comp = _components(linked | linked.T)
    sizes = np.bincount(comp)
    kept = [c for c in np.argsort(-sizes, kind="stable") if sizes[c] >= min_size]
    components = [np.flatnonzero(comp == c) for c in kept]
    labels = np.full(corr.shape[0], -1)
    for i, pixels in enumerate(components):
        labels[pixels] = i
    rest = np.flatnonzero(labels < 0)
    order = np.concatenate([*components, rest]).astype(int) if components else rest
    return CorrelationGraph(components, order, corr[order][:, order], labels)


class Purity(NamedTuple):
    """What :func:`component_purity` finds, one entry per component of the graph.

    ``majority``: the most common tag among the component's pixels (ties:
    the first in sorted order); ``purity``: the fraction of its pixels with
    that tag; ``size``: its number of pixels.
    """

    majority: list
    purity: np.ndarray
    size: np.ndarray


def component_purity(graph: CorrelationGraph, tags) -> Purity:
    """How far each component of ``graph`` is one kind of pixel, by a tag per pixel.

    ``tags (L,)``: e.g. the species of each pixel
    (:func:`jaxspec.data.mock.mendis_species`); an empty tag (a pixel of no
    species) counts against purity, it is never a majority.
    """
    if not isinstance(graph, CorrelationGraph):
        raise TypeError(f"graph: expected a CorrelationGraph, found {type(graph).__name__}")
    tags = np.asarray(tags)
    if tags.shape != graph.labels.shape:
        raise ValueError(f"tags: expected one tag per pixel, shape {graph.labels.shape}, found {tags.shape}")
    majority, purity, size = [], [], []
    for pixels in graph.components:
        found, counts = np.unique(tags[pixels], return_counts=True)
        counts = np.where(found.astype(str) == "", 0, counts)
        best = int(np.argmax(counts))
        majority.append(found[best].item() if counts[best] else "")
        purity.append(counts[best] / len(pixels))
        size.append(len(pixels))
    return Purity(majority, np.asarray(purity, np.float64), np.asarray(size, int))
