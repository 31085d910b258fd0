r"""Figures users expect (needs the ``plot`` extra: ``pip install "jaxspec-stellar[plot]"``).

Every function draws on a given matplotlib ``Axes`` (or makes a figure) and
returns the ``Figure``; none of them calls ``plt.show``.  One module per
family, each importing only public model APIs: :mod:`jaxspec.plots.lux` (the
Lux paper's label comparison, Kiel and abundance planes, spectrum fit,
derivative spectra and the cross-validation grid), :mod:`jaxspec.plots.rsca`
(top dimensions against [Fe/H], rate against ``K``), :mod:`jaxspec.plots.svae`
(normalised residuals against labels, latent projections), and
:mod:`jaxspec.plots.spectra` (spectra of any origin).  All are re-exported here,
except :mod:`jaxspec.plots.payne` (a label fit with its residuals, label
recovery) and :mod:`jaxspec.plots.flows` (training history, the correlation
matrices of :math:`p(S \mid y)`, ROC curves and histograms of the outlier
scores), used as modules: ``from jaxspec.plots import flows``.
"""

from __future__ import annotations

from jaxspec.plots._mpl import require_matplotlib
from jaxspec.plots.lux import (
    plot_abundance_plane,
    plot_cv_grid,
    plot_derivative_spectra,
    plot_kiel,
    plot_label_comparison,
    plot_spectrum_fit,
)
from jaxspec.plots.rsca import plot_rate_vs_components, plot_rsca_dimensions
from jaxspec.plots.spectra import plot_spectra
from jaxspec.plots.svae import plot_latent_projections, plot_residuals_vs_labels

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
