"""The batch verbs: ``encode``, ``reconstruct``, ``transfer`` (chunked, vmapped, compiled once per chunk shape)."""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import numpy as np

from jaxspec.data.containers import Spectra, default_float
from jaxspec.models._common import CHUNK_SIZE
from jaxspec.models.cycle_starnet._config import network_lengths
from jaxspec.models.cycle_starnet._data import check_spectra, inputs
from jaxspec.models.cycle_starnet._model import DIRECTIONS, Model, model_graphdefs, transfer_one
from jaxspec.models.cycle_starnet._networks import encode_obs, encode_synth
from jaxspec.optim.chunks import map_chunks

__all__ = ["Latents", "encode", "reconstruct", "transfer"]


class Latents(NamedTuple):
    """``z_sh`` ``(n, n_z, shared_z)`` and ``z_sp`` ``(n, n_z, split_z)`` (``split_z = 0``: empty; a synthetic
    spectrum has none of its own, so ``encode(..., domain="synth")`` gives ``z_sp`` None)."""

    z_sh: np.ndarray
    z_sp: np.ndarray | None


def check_model(model) -> Model:
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a cycle_starnet.Model (from fit or io.load), found {type(model).__name__}")
    return model


def _check_domain(domain) -> str:
    if domain not in ("obs", "synth"):
        raise ValueError(f"domain: expected 'obs' or 'synth', found {domain!r}")
    return domain


def _x(model: Model, spectra, name: str) -> np.ndarray:
    spectra = check_spectra(spectra, model.n_pix, model.wavelength, name)
    return inputs(spectra, model.kept, model.norm)


def _flux(model: Model, x):
    mean, std = model.norm[0], model.norm[1]
    return x * std.astype(x.dtype) + mean.astype(x.dtype)


@partial(jax.jit, static_argnames="domain")
def _encode_chunk(x, model: Model, *, domain: str):
    gd = model_graphdefs(model, x.dtype)
    gen = model.params.generator
    if domain == "synth":
        return jax.vmap(lambda s: encode_synth(gd, gen, s))(x), None
    return jax.vmap(lambda s: encode_obs(gd, gen, s))(x)


@partial(jax.jit, static_argnames=("direction", "own"))
def _transfer_chunk(rows, model: Model, *, direction: str, own: bool):
    """``own``: the spectra's own split latents (``rows``' second array is a placeholder)."""
    x, z_sp = rows
    gd = model_graphdefs(model, x.dtype)
    one = lambda s, z: transfer_one(gd, model.params, s, direction, None if own else z)  # noqa: E731
    return _flux(model, jax.vmap(one)(x, z_sp))


def encode(model: Model, spectra: Spectra, *, domain: str = "obs", chunk_size: int = CHUNK_SIZE, progress=True):
    """The latents of ``spectra`` ``(n, n_pix)`` seen as spectra of ``domain`` (``"obs"`` or ``"synth"``).

    Returns
    -------
    Latents
        ``z_sh`` ``(n, n_z, shared_z)``; ``z_sp`` ``(n, n_z, split_z)`` for
        observed spectra, None for synthetic ones.
    """
    model = check_model(model)
    domain = _check_domain(domain)
    x = _x(model, spectra, "spectra")
    z_sh, z_sp = map_chunks(
        partial(_encode_chunk, domain=domain), x, model, chunk_size=chunk_size, to_host=True, progress=progress,
        desc=f"cycle_starnet.encode ({domain})",
    )  # fmt: skip
    return Latents(np.asarray(z_sh), None if z_sp is None else np.asarray(z_sp))


def check_z_sp(model: Model, z_sp, n: int) -> np.ndarray:
    shape = (network_lengths(model.config, model.n_net)["latent"], model.config.split_z)
    z = np.asarray(z_sp, default_float()) if z_sp is not None else None
    if z is None or z.shape not in (shape, (n, *shape)) or not np.all(np.isfinite(z)):
        found = None if z is None else z.shape
        raise ValueError(
            f"z_sp: expected finite split latents of shape {shape} or ({n}, *{shape}) (from encode of observed "
            f"spectra), found {found}"
        )
    return np.broadcast_to(z, (n, *shape))


def transfer(
    model: Model,
    spectra: Spectra,
    direction: str = "synth->obs",
    *,
    z_sp=None,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = True,
) -> np.ndarray:
    r"""Send ``spectra`` through one of the four transfers (:data:`DIRECTIONS`), flux ``(n, n_net)``.

    Parameters
    ----------
    model : Model
    spectra : Spectra ``(n, n_pix)``
        Spectra of the source domain on the model's input grid.
    direction : {"synth->obs", "obs->synth", "synth->synth", "obs->obs"}
    z_sp : array ``(n_z, split_z)`` or ``(n, n_z, split_z)``
        The split latents a ``"synth->obs"`` transfer takes (observed
        stars' ``encode(...).z_sp``: the instrument and observing conditions
        to render the synthetic spectrum with); ``"obs->obs"`` defaults to
        each star's own.  Not taken by the transfers to ``synth``.

    Returns
    -------
    numpy array ``(n, n_net)``
        Continuum-normalised flux on ``model.net_wavelength`` (the input grid
        less ``config.crop``).
    """
    model = check_model(model)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction: expected one of {DIRECTIONS}, found {direction!r}")
    x = _x(model, spectra, "spectra")
    n = x.shape[0]
    own = z_sp is None and direction != "synth->obs"
    if own:
        z = np.zeros((n, 1), x.dtype)  # a placeholder the transfer ignores
    elif direction in ("synth->obs", "obs->obs"):
        z = check_z_sp(model, z_sp, n)
    else:
        raise ValueError(f"z_sp: the {direction!r} transfer takes no split latents, found an array")
    fn = partial(_transfer_chunk, direction=direction, own=own)
    out = map_chunks(fn, (x, z), model, chunk_size=chunk_size, to_host=True, progress=progress,
                     desc=f"cycle_starnet.transfer ({direction})")  # fmt: skip
    return np.asarray(out)


def reconstruct(
    model: Model, spectra: Spectra, *, domain: str = "obs", chunk_size: int = CHUNK_SIZE, progress: bool = True
) -> np.ndarray:
    """Within-domain reconstruction (:math:`T_{o\\to o}` or :math:`T_{s\\to s}`), flux ``(n, n_net)``."""
    domain = _check_domain(domain)
    return transfer(model, spectra, f"{domain}->{domain}", chunk_size=chunk_size, progress=progress)
