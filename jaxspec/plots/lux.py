"""The Lux paper's figures (Horta et al. 2025, Figs. 4-8 and the cross-validation grid of Fig. 14)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from jaxspec import metrics
from jaxspec.data.containers import Labels, Spectra
from jaxspec.plots._mpl import broken_line, gap_positions, require_matplotlib

__all__ = [
    "plot_abundance_plane",
    "plot_cv_grid",
    "plot_derivative_spectra",
    "plot_kiel",
    "plot_label_comparison",
    "plot_spectrum_fit",
]

_SPECIAL = {"TEFF": r"$T_{\rm eff}$ [K]", "LOGG": r"$\log g$", "VMICRO": r"$v_{\rm micro}$ [km/s]"}


def _pretty(name: str, units: bool = True) -> str:
    """Axis label for a label name: ``FE_H`` -> ``[Fe/H]``, ``MG_FE`` -> ``[Mg/Fe]``."""
    if name.upper() in _SPECIAL:
        text = _SPECIAL[name.upper()]
        return text if units else text.split(" [")[0]
    parts = name.split("_")
    if len(parts) == 2 and parts[1].upper() in ("H", "FE") and parts[0].isalpha():
        return f"[{parts[0].capitalize()}/{parts[1].capitalize()}]"
    return name


def _columns(labels, names: Sequence[str], arg: str = "labels") -> list[np.ndarray]:
    """Label columns (NaN where missing) by name; a clear error for a missing name."""
    if not isinstance(labels, Labels):
        raise TypeError(f"{arg}: expected Labels, found {type(labels).__name__}")
    missing = [n for n in names if n not in labels.names]
    if missing:
        raise ValueError(f"{arg}: expected labels {missing} (not present), found names {list(labels.names)}")
    values = labels.as_nan()
    return [values[:, labels.index(n)] for n in names]


def plot_label_comparison(pred, reference, *, names=None, reference_err=None, ncols: int = 4):
    """Predicted against reference labels, one panel per label, with bias, RMSE and mean error (Lux Fig. 7).

    Parameters
    ----------
    pred : array ``(n_stars, n_labels)`` or Labels
        Predicted labels (physical units).
    reference : array ``(n_stars, n_labels)`` or Labels
        Reference labels (e.g. ASPCAP); missing entries (``ivar == 0``) are not drawn.
    names : sequence of str, optional
        With ``Labels``: which labels to show (default all of ``pred``, else of
        ``reference``).  With arrays: the column names (default ``label 0``, ...).
    reference_err : array ``(n_stars, n_labels)``, optional
        1-sigma errors of ``reference``; default from its ``ivar`` when it is ``Labels``.
        Each panel prints their mean over the stars shown.
    ncols : int
        Panels per row.

    Returns
    -------
    matplotlib.figure.Figure
        One ``Axes`` per label; the numbers come from :func:`jaxspec.metrics.bias_rmse`.
    """
    plt = require_matplotlib()
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols: expected an int >= 1, found {ncols!r}")
    known = pred.names if isinstance(pred, Labels) else reference.names if isinstance(reference, Labels) else None
    if known is not None:
        held = [x.names for x in (pred, reference) if isinstance(x, Labels)]
        names = list(known if names is None else names)
        if bad := [n for n in names if not all(n in h for h in held)]:
            avail = [n for n in known if all(n in h for h in held)]
            raise ValueError(f"names: expected label names among {avail}, found {bad}")
        cols = [known.index(n) for n in names]  # arrays beside Labels are in its column order

        def pick(a):
            if isinstance(a, Labels):
                return a.select(names)
            return a if a is None or np.ndim(a) != 2 or np.shape(a)[1] != len(known) else np.asarray(a)[:, cols]

        pred, reference, reference_err = pick(pred), pick(reference), pick(reference_err)
    p, t, use = metrics._labels_pair(pred, reference, None)
    n_labels = p.shape[1]
    names = [f"label {i}" for i in range(n_labels)] if names is None else list(names)
    if len(names) != n_labels:
        raise ValueError(f"names: expected {n_labels} names (one per column), found {len(names)}")
    if reference_err is None and isinstance(reference, Labels):
        err_mean = metrics.mean_error(np.where(use, np.asarray(reference.ivar), 0.0))
    elif reference_err is not None:
        e = metrics._array2d(reference_err, "reference_err", p.shape)
        err_mean = metrics._column_mean(e, use & np.isfinite(e) & (e > 0))
    else:
        err_mean = np.full(n_labels, np.nan)
    stats = metrics.bias_rmse(p, t, mask=use)
    nrows = math.ceil(n_labels / ncols)
    ncol = min(ncols, n_labels)
    fig, axes = plt.subplots(nrows, ncol, figsize=(3.2 * ncol, 3.0 * nrows), squeeze=False, layout="constrained")
    for k, ax in enumerate(axes.ravel()):
        if k >= n_labels:
            ax.remove()
            continue
        x, y = t[use[:, k], k], p[use[:, k], k]
        ax.scatter(x, y, s=3, alpha=0.4, lw=0, color="k", rasterized=True)
        if x.size:
            lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
            ax.plot([lo, hi], [lo, hi], color="C3", lw=0.8, zorder=3)
        sig = r"$\sigma_{\rm ref}$"
        text = f"bias = {stats.bias[k]:.3g}\nRMSE = {stats.rmse[k]:.3g}\n{sig} = {err_mean[k]:.3g}"
        ax.text(0.04, 0.96, text, transform=ax.transAxes, va="top", fontsize=8)
        ax.set_xlabel(f"{_pretty(names[k])} (reference)")
        ax.set_ylabel(f"{_pretty(names[k])} (predicted)")
    return fig


def plot_kiel(labels, *, color: str | None = "FE_H", ax=None, cmap: str = "viridis", s: float = 3.0):
    """Kiel diagram: log g against Teff, both axes inverted, coloured by a label (Lux Fig. 8, top).

    Parameters
    ----------
    labels : Labels
        With ``TEFF`` (K) and ``LOGG`` (dex), and ``color`` when given; stars
        missing any of them are not drawn.
    color : str or None
        Label that sets the colour (default ``FE_H``); ``None`` for black points.
    ax : matplotlib Axes, optional
    cmap, s : matplotlib colour map and marker size.

    Returns
    -------
    matplotlib.figure.Figure
        With a colour bar (a second ``Axes``) when ``color`` is given.
    """
    plt = require_matplotlib()
    cols = _columns(labels, ["TEFF", "LOGG"] + ([color] if color is not None else []))
    ok = np.all(np.isfinite(np.stack(cols)), axis=0)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 4.5))
    c = cols[2][ok] if color is not None else "k"
    sc = ax.scatter(cols[0][ok], cols[1][ok], c=c, s=s, lw=0, cmap=cmap if color is not None else None)
    if color is not None:
        ax.figure.colorbar(sc, ax=ax, label=_pretty(color))
    ax.set_xlabel(_pretty("TEFF"))
    ax.set_ylabel(_pretty("LOGG"))
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    if not ax.yaxis_inverted():
        ax.invert_yaxis()
    return ax.figure


def plot_abundance_plane(
    labels, *, x: str = "FE_H", y: str = "MG_FE", ax=None, bins: int | None = None, s: float = 3.0
):
    """An abundance plane, by default the Tinsley-Wallerstein [Mg/Fe] vs [Fe/H] (Lux Fig. 8, bottom).

    Points are coloured by the local density (a ``bins x bins`` histogram, log
    scale; dark = sparse), densest on top, so both the crowded sequences and the sparse halo show.

    Parameters
    ----------
    labels : Labels
        With the labels ``x`` and ``y`` (dex); stars missing either are not drawn.
    x, y : str
        Label names for the axes.
    ax : matplotlib Axes, optional
    bins : int, optional
        Density histogram bins per axis (default: about ``sqrt(n_stars)``, 10 to 100).
    s : float
        Marker size.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = require_matplotlib()
    vx, vy = _columns(labels, [x, y])
    ok = np.isfinite(vx) & np.isfinite(vy)
    vx, vy = vx[ok], vy[ok]
    bins = int(np.clip(np.sqrt(vx.size), 10, 100)) if bins is None else bins
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins: expected an int >= 1, found {bins!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 4.0))
    if vx.size:
        h, ex, ey = np.histogram2d(vx, vy, bins=bins)
        ix = np.clip(np.searchsorted(ex, vx, side="right") - 1, 0, bins - 1)
        iy = np.clip(np.searchsorted(ey, vy, side="right") - 1, 0, bins - 1)
        density = np.log10(h[ix, iy])  # every point lies in a cell with count >= 1
        order = np.argsort(density, kind="stable")
        ax.scatter(vx[order], vy[order], c=density[order], s=s, lw=0, cmap="viridis", rasterized=True)
    ax.set_xlabel(_pretty(x))
    ax.set_ylabel(_pretty(y))
    return ax.figure


def plot_spectrum_fit(spectra: Spectra, model_flux, index: int = 0, *, wave_range=None):
    """One star's spectrum with its model on top and the normalised residuals below (Lux Figs. 3, 6).

    Parameters
    ----------
    spectra : Spectra, ``(n_stars, n_pix)``
        Observed flux and ``ivar``; masked pixels (``ivar == 0``) are not drawn.
    model_flux : array ``(n_stars, n_pix)``
        Model flux on the same grid (e.g. ``predict_flux`` of a trained model).
    index : int
        Which star.
    wave_range : (float, float), optional
        Wavelength window in Angstrom (default: all).

    Returns
    -------
    matplotlib.figure.Figure
        Two ``Axes``: data (grey band = 1-sigma) and model, then
        :math:`(d - m)\\sqrt{\\mathrm{ivar}}` with lines at 0 and +-1.  The title
        gives the star's reduced chi-square (:func:`jaxspec.metrics.reduced_chi2`).
    """
    plt = require_matplotlib()
    if not isinstance(spectra, Spectra):
        raise TypeError(f"spectra: expected Spectra, found {type(spectra).__name__}")
    model = metrics._array2d(model_flux, "model_flux", tuple(spectra.flux.shape))
    if isinstance(index, bool) or not isinstance(index, int | np.integer) or not 0 <= index < spectra.n_stars:
        raise ValueError(f"index: expected an int in [0, {spectra.n_stars}), found {index!r}")
    one = spectra[int(index)]
    chi2 = metrics.reduced_chi2(one, model=model[[index]])[0]
    x = one.wavelength if one.wavelength is not None else np.arange(one.n_pix, dtype=float)
    keep = np.ones(x.shape, bool) if wave_range is None else (x >= wave_range[0]) & (x <= wave_range[1])
    if not keep.any():
        raise ValueError(f"wave_range: expected a window overlapping {x[0]:.1f}-{x[-1]:.1f}, found {wave_range}")
    x, gaps = x[keep], gap_positions(x[keep])
    f, w, m = (np.asarray(a, float)[0, keep] for a in (one.flux, one.ivar, model[[index]]))
    good = w > 0
    err = np.where(good, 1.0 / np.sqrt(np.where(good, w, 1.0)), np.nan)
    d = np.where(good, f, np.nan)
    fig, (ax, rax) = plt.subplots(
        2, 1, figsize=(11, 4.5), sharex=True, gridspec_kw={"height_ratios": [3, 1], "hspace": 0.05}
    )
    xb, lo = broken_line(x, d - err, gaps)
    ax.fill_between(xb, lo, broken_line(x, d + err, gaps)[1], color="0.8", lw=0, label="data $\\pm1\\sigma$")
    ax.plot(*broken_line(x, d, gaps), color="k", lw=0.6, label="data")
    ax.plot(*broken_line(x, m, gaps), color="C0", lw=0.8, label="model")
    ax.set_ylabel("normalised flux")
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    ax.set_title(f"star {int(index)}: " + r"$\chi^2_r$" + f" = {chi2:.3g}", fontsize=9)
    rax.plot(*broken_line(x, (d - m) * np.sqrt(w), gaps), color="k", lw=0.5)
    for level, style in ((0, "-"), (1, "--"), (-1, "--")):
        rax.axhline(level, color="C3", lw=0.7, ls=style, zorder=3)
    rax.set_ylabel(r"$(d-m)\,\sigma^{-1}$")
    rax.set_xlabel("vacuum wavelength [Angstrom]" if one.wavelength is not None else "pixel")
    rax.set_xlim(x[0], x[-1])
    return fig


def plot_derivative_spectra(
    wavelength,
    derivatives,
    names: Sequence[str],
    *,
    select: Sequence[str] | None = None,
    wave_range=None,
    lines: Mapping[str, Sequence[float]] | None = None,
):
    r"""Derivative spectra :math:`\partial \ell / \partial f_\lambda`, one row per label (Lux Fig. 6).

    Parameters
    ----------
    wavelength : array ``(n_pix,)``
        Vacuum wavelength in Angstrom, increasing (chip gaps break the line).
    derivatives : array ``(n_labels, n_pix)``
        Derivative of each label with respect to the flux (label units per unit
        normalised flux), e.g. a column of the Lux Jacobian (paper Eq. 13).
    names : sequence of str, length ``n_labels``
        Label names of the rows of ``derivatives``.
    select : sequence of str, optional
        Which labels to draw, in order (default all).
    wave_range : (float, float), optional
        Wavelength window in Angstrom.
    lines : mapping of str to array of float, optional
        Label name -> line wavelengths (Angstrom), drawn as faint vertical lines
        in that label's row (names not drawn are ignored).

    Returns
    -------
    matplotlib.figure.Figure
        One ``Axes`` per selected label, sharing the wavelength axis.
    """
    plt = require_matplotlib()
    der = metrics._array2d(derivatives, "derivatives")
    w = np.asarray(wavelength, float)
    if w.shape != (der.shape[1],):
        raise ValueError(f"wavelength: expected shape ({der.shape[1]},) (one per pixel), found {w.shape}")
    names = list(names)
    if len(names) != der.shape[0]:
        raise ValueError(f"names: expected {der.shape[0]} names (one per row of derivatives), found {len(names)}")
    select = names if select is None else list(select)
    bad = [n for n in select if n not in names]
    if bad or not select:
        raise ValueError(f"select: expected a non-empty list of names among {names}, found {select}")
    keep = np.ones(w.shape, bool) if wave_range is None else (w >= wave_range[0]) & (w <= wave_range[1])
    if not keep.any():
        raise ValueError(f"wave_range: expected a window overlapping {w[0]:.1f}-{w[-1]:.1f}, found {wave_range}")
    x = w[keep]
    gaps = gap_positions(x)
    fig, axes = plt.subplots(len(select), 1, figsize=(11, 1.6 * len(select) + 0.6), sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], select, strict=True):
        ax.axhline(0.0, color="0.6", lw=0.5)
        for lam in np.asarray((lines or {}).get(name, []), float).ravel():
            if x[0] <= lam <= x[-1]:
                ax.axvline(lam, color="C2", alpha=0.4, lw=1.5)
        ax.plot(*broken_line(x, der[names.index(name), keep], gaps), color="C6", lw=0.7)
        ax.set_ylabel(r"$\partial$" + _pretty(name, units=False) + r"$/\partial f$")
    axes[-1, 0].set_xlabel("vacuum wavelength [Angstrom]")
    axes[-1, 0].set_xlim(x[0], x[-1])
    return fig


def plot_cv_grid(result, ax=None, *, cmap: str = "viridis_r"):
    """Median held-out chi2 over folds as two heatmaps, rows ``P``, columns Omega (Lux Fig. 14).

    Parameters
    ----------
    result : jaxspec.models.lux.cv.CVResult
        From :func:`jaxspec.models.lux.cv.cross_validate`.
    ax : sequence of two matplotlib Axes, optional
        Left: test latents from fluxes; right: from labels.  A new figure when None.
    cmap : str
        Colour map of :math:`\\log_{10}` median chi2 (each panel scaled on its own).

    Returns
    -------
    matplotlib.figure.Figure
        Cells are annotated with the median chi2; the selected ``result.best``
        is outlined on the left panel.
    """
    from jaxspec.models.lux.cv import CVResult

    if not isinstance(result, CVResult):
        raise TypeError(f"result: expected a CVResult from lux.cv.cross_validate, found {type(result).__name__}")
    plt = require_matplotlib()
    if ax is None:
        _, ax = plt.subplots(1, 2, figsize=(9.5, 4.0), layout="constrained")
    axes = list(np.ravel(np.asarray(ax, dtype=object)))
    if len(axes) != 2:
        raise ValueError(f"ax: expected two Axes (flux panel, labels panel), found {len(axes)}")
    n_p, n_o = len(result.n_latents), len(result.omegas)
    rows = [f"{int(p)} ({p / result.n_labels:.3g}M)" for p in result.n_latents]
    cols = [f"{o:g}" for o in result.omegas]
    for axis, source in zip(axes, ("flux", "labels"), strict=True):
        grid = result.median(source)
        shown = np.log10(np.where(grid > 0, grid, np.nan))
        image = axis.imshow(shown, origin="lower", aspect="auto", cmap=cmap)
        axis.figure.colorbar(image, ax=axis, label=r"$\log_{10}$ median $\chi^2$")
        finite = shown[np.isfinite(shown)]
        middle = 0.5 * (finite.min() + finite.max()) if finite.size else 0.0
        for i in range(n_p):
            for j in range(n_o):
                dark = np.isfinite(shown[i, j]) and shown[i, j] > middle
                axis.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", fontsize=8,
                          color="white" if dark else "black")  # fmt: skip
        axis.set_xticks(range(n_o), cols)
        axis.set_yticks(range(n_p), rows)
        axis.set_xlabel(r"$\Omega$")
        axis.set_ylabel(r"$P$")
        axis.set_title(f"test latents from {source}")
    i = int(np.flatnonzero(result.n_latents == result.best[0])[0])
    j = int(np.flatnonzero(result.omegas == result.best[1])[0])
    axes[0].add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    return axes[0].figure
