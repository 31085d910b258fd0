r"""Scatter VAE networks and loss: configuration, initial parameters, the per-star loss and its batch mean.

Three Flax NNX MLPs with exact (erf) GELU hidden layers and linear read-outs,
split into a graph definition and a pure-dict params pytree:

* encoder ``110 -> 80 -> 50 -> 30 -> 2 n_z`` (:math:`\mu`, :math:`\log\sigma^2`),
* decoder ``n_z -> 30 -> 50 -> 80 -> 110`` (:math:`\hat x`),
* scatter decoder, same shape, separate weights, :math:`s = \mathrm{softplus}(\cdot)`.

Loss of one star with :math:`N` used coefficients (mask :math:`m`) and one
reparametrised draw :math:`z = \mu + e^{\log\sigma^2/2}\epsilon`:

.. math::
    \mathcal{L} = \frac{1}{2N}\sum_i m_i\left[\frac{(x_i - \hat x_i)^2}{\sigma_{x,i}^2 + s_i^2}
    + \log(\sigma_{x,i}^2 + s_i^2)\right]
    + \frac{1}{2 n_z}\sum_j \left(\mu_j^2 + e^{\log\sigma_j^2} - 1 - \log\sigma_j^2\right).

With ``full_covariance`` the bracket becomes
:math:`r^\top V^{-1} r + \log\det V`, :math:`V = C'_{mm} + \mathrm{diag}(s_m^2)`
on the used block (Cholesky per star, :math:`O(N^3/3)` flops and
:math:`N^2` memory per star against :math:`O(N)` for the diagonal loss).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxspec import io
from jaxspec.data._checks import check_choice, check_float, check_int
from jaxspec.data.containers import default_float
from jaxspec.models.scatter_vae._data import N_COEFF, Batch

SCHEDULES = ("exponential", "cosine", "constant")
_JITTER_EPS = 8.0  # diagonal jitter of the unit-diagonal full covariance, in machine epsilons (1e-6 in float32)


@io.register("svae.Config", arrays={})
@dataclasses.dataclass(frozen=True)
class Config:
    r"""Scatter-VAE sizes and training settings (defaults: Laroche & Speagle 2023).

    Attributes
    ----------
    hidden : tuple of int
        Encoder hidden widths; the two decoders use them reversed.
    latent_dim : int
        :math:`n_z`.
    learning_rate : float
        Initial SGD learning rate.
    momentum : float
        SGD (heavy-ball) momentum.
    schedule : {"exponential", "cosine", "constant"}
        Learning-rate decay: :math:`\eta_0 \rho^{t/T_e}` (``T_e`` steps per
        epoch, smooth), :math:`\eta_0 (1 + \cos(\pi t / T))/2` over all ``T``
        steps, or none.
    decay_rate : float
        :math:`\rho`, the factor per epoch of the exponential schedule.
    batch_size : int
        Stars per step (capped at the training-set size).
    epochs : int
    full_covariance : bool
        Gaussian likelihood with each star's full coefficient covariance.
    patience : int or None
        Early stopping on the validation loss (None: run all epochs).
    clip_norm : float or None
        Clip the gradient's global L2 norm to this before the SGD update (not
        in the paper: a guard against the divergence that plain SGD at
        ``lr = 0.1`` with momentum 0.9 meets with other widths or data; in
        normal training the norm is ~0.01-1 and the clip never acts).  None: off.
    validation_frac : float in [0, 1)
        Stars held out (at random) for ``history["val_loss"]``; the model keeps
        the weights of the best validation epoch.  0: no validation, the last
        epoch's weights.
    """

    hidden: tuple = (80, 50, 30)
    latent_dim: int = 6
    learning_rate: float = 0.1
    momentum: float = 0.9
    schedule: str = "exponential"
    decay_rate: float = 0.97
    batch_size: int = 1024
    epochs: int = 100
    full_covariance: bool = False
    patience: int | None = None
    clip_norm: float | None = 10.0
    validation_frac: float = 0.1

    def __post_init__(self):
        h = self.hidden
        if not (isinstance(h, tuple | list) and len(h) > 0):
            raise ValueError(f"config.hidden: expected a non-empty tuple of positive ints, found {h!r}")
        for i, width in enumerate(h):
            check_int(width, f"config.hidden[{i}]", minimum=1)
        object.__setattr__(self, "hidden", tuple(int(w) for w in h))
        check_int(self.latent_dim, "config.latent_dim", minimum=1)
        check_int(self.batch_size, "config.batch_size", minimum=1)
        check_int(self.epochs, "config.epochs", minimum=0)
        check_float(self.learning_rate, "config.learning_rate", low=0.0, open_low=True)
        check_float(self.momentum, "config.momentum", low=0.0)
        if not self.momentum < 1:
            raise ValueError(f"config.momentum: expected a value in [0, 1), found {self.momentum!r}")
        check_choice(self.schedule, "config.schedule", SCHEDULES)
        check_float(self.decay_rate, "config.decay_rate", low=0.0, high=1.0, open_low=True)
        if not isinstance(self.full_covariance, bool):
            raise TypeError(f"config.full_covariance: expected a bool, found {self.full_covariance!r}")
        if self.patience is not None:
            check_int(self.patience, "config.patience", minimum=1)
        if self.clip_norm is not None:
            check_float(self.clip_norm, "config.clip_norm", low=0.0, open_low=True)
        check_float(self.validation_frac, "config.validation_frac", low=0.0)
        if not self.validation_frac < 1:
            raise ValueError(f"config.validation_frac: expected a value in [0, 1), found {self.validation_frac!r}")


@io.register("svae.Params", arrays={net: io.Array((1, 2), nested=True) for net in ("encoder", "decoder", "scatter")})
class Params(NamedTuple):
    """Network weights, each the NNX state of one MLP as a nested dict (``{"layer_0": {"kernel", "bias"}, ...}``)."""

    encoder: dict
    decoder: dict
    scatter: dict


_SQRT_HALF = float(np.sqrt(0.5))


def gelu(x):
    r"""Exact GELU, :math:`\tfrac{x}{2}\,(1 + \mathrm{erf}(x/\sqrt 2))`, the formula ``torch.nn.GELU`` evaluates.

    ``jax.nn.gelu(x, approximate=False)`` goes through ``erfc`` instead (more accurate where
    the value is below about 1e-7 in magnitude, i.e. ``x < -5``), whose range branches and
    exponential cost the scatter-VAE train step about 5% on CPU.
    """
    return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(_SQRT_HALF, x.dtype)))


class _MLP(nnx.Module):
    """GELU (exact, :func:`gelu`, as ``torch.nn.GELU``) hidden layers and a linear read-out."""

    def __init__(self, sizes: tuple, *, dtype: str, rngs: nnx.Rngs):
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            setattr(self, f"layer_{i}", nnx.Linear(a, b, param_dtype=dtype, rngs=rngs))
        self.n_layers = len(sizes) - 1

    def __call__(self, x):
        for i in range(self.n_layers):
            x = getattr(self, f"layer_{i}")(x)
            if i < self.n_layers - 1:
                x = gelu(x)
        return x


def _sizes(config: Config) -> dict[str, tuple]:
    h = tuple(config.hidden)
    dec = (config.latent_dim, *h[::-1], N_COEFF)
    return {"encoder": (N_COEFF, *h, 2 * config.latent_dim), "decoder": dec, "scatter": dec}


@functools.lru_cache(maxsize=32)
def _graphdefs(hidden: tuple, latent_dim: int, dtype: str) -> dict:
    """NNX graph definitions per network (shape-only construction; equal for equal sizes)."""
    sizes = _sizes(Config(hidden=hidden, latent_dim=latent_dim))
    build = lambda s: nnx.split(nnx.eval_shape(lambda: _MLP(s, dtype=dtype, rngs=nnx.Rngs(0))))[0]  # noqa: E731
    return {name: build(s) for name, s in sizes.items()}


def graphdefs(config: Config, dtype=None) -> dict:
    """The graph definitions of ``config``'s three networks (default float dtype)."""
    dtype = np.dtype(default_float() if dtype is None else dtype).name
    return _graphdefs(tuple(int(w) for w in config.hidden), int(config.latent_dim), dtype)


def init_params(key: jax.Array, config: Config = Config()) -> Params:
    """Initial weights (NNX defaults: LeCun-normal kernels, zero biases), default float dtype.

    Parameters
    ----------
    key : jax.random key
        Encoder, decoder and scatter decoder get ``fold_in(key, 0/1/2)``.
    config : Config

    Returns
    -------
    Params
        Kernels ``(n_in, n_out)`` and biases ``(n_out,)`` per layer.
    """
    dtype = np.dtype(default_float()).name
    nets = {}
    for i, (name, sizes) in enumerate(_sizes(config).items()):
        net = _MLP(sizes, dtype=dtype, rngs=nnx.Rngs(params=jax.random.fold_in(key, i)))
        nets[name] = jax.tree_util.tree_map(jnp.asarray, nnx.to_pure_dict(nnx.split(net)[1]))
    return Params(**nets)


def make_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum, the configured learning-rate decay (``steps_per_epoch`` sets its time unit) and clip."""
    lr0, steps = float(config.learning_rate), max(int(steps_per_epoch), 1)
    if config.schedule == "exponential":
        lr = optax.exponential_decay(lr0, transition_steps=steps, decay_rate=float(config.decay_rate))
    elif config.schedule == "cosine":
        lr = optax.cosine_decay_schedule(lr0, decay_steps=max(steps * int(config.epochs), 1))
    else:
        lr = lr0
    sgd = optax.sgd(lr, momentum=float(config.momentum) or None)
    if config.clip_norm is None:
        return sgd
    return optax.chain(optax.clip_by_global_norm(float(config.clip_norm)), sgd)


# -- the model for one star -----------------------------------------------------------------------


def encode_star(gd: dict, params: Params, x):
    """:math:`(\\mu, \\log\\sigma^2)`, each ``(n_z,)``, of standardised coefficients ``x`` ``(110,)``."""
    out = nnx.merge(gd["encoder"], params.encoder)(x)
    mu, logvar = jnp.split(out, 2, axis=-1)
    return mu, logvar


def decode_star(gd: dict, params: Params, z):
    """:math:`(\\hat x, s)`, each ``(110,)`` standardised, of a latent ``z`` ``(n_z,)``; :math:`s > 0` (softplus)."""
    x_hat = nnx.merge(gd["decoder"], params.decoder)(z)
    s = jax.nn.softplus(nnx.merge(gd["scatter"], params.scatter)(z))
    return x_hat, s


def fit_terms(x, sigma, mask, x_hat, s, cov=None):
    r"""``(chi2, logdet, N)``: :math:`r^\top V^{-1} r`, :math:`\log\det V` over the used coefficients and their count.

    Diagonal: :math:`V = \mathrm{diag}(\sigma^2 + s^2)`.  Full (``cov`` ``(110, 110)``):
    :math:`V = C'_{mm} + \mathrm{diag}(s^2_m)`, unused rows/columns replaced by the identity.
    """
    r = jnp.where(mask, x - x_hat, 0.0)
    n_used = jnp.sum(mask, dtype=x.dtype)
    if cov is None:
        var = jnp.where(mask, jnp.square(sigma) + jnp.square(s), 1.0)
        return jnp.sum(jnp.square(r) / var), jnp.sum(jnp.log(var)), n_used
    both = mask[:, None] & mask[None, :]
    v = jnp.where(both, cov, 0.0) + jnp.diag(jnp.where(mask, jnp.square(s), 1.0))
    d = jnp.sqrt(jnp.diagonal(v))
    jitter = _JITTER_EPS * jnp.finfo(v.dtype).eps
    vn = v / (d[:, None] * d[None, :]) + jitter * jnp.eye(v.shape[0], dtype=v.dtype)
    chol = jnp.linalg.cholesky(vn)
    w = jax.scipy.linalg.solve_triangular(chol, r / d, lower=True)
    logdet = 2.0 * jnp.sum(jnp.log(d)) + 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return jnp.sum(jnp.square(w)), logdet, n_used


def kl_term(mu, logvar):
    r""":math:`\frac{1}{2 n_z}\sum_j (\mu_j^2 + e^{\log\sigma_j^2} - 1 - \log\sigma_j^2)`."""
    return 0.5 * jnp.mean(jnp.square(mu) + jnp.exp(logvar) - 1.0 - logvar)


def star_loss(gd: dict, params: Params, star: Batch, eps):
    """One star's loss (module equation) for the draw ``eps`` ``(n_z,)``; returns ``(loss, chi2, penalty, kl)``."""
    mu, logvar = encode_star(gd, params, star.x)
    z = mu + jnp.exp(0.5 * logvar) * eps
    x_hat, s = decode_star(gd, params, z)
    chi2, logdet, n_used = fit_terms(star.x, star.sigma, star.mask, x_hat, s, star.cov)
    norm = 0.5 / jnp.maximum(n_used, 1.0)
    chi2, penalty, kl = norm * chi2, norm * logdet, kl_term(mu, logvar)
    return chi2 + penalty + kl, chi2, penalty, kl


def batch_loss(config: Config = Config()):
    r"""The mean loss of a batch, ``loss_fn(params, batch, key) -> (loss, metrics)``, for ``make_train_step``.

    ``batch`` is an :class:`Batch` (``x``, ``sigma``, ``mask`` ``(B, 110)``;
    ``cov`` ``(B, 110, 110)`` when ``config.full_covariance``).  The draws are
    ``eps = jax.random.normal(key, (B, n_z), x.dtype)``, row ``n`` for star ``n``.
    ``loss`` is the mean over stars of the module's per-star loss; ``metrics``
    the means of its ``"chi2"``, ``"penalty"`` and ``"kl"`` terms.
    """

    def loss_fn(params, batch, key):
        if not isinstance(batch, Batch):
            batch = Batch(*batch)
        if config.full_covariance and batch.cov is None:
            raise ValueError(
                "batch.cov: config.full_covariance needs the covariance (preprocess(..., covariance=True))"
            )
        star = batch if config.full_covariance else batch._replace(cov=None)
        gd = graphdefs(config, batch.x.dtype)
        eps = jax.random.normal(key, (batch.x.shape[0], config.latent_dim), batch.x.dtype)
        loss, chi2, penalty, kl = jax.vmap(lambda b, e: star_loss(gd, params, b, e))(star, eps)
        return jnp.mean(loss), {"chi2": jnp.mean(chi2), "penalty": jnp.mean(penalty), "kl": jnp.mean(kl)}

    return loss_fn
