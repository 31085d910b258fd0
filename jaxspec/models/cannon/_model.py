"""The trained Cannon: its configuration, the model pytree and its forward model (the quadratic label vector)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec import io
from jaxspec.data._checks import check_float, check_int
from jaxspec.models._common import check_last_axis, model_dataclass, static
from jaxspec.typing import Flux, LabelValues

__all__ = ["Config", "Model", "decode", "n_terms", "quadratic_vector"]


def n_terms(n_labels: int) -> int:
    """``Q = 1 + M + M(M+1)/2``: the length of the quadratic label vector :math:`v(\\ell)`."""
    return 1 + n_labels + n_labels * (n_labels + 1) // 2


@io.register("cannon.Config", arrays={})
@dataclasses.dataclass(frozen=True)
class Config:
    """How :func:`jaxspec.models.cannon.fit` trains (defaults: converged on the mock surveys in a few iterations).

    Attributes
    ----------
    n_iter : int
        Most (scatter, theta) iterations after the initial zero-scatter solve.
    tol : float
        Converged when the objective :math:`g` changes by at most ``tol`` per
        measured pixel between iterations.
    """

    n_iter: int = 20
    tol: float = 1e-5

    def __post_init__(self):
        check_int(self.n_iter, "config.n_iter", minimum=1)
        check_float(self.tol, "config.tol", low=0.0, open_low=True)


@io.register(
    "cannon.Model",
    family="cannon",
    arrays={
        "theta": io.Array(2),
        "scatter": io.Array(1),
        "pivot": io.Array(1),
        "scale": io.Array(1),
        "wavelength": io.Array(1, optional=True),
    },
)
@model_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A trained Cannon (immutable; a JAX pytree; save with ``jaxspec.io.save``).

    Attributes
    ----------
    theta : array ``(D, Q)``
        Coefficients in flux units, ordered as :math:`v` (1, the linear terms,
        then ``x_a x_b`` for ``a <= b``, row-major).
    scatter : array ``(D,)``
        Intrinsic scatter :math:`s_j \\ge 0`, flux units.
    pivot, scale : arrays ``(M,)``
        Label standardisation :math:`x = (\\ell - \\mathrm{pivot})/\\mathrm{scale}`, physical units.
    label_names : tuple of ``M`` str (static)
    config : Config (static)
    wavelength : array ``(D,)`` or None (static)
        Vacuum Angstrom, when the training spectra had a grid.
    """

    theta: jax.Array
    scatter: jax.Array
    pivot: jax.Array
    scale: jax.Array
    label_names: tuple = static()
    config: Config = static(default=Config())
    wavelength: np.ndarray | None = static(default=None)

    def __post_init__(self):
        m, (d, q) = len(self.label_names), np.shape(self.theta)
        shapes = (np.shape(self.scatter), np.shape(self.pivot), np.shape(self.scale))
        if q != n_terms(m) or shapes != ((d,), (m,), (m,)):
            raise ValueError(
                f"cannon.Model: expected theta (D, {n_terms(m)}), scatter (D,), pivot and scale ({m},) for "
                f"{m} labels, found {np.shape(self.theta)}, {shapes[0]}, {shapes[1]}, {shapes[2]}"
            )
        if not isinstance(self.config, Config):
            raise TypeError(f"config: expected a cannon.Config, found {type(self.config).__name__}")
        if self.wavelength is not None and np.shape(self.wavelength) != (d,):
            raise ValueError(f"wavelength: expected shape ({d},) or None, found {np.shape(self.wavelength)}")

    @property
    def n_pix(self) -> int:
        return int(np.shape(self.theta)[0])


def quadratic_vector(x):
    """:math:`v(x) = [1, x_1 .. x_M, x_a x_b\\ (a \\le b)]` ``(..., Q)`` of scaled labels ``x`` ``(..., M)``."""
    i, j = np.triu_indices(x.shape[-1])
    return jnp.concatenate([jnp.ones((*x.shape[:-1], 1), x.dtype), x, x[..., i] * x[..., j]], axis=-1)


def decode(model: Model, labels: LabelValues) -> Flux:
    r"""The Cannon's forward model: noise-free flux :math:`\theta_j \cdot v(\ell)` of physical ``labels``.

    A pure function of the model and ``labels`` ``(..., M)`` (any leading
    batch axes): ``jax.jit``, ``jax.vmap`` and ``jax.grad`` go through it.
    Returns ``(..., D)`` in flux units.
    """
    dtype = jnp.result_type(model.theta.dtype, jnp.float32)
    labels = check_last_axis(labels, len(model.label_names), "labels")
    x = (jnp.asarray(labels, dtype) - jnp.asarray(model.pivot, dtype)) / jnp.asarray(model.scale, dtype)
    return quadratic_vector(x) @ jnp.asarray(model.theta, dtype).T
