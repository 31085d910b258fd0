r"""K-fold cross-validation of the Lux hyper-parameters ``P`` and ``Omega`` (Horta et al. 2025, Appendix A).

For every fold ``k`` and every pair (``P``, :math:`\Omega`) a Lux model is
trained (:func:`jaxspec.models.lux.fit`) on the other folds; the held-out
stars' latents are then inferred twice at fixed ``A``, ``B``, ``s`` -- once
from their fluxes alone, once from their labels alone (the left and right
panels of the paper's Fig. 14) -- and each time the total held-out chi2 of
the paper's Eq. A1 is recorded:

.. math::

    \chi^2 = \sum_{n=1}^{N_\mathrm{test}} \Bigl[
        \sum_{m} \frac{(\ell_{nm} - A_m z_n)^2}{\sigma_{\ell,nm}^2}
      + \sum_{\lambda} \frac{(f_{n\lambda} - B_\lambda z_n)^2}{\sigma_{f,n\lambda}^2 + s_\lambda^2}
    \Bigr],

over measured labels and pixels only (``ivar == 0`` entries are left out),
with labels standardised by the training fold's scaler (the ratio
:math:`(\ell - Az)^2/\sigma_\ell^2` is the same in physical units).

The test-step penalty is the trained :math:`\Omega`, passed explicitly to
:func:`jaxspec.models.lux.encode` (whose own default is the
unpenalised test step of the paper's Eqs. 10-11): Appendix A optimises the
test latents "for a given choice of P and Omega", and with labels alone and
``P > M`` an unpenalised fit is undetermined -- the penalty is what fixes the
directions the labels leave free.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxspec.data._checks import check_int, check_key
from jaxspec.data.containers import Labels, Spectra
from jaxspec.models import lux
from jaxspec.models.lux._predict import as_outputs
from jaxspec.optim.scatter import flux_weights_np

__all__ = ["CVResult", "cross_validate", "fold_indices", "held_out_chi2", "latent_grid"]

#: The paper's grid: ``P = [1, 2, 4, 8] x M`` and :math:`\Omega = [1, 10, 100, 1000]`.
PAPER_MULTIPLES = (1, 2, 4, 8)
PAPER_OMEGAS = (1.0, 10.0, 100.0, 1000.0)


class CVResult(NamedTuple):
    """Result of :func:`cross_validate` (``K`` folds, ``nP`` latent sizes, ``nO`` penalties).

    Attributes
    ----------
    chi2_from_flux : array ``(K, nP, nO)``
        Total held-out Eq. A1 chi2 with test latents inferred from the fluxes alone.
    chi2_from_labels : array ``(K, nP, nO)``
        The same with test latents inferred from the labels alone.
    n_latents : int array ``(nP,)``
        The latent sizes ``P`` tried.
    omegas : array ``(nO,)``
        The penalties :math:`\\Omega` tried.
    n_labels : int
        ``M``, the number of labels (for the ``P / M`` row names).
    folds : tuple of ``K`` int arrays
        Held-out star indices of each fold (sorted); together every star once.
    seconds : array ``(K, nP, nO)``
        Wall time of each training plus its two test steps.
    best : tuple ``(P, Omega)``
        The pair with the smallest median over folds of ``chi2_from_flux``
        (the quantity of the paper's choice, Fig. 14 left); ties go to the
        smaller ``P``, then the smaller :math:`\\Omega`.
    """

    chi2_from_flux: np.ndarray
    chi2_from_labels: np.ndarray
    n_latents: np.ndarray
    omegas: np.ndarray
    n_labels: int
    folds: tuple
    seconds: np.ndarray
    best: tuple

    def median(self, source: str = "flux") -> np.ndarray:
        """Median over folds, ``(nP, nO)``, of ``chi2_from_flux`` (``source="flux"``) or ``chi2_from_labels``."""
        if source not in ("flux", "labels"):
            raise ValueError(f"source: expected 'flux' or 'labels', found {source!r}")
        return np.median(self.chi2_from_flux if source == "flux" else self.chi2_from_labels, axis=0)

    def table(self) -> str:
        """The median chi2 grids as text, rows ``P``, columns :math:`\\Omega` (like the paper's Fig. 14)."""
        width = 11
        head = f"{'P':>12} |" + "".join(f"{f'Omega={o:g}':>{width}}" for o in self.omegas)
        lines = [f"Lux {len(self.folds)}-fold cross-validation: median held-out chi2 (Eq. A1); * = best"]
        for source in ("flux", "labels"):
            grid = self.median(source)
            lines += ["", f"test latents from {source}", head, "-" * len(head)]
            for i, p in enumerate(self.n_latents):
                cells = []
                for j, o in enumerate(self.omegas):
                    star = "*" if source == "flux" and (int(p), float(o)) == self.best else " "
                    cells.append(f"{grid[i, j]:>{width - 1}.4g}{star}")
                lines.append(f"{_row_name(int(p), self.n_labels):>12} |" + "".join(cells))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _row_name(p: int, m: int) -> str:
    return f"{p} ({p / m:.3g}M)"


def latent_grid(n_labels: int, multiples: Sequence[float] = PAPER_MULTIPLES) -> tuple[int, ...]:
    """Latent sizes ``P = k M`` for the multiples ``k``, with ``P`` raised to at least ``M + 1``.

    The paper's grid starts at ``P = M``, but its own initialisation
    ``z = [1, labels, 0, ...]`` (its Eq. 9) needs ``P >= M + 1``, as does
    :func:`jaxspec.models.lux.fit`; so the multiple 1 becomes ``M + 1``.
    This is the one departure from the paper's grid.  Duplicates are
    dropped; the result is sorted.

    Examples
    --------
    >>> latent_grid(12)
    (13, 24, 48, 96)
    """
    if not (isinstance(n_labels, (int, np.integer)) and n_labels >= 1):
        raise ValueError(f"n_labels: expected an int >= 1, found {n_labels!r}")
    ks = np.asarray(multiples, np.float64)
    if ks.ndim != 1 or ks.size == 0 or not np.all(np.isfinite(ks) & (ks > 0)):
        raise ValueError(f"multiples: expected a non-empty sequence of positive numbers, found {multiples!r}")
    return tuple(sorted({max(round(k * n_labels), n_labels + 1) for k in ks.tolist()}))


def fold_indices(key: jax.Array, n_stars: int, n_folds: int) -> tuple[np.ndarray, ...]:
    """Held-out star indices of each fold: a random permutation from ``key`` cut into ``n_folds`` near-equal parts.

    Returns a tuple of ``n_folds`` sorted int arrays (sizes differ by at most
    one) that together hold every star exactly once.
    """
    check_key(key)
    n_stars = check_int(n_stars, "n_stars", minimum=0)
    check_int(n_folds, "n_folds")
    if not 2 <= n_folds <= n_stars:
        raise ValueError(f"n_folds: expected 2 <= n_folds <= n_stars = {n_stars}, found {n_folds}")
    perm = np.asarray(jax.random.permutation(key, n_stars))
    return tuple(np.sort(part) for part in np.array_split(perm, n_folds))


def _spectra_items(spectra, n_stars: int) -> list[Spectra]:
    items = [spectra] if isinstance(spectra, Spectra) else spectra
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not items:
        raise TypeError(f"spectra: expected Spectra or a non-empty sequence of Spectra, found {type(spectra).__name__}")
    for i, s in enumerate(items):
        if not isinstance(s, Spectra):
            raise TypeError(f"spectra[{i}]: expected Spectra, found {type(s).__name__}")
        if s.n_stars != n_stars:
            raise ValueError(
                f"spectra[{i}]: expected {n_stars} stars (one row per star as in labels), found {s.n_stars}"
            )
    return list(items)


def held_out_chi2(model: lux.Model, spectra: Spectra | Sequence[Spectra], labels: Labels, z) -> np.ndarray:
    r"""Per-star Eq. A1 chi2 of labels and fluxes given latents ``z`` (float64).

    Parameters
    ----------
    model : lux.Model
        Trained model (``A`` ``(M, P)``, ``B`` ``(L, P)``, ``ln s`` ``(L,)``).
    spectra : Spectra ``(n, L)`` or a sequence (concatenated along pixels, in training order)
    labels : Labels ``(n, M)``
        Physical units; standardised here with ``model.label_scaler``.
    z : array ``(n, P)``
        Latents of these stars.

    Returns
    -------
    array ``(n,)``
        :math:`\sum_m w^\ell_{nm}(\ell_{nm} - A_m z_n)^2
        + \sum_\lambda (f_{n\lambda} - B_\lambda z_n)^2/(\sigma^2_{n\lambda} + s^2_\lambda)`,
        masked entries (``ivar == 0``) contributing 0.
    """
    if not isinstance(labels, Labels):
        raise TypeError(f"labels: expected Labels, found {type(labels).__name__}")
    flux, ivar, _ = as_outputs(spectra, labels.n_stars, model)
    std = model.label_scaler.transform(labels)
    a, b = np.asarray(model.params.A, np.float64), np.asarray(model.params.B, np.float64)
    z = np.asarray(z, np.float64)
    lab, lab_w = np.asarray(std.values, np.float64), np.asarray(std.ivar, np.float64)
    flux = np.asarray(flux, np.float64)
    w = flux_weights_np(np.asarray(ivar, np.float64), model.params.ln_s)  # 1/(sigma^2 + s^2), 0 where masked
    label_chi2 = np.where(lab_w > 0, lab_w * np.square(lab - z @ a.T), 0.0).sum(axis=1)
    flux_chi2 = np.where(w > 0, w * np.square(flux - z @ b.T), 0.0).sum(axis=1)
    return label_chi2 + flux_chi2


def _check_grid(values, name: str, kind) -> np.ndarray:
    arr = np.asarray(values, kind)
    if arr.ndim != 1 or arr.size == 0 or len(set(arr.tolist())) != arr.size:
        raise ValueError(f"{name}: expected a non-empty 1-d sequence of distinct values, found {values!r}")
    return arr


def cross_validate(
    spectra: Spectra | Sequence[Spectra],
    labels: Labels,
    *,
    key: jax.Array,
    n_latents: Sequence[int] | None = None,
    omegas: Sequence[float] = PAPER_OMEGAS,
    n_folds: int = 5,
    config: lux.Config = lux.Config(),  # noqa: B008 - a frozen dataclass
    progress: bool = True,
) -> CVResult:
    r"""K-fold cross-validation of Lux over latent size ``P`` and penalty :math:`\Omega` (paper Appendix A).

    For each fold, each ``P`` and each :math:`\Omega`: train on the other
    folds, infer the held-out latents from fluxes alone and from labels alone
    (test-step penalty = the trained :math:`\Omega`), and sum the held-out
    chi2 of Eq. A1 (see the module docstring and :func:`held_out_chi2`)

    .. math::

        \chi^2 = \sum_{n} \Bigl[\frac{(\ell_n - A z_n)^2}{\sigma_{\ell_n}^2}
               + \frac{(f_n - B z_n)^2}{\sigma_{f_n}^2 + s^2}\Bigr].

    Parameters
    ----------
    spectra : Spectra ``(N, L)`` or a sequence of them (several spectral outputs)
    labels : Labels ``(N, M)``
        Physical units; missing entries have ``ivar == 0``.
    key : jax.random key
        ``split(key)`` gives the fold permutation key and the training key;
        fold ``k`` trains every (``P``, :math:`\Omega`) with
        ``jax.random.fold_in(train_key, k)``.  Same key, same result.
    n_latents : sequence of int, optional
        Latent sizes ``P``, each with ``M + 1 <= P < N_train`` (the smallest
        training fold).  Default: the paper's ``[1, 2, 4, 8] x M`` with the
        multiple 1 raised to ``M + 1`` (:func:`latent_grid`; the one
        departure from the paper, whose ``z`` initialisation needs ``P > M``).
        Use ``latent_grid(M, multiples)`` for other multiples.
    omegas : sequence of float
        Penalties :math:`\Omega > 0` (paper: 1, 10, 100, 1000).  0 is refused:
        latents from labels alone are then undetermined when ``P > M``.
    n_folds : int
        ``K``, with ``2 <= K <= N`` (paper: 5).
    config : lux.Config
        Training recipe (default: the paper's); each cell replaces its
        ``n_latents`` and ``omega`` and trains without calibration.
    progress : bool
        Progress bar over (fold, ``P``, :math:`\Omega`).

    Returns
    -------
    CVResult
        ``chi2_from_flux`` and ``chi2_from_labels`` ``(K, nP, nO)``, the grids,
        the folds, timings ``(K, nP, nO)`` and ``best`` = (``P``,
        :math:`\Omega`) minimising the median over folds of
        ``chi2_from_flux``; ``str(result)`` prints the median grids.

    Raises
    ------
    TypeError
        ``labels``, ``spectra``, ``key`` or ``config`` of the wrong type.
    ValueError
        A bad ``n_folds``, ``omegas`` or ``n_latents`` (including any
        ``P >= N_train``), before any training.
    """
    if not isinstance(labels, Labels):
        raise TypeError(f"labels: expected Labels, found {type(labels).__name__}")
    items = _spectra_items(spectra, labels.n_stars)
    check_key(key)
    if not isinstance(config, lux.Config):
        raise TypeError(f"config: expected a lux.Config, found {type(config).__name__}")
    n, m = labels.n_stars, labels.n_labels
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)):
        raise TypeError(f"n_folds: expected an int, found {type(n_folds).__name__}")
    if not 2 <= n_folds <= n:
        raise ValueError(f"n_folds: expected 2 <= n_folds <= n_stars = {n}, found {n_folds}")
    omega_grid = _check_grid(omegas, "omegas", np.float64)
    if not np.all(np.isfinite(omega_grid) & (omega_grid > 0)):
        raise ValueError(f"omegas: expected finite values > 0, found {omegas!r}")
    p_grid = _check_grid(latent_grid(m) if n_latents is None else n_latents, "n_latents", np.float64)
    n_train = n - math.ceil(n / n_folds)
    bad = [p for p in p_grid.tolist() if p != int(p) or not m + 1 <= p < n_train]
    if bad:
        raise ValueError(
            f"n_latents: expected integers with M + 1 = {m + 1} <= P < {n_train} (stars in the smallest "
            f"training fold: {n} stars, {n_folds} folds), found {bad}"
        )
    p_grid = p_grid.astype(int)

    key_folds, key_train = jax.random.split(key)
    folds = fold_indices(key_folds, n, n_folds)
    shape = (n_folds, len(p_grid), len(omega_grid))
    from_flux, from_labels, seconds = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    bar = tqdm(total=math.prod(shape), disable=not progress, desc="lux cross-validation", unit="fit")
    for k, test in enumerate(folds):
        train = np.setdiff1d(np.arange(n), test)
        train_spectra, test_spectra = [s[train] for s in items], [s[test] for s in items]
        key_k = jax.random.fold_in(key_train, k)
        for i, p in enumerate(p_grid):
            for j, omega in enumerate(omega_grid):
                bar.set_postfix(fold=k, P=int(p), omega=float(omega))
                start = time.perf_counter()
                # label_scatter is not part of Eq. A1: no calibration
                cell = dataclasses.replace(config, n_latents=int(p), omega=float(omega), calibrate=False)
                model = lux.fit(train_spectra, labels[train], key=key_k, config=cell, progress=False).model
                z_flux = lux.encode(model, test_spectra, omega=omega, progress=False).z
                z_labels = lux.encode(model, labels=labels[test], omega=omega, progress=False).z
                from_flux[k, i, j] = held_out_chi2(model, test_spectra, labels[test], z_flux).sum()
                from_labels[k, i, j] = held_out_chi2(model, test_spectra, labels[test], z_labels).sum()
                seconds[k, i, j] = time.perf_counter() - start
                bar.update()
    bar.close()
    median = np.median(from_flux, axis=0)
    i, j = np.unravel_index(np.argmin(np.where(np.isfinite(median), median, np.inf)), median.shape)
    best = (int(p_grid[i]), float(omega_grid[j]))
    return CVResult(from_flux, from_labels, p_grid, omega_grid, m, folds, seconds, best)
