r"""The Mendis flow: a stack of identical blocks, scanned, to a standard normal base.

Block ``k`` maps its input ``h`` to ``coupling(mixing(actnorm(h)))``; the flow
:math:`f = f_B \circ \dots \circ f_1` maps data ``x (D,)`` to the base variable
``z = f(x)`` and

.. math::

    \log p(x) = \log \mathcal N(f(x); 0, I) + \sum_k \log\lvert\det J_{f_k}\rvert .

Sampling runs the blocks backwards from ``z ~ N(0, I)``. The blocks' parameters
are stacked on a leading axis of length ``B`` and the blocks run under
``jax.lax.scan``: one block is traced whatever the depth.  The normalising
direction (training, likelihoods) is unrolled in the compiled program, so
that XLA fuses across blocks and keeps no stacked per-block gradient buffers
(faster at the default size, ``benchmarks/RESULTS.md``; the compile time
grows with the depth); the sampling direction stays rolled.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from jaxspec import io
from jaxspec.models.flows._bijectors import (
    ActNorm,
    ActNormParams,
    LUFixed,
    LUMixing,
    LUParams,
    actnorm_init,
    lu_factors,
    lu_init,
)
from jaxspec.models.flows._coupling import (
    CouplingParams,
    SplineSpec,
    coupling,
    coupling_graphdefs,
    init_coupling,
    initialiser,
)

__all__ = [
    "BlockParams",
    "FlowSpec",
    "base_log_prob",
    "from_base",
    "init_actnorm",
    "init_blocks",
    "init_whitening",
    "log_prob",
    "n_parameters",
    "parameter_shapes",
    "shrunk_covariance",
    "to_base",
]


class FlowSpec(NamedTuple):
    """The static shape of a flow.

    ``dim`` D, ``blocks`` B, conditioner ``hidden`` widths, spline ``bins`` K
    and half-width ``bound``, and ``channels``: the 1x1 mixing's group size
    (``None``: one ``D x D`` matrix, the paper's full mixing; ``c``: the same
    ``c x c`` matrix on each of ``D / c`` groups, GLOW's block-diagonal form).
    ``context``: the size of a vector every coupling's conditioners also see
    (a conditional flow ``p(x | c)``); 0 for an unconditional flow.
    """

    dim: int
    blocks: int = 12
    hidden: tuple = (1000, 1000, 1000)
    bins: int = 8
    bound: float = 3.0
    channels: int | None = None
    context: int = 0

    @property
    def spline(self) -> SplineSpec:
        return SplineSpec(self.dim, self.bins, self.bound, tuple(self.hidden), int(self.context))

    @property
    def mixed(self) -> int:
        return self.dim if self.channels is None else int(self.channels)


@io.register("flows.BlockParams", arrays={})
class BlockParams(NamedTuple):
    """Every block's trained parameters, stacked on a leading axis of length ``B``."""

    actnorm: ActNormParams
    mixing: LUParams
    coupling: CouplingParams


def _check(spec: FlowSpec) -> FlowSpec:
    if not isinstance(spec, FlowSpec):
        raise TypeError(f"spec: expected a FlowSpec, found {type(spec).__name__}")
    if spec.blocks < 1:
        raise ValueError(f"spec.blocks: expected an int >= 1, found {spec.blocks}")
    if spec.dim % spec.mixed:
        raise ValueError(f"spec.channels: expected a divisor of spec.dim = {spec.dim}, found {spec.channels}")
    return spec


def init_blocks(key: jax.Array, spec: FlowSpec, dtype=jnp.float32) -> tuple[BlockParams, LUFixed]:
    """Identity ActNorm (set from data by the fit), random-rotation mixing, identity couplings; ``(params, fixed)``.

    At initialisation the flow is therefore a rotation of the data and
    ``log_prob`` is the standard normal density.
    """
    spec = _check(spec)
    keys = jax.random.split(key, 2 * spec.blocks)
    mixing = [lu_init(k, spec.mixed, dtype) for k in keys[: spec.blocks]]
    couplings = [init_coupling(k, spec.spline, dtype) for k in keys[spec.blocks :]]
    stack = lambda trees: jax.tree.map(lambda *a: jnp.stack(a), *trees)  # noqa: E731
    zeros = jnp.zeros((spec.blocks, spec.dim), dtype)
    params = BlockParams(ActNormParams(zeros, zeros), stack([m[0] for m in mixing]), stack(couplings))
    return params, stack([m[1] for m in mixing])


def init_actnorm(params: BlockParams, fixed: LUFixed, spec: FlowSpec, x, context=None) -> BlockParams:
    """GLOW's data-dependent initialisation: each block's ActNorm whitens what reaches it from the batch ``x (n, D)``.

    The blocks are visited in order, each ActNorm set from the batch as the
    earlier blocks have transformed it (:func:`actnorm_init`); the other
    parameters are kept.  One compiled block serves every step.  ``context
    (n, spec.context)`` for a conditional flow.
    """
    spec = _check(spec)
    x = jnp.asarray(x, params.actnorm.loc.dtype)
    if x.ndim != 2 or x.shape[1] != spec.dim:
        raise ValueError(f"x: expected a batch of shape (n, {spec.dim}), found shape {x.shape}")
    forward = _block_forward(spec, np.dtype(params.actnorm.loc.dtype).name)
    pick = lambda tree, k: jax.tree.map(lambda a: a[k], tree)  # noqa: E731
    found = []
    for k in range(spec.blocks):
        block = pick(params, k)._replace(actnorm=actnorm_init(x))
        found.append(block.actnorm)
        x = forward(block, pick(fixed, k), x, context)
    return params._replace(actnorm=jax.tree.map(lambda *a: jnp.stack(a), *found))


def init_whitening(params: BlockParams, fixed: LUFixed, spec: FlowSpec, x) -> tuple[BlockParams, LUFixed]:
    r"""The first block's mixing set to the ZCA whitening of the data ``x (n, D)``; ``(params, fixed)``.

    Beyond the paper (which starts every mixing at a random rotation): with
    :math:`a` the output of the first ActNorm, in groups of ``c`` dimensions
    (pooled over groups when ``channels`` is set), and :math:`\hat C = V
    \Lambda V^T` the shrunk covariance of ``a``
    (:func:`shrunk_covariance`), the first mixing becomes

    .. math::

        W = V \Lambda^{-1/2} V^T

    in LU form (:func:`~jaxspec.models.flows._bijectors.lu_factors`).  With
    identity couplings the untrained flow is then the Gaussian of covariance
    :math:`\hat C` (in ActNorm's units) rather than a standard normal, so
    training starts from the best linear model of the data instead of
    learning a ``D x D`` covariance through Adam steps of size
    ``learning_rate``.  ZCA (not PCA) keeps each output aligned with one input
    dimension, so the couplings' split into halves keeps its meaning.  Call
    :func:`init_actnorm` after it: later blocks' ActNorms must see the
    whitened data.
    """
    spec = _check(spec)
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or x.shape[1] != spec.dim:
        raise ValueError(f"x: expected a batch of shape (n, {spec.dim}), found shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"x: expected at least 2 rows to estimate a covariance, found {x.shape[0]}")
    loc, log_scale = (np.asarray(a[0], np.float64) for a in params.actnorm)
    covariance, _ = shrunk_covariance(((x - loc) * np.exp(-log_scale)).reshape(-1, spec.mixed))
    eigenvalues, vectors = np.linalg.eigh(covariance)
    w = (vectors / np.sqrt(np.maximum(eigenvalues, 1e-12 * eigenvalues.max()))) @ vectors.T
    mixing, first = lu_factors(w, params.mixing.lower.dtype)
    put = lambda stacked, one: jax.tree.map(lambda s, o: s.at[0].set(o), stacked, one)  # noqa: E731
    return params._replace(mixing=put(params.mixing, mixing)), put(fixed, first)


def shrunk_covariance(a: np.ndarray, held_out: float = 0.2) -> tuple[np.ndarray, float]:
    r"""The covariance of the rows of ``a (n, p)`` shrunk towards a multiple of ``I``, and its intensity :math:`\rho`.

    :math:`\hat C = (1 - \rho) S + \rho \mu I` with :math:`S` the sample
    covariance (about the mean, divided by ``n``) and :math:`\mu = \operatorname{tr} S / p`.
    :math:`\rho` maximises the Gaussian likelihood of a held-out fraction
    ``held_out`` of the rows (every ``1 / held_out``-th) under the covariance
    of the others, over a grid of 25 values from :math:`10^{-6}` to 1: with
    ``n`` close to ``p`` the smallest sample eigenvalues are far too small and
    the unshrunk Gaussian overfits, with ``n >> p`` the chosen
    :math:`\rho` tends to 0.  Then :math:`\hat C` is formed from all rows.
    """
    a = np.asarray(a, np.float64)
    n, p = a.shape
    test = np.zeros(n, bool)
    test[:: max(round(1 / held_out), 2)] = True
    grid = np.r_[0.0, np.logspace(-6, 0, 24)]
    if not (test.sum() and (~test).sum() > 1):
        s = np.cov(a, rowvar=False, bias=True).reshape(p, p)
        return np.trace(s) / p * np.eye(p), 1.0  # too few rows to hold any out: full shrinkage
    fit, out = a[~test], a[test]
    # one pass of second moments for both parts (the data are ActNorm's output: centred, unit scale)
    moments = [(part.sum(axis=0), part.T @ part, part.shape[0]) for part in (fit, out)]
    mean = moments[0][0] / moments[0][2]
    eigenvalues, vectors = np.linalg.eigh(moments[0][1] / moments[0][2] - np.outer(mean, mean))
    eigenvalues = np.maximum(eigenvalues, 0.0)
    mu = eigenvalues.mean()
    z2 = np.square((out - mean) @ vectors)  # (n_out, p)
    nll = []
    for rho in grid:
        lam = (1 - rho) * eigenvalues + rho * mu
        ok = np.all(lam > 1e-12 * max(mu, 1e-300))
        nll.append(np.mean(z2 @ (1 / lam)) + np.sum(np.log(lam)) if ok else np.inf)
    rho = float(grid[int(np.argmin(nll))])
    total = (moments[0][0] + moments[1][0]) / n
    s = (moments[0][1] + moments[1][1]) / n - np.outer(total, total)
    return (1 - rho) * s + rho * np.trace(s) / p * np.eye(p), rho


@functools.lru_cache(maxsize=16)
def _block_forward(spec: FlowSpec, dtype: str):
    """``forward(block, fixed, h, context)`` of one block, compiled once per shape (:func:`init_actnorm`)."""
    graphdefs = coupling_graphdefs(spec.spline, dtype)
    return jax.jit(lambda block, fx, h, c: _block(block, fx, spec, graphdefs, c).forward(h))


def parameter_shapes(spec: FlowSpec, dtype=jnp.float32) -> BlockParams:
    """The shapes and dtypes of ``init_blocks(key, spec)[0]``, by ``jax.eval_shape``: nothing is allocated.

    For sizing a flow before building it: the paper's (12 blocks of width 1000
    at 2408 dimensions) is about 0.88e9 parameters.
    """
    spec = _check(spec)
    name = np.dtype(dtype).name
    one = jax.eval_shape(initialiser(spec.spline, name), jax.ShapeDtypeStruct((), jax.random.key(0).dtype))
    c, b = spec.mixed, spec.blocks
    sds = lambda *shape: jax.ShapeDtypeStruct((b, *shape), np.dtype(name))  # noqa: E731
    return BlockParams(
        ActNormParams(sds(spec.dim), sds(spec.dim)),
        LUParams(sds(c, c), sds(c, c), sds(c)),
        jax.tree.map(lambda a: sds(*a.shape), one),
    )


def n_parameters(spec: FlowSpec) -> dict[str, int]:
    """Trained parameters per part (``actnorm``, ``mixing``, ``coupling``) and ``total``, as stored.

    The LU factors are stored as full ``c x c`` matrices, as the reference code
    does (its "11.6M per block" at full mixing), though only their strict
    triangles are free.
    """
    shapes = parameter_shapes(spec)
    count = lambda tree: int(sum(np.prod(a.shape) for a in jax.tree.leaves(tree)))  # noqa: E731
    parts = {"actnorm": count(shapes.actnorm), "mixing": count(shapes.mixing), "coupling": count(shapes.coupling)}
    return {**parts, "total": sum(parts.values())}


def _block(block: BlockParams, fixed: LUFixed, spec: FlowSpec, graphdefs, context=None):
    """One block as a bijector, data side first: ``coupling o mixing o actnorm``."""
    return distrax.Chain(
        [
            coupling(block.coupling, spec.spline, graphdefs, context),
            LUMixing(block.mixing, fixed),
            ActNorm(block.actnorm),
        ]
    )


def to_base(params: BlockParams, fixed: LUFixed, spec: FlowSpec, x, context=None):
    """``(z, log|det df/dx|)`` of data ``x (..., D)``: the normalising direction (``context (..., C)`` if any)."""
    graphdefs = coupling_graphdefs(spec.spline, params.actnorm.loc.dtype)

    def step(h, block):
        h, ld = _block(block[0], block[1], spec, graphdefs, context).forward_and_log_det(h)
        return h, ld

    z, lds = jax.lax.scan(step, x, (params, fixed), unroll=True)
    return z, jnp.sum(lds, axis=0)


def from_base(params: BlockParams, fixed: LUFixed, spec: FlowSpec, z, context=None):
    """``(x, log|det df^{-1}/dz|)`` of base variables ``z (..., D)``: the sampling direction."""
    graphdefs = coupling_graphdefs(spec.spline, params.actnorm.loc.dtype)

    def step(h, block):
        h, ld = _block(block[0], block[1], spec, graphdefs, context).inverse_and_log_det(h)
        return h, ld

    x, lds = jax.lax.scan(step, z, (params, fixed), reverse=True)
    return x, jnp.sum(lds, axis=0)


def base_log_prob(z):
    """:math:`\\log \\mathcal N(z; 0, I)` over the last axis."""
    d = z.shape[-1]
    return -0.5 * jnp.sum(jnp.square(z), axis=-1) - 0.5 * d * np.log(2 * np.pi)


def log_prob(params: BlockParams, fixed: LUFixed, spec: FlowSpec, x, context=None):
    """:math:`\\log p(x)` of data ``x (..., D)`` (nats; module docstring), or :math:`\\log p(x | c)`."""
    z, ld = to_base(params, fixed, spec, x, context)
    return base_log_prob(z) + ld
