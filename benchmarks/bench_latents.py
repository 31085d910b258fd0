r"""``fit_latents`` throughput, and this machine's own float32 matmul FLOP/s to compare against.

Benchmarks (10,000 stars each, float32):

``latents_linear``
    A linear decoder :math:`f(z) = b + A z`, 7514 pixels (APOGEE grid),
    ``P = 48``, ``method="linear"``.  FLOPs: the Gram matrices
    :math:`J^\top W J` are one ``(n, n_pix) @ (n_pix, P(P+1)/2)`` matmul,
    :math:`2 n\, n_\mathrm{pix} P(P+1)/2`; the right-hand sides and chi2 add
    :math:`\approx 6 n\, n_\mathrm{pix} P`; Cholesky and solves
    :math:`O(n P^3)` are negligible.  See :func:`flops_linear`.
``latents_payne``
    The Payne emulator (Ting et al. 2019) from
    ``../shared/data/payne/NN_normalized_spectra.npz``, 7214 pixels, 5
    labels, one hidden layer of 5 sigmoid units per pixel:
    :math:`f_p(y) = \sum_k w^{(1)}_{pk}\,\sigma(\sum_j w^{(0)}_{pkj} s_j + b^{(0)}_{pk}) + b^{(1)}_p`,
    :math:`s = (y - x_\mathrm{min})/(x_\mathrm{max} - x_\mathrm{min}) - 1/2`.
    Spectra are generated from the emulator itself at random labels with
    1% Gaussian noise and fitted with ``method="dense_gauss_newton"`` (at most
    10 iterations, step tolerance 0.01 in K/dex, chunks of 32 stars so the
    Jacobians stay in cache) from the middle of the label box; the decoder's
    JVP is its analytic Jacobian.  FLOPs are counted per decoder evaluation
    (forward :math:`\approx n_\mathrm{pix} H (2L + 6)`, with ``H = L = 5``)
    times the evaluations per iteration; see :func:`flops_payne`.  On a
    2-core CPU this fit is memory-bandwidth bound (writing the
    ``(stars, 5, n_pix)`` Jacobians), not FLOP bound.
``matmul_flops``
    ``jnp.dot`` of two 2048 x 2048 float32 matrices (:math:`2 \cdot 2048^3`
    FLOPs), the machine's attainable matmul rate.

Run ``python benchmarks/bench_latents.py`` to print the FLOP counts.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from jaxspec.optim.latents import FitOptions, GaussianPrior, fit_latents

N_STARS = 10_000
PAYNE_FILE = Path(__file__).resolve().parents[2] / "shared" / "data" / "payne" / "NN_normalized_spectra.npz"


def flops_linear(n_stars: int = N_STARS, n_pix: int = 7514, p: int = 48) -> float:
    """FLOPs of ``fit_latents(method="linear")``: Gram matmul, right-hand sides, chi2, Cholesky."""
    gram = 2.0 * n_stars * n_pix * p * (p + 1) / 2
    rhs_chi2 = 6.0 * n_stars * n_pix * p
    chol = n_stars * (p**3 / 3 + 4 * p**2)
    return gram + rhs_chi2 + chol


def flops_payne(n_iter: float, n_stars: int = N_STARS, n_pix: int = 7214, n_hidden: int = 5, n_labels: int = 5):
    """FLOPs of the dense Gauss-Newton fit of the Payne emulator at ``n_iter`` iterations per star.

    Per iteration one linearisation: forward pass ``n_pix H (2 L + 6)``
    (pre-activations, sigmoid ~4, output layer 2), analytic Jacobian
    ``n_pix H (3 + 2 L)``, whitened residual ``3 n_pix``, ``J^T J``
    ``2 n_pix L^2`` and ``J^T r`` ``2 n_pix L``; the 5x5 Cholesky is negligible.
    """
    forward = n_pix * n_hidden * (2 * n_labels + 6)
    jac = n_pix * n_hidden * (3 + 2 * n_labels)
    normal = 3 * n_pix + 2 * n_pix * n_labels**2 + 2 * n_pix * n_labels
    return n_stars * n_iter * (forward + jac + normal)


def _linear():
    rng = np.random.default_rng(0)
    n_pix, p = 7514, 48
    a = rng.normal(size=(n_pix, p)).astype(np.float32) / np.sqrt(p)
    b = np.ones(n_pix, np.float32)
    params = (jnp.asarray(a), jnp.asarray(b))
    z_true = rng.normal(size=(N_STARS, p)).astype(np.float32)
    ivar = np.full((N_STARS, n_pix), 1e4, np.float32)
    ivar[rng.random(ivar.shape) < 0.05] = 0.0
    y = (z_true @ a.T + b + rng.normal(size=(N_STARS, n_pix)) * 0.01).astype(np.float32)
    prior = GaussianPrior.l2(1e-3, p)
    options = FitOptions(chunk_size=2500)

    def run():
        return fit_latents(
            _decode_linear,
            params,
            (y, ivar),
            np.zeros(p),
            prior=prior,
            method="linear",
            options=options,
            progress=False,
        )

    return run


def _decode_linear(params, z):
    a, b = params
    return b + a @ z


def load_payne(path=PAYNE_FILE):
    """The Payne emulator's weights, pixels last: ``w0 (H, L, n_pix)``, ``w1 (H, n_pix)``, ``b0 (H, n_pix)``, ..."""
    d = np.load(path)
    w0 = np.transpose(d["w_array_0"], (1, 2, 0))
    w1, b0 = d["w_array_1"].T, d["b_array_0"].T
    return tuple(jnp.asarray(x, jnp.float32) for x in (w0, w1, b0, d["b_array_1"], d["x_min"], d["x_max"]))


def _payne_terms(params, labels):
    """Spectrum ``(n_pix,)`` and its transposed Jacobian ``(L, n_pix)`` for one star.

    The 5x5 hidden weights are looped over in Python so every operation is
    elementwise over pixels, which XLA on CPU runs much faster than tiny
    contractions (and than ``jax.jacfwd`` of the einsum form).
    """
    w0, w1, b0, b1, x_min, x_max = params
    n_hidden, n_labels = w0.shape[:2]
    scale = 1.0 / (x_max - x_min)
    s = (labels - x_min) * scale - 0.5
    hidden = [jax.nn.sigmoid(b0[k] + sum(w0[k, j] * s[j] for j in range(n_labels))) for k in range(n_hidden)]
    flux = b1 + sum(w1[k] * hidden[k] for k in range(n_hidden))
    g = [w1[k] * hidden[k] * (1.0 - hidden[k]) for k in range(n_hidden)]
    jac = [scale[j] * sum(g[k] * w0[k, j] for k in range(n_hidden)) for j in range(n_labels)]
    return flux, jnp.stack(jac)


@jax.custom_jvp
def decode_payne(params, labels):
    """Payne emulator: labels ``(5,)`` -> normalised spectrum ``(7214,)`` (analytic Jacobian as its JVP)."""
    return _payne_terms(params, labels)[0]


@partial(decode_payne.defjvp, symbolic_zeros=True)
def _decode_payne_jvp(primals, tangents):
    params, labels = primals
    d_params, d_labels = tangents
    flux, jac_t = _payne_terms(params, labels)
    d_flux = instantiate(d_labels) @ jac_t
    if not all(isinstance(d, SymbolicZero) for d in jax.tree_util.tree_leaves(d_params, is_leaf=_is_zero)):
        # derivatives in the weights (rarely needed here) through autodiff of the plain forward pass
        d_params = jax.tree_util.tree_map(instantiate, d_params, is_leaf=_is_zero)
        d_flux = d_flux + jax.jvp(lambda p: _payne_terms(p, labels)[0], (params,), (d_params,))[1]
    return flux, d_flux


def _is_zero(x):
    return isinstance(x, SymbolicZero)


def instantiate(x):
    return jnp.zeros(x.shape, x.dtype) if isinstance(x, SymbolicZero) else x


def _payne(method: str = "dense_gauss_newton", maxiter: int = 10, chunk_size: int = 32):
    def factory():
        params = load_payne()
        x_min, x_max = np.asarray(params[4]), np.asarray(params[5])
        rng = np.random.default_rng(1)
        s_true = rng.uniform(-0.4, 0.4, size=(N_STARS, x_min.size))
        labels_true = ((s_true + 0.5) * (x_max - x_min) + x_min).astype(np.float32)
        flux = np.asarray(jax.jit(jax.vmap(decode_payne, in_axes=(None, 0)))(params, labels_true))
        sigma = 0.01
        y = (flux + sigma * rng.normal(size=flux.shape)).astype(np.float32)
        ivar = np.full(y.shape, 1 / sigma**2, np.float32)
        z0 = 0.5 * (x_min + x_max)
        options = FitOptions(tol=1e-2, maxiter=maxiter, chunk_size=chunk_size)  # step norm in K and dex

        def run():
            return fit_latents(decode_payne, params, (y, ivar), z0, method=method, options=options, progress=False)

        return run

    return factory


def _matmul():
    key_a, key_b = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (2048, 2048), jnp.float32)
    b = jax.random.normal(key_b, (2048, 2048), jnp.float32)
    dot = jax.jit(jnp.dot)
    return lambda: dot(a, b)


BENCHMARKS = {
    "latents_linear": _linear,
    "latents_payne": _payne(),
    "matmul_flops": _matmul,
}

MATMUL_FLOPS = 2.0 * 2048**3

if __name__ == "__main__":
    print(f"matmul_flops: {MATMUL_FLOPS:.3e} FLOPs per call")
    print(f"latents_linear: {flops_linear():.3e} FLOPs per call")
    for n_iter in (5, 10, 20):
        print(f"latents_payne: {flops_payne(n_iter):.3e} FLOPs per call at {n_iter} Gauss-Newton iterations per star")
