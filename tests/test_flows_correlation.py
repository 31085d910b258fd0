"""The conditional correlation matrix and its graph of strongly tied pixels (the paper's Fig. 2)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxspec.models import flows
from tests.test_flows_conditional import gaussian_flow


def test_graph_finds_planted_components_and_reorders():
    rng = np.random.default_rng(0)
    corr = 0.1 * rng.uniform(-1, 1, size=(12, 12))
    corr = (corr + corr.T) / 2
    for block, sign in (([1, 5, 9, 11], 1), ([0, 4, 7], -1)):
        for i in block:
            for j in block:
                corr[i, j] = 0.9 * sign if i != j else 1.0
    corr[1, 9] = corr[9, 1] = 0.85  # one more link inside the first block changes nothing
    corr[3, 6] = corr[6, 3] = 0.95  # a pair: a component of 2, below min_size
    np.fill_diagonal(corr, 1.0)
    graph = flows.correlation_graph(corr)
    assert [c.tolist() for c in graph.components] == [[1, 5, 9, 11], [0, 4, 7]]
    assert graph.order.tolist()[:7] == [1, 5, 9, 11, 0, 4, 7] and sorted(graph.order.tolist()) == list(range(12))
    np.testing.assert_array_equal(graph.reordered, corr[graph.order][:, graph.order])
    assert graph.labels.tolist() == [1, 0, -1, -1, 1, 0, -1, 1, -1, 0, -1, 0]
    # a chain links through intermediate pixels: 2-8 and 8-10 make one component of three
    corr[2, 8] = corr[8, 2] = corr[8, 10] = corr[10, 8] = 0.81
    assert [c.tolist() for c in flows.correlation_graph(corr).components][2] == [2, 8, 10]
    assert flows.correlation_graph(corr, threshold=0.9).components == []  # the blocks are at |0.9|, not above
    with pytest.raises(ValueError, match="corr: expected a square"):
        flows.correlation_graph(np.zeros((3, 4)))


@pytest.mark.slow  # float32 pass only (CI time)
def test_conditional_correlation_of_a_gaussian_flow():
    """Two groups of pixels tied by a shared factor the labels do not fix: the conditional graph finds them."""
    from tests import test_flows_conditional as tc

    rng = np.random.default_rng(1)
    a = np.zeros((tc.L + tc.M, 3))
    a[[0, 1, 2], 0] = 1.0  # pixels 0-2 share factor 0
    a[[3], 1] = 1.0
    a[[4, 5], 2] = 1.0  # the labels load on factor 2 only
    cov = a @ a.T + 0.05 * np.eye(tc.L + tc.M) + 0.01 * np.diag(rng.uniform(size=tc.L + tc.M))
    model = gaussian_flow(cov)
    mcmc = flows.MCMC(chains=16, warmup=200, leapfrog=12)
    corr = flows.conditional_correlation(model, np.array([0.3, 0.3]), 16 * 150, jax.random.key(0), mcmc=mcmc)
    graph = flows.correlation_graph(corr)
    assert [c.tolist() for c in graph.components] == [[0, 1, 2]]
    assert np.all(np.abs(corr[3, :3]) < 0.2)


def test_component_purity_counts_the_majority_tag_and_empty_tags_against_it():
    corr = np.eye(9)
    for block in ([0, 1, 2, 3], [5, 6, 7]):
        corr[np.ix_(block, block)] = 0.95
    np.fill_diagonal(corr, 1.0)
    graph = flows.correlation_graph(corr)
    tags = np.array(["CN", "CN", "", "CO", "Fe I", "", "", "Mg I", "CN"])
    got = flows.component_purity(graph, tags)
    assert got.majority == ["CN", "Mg I"]
    np.testing.assert_allclose(got.purity, [0.5, 1 / 3])
    np.testing.assert_array_equal(got.size, [4, 3])
    with pytest.raises(ValueError, match="tags"):
        flows.component_purity(graph, tags[:5])
    with pytest.raises(TypeError, match="graph"):
        flows.component_purity(corr, tags)
