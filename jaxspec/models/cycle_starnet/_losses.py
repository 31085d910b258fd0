r"""Cycle-StarNet's losses (Eqs. 1-7) for one batch of each domain, and the critics' loss.

A batch is an :class:`~jaxspec.optim.train.Unpaired` of two :class:`Domain`
(``first``: observed, ``second``: synthetic), each ``B`` normalised spectra
``x`` and distance weights ``w = m / e`` (mask over normalised error, 0 =
masked).  The distance (the authors' ``weighted_masked_mse_loss``) is the
mean over the batch's ``B n`` pixels

.. math::

    d(\hat x, x) = \frac{1}{B n} \sum_{b, l} w_{bl}^2 (\hat x_{bl} - x_{bl})^2 .

Synthetic star ``b`` is sent to the observed domain with observed star
``b``'s split latent (the batches are random, so the pairing is too).  The
generator's loss, with :math:`H` the binary cross-entropy and the critics'
logits :math:`a`, :math:`H(1, \sigma(a)) = \mathrm{softplus}(-a)`:

.. math::

    L_G = \lambda_s (d(x_{s\to s}, x_s) + d(x_{s\to o\to s}, x_s))
        + \lambda_o (d(x_{o\to o}, x_o) + d(x_{o\to s\to o}, x_o))
        + \lambda_{adv} \bigl(H(1, C_s(x_{o\to s}, z_{sh,o})) + H(1, C_o(x_{s\to o}, z_{sh,s}, z_{sp,s\to o}))\bigr),

and the critics' (Eq. 4), on the generator's outputs of the same step:

.. math::

    L_C = \lambda_C \bigl(H(1, C_s(x_{s\to s}, z_{sh,s})) + H(0, C_s(x_{o\to s}, z_{sh,o}))
        + H(1, C_o(x_{o\to o}, z_{sh,o}, z_{sp,o})) + H(0, C_o(x_{s\to o}, z_{sh,s}, z_{sp,s\to o}))\bigr),

each :math:`H` a mean over the batch.  :math:`z_{sp,s\to o}` is the split
latent of :math:`x_{s\to o}` encoded again; the observed cycle
:math:`x_{o\to s\to o}` reuses the star's own :math:`z_{sp,o}`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxspec.models.cycle_starnet._config import Config
from jaxspec.models.cycle_starnet._networks import (
    critic_obs,
    critic_synth,
    decode_obs,
    decode_synth,
    encode_obs,
    encode_synth,
    graphdefs,
)

__all__ = ["Domain", "critic_loss", "distance", "generator_loss", "validation_loss"]


class Domain(NamedTuple):
    """One domain's batch: normalised spectra ``x`` and weights ``w`` (mask / normalised error), ``(B, n)``."""

    x: jax.Array
    w: jax.Array


def distance(pred, target, w):
    r""":math:`\frac{1}{Bn}\sum w^2 (\hat x - x)^2` over every entry of ``(B, n)`` arrays."""
    return jnp.mean(jnp.square(w * (pred - target)))


def _forward(config: Config, gen, obs: Domain, syn: Domain) -> dict:
    """Every spectrum and latent of one generator pass (batched)."""
    gd = graphdefs(config, obs.x.shape[-1], obs.x.dtype)
    v = lambda f, *a: jax.vmap(lambda *b: f(gd, gen, *b))(*a)  # noqa: E731
    z_sh_s = v(encode_synth, syn.x)
    z_sh_o, z_sp_o = v(encode_obs, obs.x)
    x_os = v(decode_synth, z_sh_o)
    x_so = v(decode_obs, z_sh_s, z_sp_o)
    z_sh_so, z_sp_so = v(encode_obs, x_so)
    return {
        "x_ss": v(decode_synth, z_sh_s),
        "x_oo": v(decode_obs, z_sh_o, z_sp_o),
        "x_os": x_os,
        "x_so": x_so,
        "x_sos": v(decode_synth, z_sh_so),
        "x_oso": v(decode_obs, v(encode_synth, x_os), z_sp_o),
        "z_sh_s": z_sh_s,
        "z_sh_o": z_sh_o,
        "z_sp_o": z_sp_o,
        "z_sp_so": z_sp_so,
    }


def _distances(config: Config, out: dict, obs: Domain, syn: Domain) -> dict:
    return {
        "rec_synth": distance(out["x_ss"], syn.x, syn.w),
        "cycle_synth": distance(out["x_sos"], syn.x, syn.w),
        "rec_obs": distance(out["x_oo"], obs.x, obs.w),
        "cycle_obs": distance(out["x_oso"], obs.x, obs.w),
    }


def _weighted(config: Config, terms: dict):
    return config.weight_synth * (terms["rec_synth"] + terms["cycle_synth"]) + config.weight_obs * (
        terms["rec_obs"] + terms["cycle_obs"]
    )


def _logits(critics, out: dict, gd: dict, real: bool) -> dict:
    """The critics' logits ``(B,)`` on the fake (transferred) pairs, and with ``real`` the within-domain ones."""
    cs = jax.vmap(lambda x, z: critic_synth(gd, critics, x, z))
    co = jax.vmap(lambda x, z, s: critic_obs(gd, critics, x, z, s))
    logits = {
        "fake_synth": cs(out["x_os"], out["z_sh_o"]),
        "fake_obs": co(out["x_so"], out["z_sh_s"], out["z_sp_so"]),
    }
    if real:
        logits["real_synth"] = cs(out["x_ss"], out["z_sh_s"])
        logits["real_obs"] = co(out["x_oo"], out["z_sh_o"], out["z_sp_o"])
    return logits


def generator_loss(config: Config):
    """``loss_fn(params, batch, key) -> (L_G, (metrics, handoff))`` for the engine's generator group.

    ``metrics``: the four distances, ``adv_synth``, ``adv_obs``; ``handoff``
    the pass's spectra and latents for :func:`critic_loss`.
    """

    def loss_fn(params, batch, key):
        obs, syn = Domain(*batch.first), Domain(*batch.second)
        out = _forward(config, params.generator, obs, syn)
        terms = _distances(config, out, obs, syn)
        gd = graphdefs(config, obs.x.shape[-1], obs.x.dtype)
        logits = _logits(params.critic, out, gd, real=False)
        terms["adv_synth"] = jnp.mean(jax.nn.softplus(-logits["fake_synth"]))
        terms["adv_obs"] = jnp.mean(jax.nn.softplus(-logits["fake_obs"]))
        total = _weighted(config, terms) + config.weight_adv * (terms["adv_synth"] + terms["adv_obs"])
        return total, (terms, out)

    return loss_fn


def critic_loss(config: Config):
    """``loss_fn(params, batch, key, handoff) -> (L_C, metrics)``: the critics on the generator's pass."""

    def loss_fn(params, batch, key, out):
        gd = graphdefs(config, batch.first[0].shape[-1], batch.first[0].dtype)
        logits = _logits(params.critic, out, gd, real=True)
        terms = {
            "real_synth": jnp.mean(jax.nn.softplus(-logits["real_synth"])),
            "fake_synth": jnp.mean(jax.nn.softplus(logits["fake_synth"])),
            "real_obs": jnp.mean(jax.nn.softplus(-logits["real_obs"])),
            "fake_obs": jnp.mean(jax.nn.softplus(logits["fake_obs"])),
        }
        return config.weight_critic * sum(terms.values()), terms

    return loss_fn


def validation_loss(config: Config):
    """``loss_fn(params, batch, key) -> (distance terms of L_G, metrics)``: no adversarial term (held-out stars)."""

    def loss_fn(params, batch, key):
        obs, syn = Domain(*batch.first), Domain(*batch.second)
        terms = _distances(config, _forward(config, params.generator, obs, syn), obs, syn)
        return _weighted(config, terms), terms

    return loss_fn
