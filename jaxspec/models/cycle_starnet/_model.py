r"""The Cycle-StarNet model pytree and its pure one-spectrum transfers.

A spectrum of the model's input grid (``n_pix`` pixels) loses ``config.crop``
pixels at its ends (``n = n_pix - crop[0] - crop[1]``, 7167 for the paper) and
is normalised by one mean and standard deviation, :math:`x = (f - \mu)/\sigma`;
the networks work on ``x`` and every verb gives flux back,
:math:`f = \sigma x + \mu`.  The four transfers (Eqs. 2 and 5):

.. math::

    T_{s\to s} = D_{synth} D_{sh} E_{sh} E_{synth},\quad
    T_{o\to o} = D_{obs} D_{sh/p} E_{sh/p} E_{obs},\quad
    T_{s\to o}(x, z_{sp}) = D_{obs}\bigl[D_{sh} E_{sh} E_{synth}(x),\ D_{sp}(z_{sp})\bigr],\quad
    T_{o\to s} = D_{synth} D_{sh} E_{sh} E_{obs};

a synthetic spectrum has no split latent of its own: ``synth->obs`` takes
one (an observed star's :math:`z_{sp}`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec import io
from jaxspec.data.containers import default_float
from jaxspec.models import payne
from jaxspec.models._common import check_last_axis, check_shapes, check_tree_shapes, model_dataclass, static
from jaxspec.models.cycle_starnet._config import Config, network_lengths
from jaxspec.models.cycle_starnet._networks import (
    Params,
    decode_obs,
    decode_synth,
    encode_obs,
    encode_synth,
    graphdefs,
    param_shapes,
)

__all__ = ["DIRECTIONS", "Model", "decode", "transfer_one"]

#: The four transfers of :func:`transfer_one` (source domain, target domain).
DIRECTIONS = ("synth->synth", "obs->obs", "synth->obs", "obs->synth")


_ARRAYS = {"norm": io.Array(1), "wavelength": io.Array(1, optional=True)}


@io.register("cycle_starnet.Model", family="cycle_starnet", arrays=_ARRAYS)
@model_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    r"""A trained Cycle-StarNet (immutable; a JAX pytree; save with ``jaxspec.io.save``).

    Attributes
    ----------
    params : Params
        ``generator`` (the four encoders, four decoders) and ``critic`` (two critics).
    norm : array ``(2,)``
        :math:`(\mu, \sigma)` of the flux normalisation.
    emulator : payne.Model or None
        The synthetic domain's emulator (on the same ``n_pix`` grid), for
        label fitting and line finding; None when trained without one.
    n_pix : int (static)
        Pixels of an input spectrum, before ``config.crop``.
    wavelength : array ``(n_pix,)`` or None (static)
        The input grid, vacuum Angstrom.
    config : Config (static)
    """

    params: Params
    norm: jnp.ndarray
    emulator: payne.Model | None = None
    n_pix: int = static(default=7214)
    wavelength: np.ndarray | None = static(default=None)
    config: Config = static(default=Config())

    def __post_init__(self):
        if not isinstance(self.config, Config):
            raise TypeError(f"config: expected a cycle_starnet.Config, found {type(self.config).__name__}")
        if not isinstance(self.params, Params):
            raise TypeError(f"params: expected cycle_starnet.Params, found {type(self.params).__name__}")
        if isinstance(self.n_pix, bool) or not isinstance(self.n_pix, int | np.integer):
            raise TypeError(f"n_pix: expected an int, found {self.n_pix!r}")
        n = self.n_net
        if n < 1 or network_lengths(self.config, n) is None:
            raise ValueError(f"n_pix: {self.n_pix} pixels less config.crop {self.config.crop} do not fit the networks")
        check_shapes("cycle_starnet.Model", norm=(self.norm, (2,)), wavelength=(self.wavelength, (self.n_pix,)))
        mean, std = (float(v) for v in np.asarray(self.norm, np.float64))
        if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
            raise ValueError(f"norm: expected a finite mean and a positive std, found {(mean, std)}")
        check_tree_shapes("cycle_starnet.Model", "params", self.params, param_shapes(self.config, n))
        if self.emulator is not None:
            if not isinstance(self.emulator, payne.Model):
                raise TypeError(f"emulator: expected a payne.Model or None, found {type(self.emulator).__name__}")
            if self.emulator.n_pix != self.n_pix:
                raise ValueError(
                    f"emulator: expected {self.n_pix} pixels (the spectra's grid), found {self.emulator.n_pix}"
                )

    @property
    def n_net(self) -> int:
        """Pixels the networks see: ``n_pix - crop[0] - crop[1]``."""
        return int(self.n_pix) - sum(self.config.crop)

    @property
    def kept(self) -> slice:
        """The slice of an input spectrum the networks see."""
        start, end = self.config.crop
        return slice(start, int(self.n_pix) - end)

    @property
    def net_wavelength(self) -> np.ndarray | None:
        """The grid of the networks' spectra ``(n_net,)``, or None."""
        return None if self.wavelength is None else np.asarray(self.wavelength)[self.kept]


def model_graphdefs(model: Model, dtype) -> dict:
    """The model's graph definitions in ``dtype``."""
    return graphdefs(model.config, model.n_net, dtype)


def transfer_one(gd: dict, params: Params, x, direction: str, z_sp=None):
    """One normalised spectrum ``x`` ``(n,)`` through the transfer ``direction`` (:data:`DIRECTIONS`).

    ``z_sp`` ``(n_z, split_z)``: the split latent for ``"synth->obs"``
    (required) and ``"obs->obs"`` (default: the spectrum's own).
    """
    gen = params.generator
    if direction == "synth->synth":
        return decode_synth(gd, gen, encode_synth(gd, gen, x))
    if direction == "synth->obs":
        return decode_obs(gd, gen, encode_synth(gd, gen, x), z_sp)
    z_sh, own = encode_obs(gd, gen, x)
    if direction == "obs->synth":
        return decode_synth(gd, gen, z_sh)
    return decode_obs(gd, gen, z_sh, own if z_sp is None else z_sp)


def latent_shapes(model: Model) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((n_z, shared_z), (n_z, split_z))``: one spectrum's latents."""
    n_z = network_lengths(model.config, model.n_net)["latent"]
    return (n_z, model.config.shared_z), (n_z, model.config.split_z)


def over_leading(fn, *arrays, ranks: tuple[int, ...]):
    """``fn`` of one star applied over any leading axes of ``arrays`` (each of the given trailing rank)."""
    lead = arrays[0].shape[: arrays[0].ndim - ranks[0]]
    flat = [a.reshape((-1, *a.shape[a.ndim - r :])) for a, r in zip(arrays, ranks, strict=True)]
    out = jax.vmap(fn)(*flat)
    return out.reshape((*lead, *out.shape[1:]))


def decode(model: Model, z_sh, z_sp=None, *, domain: str = "obs"):
    r"""The decoders as a pure forward model: flux ``(..., n_net)`` of latents ``z_sh`` ``(..., n_z, shared_z)``.

    ``domain="obs"``: :math:`\sigma D_{obs}[D_{sh}(z_{sh}), D_{sp}(z_{sp})] + \mu`, with ``z_sp``
    ``(..., n_z, split_z)`` (required with a split latent space); ``"synth"``:
    :math:`\sigma D_{synth}(D_{sh}(z_{sh})) + \mu`.  Any leading batch axes; ``jax.jit``,
    ``jax.vmap`` and ``jax.grad`` go through it.
    """
    if domain not in ("obs", "synth"):
        raise ValueError(f"domain: expected 'obs' or 'synth', found {domain!r}")
    sh_shape, sp_shape = latent_shapes(model)
    z_sh = jnp.asarray(z_sh, default_float())
    if z_sh.ndim < 2 or z_sh.shape[-2:] != sh_shape:
        raise ValueError(f"z_sh: expected shape (..., {sh_shape[0]}, {sh_shape[1]}), found {z_sh.shape}")
    gd = model_graphdefs(model, z_sh.dtype)
    gen = model.params.generator
    mean, std = model.norm[0].astype(z_sh.dtype), model.norm[1].astype(z_sh.dtype)
    if domain == "synth":
        out = over_leading(lambda z: decode_synth(gd, gen, z), z_sh, ranks=(2,))
    else:
        if z_sp is None:
            if sp_shape[1]:
                raise ValueError(f"z_sp: expected split latents (..., {sp_shape[0]}, {sp_shape[1]}), found None")
            z_sp = jnp.zeros((*z_sh.shape[:-1], 0), z_sh.dtype)
        z_sp = jnp.broadcast_to(jnp.asarray(check_last_axis(z_sp, sp_shape[1], "z_sp"), z_sh.dtype),
                                (*z_sh.shape[:-1], sp_shape[1]))  # fmt: skip
        out = over_leading(lambda a, b: decode_obs(gd, gen, a, b), z_sh, z_sp, ranks=(2, 2))
    return out * std + mean
