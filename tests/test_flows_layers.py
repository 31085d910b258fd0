"""flows: ActNorm, the LU 1x1 mixing and the spline coupling invert and their log-dets equal jax.jacobian's."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec.models import flows
from jaxspec.models.flows._bijectors import _lu


def _dtype():
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def _tol():
    return 1e-10 if jax.config.jax_enable_x64 else 1e-4


def _check_bijector(bij, x):
    """Round trip under the tolerance, and log|det| of every event equal to that of ``jax.jacobian``."""
    y, logdet = jax.jit(bij.forward_and_log_det)(x)
    back, inv_logdet = jax.jit(bij.inverse_and_log_det)(y)
    np.testing.assert_allclose(back, x, atol=_tol(), rtol=_tol())
    np.testing.assert_allclose(inv_logdet, -logdet, atol=_tol(), rtol=_tol())
    jac = jax.jit(jax.vmap(jax.jacobian(bij.forward)))(x)
    want = np.linalg.slogdet(np.asarray(jac, np.float64))[1]
    np.testing.assert_allclose(logdet, want, atol=10 * _tol(), rtol=10 * _tol())


def _perturbed(key, params, scale=0.3):
    """Parameters away from their initial values (a trained layer), same structure."""
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        tree, [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys, strict=True)]
    )


def test_actnorm_init_whitens_the_batch_and_inverts():
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (64, 6), _dtype())
    x = x.at[:, 2].set(1.5)  # a constant dimension: scale 1, never a division by zero
    params = flows.actnorm_init(x)
    y, _ = flows.ActNorm(params).forward_and_log_det(x)
    np.testing.assert_allclose(jnp.mean(y, axis=0), 0.0, atol=_tol())
    np.testing.assert_allclose(np.asarray(jnp.std(y, axis=0))[[0, 1, 3, 4, 5]], 1.0, atol=_tol(), rtol=_tol())
    assert float(params.log_scale[2]) == 0.0
    _check_bijector(flows.ActNorm(_perturbed(jax.random.key(1), params)), x[:4])
    with pytest.raises(ValueError, match="x"):
        flows.actnorm_init(x[0])


def test_lu_factors_of_a_pivoted_matrix():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((7, 7))
    perm, lower, upper = _lu(w)
    np.testing.assert_allclose(w[perm], lower @ upper, atol=1e-12)
    assert np.all(np.abs(np.tril(lower, -1)) <= 1.0 + 1e-12)  # partial pivoting
    assert sorted(perm.tolist()) == list(range(7))


def test_lu_init_is_a_rotation_and_the_matrix_is_its_factors():
    params, fixed = flows.lu_init(jax.random.key(2), 5, _dtype())
    w = np.asarray(flows.lu_matrix(params, fixed), np.float64)
    np.testing.assert_allclose(w @ w.T, np.eye(5), atol=10 * _tol())
    assert abs(float(jnp.sum(params.log_scale))) < 10 * _tol()  # |det| = 1
    with pytest.raises(ValueError, match="channels"):
        flows.lu_init(jax.random.key(0), 0)


@pytest.mark.parametrize("channels", [6, 3, 2])
def test_lu_mixing_inverts_and_its_log_det_is_the_jacobians(channels):
    """Full mixing (c = D) and block-diagonal mixing over groups of c (GLOW's channels), after training moves it."""
    params, fixed = flows.lu_init(jax.random.key(3), channels, _dtype())
    bij = flows.LUMixing(_perturbed(jax.random.key(4), params), fixed)
    x = jax.random.normal(jax.random.key(5), (3, 6), _dtype())
    _check_bijector(bij, x)
    # block-diagonal: each group mixed by the same small matrix
    w = flows.lu_matrix(bij.params, fixed)
    y = bij.forward(x)
    np.testing.assert_allclose(y.reshape(3, -1, channels), jnp.einsum("ij,ngj->ngi", w, x.reshape(3, -1, channels)),
                               atol=_tol(), rtol=_tol())  # fmt: skip
    # batch axes of any rank, and distrax's Chain/Inverse
    xb = x.reshape(3, 1, 6)
    np.testing.assert_allclose(bij.forward(xb)[:, 0], y, atol=_tol(), rtol=_tol())
    import distrax

    chain = distrax.Chain([bij, flows.ActNorm(flows.actnorm_init(x))])
    _check_bijector(chain, x)
    _check_bijector(distrax.Inverse(chain), x)
    if channels > 1:
        with pytest.raises(ValueError, match="multiple"):
            flows.LUMixing(params, fixed).forward(jnp.zeros((2, 7), _dtype()))


SPEC = flows.SplineSpec(dim=7, bins=4, bound=3.0, hidden=(8, 8, 8))


def test_coupling_starts_as_the_identity():
    params = flows.init_coupling(jax.random.key(0), SPEC, _dtype())
    x = 2.0 * jax.random.normal(jax.random.key(1), (5, 7), _dtype())
    y, logdet = jax.jit(flows.coupling(params, SPEC).forward_and_log_det)(x)
    np.testing.assert_allclose(y, x, atol=_tol(), rtol=_tol())
    np.testing.assert_allclose(logdet, 0.0, atol=_tol())
    # the reference's output count: (3K - 1) per transformed dimension, halves of 3 and 4
    sizes = [a.shape for a in jax.tree.leaves(params.first) if a.ndim == 2]
    assert sizes[0] == (3, 8) and sizes[-1] == (8, 4 * 11)
    assert [a.shape for a in jax.tree.leaves(params.second) if a.ndim == 2][-1] == (8, 3 * 11)


def test_coupling_inverts_and_its_log_det_is_the_jacobians_inside_and_outside_the_interval():
    params = _perturbed(jax.random.key(2), flows.init_coupling(jax.random.key(0), SPEC, _dtype()), scale=0.2)
    bij = flows.coupling(params, SPEC)
    x = 1.5 * jax.random.normal(jax.random.key(3), (4, 7), _dtype())
    x = x.at[0, 1].set(4.5).at[1, 5].set(-5.0)  # in the identity tails
    _check_bijector(bij, x)
    y = jax.jit(bij.forward)(x)
    assert not np.allclose(y, x, atol=1e-2)  # the perturbed coupling does something
    # both halves moved: b given a, then a given the new b
    assert np.abs(np.asarray(y - x)[:, :3]).max() > 1e-2 and np.abs(np.asarray(y - x)[:, 3:]).max() > 1e-2
    np.testing.assert_allclose(y[1, 5], -5.0, atol=_tol())  # outside [-B, B] the spline is the identity


def _flow(spec, scale=0.15, key=5):
    params, fixed = flows.init_blocks(jax.random.key(key), spec, _dtype())
    params = _perturbed(jax.random.key(key + 1), params, scale)
    return params, fixed


def test_flow_at_initialisation_is_a_rotation_so_log_prob_is_the_standard_normal():
    spec = flows.FlowSpec(dim=6, blocks=3, hidden=(8, 8, 8), bins=4, channels=3)
    params, fixed = flows.init_blocks(jax.random.key(0), spec, _dtype())
    x = 2.0 * jax.random.normal(jax.random.key(1), (5, 6), _dtype())
    got = jax.jit(lambda x: flows.flow_log_prob(params, fixed, spec, x))(x)
    want = -0.5 * np.sum(np.asarray(x, np.float64) ** 2, axis=1) - 3.0 * np.log(2 * np.pi)
    np.testing.assert_allclose(got, want, atol=10 * _tol(), rtol=10 * _tol())


@pytest.mark.slow  # float32 only: the bijectors are checked in both precisions above
def test_flow_inverts_its_log_det_is_the_jacobians_and_log_prob_is_distraxs():
    """Block-diagonal mixing here; the full (c = D) mixing is the LU test's ``channels=6``."""
    import distrax

    spec = flows.FlowSpec(dim=6, blocks=3, hidden=(8, 8, 8), bins=4, channels=2)
    params, fixed = _flow(spec)
    x = 1.5 * jax.random.normal(jax.random.key(2), (4, 6), _dtype())
    z, logdet = jax.jit(lambda x: flows.to_base(params, fixed, spec, x))(x)
    back, inv_logdet = jax.jit(lambda z: flows.from_base(params, fixed, spec, z))(z)
    np.testing.assert_allclose(back, x, atol=10 * _tol(), rtol=10 * _tol())
    np.testing.assert_allclose(inv_logdet, -logdet, atol=10 * _tol(), rtol=10 * _tol())
    jac = jax.jit(jax.vmap(jax.jacobian(lambda v: flows.to_base(params, fixed, spec, v)[0])))(x)
    np.testing.assert_allclose(logdet, np.linalg.slogdet(np.asarray(jac, np.float64))[1], atol=100 * _tol())
    assert np.abs(np.asarray(logdet)).max() > 0.1  # the perturbed flow changes volume

    # the same flow assembled by distrax from its blocks: Transformed(N(0, I), f^-1)
    def block(k):
        pick = lambda a: a[k]  # noqa: E731
        return flows._flow._block(jax.tree.map(pick, params), jax.tree.map(pick, fixed), spec, None)

    blocks = [block(k) for k in range(spec.blocks)]
    chain = distrax.Chain(blocks[::-1])  # distrax applies the last first: block 0 first
    base = distrax.MultivariateNormalDiag(jnp.zeros(6, _dtype()), jnp.ones(6, _dtype()))
    want = jax.jit(distrax.Transformed(base, distrax.Inverse(chain)).log_prob)(x)
    got = jax.jit(lambda x: flows.flow_log_prob(params, fixed, spec, x))(x)
    np.testing.assert_allclose(got, want, atol=100 * _tol(), rtol=100 * _tol())


@pytest.mark.slow
def test_two_dimensional_flow_density_integrates_to_one():
    spec = flows.FlowSpec(dim=2, blocks=2, hidden=(8, 8, 8), bins=4)
    params, fixed = _flow(spec, scale=0.15, key=7)
    g = np.linspace(-9.0, 9.0, 401)
    grid = jnp.asarray(np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2), _dtype())
    density = np.exp(np.asarray(jax.jit(lambda x: flows.flow_log_prob(params, fixed, spec, x))(grid), np.float64))
    total = density.sum() * (g[1] - g[0]) ** 2
    assert total == pytest.approx(1.0, abs=1e-3)  # 0.9999965 on a 601^2 grid when written
    # and it is not the base density: the flow has learnt (here: been given) a shape
    base = np.exp(-0.5 * np.sum(np.asarray(grid, np.float64) ** 2, axis=1)) / (2 * np.pi)
    assert np.abs(density - base).max() > 1e-2


def test_paper_size_flows_are_counted_without_allocation():
    """The reference configuration (12 blocks, width 1000) and its predecessor's (20 blocks, width 600) at 2408
    dimensions: about 0.88e9 and 0.96e9 parameters, the 1x1 mixing 11.6M a block, counted by jax.eval_shape."""
    paper = flows.n_parameters(flows.FlowSpec(dim=2408, blocks=12, hidden=(1000,) * 3))
    half, out = 1204, 1204 * 23
    conditioner = half * 1000 + 1000 + 2 * (1000 * 1000 + 1000) + 1000 * out + out
    assert paper["coupling"] == 12 * 2 * conditioner
    assert paper["mixing"] == 12 * (2 * 2408**2 + 2408) and paper["actnorm"] == 12 * 2 * 2408
    assert 0.87e9 < paper["total"] < 0.89e9
    older = flows.n_parameters(flows.FlowSpec(dim=2408, blocks=20, hidden=(600,) * 3))
    assert 0.95e9 < older["total"] < 0.97e9
    small = flows.FlowSpec(dim=6, blocks=3, hidden=(8, 8, 8), bins=4, channels=2)
    real = flows.init_blocks(jax.random.key(0), small)[0]
    shapes = flows.parameter_shapes(small)
    assert jax.tree.map(lambda a: a.shape, real) == jax.tree.map(lambda a: a.shape, shapes)
    with pytest.raises(ValueError, match="channels"):
        flows.n_parameters(flows.FlowSpec(dim=7, channels=2))


def test_data_dependent_actnorm_centres_the_base_and_keeps_its_total_variance():
    """At initialisation every block is ActNorm then a rotation: after GLOW's data-dependent init, the batch
    reaches the base with zero mean and total variance D (each ActNorm whitens, each rotation keeps the trace)."""
    spec = flows.FlowSpec(dim=6, blocks=3, hidden=(8, 8, 8), bins=4)
    params, fixed = flows.init_blocks(jax.random.key(0), spec, _dtype())
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((256, 6)) @ rng.standard_normal((6, 6)) + 5.0, _dtype())
    params = flows.init_actnorm(params, fixed, spec, x)
    z, _ = jax.jit(lambda x: flows.to_base(params, fixed, spec, x))(x)
    np.testing.assert_allclose(jnp.mean(z, axis=0), 0.0, atol=100 * _tol())
    assert float(jnp.sum(jnp.var(z, axis=0))) == pytest.approx(6.0, rel=100 * _tol())
    assert np.all(np.asarray(params.actnorm.log_scale) != 0.0)
    with pytest.raises(ValueError, match="x"):
        flows.init_actnorm(params, fixed, spec, x[:, :5])


def test_lu_factors_rebuild_the_matrix_and_refuse_a_singular_one():
    w = np.random.default_rng(3).standard_normal((6, 6)) + 2 * np.eye(6)
    params, fixed = flows.lu_factors(w, _dtype())
    np.testing.assert_allclose(flows.lu_matrix(params, fixed), w, atol=10 * _tol(), rtol=10 * _tol())
    assert float(jnp.sum(params.log_scale)) == pytest.approx(np.linalg.slogdet(w)[1], abs=10 * _tol())
    with pytest.raises(ValueError, match="singular"):
        flows.lu_factors(np.ones((3, 3)))
    with pytest.raises(ValueError, match="square"):
        flows.lu_factors(np.ones((3, 2)))


def test_shrinkage_is_chosen_by_held_out_likelihood():
    """Many rows of a correlated Gaussian: no shrinkage; isotropic data: full shrinkage; fewer rows than
    dimensions: some shrinkage and a positive definite estimate."""
    rng = np.random.default_rng(4)
    a = rng.standard_normal((8, 8))
    cov = a @ a.T + 0.05 * np.eye(8)
    x = rng.multivariate_normal(np.zeros(8), cov, size=4000)
    got, rho = flows.shrunk_covariance(x)
    assert rho <= 1e-2
    np.testing.assert_allclose(got, np.cov(x, rowvar=False, bias=True), atol=1e-2 * np.abs(cov).max())
    assert flows.shrunk_covariance(rng.standard_normal((4000, 8)))[1] == 1.0
    few = rng.multivariate_normal(np.zeros(40), np.eye(40) + 0.5, size=30)
    got, rho = flows.shrunk_covariance(few)
    assert 0 < rho < 1 and np.linalg.eigvalsh(got).min() > 0


@pytest.mark.parametrize("channels", [None, 2])
def test_whitening_init_makes_the_untrained_flow_the_datas_gaussian(channels):
    """With the first mixing set to the whitening of the data, the untrained flow maps the data to covariance I
    and its mean log density is the Gaussian maximum likelihood, -p/2 (1 + log 2 pi) - log det(S) / 2; the
    rotation start leaves the correlations in."""
    spec = flows.FlowSpec(dim=6, blocks=2, hidden=(8, 8, 8), bins=4, channels=channels)
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((3000, 6)) @ rng.standard_normal((6, 6)) + 5.0, _dtype())
    params, fixed = flows.init_blocks(jax.random.key(0), spec, _dtype())
    params = flows.init_actnorm(params, fixed, spec, x)
    rotated = flows.to_base(params, fixed, spec, x)[0]
    assert np.abs(np.cov(rotated, rowvar=False) - np.eye(6)).max() > 0.1
    params, fixed = flows.init_whitening(params, fixed, spec, x)
    params = flows.init_actnorm(params, fixed, spec, x)
    z = np.asarray(flows.to_base(params, fixed, spec, x)[0], np.float64)
    if channels is None:
        np.testing.assert_allclose(np.cov(z, rowvar=False, bias=True), np.eye(6), atol=1e-3)
        s = np.cov(np.asarray(x, np.float64), rowvar=False, bias=True)
        want = -0.5 * 6 * (1 + np.log(2 * np.pi)) - 0.5 * np.linalg.slogdet(s)[1]
        got = float(jnp.mean(flows.flow_log_prob(params, fixed, spec, x)))
        assert got == pytest.approx(want, abs=1e-3)
    else:  # one 2 x 2 matrix for three groups: W C W^T = I for the (shrunk) covariance C of the pooled groups
        first = ((np.asarray(x) - params.actnorm.loc[0]) * np.exp(-params.actnorm.log_scale[0])).reshape(-1, 2)
        w = np.asarray(flows.lu_matrix(*jax.tree.map(lambda a: a[0], (params.mixing, fixed))), np.float64)
        c = flows.shrunk_covariance(first)[0]
        np.testing.assert_allclose(w @ c @ w.T, np.eye(2), atol=100 * _tol())
    with pytest.raises(ValueError, match="x"):
        flows.init_whitening(params, fixed, spec, x[:1])


def test_spline_forward_is_distraxs_in_value_and_gradient():
    """The whole-array forward pass of flows' Spline equals distrax's per-scalar one, inside, at the knots' bins
    and outside the interval, and so do their gradients with respect to the input and the raw parameters."""
    import distrax

    from jaxspec.models.flows._coupling import Spline

    rng = np.random.default_rng(7)
    params = jnp.asarray(rng.standard_normal((6, 5, 3 * 4 + 1)), _dtype())
    x = jnp.asarray(np.r_[rng.uniform(-4, 4, 24), -3.0, 3.0, 0.0, 5.0, -5.0, 1.0].reshape(6, 5), _dtype())
    kw = {"range_min": -3.0, "range_max": 3.0, "boundary_slopes": "identity"}

    def value(cls, p, x):
        y, ld = cls(p, **kw).forward_and_log_det(x)
        return jnp.sum(y**2) + jnp.sum(ld)

    for cls in (Spline, distrax.RationalQuadraticSpline):
        y, ld = cls(params, **kw).forward_and_log_det(x)
        if cls is Spline:
            ours = (y, ld, jax.grad(lambda p, x: value(Spline, p, x), argnums=(0, 1))(params, x))
    theirs = (y, ld, jax.grad(lambda p, x: value(distrax.RationalQuadraticSpline, p, x), argnums=(0, 1))(params, x))
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_allclose(a, b, atol=10 * _tol(), rtol=10 * _tol())
