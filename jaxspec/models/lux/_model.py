"""The trained Lux model: its parameters and the frozen model dataclass."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from jaxspec import io
from jaxspec.data.preprocess import Standardizer

__all__ = ["LuxModel", "LuxParams"]


@io.register("lux.Params")
class LuxParams(NamedTuple):
    """Trained parameters: ``A`` ``(M, P)`` (standardised labels), ``B`` ``(L, P)`` (flux), ``ln_s`` ``(L,)``."""

    A: np.ndarray
    B: np.ndarray
    ln_s: np.ndarray


@io.register("lux.Model", family="lux")
@dataclasses.dataclass(frozen=True)
class LuxModel:
    """A trained Lux model (immutable; save with ``jaxspec.io.save``).

    Attributes
    ----------
    params : LuxParams
    label_scaler : Standardizer
        Maps standardised labels back to physical units.
    label_names : tuple of str
    wavelengths : tuple of arrays
        One wavelength grid (vacuum Angstrom) per spectral output; an empty
        array where the training spectra had none.
    omega : float
        L2 penalty strength of the final z-step in training (the test step's
        penalty is an argument of the predict functions, default 0).
    label_masks : bool array ``(M, L)`` or None
        Pixels allowed to inform each label (None: all).
    label_scatter : array ``(M,)`` or None
        Model error of each label in physical units, calibrated on the
        training set (see :func:`fit`) and added in quadrature to the
        predicted label variances; None: not calibrated.
    latent_mean, latent_cov : arrays ``(P,)``, ``(P, P)`` or None
        Mean and covariance of the training latents that ``A`` and ``B`` were
        fitted to (after Agenda 1): the empirical prior of the test step
        when ``omega`` is ``"empirical"``.
    """

    params: LuxParams
    label_scaler: Standardizer
    label_names: tuple
    wavelengths: tuple
    omega: float
    label_masks: np.ndarray | None = None
    label_scatter: np.ndarray | None = None
    latent_mean: np.ndarray | None = None
    latent_cov: np.ndarray | None = None

    @property
    def n_latents(self) -> int:
        return int(self.params.A.shape[1])

    @property
    def n_pix(self) -> tuple:
        return tuple(len(w) for w in self.wavelengths)
