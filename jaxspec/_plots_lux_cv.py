"""The Lux cross-validation figure (Horta et al. 2025, Fig. 14); meant to be re-exported by :mod:`jaxspec.plots`.

matplotlib is imported inside the function (through ``jaxspec.plots.require_matplotlib``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["plot_cv_grid"]


def plot_cv_grid(result, ax=None, *, cmap: str = "viridis_r"):
    """Median held-out chi2 over folds as two heatmaps, rows ``P``, columns Omega (Lux Fig. 14).

    Parameters
    ----------
    result : jaxspec.models.lux_cv.CVResult
        From :func:`jaxspec.models.lux_cv.cross_validate`.
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
    from jaxspec.models.lux_cv import CVResult
    from jaxspec.plots import require_matplotlib

    if not isinstance(result, CVResult):
        raise TypeError(f"result: expected a CVResult from lux_cv.cross_validate, found {type(result).__name__}")
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
