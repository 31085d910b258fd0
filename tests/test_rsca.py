"""RSCA (de Mijolla & Ness 2021): each step's invariant, the doppelganger rate by hand, LOO, io."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxspec
from jaxspec.data.containers import Spectra
from jaxspec.models import rsca
from tests.conftest import assert_allclose


def _planted(seed=0, n_field=600, n_clusters=8, n_members=8, k=8, chem=2, scatter=0.05):
    """Features = chemistry (``chem`` dims, shared by siblings) + nuisance dims, mixed linearly."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(k, k)) + 2 * np.eye(k)
    field = rng.normal(size=(n_field, k))
    centres = rng.normal(size=(n_clusters, chem))
    memb = rng.normal(size=(n_clusters * n_members, k))
    ids = np.repeat(np.arange(n_clusters), n_members)
    memb[:, :chem] = centres[ids] + scatter * rng.normal(size=(len(ids), chem))
    return field @ mix, memb @ mix, ids


def _within(r, ids):
    return np.concatenate([r[ids == c] - r[ids == c].mean(0) for c in np.unique(ids) if np.sum(ids == c) > 1])


def test_sphere_gives_identity_field_covariance():
    zp, zc, ids = _planted()
    m = rsca.fit_from_features(zp, zc, ids)
    s = (zp - m.mean) @ m.sphere
    assert_allclose(np.cov(s, rowvar=False), np.eye(8), dtype=np.float64)
    # the rotation keeps it; the rescale makes it diag(1 / scale^2)
    assert_allclose(np.cov(s @ m.rotation, rowvar=False), np.eye(8), dtype=np.float64)
    assert_allclose(np.cov(rsca.embed(m, zp), rowvar=False), np.diag(m.scale**-2.0), dtype=np.float64)
    assert_allclose(m.rotation.T @ m.rotation, np.eye(8), dtype=np.float64)


def test_within_cluster_covariance_diagonal_after_reparametrisation():
    zp, zc, ids = _planted(1)
    ids[-1] = 99  # a singleton, ignored
    m = rsca.fit_from_features(zp, zc, ids)
    w = _within((zc - m.mean) @ m.sphere @ m.rotation, ids)
    cov = w.T @ w
    off = cov - np.diag(np.diag(cov))
    assert np.max(np.abs(off)) < 1e-10 * np.max(np.diag(cov))
    assert np.all(np.diff(np.diag(cov)) <= 1e-12)  # sorted by decreasing within-cluster variance
    w0 = _within((zc - m.mean) @ m.sphere, ids)  # before step 3 it is not diagonal
    c0 = w0.T @ w0
    assert np.max(np.abs(c0 - np.diag(np.diag(c0)))) > 1e-3 * np.max(np.diag(c0))


def test_pooled_mad_sigma_by_hand():
    r = np.array([[0.0, 0.0], [1.0, 2.0], [5.0, 2.0], [0.0, 1.0], [0.5, 1.0], [7.0, 3.0]])
    groups = [np.array([0, 1, 2]), np.array([3, 4])]  # the singleton (row 5) is not passed
    # cluster A (n=3): col0 median 1, |dev| = 1, 0, 4 -> MAD 1; col1 median 2, |dev| 2, 0, 0 -> MAD 0
    # cluster B (n=2): col0 median .25, |dev| .25 .25 -> MAD .25; col1 MAD 0
    want0 = np.sqrt((2 * (1.4826 * 1.0) ** 2 + 1 * (1.4826 * 0.25) ** 2) / 3)
    assert_allclose(rsca.pooled_sigma(r, groups), [want0, 0.0], dtype=np.float64)
    assert_allclose(rsca.scale_factor(0.6), 0.6 / np.sqrt(1 - 0.36), dtype=np.float64)


def test_fit_rescale_matches_formula_and_clips():
    zp, zc, ids = _planted(2)
    ids = ids.copy()
    ids[-1] = 99  # singleton: must not change sigma
    m = rsca.fit_from_features(zp, zc, ids)
    r = (zc - m.mean) @ m.sphere @ m.rotation
    num, den = np.zeros(8), 0
    for c in np.unique(ids):
        x = r[ids == c]
        if len(x) < 2:
            continue
        mad = np.median(np.abs(x - np.median(x, 0)), 0)
        num += (len(x) - 1) * (1.4826 * mad) ** 2
        den += len(x) - 1
    sigma = np.clip(np.sqrt(num / den), 1e-6, 1 - 1e-6)
    assert_allclose(m.sigma_clust, sigma, dtype=np.float64)
    assert_allclose(m.scale, sigma / np.sqrt(1 - sigma**2), dtype=np.float64)
    assert np.all(m.sigma_clust[m.order][:2] < 0.2)  # the planted chemistry is the tightest
    # clusters wider than the field: every sigma clipped just below 1
    rng = np.random.default_rng(0)
    wide = rsca.fit_from_features(rng.normal(size=(300, 3)), 5 * rng.normal(size=(20, 3)), np.repeat([0, 1], 10))
    assert_allclose(wide.sigma_clust, np.full(3, 1 - 1e-6), dtype=np.float64)


def test_doppelganger_rate_by_hand():
    field = np.array([[-1.5], [2.0], [10.0], [21.5]])
    clusters = np.array([[0.0], [1.0], [3.0], [20.0], [22.0], [50.0]])
    ids = np.array([0, 0, 0, 1, 1, 2])
    # cluster 0: intra 1, 3, 2 -> median 2; field hits 1 (-1.5) + 2 (2.0; d=2 is not < 2) = 3 of 12
    # cluster 1: intra 2; field 21.5 hits both, 2 of 8; cluster 2 is a singleton (NaN)
    res = rsca.doppelganger_rate(field, clusters, ids)
    assert_allclose(res.per_cluster[:2], [3 / 12, 2 / 8], dtype=np.float64)
    assert np.isnan(res.per_cluster[2])
    assert res.sizes.tolist() == [3, 2, 1] and res.n_pairs.tolist() == [12, 8, 0]
    assert_allclose(res.rate, (3 * 3 / 12 + 2 * 2 / 8) / 5, dtype=np.float64)
    # nuisance matching (rv tol 5, A_K tol 0.05): field star 2 (rv 10) fails cluster 0 and 1 is rv 0...
    nf = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 0.0], [0.0, 0.1]])
    nc = np.array([[1.0, 0.0]] * 3 + [[0.0, 0.0]] * 2 + [[0.0, 0.0]])
    res = rsca.doppelganger_rate(field, clusters, ids, nuisance_field=nf, nuisance_clusters=nc, tolerances=[5, 0.05])
    # cluster 0: field stars -1.5 and 10 remain (6 pairs), 1 hit; cluster 1: -1.5 and 10 (4 pairs), 0 hits
    assert res.n_pairs.tolist() == [6, 4, 0]
    assert_allclose(res.per_cluster[:2], [1 / 6, 0.0], dtype=np.float64)
    assert_allclose(res.rate, (3 / 6 + 0) / 5, dtype=np.float64)


def test_leave_one_cluster_out_never_sees_the_scored_cluster():
    zp, zc, ids = _planted(3, n_clusters=5)
    loo = rsca.leave_one_cluster_out_rate(zp, zc, ids)
    for i, c in enumerate(np.unique(ids)):
        out = ids == c
        m = rsca.fit_from_features(zp, zc[~out], ids[~out])
        want = rsca.doppelganger_rate(rsca.embed(m, zp), rsca.embed(m, zc[out]), ids[out])
        assert_allclose(loo.per_cluster[i], want.rate, dtype=np.float64)
    # replacing a cluster's own data by anything leaves the other folds' metrics, hence their
    # embeddings of the field, unchanged; and its own fold's metric never depends on it
    zc2 = zc.copy()
    zc2[ids == 0] += 100.0
    m1 = rsca.fit_from_features(zp, zc[ids != 0], ids[ids != 0])
    m2 = rsca.fit_from_features(zp, zc2[ids != 0], ids[ids != 0])
    assert_allclose(m1.matrix, m2.matrix, dtype=np.float64)


def test_planted_chemistry_rsca_beats_raw_and_top_n():
    zp, zc, ids = _planted(4)
    raw = rsca.doppelganger_rate(zp, zc, ids).rate
    loo = rsca.leave_one_cluster_out_rate(zp, zc, ids)
    assert loo.rate < 0.2 * raw, (loo.rate, raw)
    table = rsca.top_n_table(zp, zc, ids, n_dims=[1, 2, 8])
    assert table.n_dims.tolist() == [1, 2, 8] and table.per_cluster.shape == (3, 8)
    assert_allclose(table.rates[2], loo.rate, dtype=np.float64)
    for j, n in enumerate([1, 2]):  # each prefix length equals the rate of that fold's first n dimensions
        for i, c in enumerate(np.unique(ids)):
            out = ids == c
            m = rsca.fit_from_features(zp, zc[~out], ids[~out])
            want = rsca.doppelganger_rate(rsca.embed(m, zp, n_dims=n), rsca.embed(m, zc[out], n_dims=n), ids[out])
            assert_allclose(table.per_cluster[j, i], want.rate, dtype=np.float64)
    assert table.rates[1] <= table.rates[0] + 1e-12  # the second chemistry dim helps
    two = rsca.leave_one_cluster_out_rate(zp, zc, ids, n_dims=2)
    assert_allclose(two.rate, table.rates[1], dtype=np.float64)


def test_remove_nuisance_hyperplane():
    rng = np.random.default_rng(5)
    u = rng.normal(size=(800, 5))
    rv = 30 * u[:, 0]
    x = u @ (rng.normal(size=(5, 5)) + 2 * np.eye(5))
    groups = np.floor(rv / 3).astype(int)
    out = rsca.remove_nuisance_hyperplane(x, groups, n_dims=1)
    assert_allclose(out.projector @ out.projector, out.projector, dtype=np.float64, scale=10)
    coef = np.linalg.lstsq(np.c_[np.ones(800), rv], out.features, rcond=None)[0][1]

    assert np.max(np.abs(coef)) < 0.01 * np.max(np.abs(np.linalg.lstsq(np.c_[np.ones(800), rv], x, rcond=None)[0][1]))
    # the other directions survive: the cleaned field still has rank K - 1
    assert np.linalg.matrix_rank(out.features - out.mean, tol=1e-6) == 4


def _spectra(seed, n, d=40, rank=5, noise=1e-3):
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).normal(size=(rank, d)) * np.linspace(1, 0.2, rank)[:, None]
    return 1 + 0.05 * rng.normal(size=(n, rank)) @ basis + noise * rng.normal(size=(n, d)), rng


def test_fit_transform_unseen_spectra_and_io(tmp_path):
    field, rng = _spectra(6, 150)
    clusters, _ = _spectra(7, 20)
    field[rng.random(field.shape) < 0.03] = np.nan  # missing values
    ids = np.repeat(np.arange(4), 5)
    # members first, then the field: cluster id -1 marks a field star
    everyone, all_ids = np.concatenate([clusters, field]), np.r_[ids, np.full(150, -1)]
    config = rsca.Config(n_components=4, ppca_components=6)
    fit = rsca.fit(everyone, all_ids, key=jax.random.key(0), config=config, progress=False)
    model, zp, zc = fit.model, fit.aux["field_feats"], fit.aux["cluster_feats"]
    assert zp.shape == (150, 4) and zc.shape == (20, 4) and model.ppca.n_components == 6
    np.testing.assert_array_equal(fit.aux["member_ids"], ids)
    np.testing.assert_array_equal(fit.aux["field_rows"], np.arange(20, 170))
    assert fit.history["log_likelihood"].ndim == 1
    # the stars in any order give the same model
    order = np.random.default_rng(1).permutation(170)
    again = rsca.fit(everyone[order], all_ids[order], key=jax.random.key(0), config=config, progress=False)
    assert_allclose(rsca.transform(again.model, clusters, progress=False), rsca.transform(model, clusters), scale=10)
    emb_c = rsca.transform(model, clusters)
    assert_allclose(emb_c, rsca.embed(model.metric, zc), dtype=np.float64)
    scale = np.max(np.abs(emb_c)) + 1
    assert_allclose(rsca.transform(model, field), rsca.embed(model.metric, zp), scale=10 * scale)
    assert rsca.transform(model, clusters, n_dims=2).shape == (20, 2)
    path = jaxspec.io.save(tmp_path / "rsca.npz", model)
    loaded = jaxspec.io.load(path)
    assert isinstance(loaded, rsca.Model) and loaded.config == model.config
    assert_allclose(rsca.transform(loaded, clusters), emb_c, dtype=np.float64)
    # Spectra input: err above max_err is missing, like NaN
    err = np.full(clusters.shape, 0.01)
    err[:, 3] = 0.2
    sp = Spectra(clusters, err=err)
    nan = clusters.copy()
    nan[:, 3] = np.nan
    assert_allclose(rsca.transform(model, sp), rsca.transform(model, nan), scale=scale)


def test_interstellar_mask_finds_planted_band():
    spec, _ = _spectra(8, 130, d=60)
    a_k = np.r_[np.zeros(100), np.ones(30)]
    spec[100:, 20:26] -= 0.1  # an interstellar band in the high-extinction stars only
    out = rsca.interstellar_mask(spec, a_k, key=jax.random.key(1), n_components=5, threshold=0.02)
    assert np.flatnonzero(out.mask).tolist() == list(range(20, 26))
    assert (out.n_low, out.n_high) == (100, 30)


def test_bad_inputs():
    zp, zc, ids = _planted(9, n_clusters=3)
    with pytest.raises(ValueError, match="cluster_feats"):
        rsca.fit_from_features(zp, zc[:, :3], ids)
    with pytest.raises(TypeError, match="cluster_ids"):
        rsca.fit_from_features(zp, zc, ids.astype(float))
    with pytest.raises(ValueError, match="cluster_ids"):
        rsca.fit_from_features(zp, zc[:3], np.arange(3))  # only singletons
    bad = zp.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="field_feats"):
        rsca.fit_from_features(bad, zc, ids)
    with pytest.raises(ValueError, match="tolerances"):
        rsca.doppelganger_rate(zp, zc, ids, nuisance_field=zp[:, 0])
    with pytest.raises(ValueError, match="n_dims"):
        rsca.leave_one_cluster_out_rate(zp, zc, ids, n_dims=9)
    with pytest.raises(ValueError, match="config.ppca_components: expected an int >= 4"):
        rsca.Config(n_components=4, ppca_components=2)
    with pytest.raises(ValueError, match="cluster_ids: expected field stars"):
        rsca.fit(np.ones((30, 10)), np.zeros(30, int), key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"cluster_ids: expected shape \(30,\)"):
        rsca.fit(np.ones((30, 10)), np.zeros(29, int), key=jax.random.key(0))
    with pytest.raises(TypeError, match="key"):
        rsca.fit(np.ones((30, 10)), np.r_[np.zeros(4, int), -np.ones(26, int)], key=None)
    with pytest.raises(TypeError, match="model"):
        rsca.transform(zp, zc)


def _doppelgangers_by_loops(f, c, ids, nf, nc, tol):
    hits, pairs = {}, {}
    for cl in np.unique(ids):
        mem = np.flatnonzero(ids == cl)
        if mem.size < 2:
            continue
        med = np.median([np.linalg.norm(c[a] - c[b]) for i, a in enumerate(mem) for b in mem[i + 1 :]])
        hits[cl] = pairs[cl] = 0
        for a in mem:
            for j in range(f.shape[0]):
                if np.all(np.abs(nf[j] - nc[a]) < tol):
                    pairs[cl] += 1
                    hits[cl] += np.linalg.norm(f[j] - c[a]) < med
    return hits, pairs


def test_doppelganger_rate_equals_loops_with_ties_and_nuisances():
    rng = np.random.default_rng(3)
    f = rng.integers(-3, 4, size=(400, 3)).astype(float)  # integer grid: many exact ties with the median
    c = rng.integers(-3, 4, size=(13, 3)).astype(float)
    ids = np.array([7] * 4 + [2] * 5 + [40] * 3 + [9])  # unsorted, gapped, one singleton
    nf, nc = rng.uniform(0, 10, size=(400, 2)), rng.uniform(0, 10, size=(13, 2))
    tol = np.array([3.0, 4.0])
    res = rsca.doppelganger_rate(f, c, ids, nuisance_field=nf, nuisance_clusters=nc, tolerances=tol)
    hits, pairs = _doppelgangers_by_loops(f, c, ids, nf, nc, tol)
    assert res.clusters.tolist() == [2, 7, 9, 40] and res.sizes.tolist() == [5, 4, 1, 3]
    assert np.isnan(res.per_cluster[2])
    for i, cl in enumerate(res.clusters):
        if cl in hits:
            assert res.n_pairs[i] == pairs[cl] > 0
            assert res.per_cluster[i] == hits[cl] / pairs[cl]
    want = sum(np.sum(ids == cl) * hits[cl] / pairs[cl] for cl in hits) / sum(np.sum(ids == cl) for cl in hits)
    assert abs(res.rate - want) < 1e-12


def test_non_integral_n_dims_and_bad_max_err_are_refused():
    """Issue 14: ``n_dims=2.5`` became 2; ``max_err=0`` divided by zero and a negative one acted positive."""
    zp, zc, ids = _planted(9, n_clusters=3)
    metric = rsca.fit_from_features(zp, zc, ids)
    with pytest.raises(TypeError, match="^n_dims"):
        rsca.embed(metric, zp, n_dims=2.5)
    with pytest.raises(TypeError, match="^n_dims"):
        rsca.remove_nuisance_hyperplane(zp, np.full(len(zp), -1), n_dims=1.5)
    with pytest.raises(TypeError, match="^n_dims"):
        rsca.top_n_table(zp, zc, ids, n_dims=[1, 2.5])
    for max_err in (0, 0.0, -0.05):
        with pytest.raises(ValueError, match=r"^config\.max_err"):
            rsca.Config(max_err=max_err)


def test_transform_names_the_spectra_for_a_pixel_count_other_than_the_fit():
    """Issue 14: the mismatch blamed ``pixel_mask``, which the caller never passed."""
    spec, _ = _spectra(3, 170, d=30)
    ids = np.r_[np.full(150, -1), np.repeat(np.arange(4), 5)]
    config = rsca.Config(n_components=3, ppca_components=4, ppca_max_iter=10)
    model = rsca.fit(spec, ids, key=jax.random.key(0), config=config, progress=False).model
    with pytest.raises(ValueError, match=r"^spectra: expected 30 pixels as in the fit, found 29"):
        rsca.transform(model, spec[:, :-1], progress=False)
    with pytest.raises(ValueError, match="^spectra: expected at least one star"):
        rsca.transform(model, spec[:0], progress=False)
    with pytest.raises(TypeError, match="^n_dims"):
        rsca.transform(model, spec, n_dims=2.5, progress=False)
