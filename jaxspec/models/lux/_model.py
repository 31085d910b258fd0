"""The trained Lux model: its configuration, parameters, the model pytree and its forward model."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec import io
from jaxspec.data._checks import check_float, check_int
from jaxspec.data.preprocess import Standardizer
from jaxspec.models._common import check_last_axis, check_shapes, model_dataclass, static
from jaxspec.typing import Flux, LabelValues, Latents

__all__ = ["Config", "Model", "Params", "decode"]


@io.register("lux.Config", arrays={})
@dataclasses.dataclass(frozen=True)
class Config:
    r"""How :func:`jaxspec.models.lux.fit` trains.  Defaults are the paper's (Horta et al. 2025, Sec. 2.3).

    Attributes
    ----------
    n_latents : int or None
        ``P``; None: ``4 M`` (the paper's cross-validated choice).  Needs
        ``M + 1 <= P < N``.
    omega : float
        L2 penalty :math:`\Omega\lVert z\rVert^2` on the latents in Agenda 2
        (paper: 1e3; the convention of :meth:`jaxspec.optim.GaussianPrior.l2`).
    n_iter : int
        Agenda 1 iterations of the A-, B- and z-steps (paper: 5).
    tol : float
        ``converged`` when the objective of the last Agenda 1 iteration changed
        by at most this fraction (the plateau the paper reports after 5).
    scatter : bool
        Run Agenda 2 (scatter, B, regularised z).
    scatter_maxiter : int
        Fisher-scoring iterations of the scatter step.
    calibrate : bool
        Estimate each label's model error on the training set (``label_scatter``,
        beyond the paper; see :func:`jaxspec.models.lux.calibrate_scatter`).
    """

    n_latents: int | None = None
    omega: float = 1e3
    n_iter: int = 5
    tol: float = 1e-3
    scatter: bool = True
    scatter_maxiter: int = 40
    calibrate: bool = True

    def __post_init__(self):
        if self.n_latents is not None:
            check_int(self.n_latents, "config.n_latents", minimum=2)
        check_float(self.omega, "config.omega", low=0.0)
        check_int(self.n_iter, "config.n_iter", minimum=1)
        check_float(self.tol, "config.tol", low=0.0, open_low=True)
        check_int(self.scatter_maxiter, "config.scatter_maxiter", minimum=1)
        for name in ("scatter", "calibrate"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"config.{name}: expected a bool, found {getattr(self, name)!r}")


@io.register("lux.Params", arrays={"A": io.Array(2), "B": io.Array(2), "ln_s": io.Array(1)})
class Params(NamedTuple):
    """Trained parameters: ``A`` ``(M, P)`` (standardised labels), ``B`` ``(L, P)`` (flux), ``ln_s`` ``(L,)``."""

    A: jax.Array
    B: jax.Array
    ln_s: jax.Array


def _upgrade(fields: dict, version: int) -> dict:
    """Layout 1 (jaxspec 0.1) kept ``omega`` beside the arrays; layout 2 keeps the whole config."""
    fields = dict(fields)
    omega = fields.pop("omega")
    n_latents = int(np.shape(fields["params"].A)[1])
    calibrated = fields.get("label_scatter") is not None
    fields["config"] = Config(n_latents=n_latents, omega=float(omega), calibrate=calibrated)
    return fields


@io.register(
    "lux.Model",
    family="lux",
    version=2,
    upgrade=_upgrade,
    arrays={
        "label_scatter": io.Array(1, optional=True),
        "latent_mean": io.Array(1, optional=True),
        "latent_cov": io.Array(2, optional=True),
        "wavelengths": io.Array(1, nested=True),
        "label_masks": io.Array(2, kind="b", optional=True),
    },
)
@model_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A trained Lux model (immutable; a JAX pytree; save with ``jaxspec.io.save``).

    Attributes
    ----------
    params : Params
    label_scaler : Standardizer
        Maps standardised labels back to physical units.
    label_scatter : array ``(M,)`` or None
        Model error of each label in physical units, calibrated on the
        training set (see :func:`jaxspec.models.lux.fit`) and added in
        quadrature to the predicted label variances; None: not calibrated.
    latent_mean, latent_cov : arrays ``(P,)``, ``(P, P)`` or None
        Mean and covariance of the training latents that ``A`` and ``B`` were
        fitted to (after Agenda 1): the empirical prior of the test step
        when ``omega`` is ``"empirical"``.
    label_names : tuple of str (static)
    wavelengths : tuple of arrays (static)
        One wavelength grid (vacuum Angstrom) per spectral output; pixel
        indices where the training spectra had none.
    config : Config (static)
        How the model was trained (``config.omega`` is the training penalty;
        the test step's is an argument of the verbs, default 0).
    label_masks : bool array ``(M, L)`` or None (static)
        Pixels allowed to inform each label (None: all).
    """

    params: Params
    label_scaler: Standardizer
    label_scatter: jax.Array | None = None
    latent_mean: jax.Array | None = None
    latent_cov: jax.Array | None = None
    label_names: tuple = static(default=())
    wavelengths: tuple = static(default=())
    config: Config = static(default=Config())
    label_masks: np.ndarray | None = static(default=None)

    def __post_init__(self):
        if not isinstance(self.params, Params):
            raise TypeError(f"params: expected lux.Params, found {type(self.params).__name__}")
        if not isinstance(self.config, Config):
            raise TypeError(f"config: expected a lux.Config, found {type(self.config).__name__}")
        (m, p), (n_pix, p_b) = np.shape(self.params.A), np.shape(self.params.B)
        if p_b != p or np.shape(self.params.ln_s) != (n_pix,) or len(self.label_names) != m:
            raise ValueError(
                f"lux.Model: expected A (M, P), B (L, P), ln_s (L,) and M label names, found "
                f"A {np.shape(self.params.A)}, B {np.shape(self.params.B)}, ln_s {np.shape(self.params.ln_s)}, "
                f"{len(self.label_names)} names"
            )
        if sum(len(w) for w in self.wavelengths) != n_pix:
            raise ValueError(f"wavelengths: expected grids of {n_pix} pixels in all, found {self.n_pix}")
        if not isinstance(self.label_scaler, Standardizer):
            raise TypeError(f"label_scaler: expected a Standardizer, found {type(self.label_scaler).__name__}")
        check_shapes(
            "lux.Model",
            **{
                "label_scaler.center": (self.label_scaler.center, (m,)),
                "label_scaler.scale": (self.label_scaler.scale, (m,)),
                "label_scatter": (self.label_scatter, (m,)),
                "latent_mean": (self.latent_mean, (p,)),
                "latent_cov": (self.latent_cov, (p, p)),
                "label_masks": (self.label_masks, (m, n_pix)),
            },
        )

    @property
    def n_latents(self) -> int:
        return int(np.shape(self.params.A)[1])

    @property
    def n_pix(self) -> tuple:
        return tuple(len(w) for w in self.wavelengths)

    @property
    def omega(self) -> float:
        """The training penalty :math:`\\Omega` (``config.omega``)."""
        return self.config.omega


def decode(model: Model, z: Latents) -> tuple[LabelValues, Flux]:
    r"""Lux's forward model: labels :math:`A z` (physical units) and flux :math:`B z` of latents ``z``.

    A pure function of the model and ``z`` ``(..., P)`` (any leading batch
    axes): ``jax.jit``, ``jax.vmap`` and ``jax.grad`` go through it.

    Returns
    -------
    labels : array ``(..., M)``
        :math:`\mathrm{scale} \odot (A z) + \mathrm{center}`.
    flux : array ``(..., L)``
        :math:`B z`, the spectral outputs side by side.
    """
    a, b = model.params.A, model.params.B
    z = jnp.asarray(check_last_axis(z, model.n_latents, "z"), jnp.result_type(a.dtype, jnp.float32))
    std = z @ jnp.asarray(a, z.dtype).T
    labels = std * jnp.asarray(model.label_scaler.scale, z.dtype) + jnp.asarray(model.label_scaler.center, z.dtype)
    return labels, z @ jnp.asarray(b, z.dtype).T
