r"""Out-of-distribution scores of stars under a Mendis flow (the paper's Fig. 3, and two better-behaved scores).

Three scores per star, each "large = outlying":

``nll``
    :math:`-\log p(S, y)`, the paper's score.  Raw flow likelihoods are known
    to mislead (Nalisnick et al. 2019; Kirichenko et al. 2020): a flow can give
    simple out-of-distribution inputs (smoother spectra, fewer lines) a higher
    density than its training data, because the likelihood is dominated by
    low-level statistics shared by every spectrum.
``typicality``
    :math:`\lvert -\log p(x) - \mathrm{E}_\mathrm{ref}[-\log p] \rvert /
    \mathrm{sd}_\mathrm{ref}[-\log p]`: how far a star's NLL lies from the
    NLLs of in-distribution stars *in either direction* (Nalisnick et al.'s
    typicality test, per star), so a star that is "too likely" is flagged too.
``likelihood_ratio``
    :math:`\log p_\mathrm{bg}(x) - \log p(x)` with a simple background density
    :math:`p_\mathrm{bg}`, a PPCA Gaussian of the same standardised vectors
    (Ren et al. 2019's idea: what both models explain, such as noise and the
    continuum level, cancels, and what is left is what the flow learnt beyond
    a Gaussian).  The PPCA marginalises masked entries; the flow sets them to
    their training mean (:mod:`jaxspec.models.flows._fit`).

The in-distribution reference (:func:`reference`) is computed once from
stars known to be ordinary (a held-out part of the training set).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxspec.data._checks import check_int, check_key
from jaxspec.models import ppca
from jaxspec.models.flows._predict import log_prob, standardised_inputs
from jaxspec.typing import Key

__all__ = ["OutlierScores", "Reference", "outlier_scores", "reference"]


class Reference(NamedTuple):
    """The in-distribution statistics of :func:`outlier_scores`: ``nll_mean``, ``nll_std`` (nats) and the
    background ``ppca.Model`` of standardised vectors."""

    nll_mean: float
    nll_std: float
    background: ppca.Model


class OutlierScores(NamedTuple):
    """Per star ``(n,)``: ``nll``, ``typicality``, ``likelihood_ratio`` (module docstring; large = outlying),
    ``background_nll`` (:math:`-\\log p_\\mathrm{bg}`, the PPCA baseline's own score, data units) and
    ``masked_fraction`` (of the star's pixels and labels).  NaN for a star with no measured pixel."""

    nll: np.ndarray
    typicality: np.ndarray
    likelihood_ratio: np.ndarray
    background_nll: np.ndarray
    masked_fraction: np.ndarray


def _background_log_prob(model, background, u, measured) -> np.ndarray:
    """log p_bg in data units: the PPCA density of the standardised vector minus sum(log spread) observed."""
    log_spread = np.log(np.asarray(model.spread, np.float64))
    lp = ppca.log_prob(background, np.where(measured, u, np.nan))
    return lp - (measured * log_spread).sum(axis=1)


def reference(model, spectra, labels, *, key: Key, n_components: int = 16, progress: bool = True) -> Reference:
    """The in-distribution NLL statistics and the PPCA background (``n_components``) from ordinary stars."""
    check_key(key)
    n_components = check_int(n_components, "n_components", minimum=1)
    nll = -log_prob(model, spectra, labels, progress=progress)
    nll = nll[np.isfinite(nll)]
    if nll.size < 2:
        raise ValueError(f"spectra: expected at least 2 reference stars with a measured pixel, found {nll.size}")
    u, measured = standardised_inputs(model, spectra, labels)
    config = ppca.Config(n_components=min(n_components, model.dim - 1))
    fit = ppca.fit(np.where(measured, u, np.nan), key=key, config=config, progress=progress)
    return Reference(float(np.mean(nll)), float(np.std(nll)), fit.model)


def outlier_scores(model, spectra, labels, ref: Reference, *, progress: bool = True) -> OutlierScores:
    """The module's three scores, the PPCA baseline's NLL and the masked fraction of each star."""
    if not isinstance(ref, Reference):
        raise TypeError(f"ref: expected a flows.Reference (from flows.reference), found {type(ref).__name__}")
    lp = log_prob(model, spectra, labels, progress=progress)
    u, measured = standardised_inputs(model, spectra, labels)
    lp_bg = _background_log_prob(model, ref.background, u, measured)
    nll = -lp
    return OutlierScores(
        nll,
        np.abs(nll - ref.nll_mean) / max(ref.nll_std, np.finfo(np.float64).tiny),
        lp_bg - lp,
        -lp_bg,
        1.0 - measured.mean(axis=1),
    )
