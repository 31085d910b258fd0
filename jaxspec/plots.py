"""Figures users expect (needs the ``plot`` extra: ``pip install "jaxspec-stellar[plot]"``).

Every function draws on a given matplotlib ``Axes`` (or makes a figure) and
returns the ``Figure``; none of them calls ``plt.show``.  The Lux paper's
figures (label comparison, Kiel and abundance planes, spectrum fit, derivative
spectra) live in :mod:`jaxspec._plots_lux` (and the cross-validation grid in
:mod:`jaxspec._plots_lux_cv`) and are re-exported here, as are the RSCA figures
(:mod:`jaxspec._plots_rsca`: top dimensions against [Fe/H], rate against ``K``)
and the scatter-VAE figures (:mod:`jaxspec._plots_svae`: normalised residuals
against labels, latent projections).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxspec._plots_lux import (
    plot_abundance_plane,
    plot_derivative_spectra,
    plot_kiel,
    plot_label_comparison,
    plot_spectrum_fit,
)
from jaxspec._plots_lux_cv import plot_cv_grid
from jaxspec._plots_rsca import plot_rate_vs_components, plot_rsca_dimensions
from jaxspec._plots_svae import plot_latent_projections, plot_residuals_vs_labels
from jaxspec.data.containers import Labels, Spectra

__all__ = [
    "plot_abundance_plane",
    "plot_cv_grid",
    "plot_derivative_spectra",
    "plot_kiel",
    "plot_label_comparison",
    "plot_latent_projections",
    "plot_rate_vs_components",
    "plot_residuals_vs_labels",
    "plot_rsca_dimensions",
    "plot_spectra",
    "plot_spectrum_fit",
    "require_matplotlib",
]


def require_matplotlib():
    """Import ``matplotlib.pyplot`` or explain how to get it."""
    try:
        import matplotlib

        if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
            import os

            if not os.environ.get("DISPLAY"):
                matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('plots need matplotlib: pip install "jaxspec-stellar[plot]"') from None
    return plt


def plot_spectra(
    spectra: Spectra,
    index: Sequence[int] | None = None,
    *,
    labels: Labels | None = None,
    wave_range: tuple[float, float] | None = None,
    offset: float = 0.7,
    ax=None,
):
    """Several spectra stacked with a vertical offset, masked pixels greyed out.

    Parameters
    ----------
    spectra : Spectra, ``(n_stars, n_pix)``; continuum-normalised flux expected.
    index : sequence of int, optional
        Which stars (default: the first four).
    labels : Labels, optional
        Aligned with ``spectra``; TEFF, LOGG and FE_H (when present) annotate each spectrum.
    wave_range : (float, float), optional
        Wavelength window in Angstrom (default: all).
    offset : float
        Vertical offset between spectra.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = require_matplotlib()
    index = list(range(min(4, spectra.n_stars))) if index is None else list(index)
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 1.2 + 1.1 * len(index)))
    x = spectra.wavelength if spectra.wavelength is not None else np.arange(spectra.n_pix, dtype=float)
    keep = np.ones(x.shape, bool) if wave_range is None else (x >= wave_range[0]) & (x <= wave_range[1])
    x = x[keep]
    gaps = _gap_positions(x)  # chip gaps: break the line instead of bridging them
    for k, i in enumerate(index):
        f = np.asarray(spectra.flux[i], float)[keep] - k * offset
        bad = np.asarray(spectra.ivar[i])[keep] == 0
        ax.plot(*_broken(x, np.where(bad, np.nan, f), gaps), lw=0.6, color=f"C{k % 10}")
        if bad.any():
            ax.plot(*_broken(x, np.where(bad, f, np.nan), gaps), lw=0.6, color="0.75")
        if labels is not None:
            parts = []
            for name, fmt in (("TEFF", "{:.0f} K"), ("LOGG", "logg {:.2f}"), ("FE_H", "[Fe/H] {:+.2f}")):
                if name in labels.names:
                    v = labels.as_nan()[i, labels.index(name)]
                    parts.append(fmt.format(v) if np.isfinite(v) else f"{name} ?")
            ax.text(
                1.005,
                1.0 - k * offset,
                "\n".join(parts),
                fontsize=8,
                color=f"C{k % 10}",
                va="center",
                transform=ax.get_yaxis_transform(),
            )
    ax.set_xlabel("vacuum wavelength [Angstrom]" if spectra.wavelength is not None else "pixel")
    ax.set_ylabel("normalised flux + offset")
    ax.set_ylim(1.0 - (len(index) - 1) * offset - 0.6, 1.25)
    ax.set_xlim(x[0], x[-1])
    return ax.figure


def _gap_positions(x: np.ndarray) -> np.ndarray:
    """Indices after which the grid jumps by more than three typical steps."""
    if x.size < 3:
        return np.zeros(0, int)
    step = np.diff(x)
    return np.flatnonzero(step > 3 * np.median(step))


def _broken(x: np.ndarray, y: np.ndarray, gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x, y`` with a NaN inserted at each gap so a line plot does not bridge it."""
    return np.insert(x, gaps + 1, np.nan), np.insert(y, gaps + 1, np.nan)
