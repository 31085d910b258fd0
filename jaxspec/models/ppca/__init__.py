r"""Probabilistic PCA with missing data, fitted by EM (Tipping & Bishop 1999).

The model (Bishop 2006, sec. 12.2) for the spectrum :math:`x_n` of star :math:`n`:

.. math::

    x_{nd} = \mu_d + W_d z_n + \epsilon_{nd},\qquad z_n \sim \mathcal N(0, I_K),\qquad
    \epsilon_{nd} \sim \mathcal N(0, \sigma^2 / w_{nd}),

with loadings ``W`` ``(D, K)``, a noise variance :math:`\sigma^2` and weights
``w = 1`` where observed, ``0`` where missing (or, with ``weights="ivar"``,
``w = ivar / mean(ivar)``).  Missing entries are marginalised out exactly;
the mean :math:`\mu` is the (weighted) mean of the observed values, held fixed.

Two exact EM variants, both monotone in the observed-data log-likelihood
(returned as the history), chosen by how much is missing:

sparse (unweighted, at most 10% missing: survey data)
    Complete-data EM with the missing values as latents too.  E-step per
    star: :math:`M_n = \sigma^2 I + W^\top W - W_m^\top W_m` (``W^T W`` once
    per iteration minus the gathered rows of the star's own missing pixels),
    :math:`E[z_n] = M_n^{-1} W_o^\top (x - \mu)_o`,
    :math:`\mathrm{Cov}[z_n] = \sigma^2 M_n^{-1}` (Cholesky); missing values
    are imputed as :math:`W_d E[z_n]`.  M-step: :math:`W = B A^{-1}` with a
    single ``K x K`` matrix :math:`A = \sum_n E[z_n z_n^\top]`, ``B`` the
    centred data times the latents plus, at each missing entry,
    :math:`E[y_{nd} z_n] = E[z_n z_n^\top] W_d` (one batched product over
    the gathered rows, scattered).  The raw
    data enter the matmuls unmodified (centring as a rank-one correction, the
    missing entries' values subtracted), so nothing of size ``(N, D)`` is
    written.  Per iteration: ``2 N D K`` multiply-adds in two matmuls plus
    ``O(N_miss K^2 + N K^3)`` for the corrections.
dense (``weights="ivar"`` or more than 10% missing)
    :math:`M_n = \sigma^2 I + W^\top \mathrm{diag}(w_n) W` and a per-pixel
    M-step :math:`W_d = (\sum_n w_{nd} E[z_n z_n^\top])^{-1} \sum_n w_{nd}
    (x_{nd} - \mu_d) E[z_n]`: ``2 N D K^2`` more per iteration, and aligned
    copies of ``w (x - mu)`` and ``w``.

Each M-step is followed by the PX-EM rescaling of ``W`` (Liu, Rubin & Wu
1998), without which EM creeps at a rate :math:`1 - \sigma^2/\lambda_k` when
the signal dominates the noise.  EM starts from two passes of randomised
subspace iteration (``K + 10`` columns, drawn from ``key``) on the centred,
zero-filled data and Tipping & Bishop's closed form on its Ritz pairs, so a
fit is a deterministic, bitwise-reproducible function of ``key``.  From
65,536 stars on, the start uses every ``s``-th chunk only, ``s = N // 32768``
(32,768 to 65,535 stars; a start, not the fit: EM then runs on all stars).
At the paper's 151,145 stars that is every 4th chunk, 37,888 stars; EM from
this start takes as many iterations as from a start on every star.  The data
stream through fixed-size chunks of stars (padded; compiled once per
shape): float32 input that is C-contiguous and 64-byte aligned (an
``np.memmap`` of a ``.npy`` file, say) is read in place, other input is copied
once.  Convergence: relative change of the log-likelihood below ``tol`` (in
float32 the log-likelihood itself is accurate to about ``1e-7`` times the
signal-to-noise variance ratio, so a ``tol`` much below ``1e-6`` may not be
reached).  The result is rotated to PCA axes: orthonormal components sorted
by explained variance, as :func:`numpy.linalg.svd` of the centred data gives
them when nothing is missing (Tipping & Bishop's closed form).

De Mijolla & Ness (2021) compress spectra with this model (their step 1);
beyond the paper: deterministic initialisation, exact per-star posteriors,
inverse-variance weights.
"""

from jaxspec.models._common import FitResult
from jaxspec.models.ppca._density import log_prob
from jaxspec.models.ppca._fit import encode, fit
from jaxspec.models.ppca._model import Config, Model, decode

__all__ = ["Config", "FitResult", "Model", "decode", "encode", "fit", "log_prob"]
