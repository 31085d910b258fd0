"""optim/latents.py: fit_latents against closed forms, known latents, priors, masks, compilation, gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest

from jaxspec.data.containers import Labels, Spectra
from jaxspec.optim import sharding
from jaxspec.optim.latents import FitOptions, GaussianPrior, LatentFit, fit_latents
from tests.conftest import assert_allclose, count_compiles

N_STARS, N_OUT, P = 6, 24, 3


def decode_linear(params, z):
    a, b = params
    return b + a @ z


def decode_mlp(params, z):
    w1, b1, w2, b2 = params
    return w2 @ jnp.tanh(w1 @ z + b1) + b2


def linear_problem(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(N_OUT, P))
    b = rng.normal(size=N_OUT)
    z = rng.normal(size=(N_STARS, P))
    ivar = rng.uniform(0.5, 2.0, size=(N_STARS, N_OUT))
    ivar[rng.random(ivar.shape) < 0.2] = 0.0
    y = z @ a.T + b + rng.normal(size=(N_STARS, N_OUT)) / np.sqrt(np.where(ivar > 0, ivar, 1.0))
    return (a.astype(dtype), b.astype(dtype)), y, ivar


def mlp_problem(seed=1, noise=0.0):
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(8, P)) / np.sqrt(P)
    params = tuple(
        jnp.asarray(x, jnp.float32)
        for x in (w1, 0.1 * rng.normal(size=8), rng.normal(size=(N_OUT, 8)) / np.sqrt(8), rng.normal(size=N_OUT))
    )
    z = rng.uniform(-0.8, 0.8, size=(N_STARS, P)).astype(np.float32)
    y = np.asarray(jax.vmap(decode_mlp, in_axes=(None, 0))(params, jnp.asarray(z)))
    y = y + noise * rng.normal(size=y.shape)
    ivar = np.ones_like(y)
    return params, z, y.astype(np.float32), ivar.astype(np.float32)


def reference_linear(params, y, ivar, prior_mean, prior_prec):
    """float64 numpy normal equations, explicit inverse."""
    a, b = (np.asarray(x, np.float64) for x in params)
    zs, covs = [], []
    for yi, wi in zip(y, ivar, strict=True):
        gram = a.T @ (wi[:, None] * a) + prior_prec
        cov = np.linalg.inv(gram)
        zs.append(cov @ (a.T @ (wi * (yi - b)) + prior_prec @ prior_mean))
        covs.append(cov)
    return np.array(zs), np.array(covs)


def test_linear_equals_normal_equations():
    params, y, ivar = linear_problem()
    prior = GaussianPrior(np.array([0.1, -0.2, 0.3]), np.diag([0.5, 1.0, 2.0]))
    fit = fit_latents(
        decode_linear, params, (y, ivar), np.zeros(P), prior=prior, method="linear", covariance=True, progress=False
    )
    z_ref, cov_ref = reference_linear(params, y, ivar, np.asarray(prior.mean), np.asarray(prior.precision))
    assert isinstance(fit, LatentFit)
    assert_allclose(fit.z, z_ref, scale=4)
    assert_allclose(fit.covariance, cov_ref, scale=4)
    a, b = (np.asarray(x, np.float64) for x in params)
    chi2 = np.sum(ivar * (y - fit_z64(fit) @ a.T - b) ** 2, axis=1)
    assert_allclose(fit.chi2, chi2, scale=10)
    assert_allclose(fit.reduced_chi2, chi2 / ((ivar > 0).sum(1) - P), scale=10)
    assert fit.converged.all() and (fit.iterations == 1).all()


def fit_z64(fit):
    return np.asarray(fit.z, np.float64)


def test_linear_float64_and_containers():
    with jax.enable_x64(True):
        params, y, ivar = linear_problem(dtype=np.float64)
        spectra = Spectra(y, ivar, dtype=np.float64)
        fit = fit_latents(decode_linear, params, spectra, np.zeros(P), method="linear", progress=False)
        assert fit.z.dtype == np.float64
        z_ref, _ = reference_linear(params, y, ivar, np.zeros(P), np.zeros((P, P)))
        assert_allclose(fit.z, z_ref, dtype=np.float64, scale=10)
        labels = Labels(y, ivar, names=[f"x{i}" for i in range(N_OUT)], dtype=np.float64)
        fit2 = fit_latents(decode_linear, params, labels, np.zeros(P), method="linear", progress=False)
        assert_allclose(fit2.z, fit.z, dtype=np.float64)


def test_linear_float32_ill_conditioned():
    # columns nearly collinear (Gram condition number ~1e5): the scaled Cholesky keeps float32 accurate
    rng = np.random.default_rng(3)
    base = rng.normal(size=(N_OUT, 1))
    a = np.hstack([base, base + 1e-2 * rng.normal(size=(N_OUT, 1)), rng.normal(size=(N_OUT, 1))])
    z = np.array([[1.0, -1.0, 0.5]])
    y = z @ a.T
    ivar = np.ones_like(y)
    prior = GaussianPrior.l2(1e-6, P)
    fit = fit_latents(
        decode_linear, (a.astype(np.float32), np.zeros(N_OUT, np.float32)), (y, ivar), np.zeros(P),
        prior=prior, method="linear", progress=False,
    )  # fmt: skip
    z_ref, _ = reference_linear((a, np.zeros(N_OUT)), y, ivar, np.zeros(P), np.asarray(prior.precision))
    # well-determined combinations are exact; the ill-determined difference to the float32 limit
    assert_allclose(np.asarray(fit.z) @ a.T, z_ref @ a.T, scale=20)
    assert np.abs(np.asarray(fit.z) - z_ref).max() < 0.05


@pytest.mark.parametrize(
    ("method", "backend"),
    [
        ("gauss_newton", "jaxopt"),
        ("levenberg_marquardt", "jaxopt"),
        ("dense_gauss_newton", "jaxopt"),
        ("lbfgs", "jaxopt"),
        ("lbfgs", "optax"),
    ],
)
def test_nonlinear_recovers_known_latents(method, backend):
    params, z_true, y, ivar = mlp_problem()
    options = FitOptions(tol=1e-5, maxiter=200, backend=backend)
    fit = fit_latents(decode_mlp, params, (y, ivar), np.zeros(P), method=method, options=options, progress=False)
    assert fit.converged.all()
    assert_allclose(fit.z, z_true, dtype=np.float32, scale=20)  # the data are float32
    assert (np.asarray(fit.chi2) < 1e-4).all()


def test_strong_prior_gives_prior_mean_and_laplace_covariance():
    params, _, y, ivar = mlp_problem(noise=0.05)
    mean = np.array([0.2, -0.1, 0.4])
    strong = GaussianPrior(mean, 1e6 * np.eye(P))
    fit = fit_latents(
        decode_mlp, params, (y, ivar), np.zeros(P), prior=strong, method="levenberg_marquardt", progress=False
    )
    assert_allclose(fit.z, np.broadcast_to(mean, fit.z.shape), scale=10)

    prec = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 3.0]])
    prior = GaussianPrior(mean, prec)
    fit = fit_latents(
        decode_mlp, params, (y, ivar), np.zeros(P), prior=prior, method="gauss_newton", covariance=True, progress=False
    )
    for i in range(N_STARS):
        jac = np.asarray(jax.jacfwd(decode_mlp, argnums=1)(params, fit.z[i]), np.float64)
        expected = np.linalg.inv(jac.T @ (ivar[i][:, None] * jac) + prec)
        assert_allclose(fit.covariance[i], expected, scale=10)
        # the fit is a stationary point of the posterior
        r = y[i] - np.asarray(decode_mlp(params, fit.z[i]))
        grad = -jac.T @ (ivar[i] * r) + prec @ (np.asarray(fit.z[i], np.float64) - mean)
        assert np.abs(grad).max() < 1e-3


@pytest.mark.parametrize("method", ["linear", "gauss_newton"])
def test_masked_and_nan_stars_are_flagged(method):
    params, y, ivar = linear_problem()
    ivar[2] = 0.0
    prior = GaussianPrior(np.array([0.3, 0.2, 0.1]), np.eye(P))
    fit = fit_latents(
        decode_linear, params, (y, ivar), np.zeros(P), prior=prior, method=method, covariance=True, progress=False
    )
    assert_allclose(fit.z[2], prior.mean)
    assert not fit.converged[2] and np.asarray(fit.converged)[[0, 1, 3, 4, 5]].all()
    assert float(fit.chi2[2]) == 0.0 and np.isinf(fit.reduced_chi2[2])
    assert_allclose(fit.covariance[2], np.eye(P))  # the prior covariance
    for leaf in (fit.z, fit.chi2, fit.reduced_chi2, fit.covariance):
        assert not np.isnan(np.asarray(leaf)).any()

    # no prior: the fallback is z0, the covariance undefined (inf), still no NaN
    fit = fit_latents(decode_linear, params, (y, ivar), np.full(P, 0.5), method=method, covariance=True, progress=False)
    assert_allclose(fit.z[2], np.full(P, 0.5)) and not fit.converged[2]
    assert np.isinf(np.diagonal(fit.covariance[2])).all() and not np.isnan(np.asarray(fit.covariance)).any()


def test_decoder_nan_for_one_star_is_flagged():
    params, _, y, ivar = mlp_problem()

    def decode(params, z):
        out = decode_mlp(params, z)
        return jnp.where(z[0] > 5.0, jnp.nan, out)  # NaN in a region only star 0 reaches

    z0 = np.zeros((N_STARS, P), np.float32)
    z0[0, 0] = 10.0
    fit = fit_latents(decode, params, (y, ivar), z0, method="gauss_newton", progress=False)
    assert not fit.converged[0] and np.isinf(fit.chi2[0])
    assert fit.converged[1:].all()
    assert not np.isnan(np.asarray(fit.z)).any()


def test_chunked_and_sharded_equals_one_chunk():
    params, y, ivar = linear_problem()
    one = fit_latents(decode_linear, params, (y, ivar), np.zeros(P), method="linear", progress=False)
    mesh = sharding.data_mesh(jax.devices()[:1])
    options = FitOptions(chunk_size=4)  # 6 stars -> two chunks of 4, the last padded
    chunked = fit_latents(
        decode_linear, params, (y, ivar), np.zeros(P), method="linear", options=options, mesh=mesh, progress=False
    )
    assert chunked.z.shape == (N_STARS, P)
    assert_allclose(chunked.z, one.z)
    assert_allclose(chunked.chi2, one.chi2)


@pytest.mark.parametrize("method", ["linear", "levenberg_marquardt"])
def test_second_call_does_not_recompile(method):
    params, y, ivar = linear_problem()
    options = FitOptions(chunk_size=4, maxiter=20)
    kwargs = {"method": method, "options": options, "progress": False}
    with count_compiles() as compiles:
        fit_latents(decode_linear, params, (y, ivar), np.zeros(P), **kwargs)
        first = len(compiles)
        _, y2, ivar2 = linear_problem(seed=5)
        fit = fit_latents(decode_linear, params, (y2, ivar2), np.zeros(P), **kwargs)
        jax.block_until_ready(fit)
    assert first > 0
    assert len(compiles) == first, f"second call compiled {len(compiles) - first} more time(s)"


@pytest.mark.parametrize("method", ["linear", "gauss_newton", "dense_gauss_newton", "lbfgs"])
def test_gradient_wrt_params_matches_finite_differences(method):
    with jax.enable_x64(True):
        params, _, y, ivar = mlp_problem(noise=0.05)
        params = tuple(jnp.asarray(x, jnp.float64) for x in params)
        decode = decode_linear if method == "linear" else decode_mlp
        if method == "linear":
            params = (params[2] @ params[0], params[3])  # (N_OUT, P) linear map and offset
        prior = GaussianPrior.l2(0.1, P)
        options = FitOptions(tol=1e-10, maxiter=200)

        def loss(params):
            fit = fit_latents(
                decode, params, (y, ivar), np.zeros(P), prior=prior, method=method, options=options, progress=False
            )
            return jnp.sum(jnp.sin(fit.z))

        jax.test_util.check_grads(loss, (params,), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)


def test_bad_input():
    params, y, ivar = linear_problem()
    ok = {"method": "linear", "progress": False}
    with pytest.raises(ValueError, match="decode"):
        fit_latents(decode_linear, params, (y[:, :-1], ivar[:, :-1]), np.zeros(P), **ok)
    with pytest.raises(ValueError, match="data"):
        fit_latents(decode_linear, params, (y, ivar[:, :-1]), np.zeros(P), **ok)
    bad = ivar.copy()
    bad[0, 0] = -1.0
    with pytest.raises(ValueError, match="ivar"):
        fit_latents(decode_linear, params, (y, bad), np.zeros(P), **ok)
    with pytest.raises(ValueError, match="z0"):
        fit_latents(decode_linear, params, (y, ivar), np.array([0.0, np.nan, 0.0]), **ok)
    with pytest.raises(ValueError, match="z0"):
        fit_latents(decode_linear, params, (y, ivar), np.zeros((2, P)), **ok)
    with pytest.raises(ValueError, match="method"):
        fit_latents(decode_linear, params, (y, ivar), np.zeros(P), method="newton", progress=False)
    with pytest.raises(TypeError, match="data"):
        fit_latents(decode_linear, params, y, np.zeros(P), **ok)
    with pytest.raises(ValueError, match="prior"):
        fit_latents(decode_linear, params, (y, ivar), np.zeros(P), prior=GaussianPrior(np.zeros(P), -np.eye(P)), **ok)
    with pytest.raises(ValueError, match=r"options\.chunk_size"):
        fit_latents(decode_linear, params, (y, ivar), np.zeros(P), options=FitOptions(chunk_size=0), **ok)


def test_closed_form_jacobian_gives_the_same_fit_and_covariance():
    """``jacobian=`` replaces ``jax.jacfwd(decode)`` in every Gauss-Newton step and the covariance."""
    params, _, y, ivar = mlp_problem(noise=0.05)
    calls = []

    def jacobian(params, z):
        calls.append(1)  # traced once per compilation: proves the closed form is the one used
        w1, b1, w2, b2 = params
        h = jnp.tanh(w1 @ z + b1)
        return w2 @ h + b2, w2 @ ((1.0 - h * h)[:, None] * w1)

    prior = GaussianPrior.l2(0.1, P)
    kw = {"prior": prior, "method": "dense_gauss_newton", "covariance": True, "progress": False}
    auto = fit_latents(decode_mlp, params, (y, ivar), np.zeros(P), **kw)
    closed = fit_latents(decode_mlp, params, (y, ivar), np.zeros(P), jacobian=jacobian, **kw)
    assert calls and closed.converged.all()
    assert_allclose(closed.z, auto.z, scale=10)
    assert_allclose(closed.covariance, auto.covariance, scale=10)
    assert_allclose(closed.chi2, auto.chi2, scale=10)
    with pytest.raises(ValueError, match="jacobian"):
        fit_latents(decode_mlp, params, (y, ivar), np.zeros(P), jacobian=jacobian, method="gauss_newton")
    with pytest.raises(ValueError, match="jacobian"):
        fit_latents(decode_mlp, params, (y, ivar), np.zeros(P), jacobian=lambda p, z: (decode_mlp(p, z), z),
                    method="dense_gauss_newton")  # fmt: skip


def test_slots_refill_gives_every_star_the_same_iterates():
    """``FitOptions(slots=k)``: k lanes refilled as stars finish; the same solutions and iteration counts."""
    params, _, y, ivar = mlp_problem(noise=0.05)
    rng = np.random.default_rng(4)
    z0 = rng.uniform(-1.5, 1.5, (N_STARS, P)).astype(np.float32)  # iteration counts vary from star to star
    kw = {"method": "dense_gauss_newton", "covariance": True, "progress": False}
    plain = fit_latents(decode_mlp, params, (y, ivar), z0, options=FitOptions(tol=1e-5), **kw)
    for slots in (1, 2, 4):
        pooled = fit_latents(decode_mlp, params, (y, ivar), z0, options=FitOptions(tol=1e-5, slots=slots), **kw)
        # the same arithmetic per star: in float64 the same iterations; float32 rounding differs with the batch
        # shape, which can move the last, damped steps of a star near the tolerance
        if jax.config.jax_enable_x64:
            np.testing.assert_array_equal(pooled.iterations, plain.iterations)
        assert_allclose(pooled.z, plain.z, scale=10)
        assert_allclose(pooled.covariance, plain.covariance, scale=10)
        np.testing.assert_array_equal(pooled.converged, plain.converged)
    assert len(set(np.asarray(plain.iterations).tolist())) > 1
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="options.slots"):
            fit_latents(decode_mlp, params, (y, ivar), z0, method="dense_gauss_newton", options=FitOptions(slots=bad))
    with pytest.raises(ValueError, match="options.slots"):
        fit_latents(decode_mlp, params, (y, ivar), z0, method="gauss_newton", options=FitOptions(slots=2))
    capped = fit_latents(decode_mlp, params, (y, ivar), z0, options=FitOptions(tol=1e-5, slots=2, max_step=10.0), **kw)
    assert_allclose(capped.z, plain.z, scale=10)  # a trust radius these fits never reach changes nothing
    for bad in (0.0, -1.0, True):
        with pytest.raises(ValueError, match="options.max_step"):
            fit_latents(
                decode_mlp, params, (y, ivar), z0, method="dense_gauss_newton", options=FitOptions(max_step=bad)
            )
    with pytest.raises(ValueError, match="options.max_step"):
        fit_latents(decode_mlp, params, (y, ivar), z0, method="lbfgs", options=FitOptions(max_step=1.0))


def test_scale_basis_is_eliminated_in_closed_form():
    """Predictions times ``B c`` per star: ``c`` is profiled out (variable projection); the covariance of ``z``
    equals the ``z`` block of the joint Laplace covariance over ``(z, c)``."""
    params, z_true, y, _ = mlp_problem()
    x = np.linspace(-1, 1, N_OUT)
    basis = np.stack([np.ones(N_OUT), x, x**2], axis=1).astype(np.float32)
    rng = np.random.default_rng(6)
    c_true = np.column_stack([rng.uniform(0.8, 1.2, N_STARS), rng.uniform(-0.1, 0.1, (N_STARS, 2))])
    scaled = (y * (c_true @ basis.T)).astype(np.float32)
    ivar = np.full_like(scaled, 1e4)
    ivar[:, 5] = 0.0  # a masked output, garbage there
    scaled[:, 5] = 99.0

    def jacobian(params, z):
        w1, b1, w2, b2 = params
        h = jnp.tanh(w1 @ z + b1)
        return w2 @ h + b2, w2 @ ((1.0 - h * h)[:, None] * w1)

    kw = {"method": "dense_gauss_newton", "covariance": True, "progress": False, "scale_basis": basis}
    opts = FitOptions(tol=1e-6)
    auto = fit_latents(decode_mlp, params, (scaled, ivar), np.zeros(P), options=opts, **kw)
    closed = fit_latents(decode_mlp, params, (scaled, ivar), np.zeros(P), options=opts, jacobian=jacobian, **kw)
    for fit in (auto, closed):
        assert fit.converged.all()
        assert_allclose(fit.z, z_true, dtype=np.float32, scale=200)
        assert_allclose(fit.coefficients, c_true, dtype=np.float32, scale=200)
    assert_allclose(closed.covariance, auto.covariance, scale=100)
    # the joint Laplace covariance over (z, c) at the truth: its z block is the profiled covariance
    i = 2
    joint = jax.jacfwd(lambda zc: decode_mlp(params, zc[:P]) * (basis @ zc[P:]))(
        jnp.asarray(np.concatenate([z_true[i], c_true[i]]), jnp.float32)
    )
    joint = np.asarray(joint, np.float64)
    cov = np.linalg.inv(joint.T @ (ivar[i][:, None] * joint))[:P, :P]
    assert_allclose(closed.covariance[i], cov, dtype=np.float32, scale=2000)
    with pytest.raises(ValueError, match="scale_basis"):
        fit_latents(decode_mlp, params, (scaled, ivar), np.zeros(P), scale_basis=basis[:5], progress=False)
    with pytest.raises(ValueError, match="scale_basis"):
        fit_latents(decode_linear, linear_problem()[0], (y, ivar), np.zeros(P), method="linear", scale_basis=basis)


@pytest.mark.parametrize(
    ("method", "slots"), [("dense_gauss_newton", None), ("dense_gauss_newton", 2), ("lbfgs", None)]
)
def test_context_gives_each_star_its_own_decoder_constants(method, slots):
    # decode((A, b), z) + c_n with a per-star offset c_n: each star's fit equals the fit of y_n - c_n without one
    params, y, ivar = linear_problem(seed=4)
    offsets = np.random.default_rng(5).normal(size=(N_STARS, N_OUT)).astype(np.float32)

    def decode_ctx(args, z):
        (a, b), c = args
        return jnp.tanh(b + a @ z) + c["offset"]

    def decode_plain(args, z):
        a, b = args
        return jnp.tanh(b + a @ z)

    y = np.tanh(y) * 0.5
    options = FitOptions(tol=1e-7, maxiter=200, slots=slots)
    with_ctx = fit_latents(decode_ctx, params, (y + offsets, ivar), np.zeros(P), method=method, options=options,
                           context={"offset": offsets}, progress=False)  # fmt: skip
    plain = fit_latents(decode_plain, params, (y, ivar), np.zeros(P), method=method, options=options, progress=False)
    assert_allclose(with_ctx.z, plain.z, atol=2e-4)
    assert_allclose(with_ctx.chi2, plain.chi2, rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="context: expected arrays with a leading axis"):
        fit_latents(decode_ctx, params, (y, ivar), np.zeros(P), method=method, context={"offset": offsets[:2]},
                    progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="context: the 'linear' method"):
        fit_latents(decode_ctx, params, (y, ivar), np.zeros(P), method="linear", context={"offset": offsets},
                    progress=False)  # fmt: skip
