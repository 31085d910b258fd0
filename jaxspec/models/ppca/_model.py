"""The fitted PPCA: its configuration, the model pytree and its forward model."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec import io
from jaxspec.data._checks import check_choice, check_float, check_int
from jaxspec.models._common import check_last_axis, check_shapes, model_dataclass, static
from jaxspec.typing import Flux, Latents

__all__ = ["EM_CHUNK", "Config", "Model", "decode"]

#: Stars per chunk of the EM passes: on CPU, 512 keeps the per-chunk temporaries small enough for the
#: allocator to reuse them; at 1024 the E-step ran slower per star, in fresh pages (benchmarks/RESULTS.md).
EM_CHUNK = 512


@io.register("ppca.Config", arrays={})
@dataclasses.dataclass(frozen=True)
class Config:
    r"""How :func:`jaxspec.models.ppca.fit` fits.

    Attributes
    ----------
    n_components : int
        Latent dimension ``K``, ``1 <= K < min(N, D)`` (RSCA's paper: 30).
    weights : None or "ivar"
        ``"ivar"``: noise variance :math:`\sigma^2\,\overline{\mathrm{ivar}}/\mathrm{ivar}_{nd}`.
    max_iter : int
        EM updates at most.
    tol : float
        Stop when the relative change of the log-likelihood is at most this.
    chunk_size : int
        Stars per chunk of the EM passes (rounded up to a multiple of 16);
        memory is ``O(chunk_size D)`` beyond the data.
    """

    n_components: int = 30
    weights: str | None = None
    max_iter: int = 100
    tol: float = 1e-5
    chunk_size: int = EM_CHUNK

    def __post_init__(self):
        check_int(self.n_components, "config.n_components", minimum=1)
        check_choice(self.weights, "config.weights", (None, "ivar"))
        check_int(self.max_iter, "config.max_iter", minimum=0)
        check_float(self.tol, "config.tol", low=0.0, open_low=True)
        check_int(self.chunk_size, "config.chunk_size", minimum=1)


@io.register(
    "ppca.Model",
    family="ppca",
    arrays={
        "mean": io.Array(1),
        "loadings": io.Array(2),
        "noise_variance": io.Array(0),
        "ivar_scale": io.Array(0, optional=True),
    },
)
@model_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    r"""A fitted PPCA in PCA axes (immutable; a JAX pytree; save with ``jaxspec.io.save``).

    Attributes
    ----------
    mean : array ``(D,)``
        :math:`\mu`, the (weighted) mean of the observed values.
    loadings : array ``(D, K)``
        ``W``, orthogonal columns sorted by norm (explained variance).
    noise_variance : 0-d array
        :math:`\sigma^2`.
    ivar_scale : 0-d array or None
        With ``weights="ivar"`` the weights are ``ivar / ivar_scale``; None unweighted.
    config : Config (static)
    """

    mean: jax.Array
    loadings: jax.Array
    noise_variance: jax.Array
    ivar_scale: jax.Array | None = None
    config: Config = static(default=Config())

    def __post_init__(self):
        d = np.shape(self.loadings)[0]
        if np.shape(self.mean) != (d,) or np.shape(self.noise_variance) != ():
            raise ValueError(
                f"ppca.Model: expected mean (D,), loadings (D, K) and a scalar noise_variance, found "
                f"{np.shape(self.mean)}, {np.shape(self.loadings)}, {np.shape(self.noise_variance)}"
            )
        if not isinstance(self.config, Config):
            raise TypeError(f"config: expected a ppca.Config, found {type(self.config).__name__}")
        check_shapes(
            "ppca.Model", loadings=(self.loadings, (d, self.config.n_components)), ivar_scale=(self.ivar_scale, ())
        )

    @property
    def n_components(self) -> int:
        return int(np.shape(self.loadings)[1])

    @property
    def components(self) -> np.ndarray:
        """``(D, K)`` orthonormal: ``W / |W|``."""
        w = np.asarray(self.loadings, np.float64)
        norm = np.linalg.norm(w, axis=0)
        return (w / np.where(norm > 0, norm, 1.0)).astype(np.asarray(self.loadings).dtype)

    @property
    def explained_variance(self) -> np.ndarray:
        r"""``(K,)``: the model variance along each component, :math:`|W_k|^2 + \sigma^2`."""
        w = np.asarray(self.loadings, np.float64)
        return np.sum(w * w, axis=0) + float(self.noise_variance)


def decode(model: Model, z: Latents) -> Flux:
    r"""PPCA's forward model: the mean spectrum :math:`\mu + W z` ``(..., D)`` of latents ``z`` ``(..., K)``.

    A pure function of the model pytree: ``jax.jit``, ``jax.vmap`` and ``jax.grad`` go through it.
    """
    w = jnp.asarray(model.loadings)
    z = jnp.asarray(check_last_axis(z, model.n_components, "z"), w.dtype)
    return jnp.asarray(model.mean, w.dtype) + z @ w.T
