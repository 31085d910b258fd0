"""The batch verbs of a Mendis flow: ``log_prob`` of stars, ``sample`` of new ones; chunked, compiled once."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.data._checks import check_int, check_key
from jaxspec.data.containers import Labels, Spectra
from jaxspec.models._common import CHUNK_SIZE, check_grid
from jaxspec.models.flows._fit import data_vectors
from jaxspec.models.flows._model import Model, log_density_standard, sample_standard, unstandardise
from jaxspec.optim.chunks import map_chunks
from jaxspec.typing import Key

__all__ = ["Draws", "check_model", "log_prob", "sample", "standardised_inputs"]


class Draws(NamedTuple):
    """Draws of ``x = (S, y)``: ``spectra (n, L)`` (flux) and ``labels (n, M)`` (physical units, the model's order)."""

    spectra: np.ndarray
    labels: np.ndarray


def check_model(model) -> Model:
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a flows.Model, found {type(model).__name__}")
    return model


def standardised_inputs(model: Model, spectra: Spectra, labels: Labels) -> tuple[np.ndarray, np.ndarray]:
    """``u (n, D)`` in the model's float dtype (masked entries at 0, the training mean) and ``measured (n, D)``."""
    check_model(model)
    if isinstance(spectra, Spectra):
        if spectra.n_pix != model.n_pix:
            raise ValueError(f"spectra: expected {model.n_pix} pixels (the model's grid), found {spectra.n_pix}")
        check_grid(spectra.wavelength, model.wavelength)
    x, measured = data_vectors(spectra, labels, model.label_names)
    center = np.asarray(model.center, np.float64)
    spread = np.asarray(model.spread, np.float64)
    u = np.where(measured, (x - center) / spread, 0.0)
    return u.astype(np.asarray(model.center).dtype), measured


@jax.jit
def _log_prob_chunk(u, model):
    return log_density_standard(model, u) - jnp.sum(jnp.log(model.spread))


def log_prob(
    model: Model, spectra: Spectra, labels: Labels, *, chunk_size: int = CHUNK_SIZE, progress: bool = True
) -> np.ndarray:
    r""":math:`\\log p(S, y)` of each star, nats, in the data's units (flux, the labels' units), ``(n,)``.

    Masked pixels and missing labels are set to their training mean
    (:mod:`jaxspec.models.flows._fit` explains why); a star with no measured
    pixel gets NaN (nothing measured, nothing to score).  Compiled once per
    chunk shape.
    """
    u, measured = standardised_inputs(model, spectra, labels)
    out = map_chunks(_log_prob_chunk, u, model, chunk_size=chunk_size, to_host=True, progress=progress, desc="log_prob")
    return np.where(measured[:, : model.n_pix].any(axis=1), out, np.nan)


@jax.jit
def _sample_chunk(rows, model, key):
    z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (model.dim,), model.center.dtype))(rows)
    return unstandardise(model, sample_standard(model, z))


def sample(model: Model, key: Key, n: int, *, chunk_size: int = CHUNK_SIZE, progress: bool = True) -> Draws:
    """``n`` draws of ``(S, y)`` from the flow (the inverse flow of standard normal draws).

    Draw ``i`` uses ``fold_in(key, i)``: the same key gives the same draws
    whatever ``chunk_size``.
    """
    check_model(model)
    check_key(key)
    n = check_int(n, "n", minimum=1)
    rows = np.arange(n, dtype=np.int32)
    x = map_chunks(
        _sample_chunk, rows, model, key, chunk_size=chunk_size, to_host=True, progress=progress, desc="sample"
    )
    return Draws(x[:, : model.n_pix], x[:, model.n_pix :])
