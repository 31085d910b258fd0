r"""The Mendis model pytree and its pure density: ``log p(S, y)``, draws, the conditional flow.

Data vectors are ``x = (S, y)``: the ``L`` pixels of a spectrum, then the ``M``
labels (the paper's 2405 + 3).  The model first standardises them with fixed
per-dimension statistics of the training set,
:math:`u = (x - c) / s`, then the flow maps ``u`` to the base variable, so

.. math::

    \log p(x) = \log p_u(u) - \sum_d \log s_d

is a density in the data's own units (flux, K, dex).  The training set's
ActNorm initialisation then starts from unit-scale inputs whatever the units,
and ``c`` is also what a masked value is filled with at evaluation
(:mod:`jaxspec.models.flows._fit` explains masked values).

``kind="joint"`` is the paper's flow of ``u`` as a whole.  ``kind="structured"``
has two flows: one of the labels, :math:`p_u(u_y)`, and one of the spectrum
whose conditioners all see :math:`u_y`, :math:`p_u(u_S \mid u_y)`; their
product is the joint density, so both kinds train on the same likelihood.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec import io
from jaxspec.models._common import check_last_axis, check_shapes, check_tree_shapes, model_dataclass, static
from jaxspec.models.flows._bijectors import LUFixed
from jaxspec.models.flows._config import Config
from jaxspec.models.flows._flow import (
    BlockParams,
    FlowSpec,
    base_log_prob,
    from_base,
    parameter_shapes,
    to_base,
)

__all__ = [
    "Model",
    "flow_specs",
    "joint_to_base",
    "log_density",
    "log_density_standard",
    "sample_standard",
    "spectra_from_base",
    "standardise",
    "unstandardise",
]


def flow_specs(config: Config, n_pix: int, n_labels: int) -> tuple[FlowSpec, FlowSpec | None]:
    """``(main, labels)``: the flow of ``x`` (joint) or of ``S`` given ``y`` (structured), and the label
    flow (structured) or None."""
    common = {"hidden": config.hidden, "bins": config.bins, "bound": config.bound}
    if config.kind == "joint":
        return FlowSpec(n_pix + n_labels, config.blocks, channels=config.channels, **common), None
    main = FlowSpec(n_pix, config.blocks, channels=config.channels, context=n_labels, **common)
    return main, FlowSpec(n_labels, config.label_blocks, **common)


def _check_fixed(fixed, spec: FlowSpec, name: str) -> None:
    if not isinstance(fixed, LUFixed):
        raise TypeError(f"{name}: expected a flows.LUFixed, found {type(fixed).__name__}")
    c, b = spec.mixed, spec.blocks
    check_shapes("flows.Model", **{f"{name}.sign": (fixed.sign, (b, c)), f"{name}.perm": (fixed.perm, (b, c))})
    perm = np.asarray(fixed.perm)
    if perm.dtype.kind not in "iu" or not np.all(np.sort(perm, axis=1) == np.arange(c)):
        raise ValueError(f"{name}.perm: expected a permutation of 0..{c - 1} in each of the {b} blocks")
    if not np.all(np.abs(np.asarray(fixed.sign)) == 1):
        raise ValueError(f"{name}.sign: expected entries +1 or -1")


@io.register(
    "flows.Model",
    family="flows",
    arrays={"center": io.Array(1), "spread": io.Array(1), "wavelength": io.Array(1, optional=True)},
)
@model_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    r"""A trained Mendis flow (immutable; a JAX pytree; ``jaxspec.io.save`` keeps it).

    Attributes
    ----------
    params : BlockParams
        The flow of ``u = (u_S, u_y)`` (joint) or of ``u_S`` given ``u_y``
        (structured): every block's ActNorm, LU factors and conditioner
        weights, stacked on a leading axis of length ``config.blocks``.
    label_params : BlockParams or None
        The flow of ``u_y`` (structured), else None.
    center, spread : arrays ``(L + M,)``
        The fixed standardisation :math:`u = (x - c)/s` (the training set's
        mean and standard deviation of each measured pixel and label).
    fixed, label_fixed : LUFixed (static)
        Each block's permutation and signs of the LU mixing (not trained).
    label_names : tuple of ``M`` str (static)
    wavelength : array ``(L,)`` or None (static)
    config : Config (static)
    """

    params: BlockParams
    label_params: BlockParams | None
    center: jax.Array
    spread: jax.Array
    fixed: LUFixed = static()
    label_fixed: LUFixed | None = static()
    label_names: tuple = static()
    wavelength: np.ndarray | None = static(default=None)
    config: Config = static(default=Config())

    def __post_init__(self):
        names = self.label_names
        if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
            raise ValueError(f"label_names: expected a tuple of distinct str, found {names!r}")
        if not names:
            raise ValueError("label_names: expected at least one label (the flow models x = (S, y))")
        if not isinstance(self.config, Config):
            raise TypeError(f"config: expected a flows.Config, found {type(self.config).__name__}")
        if np.ndim(self.center) != 1:
            raise ValueError(f"center: expected shape (n_pix + n_labels,), found {np.shape(self.center)}")
        n_pix = np.shape(self.center)[0] - len(names)
        if n_pix < 1:
            raise ValueError(f"center: expected more than the {len(names)} labels' entries, found {self.center.shape}")
        check_shapes("flows.Model", spread=(self.spread, np.shape(self.center)), wavelength=(self.wavelength, (n_pix,)))
        if not np.all(np.asarray(self.spread) > 0):
            raise ValueError("spread: expected every entry > 0")
        main, labels = self.specs
        check_tree_shapes("flows.Model", "params", self.params, parameter_shapes(main))
        _check_fixed(self.fixed, main, "fixed")
        if labels is None:
            if self.label_params is not None or self.label_fixed is not None:
                raise ValueError("label_params: expected None for config.kind = 'joint'")
        else:
            check_tree_shapes("flows.Model", "label_params", self.label_params, parameter_shapes(labels))
            _check_fixed(self.label_fixed, labels, "label_fixed")

    @property
    def n_labels(self) -> int:
        """``M``."""
        return len(self.label_names)

    @property
    def n_pix(self) -> int:
        """``L``."""
        return int(np.shape(self.center)[0]) - self.n_labels

    @property
    def dim(self) -> int:
        """``D = L + M``."""
        return int(np.shape(self.center)[0])

    @property
    def specs(self) -> tuple[FlowSpec, FlowSpec | None]:
        """:func:`flow_specs` of this model."""
        return flow_specs(self.config, self.n_pix, self.n_labels)


def standardise(model: Model, x):
    """``u = (x - center) / spread`` of data ``x (..., L + M)``."""
    check_last_axis(x, model.dim, "x")
    return (x - model.center) / model.spread


def unstandardise(model: Model, u):
    """``x = center + spread * u``."""
    return model.center + model.spread * u


def _split(model: Model, u):
    return u[..., : model.n_pix], u[..., model.n_pix :]


def log_density_standard(model: Model, u):
    r""":math:`\log p_u(u)` of standardised vectors ``u (..., L + M)`` (module docstring)."""
    check_last_axis(u, model.dim, "u")
    main, labels = model.specs
    if labels is None:
        z, ld = to_base(model.params, model.fixed, main, u)
        return base_log_prob(z) + ld
    u_s, u_y = _split(model, u)
    z_y, ld_y = to_base(model.label_params, model.label_fixed, labels, u_y)
    z_s, ld_s = to_base(model.params, model.fixed, main, u_s, u_y)
    return base_log_prob(z_y) + ld_y + base_log_prob(z_s) + ld_s


def log_density(model: Model, x):
    r""":math:`\log p(x)` of data ``x = (S, y)`` ``(..., L + M)`` in the data's units (nats)."""
    return log_density_standard(model, standardise(model, x)) - jnp.sum(jnp.log(model.spread))


def joint_to_base(model: Model, u):
    """The base variable ``z (..., L + M)`` of standardised ``u`` (structured: ``(z_S, z_y)``) and the log-det."""
    main, labels = model.specs
    if labels is None:
        return to_base(model.params, model.fixed, main, u)
    u_s, u_y = _split(model, u)
    z_y, ld_y = to_base(model.label_params, model.label_fixed, labels, u_y)
    z_s, ld_s = to_base(model.params, model.fixed, main, u_s, u_y)
    return jnp.concatenate([z_s, z_y], axis=-1), ld_s + ld_y


def spectra_from_base(model: Model, z_s, u_y):
    """Structured flows: standardised spectra ``u_S`` from base draws ``z_s (..., L)`` given ``u_y (..., M)``."""
    main, labels = model.specs
    if labels is None:
        raise ValueError("model: exact conditional draws need config.kind = 'structured'")
    return from_base(model.params, model.fixed, main, z_s, u_y)[0]


def sample_standard(model: Model, z):
    """Standardised draws ``u (..., L + M)`` from base draws ``z (..., L + M)`` (the inverse flow)."""
    check_last_axis(z, model.dim, "z")
    main, labels = model.specs
    if labels is None:
        return from_base(model.params, model.fixed, main, z)[0]
    z_s, z_y = _split(model, z)
    u_y = from_base(model.label_params, model.label_fixed, labels, z_y)[0]
    return jnp.concatenate([spectra_from_base(model, z_s, u_y), u_y], axis=-1)
