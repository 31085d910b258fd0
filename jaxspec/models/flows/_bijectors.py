r"""The two GLOW layers of a Mendis block as ``distrax.Bijector`` subclasses.

Both act on events of shape ``(D,)`` (``event_ndims_in = 1``) with any leading
batch axes, and both are volume-changing by a constant (their Jacobian does not
depend on the input), so their log-determinants are per event and broadcast
over the batch.

**ActNorm** (Kingma & Dhariwal 2018): a per-dimension affine map

.. math::

    y = (x - \mu) \odot e^{-\ell}, \qquad
    \log\lvert\det \partial y / \partial x\rvert = -\textstyle\sum_d \ell_d,

with :math:`\mu` and :math:`\ell` initialised from the first batch
(:func:`actnorm_init`: zero mean and unit variance out) and trained after.

**Invertible 1x1 mixing in LU form**: :math:`y = W x` with

.. math::

    W = P\,L\,(U + \operatorname{diag}(\sigma \odot e^{\lambda})),

``P`` a fixed permutation, ``L`` unit lower triangular, ``U`` strictly upper
triangular, :math:`\sigma` fixed signs and :math:`\lambda` learnt log-magnitudes:
:math:`\log\lvert\det W\rvert = \sum \lambda`. The inverse is two triangular
solves, never a matrix inverse (the reference code inverts the 2408 x 2408
matrix on every call); the forward map is ``L (U x)``, two matrix-vector
products, without forming ``W`` (an ``O(c^3)`` product). ``channels = c`` mixes only within consecutive groups of
``c`` dimensions, the same ``c x c`` matrix for every group (GLOW's 1x1
convolution over channels at every pixel): the log-determinant is then
``D / c`` times that of the small matrix.
"""

from __future__ import annotations

from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from jaxspec import io

__all__ = [
    "ActNorm",
    "ActNormParams",
    "LUFixed",
    "LUMixing",
    "LUParams",
    "actnorm_init",
    "lu_factors",
    "lu_init",
    "lu_matrix",
]


@io.register("flows.ActNormParams", arrays={"loc": io.Array((1, 2)), "log_scale": io.Array((1, 2))})
class ActNormParams(NamedTuple):
    """``loc (D,)`` and ``log_scale (D,)`` of :class:`ActNorm`."""

    loc: jax.Array
    log_scale: jax.Array


@io.register(
    "flows.LUParams",
    arrays={"lower": io.Array((2, 3)), "upper": io.Array((2, 3)), "log_scale": io.Array((1, 2))},
)
class LUParams(NamedTuple):
    r"""The learnt factors of :class:`LUMixing`, for a ``c x c`` matrix (``c = D`` for full mixing).

    ``lower (c, c)`` and ``upper (c, c)``: only their strict lower / upper
    triangles are used; ``log_scale (c,)``: :math:`\lambda`.
    """

    lower: jax.Array
    upper: jax.Array
    log_scale: jax.Array


@io.register("flows.LUFixed", arrays={"sign": io.Array((1, 2)), "perm": io.Array((1, 2), kind="iu")})
class LUFixed(NamedTuple):
    """What :class:`LUMixing` fixes at initialisation and never trains: ``sign (c,)`` and ``perm (c,)`` (int)."""

    sign: jax.Array
    perm: jax.Array


def actnorm_init(x: jax.Array, eps: float = 1e-6) -> ActNormParams:
    """ActNorm parameters that map the batch ``x (n, D)`` to zero mean and unit variance per dimension.

    A dimension with (near) zero spread gets scale 1 (``log_scale`` from
    ``max(std, eps)``), so a constant pixel never blows up.
    """
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x: expected a batch of shape (n, D), found shape {x.shape}")
    std = jnp.std(x, axis=0)
    return ActNormParams(jnp.mean(x, axis=0), jnp.log(jnp.where(std > eps, std, 1.0)))


def lu_init(key: jax.Array, channels: int, dtype=jnp.float32) -> tuple[LUParams, LUFixed]:
    """LU factors of a random rotation (GLOW's initialisation): ``W`` orthogonal, ``log|det W| = 0``.

    The QR of a Gaussian matrix gives ``W``; :func:`lu_factors` its ``P``, ``L`` and ``U``.
    """
    if isinstance(channels, bool) or not isinstance(channels, int | np.integer) or channels < 1:
        raise ValueError(f"channels: expected an int >= 1, found {channels!r}")
    w = np.linalg.qr(np.asarray(jax.random.normal(key, (channels, channels)), np.float64))[0]
    return lu_factors(w, dtype)


def lu_factors(w, dtype=jnp.float32) -> tuple[LUParams, LUFixed]:
    """The :class:`LUMixing` parameters of an invertible ``c x c`` matrix ``w``: ``lu_matrix(*lu_factors(w)) = w``.

    An LU with partial pivoting (LAPACK through scipy, float64) gives ``P``,
    ``L`` and ``U``; the signs of ``U``'s diagonal are fixed, its
    log-magnitudes become ``log_scale``.
    """
    w = np.asarray(w, np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or not np.all(np.isfinite(w)):
        raise ValueError(f"w: expected a finite square matrix, found shape {w.shape}")
    perm, lower, upper = _lu(w)
    d = np.diagonal(upper)
    if np.any(d == 0):
        raise ValueError("w: expected an invertible matrix, found a singular one")
    params = LUParams(
        jnp.asarray(np.tril(lower, -1), dtype),
        jnp.asarray(np.triu(upper, 1), dtype),
        jnp.asarray(np.log(np.abs(d)), dtype),
    )
    return params, LUFixed(jnp.asarray(np.sign(d), dtype), jnp.asarray(perm, jnp.int32))


def _lu(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``perm, L, U`` with ``w[perm] = L U`` (rows of ``w`` reordered; partial pivoting, float64)."""
    rows, lower, upper = scipy.linalg.lu(np.asarray(w, np.float64), p_indices=True)  # w = lower[rows] @ upper
    return np.argsort(rows), lower, upper


def _factors(params: LUParams, fixed: LUFixed) -> tuple[jax.Array, jax.Array]:
    """``L`` (unit lower) and ``U + diag(sign * exp(log_scale))`` (upper)."""
    c = params.log_scale.shape[0]
    lower = jnp.tril(params.lower, -1) + jnp.eye(c, dtype=params.lower.dtype)
    return lower, jnp.triu(params.upper, 1) + jnp.diag(fixed.sign * jnp.exp(params.log_scale))


def lu_matrix(params: LUParams, fixed: LUFixed) -> jax.Array:
    """The ``c x c`` matrix ``W``: ``W[perm] = L (U + diag(sign * exp(log_scale)))``."""
    lower, upper = _factors(params, fixed)
    lu = lower @ upper
    return jnp.zeros_like(lu).at[fixed.perm].set(lu)


class ActNorm(distrax.Bijector):
    """:math:`y = (x - \\mu) e^{-\\ell}` per dimension (module docstring); events ``(D,)``."""

    def __init__(self, params: ActNormParams):
        super().__init__(event_ndims_in=1, is_constant_jacobian=True)
        self.params = params

    def forward_and_log_det(self, x):
        loc, log_scale = self.params
        y = (x - loc) * jnp.exp(-log_scale)
        return y, jnp.broadcast_to(-jnp.sum(log_scale), x.shape[:-1])

    def inverse_and_log_det(self, y):
        loc, log_scale = self.params
        x = y * jnp.exp(log_scale) + loc
        return x, jnp.broadcast_to(jnp.sum(log_scale), y.shape[:-1])


class LUMixing(distrax.Bijector):
    """:math:`y = W x` with ``W`` in LU form (module docstring), full or per group of ``c`` dimensions.

    Events ``(D,)``; ``D`` must be a multiple of ``c`` (the factors' size).
    """

    def __init__(self, params: LUParams, fixed: LUFixed):
        super().__init__(event_ndims_in=1, is_constant_jacobian=True)
        self.params = params
        self.fixed = fixed

    def _groups(self, x):
        c = self.params.log_scale.shape[0]
        if x.shape[-1] % c:
            raise ValueError(f"x: expected a last axis that is a multiple of the {c} mixed channels, found {x.shape}")
        return x.reshape(*x.shape[:-1], x.shape[-1] // c, c), x.shape[-1] // c

    def forward_and_log_det(self, x):
        g, n_groups = self._groups(x)
        lower, upper = _factors(self.params, self.fixed)
        # L (U x) then P: two matrix-vector products per event, never the O(c^3) product L U
        lu_x = jnp.einsum("ij,...j->...i", lower, jnp.einsum("ij,...j->...i", upper, g))
        y = lu_x[..., jnp.argsort(self.fixed.perm)].reshape(x.shape)  # y[perm] = lu_x, by a gather
        return y, jnp.broadcast_to(n_groups * jnp.sum(self.params.log_scale), x.shape[:-1])

    def inverse_and_log_det(self, y):
        g, n_groups = self._groups(y)
        c = self.params.log_scale.shape[0]
        lower, upper = _factors(self.params, self.fixed)
        rows = jnp.moveaxis(g[..., self.fixed.perm], -1, 0).reshape(c, -1)  # W x = y  <=>  L U x = y[perm]
        z = jax.scipy.linalg.solve_triangular(lower, rows, lower=True, unit_diagonal=True)
        x = jax.scipy.linalg.solve_triangular(upper, z, lower=False)
        x = jnp.moveaxis(x.reshape(c, *g.shape[:-1]), 0, -1).reshape(y.shape)
        return x, jnp.broadcast_to(-n_groups * jnp.sum(self.params.log_scale), y.shape[:-1])
