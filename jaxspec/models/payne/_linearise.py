r"""The fitter's forward model and its exact Jacobian in closed form, for :mod:`jaxspec.models.payne._fit_labels`.

One star's observed-frame spectrum :math:`\tilde f(s, v) = S(v)\,\mathrm{NN}(s)` (emulator,
then Doppler shift) and its Jacobian with respect to the fitter's unbounded parameters
:math:`z = (u, w)`, :math:`s = \tfrac12\tanh u`, :math:`v = 5\tanh w`:

.. math::

    \frac{\partial\tilde f}{\partial u_m} = S(v)\,\frac{\partial\,\mathrm{NN}}{\partial s_m}\,
        \tfrac12\,\mathrm{sech}^2 u_m, \qquad
    \frac{\partial\tilde f}{\partial w} = \frac{\partial S}{\partial v}\,\mathrm{NN}(s)\;
        5\,\mathrm{sech}^2 w .

For the per-pixel emulator
:math:`\partial\,\mathrm{NN}_l/\partial s_m = \sum_h w^{(1)}_{lh}\,\sigma'_{lh}\,w^{(0)}_{lhm}`
is written out with the pixel axis last and the small hidden and label loops unrolled, so
XLA fuses the whole pass into vector loops over the pixels (several times faster on a CPU
than ``jax.jacfwd`` through the ``(L, H, M)`` weights, which batches thousands of tiny
products); for the single network :math:`\partial\,\mathrm{NN}/\partial s` comes from
``jax.jacfwd`` (matrix products already).  On a grid uniform in :math:`\ln\lambda` within
each chip (:func:`jaxspec.models.payne._doppler.log_chips`), :math:`S(v)` is a two-tap
filter with the same weights at every pixel of a chip, applied to the spectrum and to
every Jacobian row by static slices; elsewhere the general stencil shift and
``jax.jacfwd`` are used.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxspec.models.payne._doppler import RV_MAX, LogChips, shift_log_chips
from jaxspec.models.payne._model import _PRECISION, LEAKY_SLOPE, PerPixel, one_star

__all__ = ["PixelMajor", "n_labels_of", "observed", "pixel_major", "rest_spectrum", "value", "value_and_jacobian"]


class PixelMajor(NamedTuple):
    """The per-pixel weights with the pixel axis last: ``w0 (H, M, L)``, ``b0 (H, L)``, ``w1 (H, L)``, ``b1 (L,)``."""

    w0: jax.Array
    b0: jax.Array
    w1: jax.Array
    b1: jax.Array


def pixel_major(p: PerPixel) -> PixelMajor:
    """:class:`PerPixel` weights ``(L, H, M)`` transposed to :class:`PixelMajor` (done once per fit)."""
    return PixelMajor(jnp.transpose(p.w0, (1, 2, 0)), p.b0.T, p.w1.T, p.b1)


def _per_pixel_rows(p: PixelMajor, s, derivatives: bool = True):
    """``(M + 1, L)``: the spectrum and its ``M`` label derivatives, one fused pass over the pixels
    (``(1, L)``, the spectrum alone, without ``derivatives``)."""
    n_hidden, n_labels, _ = p.w0.shape
    flux = p.b1
    grad = [jnp.zeros_like(p.b1) for _ in range(n_labels if derivatives else 0)]
    for h in range(n_hidden):
        pre = p.b0[h]
        for m in range(n_labels):
            pre = pre + p.w0[h, m] * s[m]
        sig = jax.nn.sigmoid(pre)
        flux = flux + p.w1[h] * sig
        slope = p.w1[h] * sig * (1.0 - sig)
        for m in range(len(grad)):
            grad[m] = grad[m] + slope * p.w0[h, m]
    return jnp.stack([flux, *grad])


def _network_rows(layers: tuple, s):
    r"""``(M + 1, L)`` for the single network: the chain rule right to left, one product with the output layer.

    With :math:`a_i = W_i x_i + b_i`, :math:`x_{i+1} = \phi(a_i)`, the label
    Jacobian is :math:`W_{k-1} D_{k-2} W_{k-2} \cdots D_0 W_0`,
    :math:`D_i = \mathrm{diag}\,\phi'(a_i)`: the small ``(H, M)`` product is
    carried through the hidden layers and the last hidden activations ride
    along as one more column, so the ``(L, H)`` output layer is applied once to
    ``(H, M + 1)`` (a matrix product that ``vmap`` turns into one over all
    stars of a batch).
    """
    x, tangent = s, None
    for layer in layers[:-1]:
        pre = jnp.matmul(layer.w, x, precision=_PRECISION) + layer.b
        slope = jnp.where(pre >= 0, 1.0, LEAKY_SLOPE).astype(pre.dtype)
        tangent = layer.w if tangent is None else jnp.matmul(layer.w, tangent, precision=_PRECISION)
        tangent = slope[:, None] * tangent
        x = jax.nn.leaky_relu(pre, LEAKY_SLOPE)
    out = jnp.matmul(layers[-1].w, jnp.concatenate([x[:, None], tangent], axis=1), precision=_PRECISION)
    return out.T.at[0].add(layers[-1].b)


def _rest_rows(params, s):
    """``(M + 1, L)`` rest-frame spectrum and label derivatives of either emulator format."""
    if isinstance(params, PixelMajor):
        return _per_pixel_rows(params, s)
    if len(params) == 1:  # no hidden layer: affine in s
        return jnp.concatenate([(jnp.matmul(params[0].w, s, precision=_PRECISION) + params[0].b)[None], params[0].w.T])
    return _network_rows(params, s)


def observed(params, chips: LogChips | None, s, v):
    r"""One star's observed-frame spectrum ``(L,)`` and its Jacobian ``(L, M[+1])`` w.r.t. ``(s[, v])``.

    ``params`` is :class:`PixelMajor` or the single network's layers, in
    ``s``'s dtype; ``chips`` the grid's log-uniform chips, or None for the
    rest frame (``v`` ignored, no RV column).
    """
    rows = _rest_rows(params, s)
    if chips is None:
        return rows[0], rows[1:].T
    shifted, d_flux_dv = shift_log_chips(rows, chips, v)
    return shifted[0], jnp.concatenate([shifted[1:], d_flux_dv[None]]).T


def n_labels_of(params) -> int:
    """``M`` of :class:`PixelMajor` or :class:`PerPixel` weights or of the single network's layers (static)."""
    if isinstance(params, PixelMajor):
        return params.w0.shape[1]
    return params.w0.shape[-1] if isinstance(params, PerPixel) else params[0].w.shape[1]


def value_and_jacobian(args, z):
    r"""The fitter's ``jacobian(args, z) -> (f, J)``: :func:`observed` with the chain rule to ``z = (u[, w])``.

    ``args = (params, chips)``; ``s = tanh(u)/2``, ``v = 5 tanh(w)`` (no ``w``
    when ``chips`` is None).
    """
    params, chips = args
    m = n_labels_of(params)
    tu = jnp.tanh(z[:m])
    if chips is None:
        flux, jac = observed(params, None, 0.5 * tu, None)
        return flux, jac * (0.5 * (1.0 - tu * tu))
    tw = jnp.tanh(z[m])
    flux, jac = observed(params, chips, 0.5 * tu, RV_MAX * tw)
    chain = jnp.concatenate([0.5 * (1.0 - tu * tu), (RV_MAX * (1.0 - tw * tw))[None]])
    return flux, jac * chain


def rest_spectrum(params, s):
    """The rest-frame spectrum ``(L,)`` alone (no derivatives)."""
    if isinstance(params, PixelMajor):
        return _per_pixel_rows(params, s, derivatives=False)[0]
    return one_star(params, s)


def value(args, z):
    """The fitter's ``decode(args, z)``: the spectrum of :func:`value_and_jacobian`, without the Jacobian."""
    params, chips = args
    m = n_labels_of(params)
    flux = rest_spectrum(params, 0.5 * jnp.tanh(z[:m]))
    if chips is None:
        return flux
    return shift_log_chips(flux[None], chips, RV_MAX * jnp.tanh(z[m]))[0][0]
