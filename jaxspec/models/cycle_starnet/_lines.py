r"""Finding what the synthetic model lacks (Section 3.2.7, Eq. 8): Jacobian differences and their features.

The flux response of a model :math:`F(y)` to label :math:`y_j` is the column
:math:`\partial F / \partial y_j` (Eq. 8).  Cycle-StarNet gives two models of
the same star, the emulator :math:`P(y)` (what the synthetic line list
knows) and the calibrated one :math:`T_{s\to o}(P(y), z_{sp})` (what the
observed data taught the networks); where their responses differ,

.. math::

    \Delta_{lj} = \frac{\partial T_{s\to o}(P(y))_l}{\partial y_j} - \frac{\partial P(y)_l}{\partial y_j},

the synthetic model is missing (or mis-modelling) a feature at pixel
:math:`l` that responds to label :math:`j`.  The derivatives here are exact
(forward-mode autodiff through the emulator and the networks); the paper's
were finite differences of 0.05 dex with :math:`z_{sp}` averaged over 1000
spectra (``z_sp`` of several stars is averaged over likewise, the Jacobian of
each, not the latent, as a derivative of the mean model).

:func:`features` turns :math:`\Delta` into a list: runs of consecutive
pixels where :math:`\max_j |\Delta_{lj}| \, u_j` exceeds a threshold (with
:math:`u_j` a label's unit step, 1 by default), each attributed to the label
of the largest summed :math:`|\Delta_{lj}| u_j` over the run.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.models import payne
from jaxspec.models.cycle_starnet._fit_labels import emulate
from jaxspec.models.cycle_starnet._model import Model
from jaxspec.models.cycle_starnet._predict import check_model, check_z_sp

__all__ = ["Feature", "LineJacobians", "features", "jacobian_difference", "line_jacobians"]


class LineJacobians(NamedTuple):
    """Flux responses at one star's labels, each ``(n_net, M)`` (flux per unit of each physical label).

    ``transfer``: of :math:`T_{s\\to o}(P(y))`; ``emulator``: of :math:`P(y)` on the same pixels;
    ``difference``: their difference (Eq. 8's response missing from the synthetic model);
    ``label_names``.
    """

    transfer: np.ndarray
    emulator: np.ndarray
    difference: np.ndarray
    label_names: tuple


class Feature(NamedTuple):
    """A run of pixels ``[start, stop)`` (indices into the compared spectra) and the label it responds to most.

    ``label`` (its index into ``label_names``) and ``name``; ``peak``: the largest
    :math:`|\\Delta| u` in the run; ``response``: the run's summed :math:`|\\Delta_{lj}| u_j` per label
    ``(M,)``; ``wavelength``: ``(first, last)`` pixel wavelengths or None.
    """

    start: int
    stop: int
    label: int
    name: str
    peak: float
    response: np.ndarray
    wavelength: tuple | None


def jacobian_difference(observed_fn, synthetic_fn, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Exact Jacobians of two models of the same labels and their difference (Eq. 8).

    Parameters
    ----------
    observed_fn, synthetic_fn : callables ``labels (M,) -> flux (L,)``
        Pure JAX functions (the calibrated and the synthetic model).
    labels : array ``(M,)``

    Returns
    -------
    (J_observed, J_synthetic, J_observed - J_synthetic), each ``(L, M)`` numpy.
    """
    y = jnp.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels: expected one star's labels, shape (M,), found {y.shape}")
    j_obs = np.asarray(jax.jit(jax.jacfwd(observed_fn))(y))
    j_syn = np.asarray(jax.jit(jax.jacfwd(synthetic_fn))(y))
    if j_obs.shape != j_syn.shape:
        raise ValueError(f"observed_fn, synthetic_fn: Jacobians of different shapes {j_obs.shape} and {j_syn.shape}")
    return j_obs, j_syn, j_obs - j_syn


def line_jacobians(model: Model, labels, z_sp) -> LineJacobians:
    r"""The flux responses of the calibrated model and of the emulator at one star's physical ``labels``.

    Parameters
    ----------
    model : Model
        With an emulator.
    labels : array ``(M,)``
        Physical labels, ``model.emulator.label_names`` order (the paper: a
        solar-abundance K giant, Teff 4750 K, logg 2.5).
    z_sp : array ``(n_z, split_z)`` or ``(k, n_z, split_z)``
        Split latents; several are averaged over (the Jacobian of each).

    Returns
    -------
    LineJacobians
        On the pixels the networks see (``model.net_wavelength``).
    """
    model = check_model(model)
    if model.emulator is None:
        raise ValueError("model: has no emulator (model.emulator is None)")
    y = np.asarray(labels, np.float64)
    if y.shape != (model.emulator.n_labels,) or not np.all(np.isfinite(y)):
        raise ValueError(f"labels: expected finite labels of shape ({model.emulator.n_labels},), found {y.shape}")
    z = np.asarray(z_sp)
    z = check_z_sp(model, z, 1 if z.ndim < 3 else z.shape[0])
    dtype = z.dtype
    y = jnp.asarray(y, dtype)
    kept = model.kept

    def transfer_mean(y):
        return jnp.mean(emulate(model, jnp.broadcast_to(y, (z.shape[0], y.shape[0])), z), axis=0)

    j_t, j_e, diff = jacobian_difference(transfer_mean, lambda y: payne.decode(model.emulator, y)[kept], y)
    return LineJacobians(j_t, j_e, diff, model.emulator.label_names)


def features(
    difference,
    *,
    threshold: float,
    label_names=None,
    units=None,
    min_pixels: int = 1,
    wavelength=None,
) -> list[Feature]:
    r"""Features the synthetic model lacks: runs of pixels where :math:`\max_j |\Delta_{lj}| u_j > ` ``threshold``.

    Parameters
    ----------
    difference : array ``(L, M)``
        :math:`\Delta` (``LineJacobians.difference``).
    threshold : float
        In flux per ``units`` of the label (e.g. 0.01 flux per 0.1 dex:
        ``threshold=0.01, units=0.1`` for abundance labels).
    label_names : sequence of ``M`` str, optional
    units : float or array ``(M,)``, optional
        The label step that makes responses comparable across labels (1 K of
        Teff is not 1 dex); default 1 for every label.
    min_pixels : int
        Shorter runs are dropped.
    wavelength : array ``(L,)``, optional

    Returns
    -------
    list of Feature
        In pixel order.
    """
    d = np.abs(np.asarray(difference, np.float64))
    if d.ndim != 2:
        raise ValueError(f"difference: expected shape (L, M), found {d.shape}")
    m = d.shape[1]
    u = np.broadcast_to(np.ones(m) if units is None else np.asarray(units, np.float64), (m,))
    if not np.all(np.isfinite(u) & (u > 0)):
        raise ValueError(f"units: expected positive label steps, found {units!r}")
    if not (np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold: expected a positive float, found {threshold!r}")
    names = tuple(f"label_{j}" for j in range(m)) if label_names is None else tuple(label_names)
    if len(names) != m:
        raise ValueError(f"label_names: expected {m} names, found {len(names)}")
    scaled = d * u
    strong = scaled.max(axis=1) > threshold
    edges = np.diff(np.concatenate([[0], strong.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    out = []
    for a, b in zip(starts, stops, strict=True):
        if b - a < min_pixels:
            continue
        response = scaled[a:b].sum(axis=0)
        j = int(np.argmax(response))
        wave = None if wavelength is None else (float(wavelength[a]), float(wavelength[b - 1]))
        out.append(Feature(int(a), int(b), j, names[j], float(scaled[a:b].max()), response, wave))
    return out
