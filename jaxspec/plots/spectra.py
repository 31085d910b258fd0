"""Spectra stacked with an offset, masked pixels greyed out, chip gaps left open."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxspec.data.containers import Labels, Spectra
from jaxspec.plots._mpl import broken_line, gap_positions, require_matplotlib

__all__ = ["plot_spectra"]


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
    gaps = gap_positions(x)  # chip gaps: break the line instead of bridging them
    for k, i in enumerate(index):
        f = np.asarray(spectra.flux[i], float)[keep] - k * offset
        bad = np.asarray(spectra.ivar[i])[keep] == 0
        ax.plot(*broken_line(x, np.where(bad, np.nan, f), gaps), lw=0.6, color=f"C{k % 10}")
        if bad.any():
            ax.plot(*broken_line(x, np.where(bad, f, np.nan), gaps), lw=0.6, color="0.75")
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
