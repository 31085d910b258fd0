r"""The neural-spline coupling of a Mendis block: both halves transformed in turn.

With the event ``x (D,)`` split at ``d = D // 2`` into ``a = x[:d]`` and
``b = x[d:]``, one coupling layer is

.. math::

    b' = g_{\phi_1(a)}(b), \qquad a' = g_{\phi_2(b')}(a),

each :math:`g` a monotonic rational-quadratic spline per dimension (Durkan et
al. 2019; ``distrax.RationalQuadraticSpline``) with ``K`` bins on
``[-B, B]`` and identity (linear, slope 1) tails outside, and each
:math:`\phi` an MLP conditioner with three hidden layers of width ``h`` and
LeakyReLU(0.2) (the reference code's layout). A conditioner emits
``3K - 1`` numbers per transformed dimension, as the reference does: ``K``
bin widths, ``K`` heights and the ``K - 1`` interior knot slopes (the two
boundary slopes are 1). The log-determinant is the sum of the two splines'.

Beyond the reference: the conditioners' output layers start at zero, so a new
coupling is the identity (zero raw parameters give equal bins and unit
slopes), which keeps a deep flow at 2408 dimensions well behaved at its first
step.
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxspec import io

__all__ = ["CouplingParams", "Spline", "SplineSpec", "coupling", "coupling_graphdefs", "init_coupling"]

#: LeakyReLU slope of the conditioners (the reference code's).
NEGATIVE_SLOPE = 0.2


class SplineSpec(NamedTuple):
    """The static shape of a coupling: event size ``dim``, ``bins`` K, ``bound`` B, conditioner ``hidden`` widths.

    ``context``: the size of a context vector ``c`` every conditioner also
    sees (``phi(a, c)``); 0 (the default) for an unconditional coupling.
    """

    dim: int
    bins: int = 8
    bound: float = 3.0
    hidden: tuple = (1000, 1000, 1000)
    context: int = 0

    @property
    def split(self) -> int:
        return self.dim // 2


@io.register(
    "flows.CouplingParams",
    arrays={"first": io.Array((1, 2, 3), nested=True), "second": io.Array((1, 2, 3), nested=True)},
)
class CouplingParams(NamedTuple):
    """The two conditioners' weights (NNX pure dicts): ``first`` sees ``x[:d]``, ``second`` the new ``x[d:]``."""

    first: dict
    second: dict


class _Conditioner(nnx.Module):
    """An MLP with LeakyReLU(0.2) hidden layers and a linear read-out (zero at initialisation)."""

    def __init__(self, sizes: tuple, *, dtype: str, rngs: nnx.Rngs):
        zeros = nnx.initializers.zeros_init()
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            last = i == len(sizes) - 2
            layer = nnx.Linear(a, b, param_dtype=dtype, rngs=rngs, **({"kernel_init": zeros} if last else {}))
            setattr(self, f"layer_{i}", layer)
        self.n_layers = len(sizes) - 1

    def __call__(self, x):
        for i in range(self.n_layers):
            x = getattr(self, f"layer_{i}")(x)
            if i < self.n_layers - 1:
                x = jax.nn.leaky_relu(x, NEGATIVE_SLOPE)
        return x


def _sizes(spec: SplineSpec) -> tuple[tuple, tuple]:
    d, rest, per, c = spec.split, spec.dim - spec.split, 3 * spec.bins - 1, spec.context
    return (d + c, *spec.hidden, rest * per), (rest + c, *spec.hidden, d * per)


@functools.lru_cache(maxsize=64)
def _graphdefs(spec: SplineSpec, dtype: str):
    build = lambda s: nnx.split(nnx.eval_shape(lambda: _Conditioner(s, dtype=dtype, rngs=nnx.Rngs(0))))[0]  # noqa: E731
    return tuple(build(s) for s in _sizes(spec))


def _check_spec(spec: SplineSpec) -> SplineSpec:
    if not isinstance(spec, SplineSpec):
        raise TypeError(f"spec: expected a SplineSpec, found {type(spec).__name__}")
    if spec.dim < 2:
        raise ValueError(f"spec.dim: expected at least 2 dimensions to split, found {spec.dim}")
    if spec.bins < 1:
        raise ValueError(f"spec.bins: expected an int >= 1, found {spec.bins}")
    if not spec.bound > 0:
        raise ValueError(f"spec.bound: expected a positive half-width, found {spec.bound}")
    if spec.context < 0:
        raise ValueError(f"spec.context: expected an int >= 0, found {spec.context}")
    return spec._replace(hidden=tuple(int(h) for h in spec.hidden), bound=float(spec.bound), context=int(spec.context))


def coupling_graphdefs(spec: SplineSpec, dtype) -> tuple:
    """The NNX graph definitions of the two conditioners (shape-only construction, cached)."""
    return _graphdefs(_check_spec(spec), np.dtype(dtype).name)


def init_coupling(key: jax.Array, spec: SplineSpec, dtype=jnp.float32) -> CouplingParams:
    """Initial conditioner weights (LeCun-normal hidden kernels, zero biases, zero read-out: the identity)."""
    return initialiser(_check_spec(spec), np.dtype(dtype).name)(key)


@functools.lru_cache(maxsize=64)
def initialiser(spec: SplineSpec, dtype: str):
    """``init(key) -> CouplingParams``, compiled once per shape (NNX builds the layers inside the trace)."""

    def init(key):
        nets = []
        for i, sizes in enumerate(_sizes(spec)):
            net = _Conditioner(sizes, dtype=dtype, rngs=nnx.Rngs(params=jax.random.fold_in(key, i)))
            nets.append(nnx.to_pure_dict(nnx.split(net)[1]))
        return CouplingParams(*nets)

    return jax.jit(init)


class Spline(distrax.RationalQuadraticSpline):
    """``distrax.RationalQuadraticSpline`` with a forward pass over whole arrays (same knots, same formula).

    distrax evaluates the forward map one scalar at a time (``jnp.vectorize``
    of a per-scalar function that masks every bin); here the bin of every
    entry is found at once and its knots picked by a one-hot sum over the
    ``K`` bins, which XLA fuses: the forward map and its gradient cost less
    at the default flow's size (``benchmarks/RESULTS.md``), equal to
    distrax's to float32 rounding (``tests/test_flows_layers.py``).  The
    parametrisation (bin widths and heights by softmax with a minimum size,
    knot slopes by a shifted softplus), the linear tails and the inverse are
    distrax's own.
    """

    def forward_and_log_det(self, x):
        x_pos, y_pos, slopes = self.x_pos, self.y_pos, self.knot_slopes
        below, above = x <= x_pos[..., 0], x >= x_pos[..., -1]
        k = jnp.sum(x[..., None] >= x_pos[..., 1:-1], axis=-1)  # the bin of each entry, 0 .. K - 1
        one_hot = (k[..., None] == jnp.arange(x_pos.shape[-1] - 1)).astype(x.dtype)

        def ends(a):
            return jnp.sum(one_hot * a[..., :-1], axis=-1), jnp.sum(one_hot * a[..., 1:], axis=-1)

        (x0, x1), (y0, y1), (d0, d1) = ends(x_pos), ends(y_pos), ends(slopes)
        height = y1 - y0
        slope = height / (x1 - x0)
        z = jnp.clip((x - x0) / (x1 - x0), 0.0, 1.0)
        z1mz = z * (1.0 - z)
        denominator = slope + (d0 + d1 - 2.0 * slope) * z1mz
        y = y0 + height * (slope * z * z + d0 * z1mz) / denominator
        log_det = (
            2.0 * jnp.log(slope)
            + jnp.log(d1 * z * z + 2.0 * slope * z1mz + d0 * (1.0 - z) ** 2)
            - 2.0 * jnp.log(denominator)
        )
        y = jnp.where(below, (x - x_pos[..., 0]) * slopes[..., 0] + y_pos[..., 0], y)
        y = jnp.where(above, (x - x_pos[..., -1]) * slopes[..., -1] + y_pos[..., -1], y)
        log_det = jnp.where(below, jnp.log(slopes[..., 0]), log_det)
        log_det = jnp.where(above, jnp.log(slopes[..., -1]), log_det)
        return y, log_det


def _spline(raw, spec: SplineSpec) -> Spline:
    """A spline per dimension from the conditioner's ``(..., n * (3K - 1))`` output (unit boundary slopes)."""
    k = spec.bins
    raw = raw.reshape(*raw.shape[:-1], -1, 3 * k - 1)
    edge = jnp.zeros((*raw.shape[:-1], 1), raw.dtype)  # overwritten: boundary_slopes="identity"
    params = jnp.concatenate([raw[..., : 2 * k], edge, raw[..., 2 * k :], edge], axis=-1)
    return Spline(params, range_min=-spec.bound, range_max=spec.bound, boundary_slopes="identity")


def coupling(
    params: CouplingParams, spec: SplineSpec, graphdefs: tuple | None = None, context=None
) -> distrax.Bijector:
    """The coupling layer of ``params`` as a ``distrax.Chain`` of two ``SplitCoupling`` (events ``(D,)``).

    ``context (..., spec.context)``: what the conditioners see besides the
    other half, with the events' batch axes (required when ``spec.context > 0``).
    """
    spec = _check_spec(spec)
    if (context is None) != (spec.context == 0):
        raise ValueError(f"context: expected an array (..., {spec.context}) exactly when spec.context > 0")
    if graphdefs is None:
        graphdefs = coupling_graphdefs(spec, jax.tree_util.tree_leaves(params)[0].dtype)
    first = functools.partial(_conditioned, graphdefs[0], params.first, context)
    second = functools.partial(_conditioned, graphdefs[1], params.second, context)
    d = spec.split
    make = functools.partial(_spline, spec=spec)
    b_given_a = distrax.SplitCoupling(d, 1, first, make, swap=False)
    a_given_b = distrax.SplitCoupling(d, 1, second, make, swap=True)
    return distrax.Chain([a_given_b, b_given_a])  # distrax applies the last first


def _conditioned(graphdef, state, context, x):
    if context is not None:
        x = jnp.concatenate([x, jnp.broadcast_to(context, (*x.shape[:-1], context.shape[-1]))], axis=-1)
    return nnx.merge(graphdef, state)(x)
