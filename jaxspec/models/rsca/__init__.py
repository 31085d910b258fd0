r"""RSCA: Relevant Scaled Component Analysis (de Mijolla & Ness 2021).

A linear metric in which the Euclidean distance between two stars measures how
likely they are to be chemical siblings.  Spectra ``X`` ``(N, D)`` go through
four linear steps:

1. **Compress**: probabilistic PCA with missing data (:mod:`jaxspec.models.ppca`)
   fitted on the field; every star gets its posterior-mean latents
   :math:`z = E[z \mid x_\mathrm{obs}]` (the first ``K`` of ``ppca_components``).
2. **Sphere** (PCA whitening): :math:`s = (z - \bar z_\mathrm{pop}) E \Lambda^{-1/2}`
   with :math:`\mathrm{Cov}(z_\mathrm{pop}) = E \Lambda E^\top`, so the field has
   identity covariance.
3. **Reparametrise**: :math:`r = s R`, ``R`` the eigenvectors of the covariance of
   the cluster-centred members (each minus its own cluster mean), so the
   within-cluster covariance is diagonal while the field's stays ``I``.
4. **Rescale**: :math:`y_k = r_k / \alpha_k` with
   :math:`\alpha_k = \sigma_k \sigma_\mathrm{pop} / \sqrt{\sigma_\mathrm{pop}^2 - \sigma_k^2}`,
   :math:`\sigma_\mathrm{pop} = 1`, and the pooled within-cluster spread
   :math:`\sigma_k^2 = \sum_c (n_c - 1)\,(1.4826\,\mathrm{MAD}_{ck})^2 / \sum_c (n_c - 1)`
   over clusters with :math:`n_c > 1` (clipped to :math:`[10^{-6}, 1 - 10^{-6}]`).

Then :math:`-\tfrac12 |y - y'|^2` is, up to a constant, the log ratio of the
probabilities that a pair is from one cluster and that it is not (paper eq. 5).
Steps 2-4 are ``K x K`` float64 linear algebra (:func:`fit_from_features`); the
composed map :math:`y = (z - \bar z_\mathrm{pop})\,A`,
:math:`A = E \Lambda^{-1/2} R\,\mathrm{diag}(1/\alpha)`, is stored in
:class:`Metric`.  Evaluation (doppelganger rate with leave-one-cluster-out,
the top-N table, the interstellar mask, Appendix B's nuisance-hyperplane
removal) lives in :mod:`jaxspec.models.rsca._eval`, steps 2-4 in
:mod:`jaxspec.models.rsca._metric`, the doppelganger rate in :mod:`jaxspec.models.rsca._doppelganger`;
all are re-exported here.
"""

from jaxspec.models._common import FitResult
from jaxspec.models.rsca._doppelganger import DoppelgangerResult, doppelganger_rate
from jaxspec.models.rsca._eval import (
    NuisanceRemoval,
    TopNTable,
    leave_one_cluster_out_rate,
    remove_nuisance_hyperplane,
    top_n_table,
)
from jaxspec.models.rsca._fit import Config, InterstellarMask, Model, fit, interstellar_mask, transform
from jaxspec.models.rsca._metric import Metric, embed, fit_from_features, pooled_sigma, scale_factor

__all__ = [
    "Config",
    "DoppelgangerResult",
    "FitResult",
    "InterstellarMask",
    "Metric",
    "Model",
    "NuisanceRemoval",
    "TopNTable",
    "doppelganger_rate",
    "embed",
    "fit",
    "fit_from_features",
    "interstellar_mask",
    "leave_one_cluster_out_rate",
    "pooled_sigma",
    "remove_nuisance_hyperplane",
    "scale_factor",
    "top_n_table",
    "transform",
]
