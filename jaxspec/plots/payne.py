r"""Figures of The Payne's label fits (Ting et al. 2019): one star's fit with its residuals, and label recovery.

:func:`fit_residuals` draws an observed spectrum with the emulator's spectrum at
the fitted labels and radial velocity, and the residuals in units of the
error, one panel per APOGEE chip (or a zoomed range); :func:`label_recovery`
draws fit minus truth against truth for each label (and the RV) with the
Laplace errors.  The model drawn is the fitter's own
(:func:`jaxspec.models.payne.observed_spectra`).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from jaxspec import metrics
from jaxspec.data.containers import Labels, Spectra
from jaxspec.plots._mpl import gap_positions, require_matplotlib

__all__ = ["fit_residuals", "label_recovery"]


def _best_fit_flux(model, fit, index: int) -> np.ndarray:
    """The fitter's model of star ``index``: the emulator at its fitted labels and RV (times its continuum)."""
    from jaxspec.models import payne

    values = np.asarray(fit.labels.values, np.float64)[index : index + 1]
    rv = None if model.wavelength is None else np.asarray(fit.rv, np.float64)[index : index + 1]
    flux = np.asarray(payne.observed_spectra(model, values, rv), np.float64)[0]
    continuum = getattr(fit, "continuum", None)
    return flux if continuum is None else flux * np.asarray(continuum, np.float64)[index]


def fit_residuals(model, spectra: Spectra, fit, index: int = 0, *, mask=None, wave_range=None):
    r"""One star's spectrum, the emulator at its fitted labels and RV, and the residuals / sigma.

    Parameters
    ----------
    model : payne.Model
        The emulator the star was fitted with.
    spectra : Spectra ``(n, L)``
        The spectra given to :func:`~jaxspec.models.payne.fit_labels`.
    fit : payne.LabelFit
        Its result for the same ``n`` stars.
    index : int
        Which star.
    mask : bool array ``(L,)`` or ``(n, L)``, optional
        The ``mask`` given to the fit (True = excluded): those pixels are
        not drawn as data.
    wave_range : (float, float), optional
        A wavelength window in Angstrom, one pair of panels; default one
        pair per chip.

    Returns
    -------
    matplotlib.figure.Figure
        ``2 x n_panels`` ``Axes``: the first row the measured flux
        (``lines[0]``, NaN at masked pixels) and the model
        (``lines[1]``); the second row :math:`(f - \tilde f)\sqrt{w}` at the
        measured pixels (``lines[0]``) and zero.  The title gives the
        fitted labels, RV and reduced chi2.
    """
    plt = require_matplotlib()
    from matplotlib.ticker import MaxNLocator

    if not isinstance(spectra, Spectra):
        raise TypeError(f"spectra: expected Spectra, found {type(spectra).__name__}")
    n = spectra.n_stars
    if np.shape(fit.labels.values)[0] != n:
        raise ValueError(f"fit: expected a fit of the {n} stars of spectra, found {np.shape(fit.labels.values)[0]}")
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or not -n <= index < n:
        raise ValueError(f"index: expected an int in [-{n}, {n}), found {index!r}")
    index = int(index) % n
    if spectra.n_pix != model.n_pix:
        raise ValueError(f"spectra: expected {model.n_pix} pixels (the model's grid), found {spectra.n_pix}")
    wave = model.wavelength if model.wavelength is not None else spectra.wavelength
    wave = np.arange(model.n_pix, dtype=np.float64) if wave is None else np.asarray(wave, np.float64)
    flux = np.asarray(spectra.flux[index], np.float64)
    ivar = np.asarray(spectra.ivar[index], np.float64)
    if mask is not None:
        m = np.asarray(mask, bool)
        ivar = np.where(m[index] if m.ndim == 2 else m, 0.0, ivar)
    good = ivar > 0
    model_flux = _best_fit_flux(model, fit, index)
    resid = np.where(good, (flux - model_flux) * np.sqrt(np.where(good, ivar, 0.0)), np.nan)
    data = np.where(good, flux, np.nan)

    if wave_range is None:
        edges = np.r_[0, gap_positions(wave) + 1, wave.size]
        panels = [np.arange(a, b) for a, b in itertools.pairwise(edges)]
    else:
        lo, hi = (float(x) for x in wave_range)
        if not lo < hi:
            raise ValueError(f"wave_range: expected (low, high) with low < high, found {wave_range!r}")
        panels = [np.flatnonzero((wave >= lo) & (wave <= hi))]
        if panels[0].size == 0:
            raise ValueError(f"wave_range: no pixel of the grid ({wave[0]:.1f}-{wave[-1]:.1f} A) in {wave_range!r}")
    k = len(panels)
    fig, axes = plt.subplots(
        2, k, figsize=(4.5 * k, 4.5), sharex="col", squeeze=False, height_ratios=(2.5, 1), layout="constrained"
    )
    for j, idx in enumerate(panels):
        top, bottom = axes[0, j], axes[1, j]
        top.plot(wave[idx], data[idx], color="k", lw=0.7, label="observed")
        top.plot(wave[idx], model_flux[idx], color="C3", lw=0.7, label="emulator at the fit")
        bottom.plot(wave[idx], resid[idx], color="k", lw=0.5)
        bottom.axhline(0.0, color="C3", lw=0.7)
        bottom.set_xlabel(r"wavelength [$\AA$]")
        top.set_xlim(wave[idx[0]], wave[idx[-1]])
        bottom.xaxis.set_major_locator(MaxNLocator(4))
    axes[0, 0].set_ylabel("normalised flux")
    axes[1, 0].set_ylabel(r"residual / $\sigma$")
    axes[0, 0].legend(loc="lower left", fontsize=8)
    names = fit.labels.names
    values = np.asarray(fit.labels.values, np.float64)[index]
    parts = [f"{n} {v:.4g}" for n, v in zip(names, values, strict=True)]
    parts.append(f"RV {float(np.asarray(fit.rv)[index]):.2f} km/s")
    parts.append(rf"$\chi^2_\nu$ {float(np.asarray(fit.reduced_chi2)[index]):.3f}")
    flag = " (flagged)" if bool(np.asarray(fit.flagged)[index]) else ""
    fig.suptitle(f"star {index}{flag}: " + ", ".join(parts), fontsize=9)
    return fig


def label_recovery(truth, fit, *, names=None, rv=None, ncols: int = 3):
    """Fit minus truth against truth for each label (and the RV), with Laplace error bars.

    Parameters
    ----------
    truth : Labels or array ``(n, M)``
        True labels: ``Labels`` holding the fit's names (any order), or an
        array in the fit's label order.
    fit : payne.LabelFit
        The fit of the same ``n`` stars.  Flagged stars are not drawn.
    names : sequence of str, optional
        Which labels (default all of the fit's).
    rv : array ``(n,)``, optional
        True radial velocities (km/s): adds an RV panel.
    ncols : int
        Panels per row.

    Returns
    -------
    matplotlib.figure.Figure
        One ``Axes`` per label (then the RV): ``lines[0]`` the points
        (truth, fit - truth) with error bars, ``lines[1]`` zero; the text
        gives the bias, RMSE (:func:`jaxspec.metrics.bias_rmse`) and the
        standard deviation of the pulls (fit - truth) / error.
    """
    plt = require_matplotlib()
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols: expected an int >= 1, found {ncols!r}")
    fitted = fit.labels
    all_names = tuple(fitted.names)
    names = list(all_names if names is None else names)
    if bad := [n for n in names if n not in all_names]:
        raise ValueError(f"names: expected label names among {list(all_names)}, found {bad}")
    n = fitted.n_stars
    if isinstance(truth, Labels):
        if missing := [m for m in names if m not in truth.names]:
            raise ValueError(f"truth: expected labels {missing} (not present), found names {list(truth.names)}")
        true = truth.select(names).as_nan()
    else:
        arr = np.asarray(truth, np.float64)
        if arr.shape != (n, len(all_names)):
            raise ValueError(
                f"truth: expected shape ({n}, {len(all_names)}) in the fit's label order, found {arr.shape}"
            )
        true = arr[:, [all_names.index(m) for m in names]]
    if true.shape[0] != n:
        raise ValueError(f"truth: expected {n} stars (the fit's), found {true.shape[0]}")
    cols = [all_names.index(m) for m in names]
    values = np.asarray(fitted.values, np.float64)[:, cols]
    var = np.diagonal(np.asarray(fit.covariance, np.float64), axis1=1, axis2=2)[:, cols]
    err = np.sqrt(np.where(np.isfinite(var) & (var > 0), var, np.nan))
    panels = [(_name, true[:, j], values[:, j], err[:, j]) for j, _name in enumerate(names)]
    if rv is not None:
        rv_true = np.asarray(rv, np.float64)
        if rv_true.shape != (n,):
            raise ValueError(f"rv: expected shape ({n},) (one velocity per star), found {rv_true.shape}")
        rv_err = np.asarray(fit.rv_err, np.float64)
        panels.append(("RV [km/s]", rv_true, np.asarray(fit.rv, np.float64), np.where(rv_err > 0, rv_err, np.nan)))
    keep = ~np.asarray(fit.flagged, bool)
    k = len(panels)
    ncol = min(ncols, k)
    nrows = math.ceil(k / ncol)
    fig, axes = plt.subplots(nrows, ncol, figsize=(3.4 * ncol, 2.9 * nrows), squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.ravel()):
        if i >= k:
            ax.remove()
            continue
        name, x, y, e = panels[i]
        use = keep & np.isfinite(x) & np.isfinite(y)
        d = y[use] - x[use]
        ax.errorbar(x[use], d, yerr=e[use], fmt="o", ms=1.5, lw=0.5, color="k", ecolor="0.6", rasterized=True)
        ax.axhline(0.0, color="C3", lw=0.8)
        stats = metrics.bias_rmse(y[use, None], x[use, None]) if use.any() else None
        pulls = d / e[use]
        pull_std = float(np.std(pulls[np.isfinite(pulls)])) if np.isfinite(pulls).any() else float("nan")
        if stats is not None:
            text = f"bias = {stats.bias[0]:.3g}\nRMSE = {stats.rmse[0]:.3g}\npull std = {pull_std:.2f}"
            ax.text(0.04, 0.96, text, transform=ax.transAxes, va="top", fontsize=8)
        ax.set_xlabel(f"{name} (true)")
        ax.set_ylabel("fit - true")
    n_flag = int(np.sum(~keep))
    fig.suptitle(f"{int(np.sum(keep))} stars" + (f" ({n_flag} flagged, not drawn)" if n_flag else ""), fontsize=9)
    return fig
