"""The Payne emulator: its weights (per-pixel or single network), the model pytree and the forward model."""

from __future__ import annotations

import dataclasses
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec import io
from jaxspec.models._common import check_last_axis, check_shapes, check_tree_shapes, model_dataclass, static
from jaxspec.models.payne._config import Config
from jaxspec.typing import Flux, LabelValues

__all__ = [
    "LEAKY_SLOPE",
    "Layer",
    "Model",
    "PerPixel",
    "compute_dtype",
    "decode",
    "decode_scaled",
    "one_star",
    "scale_labels",
    "unscale_labels",
]

#: Slope of the LeakyReLU after every hidden layer of the single network (The Payne's ``leaky_relu``).
LEAKY_SLOPE = 0.01

# Full float32 products: a GPU's default (TF32) would round the weights to 10 bits, far from the
# emulator's own precision (~1e-3 in flux) once summed over 300 hidden units.
_PRECISION = jax.lax.Precision.HIGHEST


@io.register("payne.PerPixel", arrays={"w0": io.Array(3), "b0": io.Array(2), "w1": io.Array(2), "b1": io.Array(1)})
class PerPixel(NamedTuple):
    r"""The 2019 per-pixel emulator: one small MLP per pixel, sigmoid hidden units.

    :math:`f_l = w^{(1)}_l \cdot \sigma(W^{(0)}_l s + b^{(0)}_l) + b^{(1)}_l`.

    Attributes
    ----------
    w0 : array ``(L, H, M)``
        First-layer weights of each pixel (``w_array_0``).
    b0 : array ``(L, H)``
        First-layer biases (``b_array_0``).
    w1 : array ``(L, H)``
        Output weights (``w_array_1``).
    b1 : array ``(L,)``
        Output biases (``b_array_1``), flux units.
    """

    w0: jax.Array
    b0: jax.Array
    w1: jax.Array
    b1: jax.Array


@io.register("payne.Layer", arrays={"w": io.Array(2), "b": io.Array(1)})
class Layer(NamedTuple):
    """One dense layer of the single network, ``x -> w @ x + b``.

    Attributes
    ----------
    w : array ``(out, in)``
        Weights in (out, in) layout, as the files store them (``w_array_i``).
    b : array ``(out,)``
        Biases (``b_array_i``).
    """

    w: jax.Array
    b: jax.Array


def _expected_params(params, m: int):
    """The shapes ``params`` must have for ``m`` labels (from its own sizes): a pytree of ShapeDtypeStruct."""

    def sds(*shape):
        return jax.ShapeDtypeStruct(shape, np.float32)

    if isinstance(params, PerPixel):
        n_pix, hidden = np.shape(params.w0)[:2]
        return PerPixel(sds(n_pix, hidden, m), sds(n_pix, hidden), sds(n_pix, hidden), sds(n_pix))
    sizes = (m, *(np.shape(layer.w)[0] for layer in params))
    return tuple(Layer(sds(o, i), sds(o)) for i, o in itertools.pairwise(sizes))


def _check_params(params, m: int) -> None:
    """``params`` a PerPixel or a non-empty tuple of Layers of the right ranks, shapes fitting together."""
    if isinstance(params, PerPixel):
        ranks = {"params.w0": (params.w0, 3), "params.b0": (params.b0, 2), "params.w1": (params.w1, 2)}
        ranks["params.b1"] = (params.b1, 1)
    elif isinstance(params, tuple) and params and all(isinstance(layer, Layer) for layer in params):
        ranks = {f"params[{i}].w": (layer.w, 2) for i, layer in enumerate(params)}
    else:
        raise TypeError(f"params: expected a payne.PerPixel or a tuple of payne.Layer, found {type(params).__name__}")
    for name, (leaf, rank) in ranks.items():
        if np.ndim(leaf) != rank:
            raise ValueError(f"{name}: expected rank {rank}, found shape {np.shape(leaf)}")
    check_tree_shapes("payne.Model", "params", params, _expected_params(params, m))
    if any(n == 0 for leaf in jax.tree_util.tree_leaves(params) for n in np.shape(leaf)):
        raise ValueError(f"params: expected no empty axis, found shapes {jax.tree.map(np.shape, params)}")


@io.register(
    "payne.Model",
    family="payne",
    arrays={"x_min": io.Array(1), "x_max": io.Array(1), "wavelength": io.Array(1, optional=True)},
)
@model_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    r"""A Payne emulator (immutable; a JAX pytree; ``jaxspec.io.save`` or :func:`save_payne_format` to keep it).

    Attributes
    ----------
    params : PerPixel or tuple of Layer
        The network: the 2019 per-pixel format (sigmoid hidden units) or the
        single network of the current releases (LeakyReLU after every hidden
        layer, linear output).  Arrays keep the dtypes of their file.
    x_min, x_max : arrays ``(M,)``
        The label box in physical units (the training grid's range):
        :math:`s = (y - x_{\min}) / (x_{\max} - x_{\min}) - 1/2`, :math:`x_{\max} > x_{\min}`.
    label_names : tuple of ``M`` str (static)
    wavelength : array ``(L,)`` or None (static)
        Vacuum Angstrom, strictly increasing; None when the grid is unknown.
    config : Config or None (static)
        How :func:`~jaxspec.models.payne.fit` trained it (a single network
        whose hidden widths are ``config.hidden``); None for an emulator read
        from a Payne file, which does not say.

    The file format the model writes back (:attr:`file_format`) follows from
    ``params``, so it can never disagree with the weights.
    """

    params: PerPixel | tuple
    x_min: jax.Array
    x_max: jax.Array
    label_names: tuple = static()
    wavelength: np.ndarray | None = static(default=None)
    config: Config | None = static(default=None)

    def __post_init__(self):
        names = self.label_names
        if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names) or len(set(names)) < len(names):
            raise ValueError(f"label_names: expected a tuple of distinct str, found {names!r}")
        m = len(names)
        _check_params(self.params, m)
        n_pix = self.n_pix
        check_shapes("payne.Model", x_min=(self.x_min, (m,)), x_max=(self.x_max, (m,)))
        check_shapes("payne.Model", wavelength=(self.wavelength, (n_pix,)))
        lo, hi = np.asarray(self.x_min, np.float64), np.asarray(self.x_max, np.float64)
        if not np.all(np.isfinite(lo) & np.isfinite(hi) & (hi > lo)):
            bad = int(np.flatnonzero(~(np.isfinite(lo) & np.isfinite(hi) & (hi > lo)))[0])
            raise ValueError(
                f"x_max: expected finite x_max > x_min for every label, found {names[bad]!r}: "
                f"x_min {float(lo[bad])!r}, x_max {float(hi[bad])!r}"
            )
        if self.wavelength is not None:
            w = np.asarray(self.wavelength)
            if w.dtype.kind != "f" or not np.all(np.isfinite(w) & (w > 0)) or np.any(np.diff(w) <= 0):
                raise ValueError("wavelength: expected finite, positive, strictly increasing vacuum Angstrom")
        if self.config is not None:
            if not isinstance(self.config, Config):
                raise TypeError(f"config: expected a payne.Config or None, found {type(self.config).__name__}")
            p = self.params
            found = "a per-pixel emulator" if isinstance(p, PerPixel) else tuple(np.shape(x.b)[0] for x in p[:-1])
            if found != self.config.hidden:
                raise ValueError(
                    f"config: expected a single network of hidden widths config.hidden = {self.config.hidden}, "
                    f"found {found}"
                )

    @property
    def file_format(self) -> str:
        """``"per_pixel"`` (2019) or ``"network"`` (single network): the Payne format the weights came in."""
        return "per_pixel" if isinstance(self.params, PerPixel) else "network"

    @property
    def n_pix(self) -> int:
        """``L``, the number of pixels."""
        return int(np.shape(self.params.b1 if isinstance(self.params, PerPixel) else self.params[-1].b)[0])

    @property
    def n_labels(self) -> int:
        """``M``, the number of labels."""
        return len(self.label_names)


def compute_dtype(model: Model):
    """The computing dtype: the default float (float32; float64 under ``JAX_ENABLE_X64``), or wider weights'."""
    default = jax.dtypes.canonicalize_dtype(jnp.float64)
    return jnp.result_type(*(leaf.dtype for leaf in jax.tree_util.tree_leaves(model.params)), default)


def scale_labels(model: Model, labels: LabelValues) -> jax.Array:
    r"""Physical labels ``(..., M)`` to the emulator's scaled labels ``(..., M)``.

    :math:`s = (y - x_{\min})/(x_{\max} - x_{\min}) - 1/2`: the label box maps to :math:`[-1/2, 1/2]^M`.
    Any leading batch axes; no value is checked.
    """
    labels = check_last_axis(labels, model.n_labels, "labels")
    dtype = jnp.result_type(compute_dtype(model), jnp.asarray(labels).dtype)
    lo, hi = jnp.asarray(model.x_min, dtype), jnp.asarray(model.x_max, dtype)
    return (jnp.asarray(labels, dtype) - lo) / (hi - lo) - 0.5


def unscale_labels(model: Model, s: LabelValues) -> jax.Array:
    r"""Scaled labels ``(..., M)`` back to physical units: :math:`y = (s + 1/2)(x_{\max} - x_{\min}) + x_{\min}`."""
    s = check_last_axis(s, model.n_labels, "s")
    dtype = jnp.result_type(compute_dtype(model), jnp.asarray(s).dtype)
    lo, hi = jnp.asarray(model.x_min, dtype), jnp.asarray(model.x_max, dtype)
    return (jnp.asarray(s, dtype) + 0.5) * (hi - lo) + lo


def _per_pixel_one(p: PerPixel, s):
    """One star's spectrum ``(L,)`` from scaled labels ``(M,)``: every pixel's MLP at once (no loop)."""
    hidden = jax.nn.sigmoid(jnp.einsum("lhm,m->lh", p.w0, s, precision=_PRECISION) + p.b0)
    return jnp.einsum("lh,lh->l", p.w1, hidden, precision=_PRECISION) + p.b1


def _network_one(layers: tuple, s):
    """One star's spectrum ``(L,)`` from scaled labels ``(M,)`` through the single network."""
    x = s
    for layer in layers[:-1]:
        x = jax.nn.leaky_relu(jnp.matmul(layer.w, x, precision=_PRECISION) + layer.b, LEAKY_SLOPE)
    return jnp.matmul(layers[-1].w, x, precision=_PRECISION) + layers[-1].b


def one_star(params, s):
    """The emulator for one star: scaled labels ``(M,)`` -> flux ``(L,)`` (``params`` cast to ``s``'s dtype)."""
    params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, s.dtype), params)
    return _per_pixel_one(params, s) if isinstance(params, PerPixel) else _network_one(params, s)


def decode_scaled(model: Model, s: LabelValues) -> Flux:
    r"""The emulator on scaled labels ``s`` ``(..., M)`` (the box is :math:`[-1/2, 1/2]^M`): flux ``(..., L)``.

    Per-pixel format (Ting et al. 2019), with :math:`\sigma` the logistic sigmoid:

    .. math::

        f_l(s) = \sum_h w^{(1)}_{lh}\, \sigma\Bigl(\sum_m w^{(0)}_{lhm} s_m + b^{(0)}_{lh}\Bigr) + b^{(1)}_l .

    Single-network format, :math:`k` layers, :math:`\phi(x) = \max(x, 0.01 x)`:

    .. math::

        x_0 = s, \quad x_{i+1} = \phi(W_i x_i + b_i)\ (i < k - 1), \quad f = W_{k-1} x_{k-1} + b_{k-1}.

    Written for one star and ``jax.vmap``-ed over the flattened leading axes;
    a pure function of the model, so ``jax.jit``, ``jax.vmap`` and
    ``jax.grad`` go through it.  Continuum-normalised flux in the default
    float dtype (float32; float64 under ``JAX_ENABLE_X64``, the float32
    weights of a Payne file then evaluated in float64).  The fitters work
    in ``s``: the bounds are the same for every label there.
    """
    s = check_last_axis(s, model.n_labels, "s")
    s = jnp.asarray(s, jnp.result_type(compute_dtype(model), jnp.asarray(s).dtype))
    flat = s.reshape(-1, model.n_labels)
    flux = jax.vmap(one_star, in_axes=(None, 0))(model.params, flat)
    return flux.reshape(*s.shape[:-1], model.n_pix)


def decode(model: Model, labels: LabelValues) -> Flux:
    r"""The Payne's forward model: continuum-normalised flux ``(..., L)`` of physical ``labels`` ``(..., M)``.

    :math:`f = \mathrm{NN}(s)` with :math:`s = (y - x_{\min})/(x_{\max} - x_{\min}) - 1/2`
    (:func:`scale_labels`, :func:`decode_scaled` gives the network's
    equations).  Labels in the model's ``label_names`` order and units; the
    emulator is only trained inside the box ``[x_min, x_max]`` and
    extrapolates poorly outside it (values are not checked here: it is a
    pure, traceable function; :func:`predict_spectra` flags such stars).
    """
    return decode_scaled(model, scale_labels(model, labels))
