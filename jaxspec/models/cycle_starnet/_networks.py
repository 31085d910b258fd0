r"""Cycle-StarNet's ten networks (Flax NNX, split at once into graph definitions and pure-dict weights).

Every function here is written for ONE spectrum: a normalised flux vector
``(n,)`` is the single-channel signal ``(n, 1)`` of unpadded 1-D convolutions
(length axis first, channels last).  Latents are ``(n_z, channels)``:
:math:`z_{sh}` ``(24, 25)`` and :math:`z_{sp}` ``(24, 4)`` for the paper's
7167 pixels (the paper writes them channels first, 25 x 24 and 4 x 24).

.. math::

    z_{sh} = E_{sh}(E_{synth}(x)),\quad (z_{sh}, z_{sp}) = (E_{sh}, E_{sp})(E_{obs}(x)),\quad
    \hat x_{synth} = D_{synth}(D_{sh}(z_{sh})),\quad
    \hat x_{obs} = D_{obs}\bigl([D_{sh}(z_{sh}), D_{sp}(z_{sp})]\bigr),

and the critics :math:`C(x, z) = \sigma\bigl(w^\top [\mathrm{vec}\,C_x(x), \mathrm{vec}\,C_z(z)] + b\bigr)`
(this module returns the logit; the losses use it directly, which is the
same binary cross-entropy as the authors' sigmoid followed by ``BCELoss``
without its clipping of the logarithm at -100).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxspec import io
from jaxspec.data.containers import default_float
from jaxspec.models.cycle_starnet._config import Config, network_lengths

__all__ = [
    "Critics",
    "Generator",
    "Params",
    "critic_obs",
    "critic_synth",
    "decode_obs",
    "decode_synth",
    "encode_obs",
    "encode_synth",
    "graphdefs",
    "init_params",
    "instance_norm",
    "param_shapes",
]

#: ``eps`` of the non-affine instance norm (``torch.nn.InstanceNorm1d``'s default).
NORM_EPS = 1e-5
#: Every convolution's bias starts at this (the authors' ``init_weights``).
BIAS_INIT = 0.01

_NETS = io.Array((1, 2, 3), nested=True, optional=True)


@io.register("cycle_starnet.Generator", arrays=dict.fromkeys(
    ("e_synth", "e_obs", "e_sh", "e_sp", "d_sh", "d_sp", "d_synth", "d_obs"), _NETS))  # fmt: skip
class Generator(NamedTuple):
    """The autoencoders' weights, each the NNX state of one network as a nested dict (``e_sp``, ``d_sp``: None
    without a split latent space)."""

    e_synth: dict
    e_obs: dict
    e_sh: dict
    e_sp: dict | None
    d_sh: dict
    d_sp: dict | None
    d_synth: dict
    d_obs: dict


@io.register("cycle_starnet.Critics", arrays={"synth": _NETS, "obs": _NETS})
class Critics(NamedTuple):
    """The two critics' weights (nested dicts)."""

    synth: dict
    obs: dict


@io.register("cycle_starnet.Params", arrays={})
class Params(NamedTuple):
    """All weights: the ``generator`` (encoders and decoders) and the ``critic`` (trained apart)."""

    generator: Generator
    critic: Critics


def instance_norm(z):
    r"""Non-affine instance norm of one signal ``(n, c)``: each channel to mean 0 and variance 1 over ``n``,
    :math:`(z - \bar z) / \sqrt{\mathrm{var}(z) + 10^{-5}}` (biased variance, as PyTorch)."""
    mean = jnp.mean(z, axis=0)
    var = jnp.mean(jnp.square(z - mean), axis=0)
    return (z - mean) * jax.lax.rsqrt(var + jnp.asarray(NORM_EPS, z.dtype))


class _ConvTranspose(nnx.Module):
    r"""An unpadded 1-D transposed convolution of one signal ``(n, c_in) -> ((n - 1) s + k, c_out)``.

    Exactly ``flax.nnx.ConvTranspose(..., padding="VALID")`` (same ``kernel`` ``(k, c_in, c_out)`` and
    ``bias``), computed as one matrix product and ``k`` strided additions,
    :math:`y_{t s + j} \mathrel{+}= x_t K_{k-1-j}`: on a CPU, XLA's transposed convolution of these
    sizes is much slower (benchmarks/RESULTS.md, Cycle-StarNet).
    """

    def __init__(self, c_in, c_out, kernel, stride, *, dtype, rngs):
        init = nnx.initializers.xavier_uniform()
        self.kernel = nnx.Param(init(rngs.params(), (kernel, c_in, c_out), dtype))
        self.bias = nnx.Param(jnp.full((c_out,), BIAS_INIT, dtype))
        self.stride = int(stride)

    def __call__(self, x):
        kernel = self.kernel[...]
        k, s, n = kernel.shape[0], self.stride, x.shape[0]
        z = jnp.einsum("tc,jco->jto", x, kernel[::-1])
        y = jnp.zeros(((n - 1) * s + k, kernel.shape[2]), z.dtype)
        for j in range(k):
            y = y.at[j : j + s * (n - 1) + 1 : s].add(z[j])
        return y + self.bias[...]


def _conv(c_in, c_out, kernel, stride, *, transpose, dtype, rngs):
    if transpose:
        return _ConvTranspose(c_in, c_out, kernel, stride, dtype=dtype, rngs=rngs)
    return nnx.Conv(
        c_in, c_out, kernel_size=(kernel,), strides=(stride,), padding="VALID", param_dtype=dtype,
        kernel_init=nnx.initializers.xavier_uniform(), bias_init=nnx.initializers.constant(BIAS_INIT), rngs=rngs,
    )  # fmt: skip


class _Stack(nnx.Module):
    """Convolutions (or transposed ones), each followed by LeakyReLU, then an optional 1x1 read-out.

    ``norm``: a non-affine instance norm after the read-out (the encoders' latents).
    """

    def __init__(self, c_in, filters, strides, kernel, slope, *, transpose, out, norm, dtype, rngs):
        for i, (f, s) in enumerate(zip(filters, strides, strict=True)):
            setattr(self, f"layer_{i}", _conv(c_in, f, kernel, s, transpose=transpose, dtype=dtype, rngs=rngs))
            c_in = f
        self.n_layers = len(filters)
        self.out = None if out is None else _conv(c_in, out, 1, 1, transpose=False, dtype=dtype, rngs=rngs)
        self.slope, self.norm = float(slope), bool(norm)

    def __call__(self, x):
        for i in range(self.n_layers):
            x = jax.nn.leaky_relu(getattr(self, f"layer_{i}")(x), self.slope)
        if self.out is not None:
            x = self.out(x)
            if self.norm:
                x = instance_norm(x)
        return x


class _Critic(nnx.Module):
    """A critic's two branches (spectrum: strided convolutions; latent: 1x1 convolutions) and its dense logit."""

    def __init__(self, config: Config, n_pix: int, z_channels: int, *, dtype, rngs):
        k, slope = config.kernel, config.leaky_slope
        strides = (config.critic_stride,) * len(config.critic_filters)
        ones = (1,) * len(config.critic_latent_filters)
        self.x = _Stack(1, config.critic_filters, strides, k, slope, transpose=False, out=None, norm=False,
                        dtype=dtype, rngs=rngs)  # fmt: skip
        self.z = _Stack(z_channels, config.critic_latent_filters, ones, 1, slope, transpose=False, out=None,
                        norm=False, dtype=dtype, rngs=rngs)  # fmt: skip
        lengths = network_lengths(config, n_pix)
        n_in = lengths["critic"] * config.critic_filters[-1] + lengths["latent"] * config.critic_latent_filters[-1]
        self.dense = nnx.Linear(n_in, 1, param_dtype=dtype, rngs=rngs)

    def __call__(self, x, z):
        features = jnp.concatenate([self.x(x[:, None]).reshape(-1), self.z(z).reshape(-1)])
        return self.dense(features)[0]


def _modules(config: Config, n_pix: int, dtype: str, key) -> dict:
    """The NNX modules of ``config`` for ``n_pix``-pixel spectra (weights drawn from ``key``)."""
    k, slope = config.kernel, config.leaky_slope
    rngs = lambda i: nnx.Rngs(params=jax.random.fold_in(key, i))  # noqa: E731
    common = {"dtype": dtype}
    dom_f, dom_s = config.domain_filters, config.domain_strides
    sh_f, sh_s = config.shared_filters, config.shared_strides
    sp_f, sp_s = config.split_filters, config.split_strides
    split = config.split_z > 0
    enc = lambda i: _Stack(1, dom_f, dom_s, k, slope, transpose=False, out=None, norm=False, rngs=rngs(i), **common)  # noqa: E731
    nets = {
        "e_synth": enc(0),
        "e_obs": enc(1),
        "e_sh": _Stack(
            dom_f[-1], sh_f, sh_s, k, slope, transpose=False, out=config.shared_z, norm=True, rngs=rngs(2), **common
        ),
        "e_sp": _Stack(
            dom_f[-1], sp_f, sp_s, k, slope, transpose=False, out=config.split_z, norm=True, rngs=rngs(3), **common
        )
        if split
        else None,
        "d_sh": _Stack(
            config.shared_z,
            sh_f[::-1],
            sh_s[::-1],
            k,
            slope,
            transpose=True,
            out=None,
            norm=False,
            rngs=rngs(4),
            **common,
        ),
        "d_sp": _Stack(
            config.split_z,
            sp_f[::-1],
            sp_s[::-1],
            k,
            slope,
            transpose=True,
            out=None,
            norm=False,
            rngs=rngs(5),
            **common,
        )
        if split
        else None,
        "d_synth": _Stack(
            sh_f[0], dom_f[::-1], dom_s[::-1], k, slope, transpose=True, out=1, norm=False, rngs=rngs(6), **common
        ),
        "d_obs": _Stack(
            sh_f[0] + (sp_f[0] if split else 0),
            dom_f[::-1],
            dom_s[::-1],
            k,
            slope,
            transpose=True,
            out=1,
            norm=False,
            rngs=rngs(7),
            **common,
        ),
        "c_synth": _Critic(config, n_pix, config.shared_z, rngs=rngs(8), **common),
        "c_obs": _Critic(config, n_pix, config.shared_z + config.split_z, rngs=rngs(9), **common),
    }
    return nets


def _check_length(config: Config, n_pix: int) -> None:
    if network_lengths(config, n_pix) is None:
        raise ValueError(
            f"spectra: {n_pix} pixels (after config.crop) do not pass through these networks exactly "
            "(every unpadded convolution must divide evenly so its transposed convolution gives the length "
            "back); cycle_starnet.valid_lengths(config, upto) lists the pixel counts that do"
        )


@functools.lru_cache(maxsize=32)
def _graphdefs(config: Config, n_pix: int, dtype: str) -> dict:
    _check_length(config, n_pix)
    shapes = nnx.eval_shape(lambda: _modules(config, n_pix, dtype, jax.random.key(0)))
    return {name: None if net is None else nnx.split(net)[0] for name, net in shapes.items()}


def graphdefs(config: Config, n_pix: int, dtype=None) -> dict:
    """The ten networks' graph definitions for ``n_pix``-pixel spectra (equal configs share them)."""
    return _graphdefs(config, int(n_pix), np.dtype(default_float() if dtype is None else dtype).name)


def _pack(nets: dict) -> Params:
    pure = {k: None if v is None else nnx.to_pure_dict(nnx.split(v)[1]) for k, v in nets.items()}
    gen = Generator(**{f: pure[f] for f in Generator._fields})
    return Params(gen, Critics(pure["c_synth"], pure["c_obs"]))


def init_params(key, config: Config, n_pix: int) -> Params:
    """Initial weights (Xavier-uniform convolution kernels, biases 0.01; the dense layer NNX's default), in the
    default float dtype; network ``i`` of ``e_synth, e_obs, e_sh, e_sp, d_sh, d_sp, d_synth, d_obs, c_synth,
    c_obs`` draws from ``fold_in(key, i)``."""
    dtype = np.dtype(default_float()).name
    _check_length(config, int(n_pix))
    params = _pack(_modules(config, int(n_pix), dtype, key))
    return jax.tree_util.tree_map(jnp.asarray, params)


@functools.lru_cache(maxsize=32)
def param_shapes(config: Config, n_pix: int) -> Params:
    """The weights' shapes (``jax.ShapeDtypeStruct`` leaves; nothing allocated)."""
    return jax.eval_shape(functools.partial(init_params, config=config, n_pix=int(n_pix)), jax.random.key(0))


def _net(gd: dict, name: str, weights):
    return nnx.merge(gd[name], weights)


# -- one spectrum -------------------------------------------------------------------------------


def encode_synth(gd: dict, gen: Generator, x):
    """:math:`z_{sh}` ``(n_z, shared_z)`` of one normalised synthetic spectrum ``x`` ``(n,)``."""
    return _net(gd, "e_sh", gen.e_sh)(_net(gd, "e_synth", gen.e_synth)(x[:, None]))


def encode_obs(gd: dict, gen: Generator, x):
    """``(z_sh, z_sp)`` of one normalised observed spectrum; ``z_sp`` ``(n_z, split_z)`` (``(n_z, 0)`` without
    a split latent space)."""
    h = _net(gd, "e_obs", gen.e_obs)(x[:, None])
    z_sh = _net(gd, "e_sh", gen.e_sh)(h)
    z_sp = jnp.zeros((z_sh.shape[0], 0), z_sh.dtype) if gen.e_sp is None else _net(gd, "e_sp", gen.e_sp)(h)
    return z_sh, z_sp


def decode_synth(gd: dict, gen: Generator, z_sh):
    """The normalised synthetic spectrum ``(n,)`` of a shared latent."""
    return _net(gd, "d_synth", gen.d_synth)(_net(gd, "d_sh", gen.d_sh)(z_sh))[:, 0]


def decode_obs(gd: dict, gen: Generator, z_sh, z_sp):
    """The normalised observed spectrum ``(n,)`` of a shared and a split latent."""
    h = _net(gd, "d_sh", gen.d_sh)(z_sh)
    if gen.d_sp is not None:
        h = jnp.concatenate([h, _net(gd, "d_sp", gen.d_sp)(z_sp)], axis=-1)
    return _net(gd, "d_obs", gen.d_obs)(h)[:, 0]


def critic_synth(gd: dict, critics: Critics, x, z_sh):
    """The synthetic critic's logit (scalar) for a pair (spectrum ``(n,)``, ``z_sh``)."""
    return _net(gd, "c_synth", critics.synth)(x, z_sh)


def critic_obs(gd: dict, critics: Critics, x, z_sh, z_sp):
    """The observed critic's logit for (spectrum, ``z_sh``, ``z_sp``), the latents stacked as channels."""
    return _net(gd, "c_obs", critics.obs)(x, jnp.concatenate([z_sh, z_sp], axis=-1))
