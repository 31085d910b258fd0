r"""The PPCA density of each star's observed entries: :math:`\log \mathcal N(x_o; \mu_o, W_o W_o^\top + \Psi_o)`.

With :math:`\Psi_o = \mathrm{diag}(\sigma^2 / w_o)` (``w = 1`` unweighted, ``ivar / ivar_scale`` for a fit
weighted by ``ivar``) and the missing entries marginalised out exactly, by Woodbury's identity with the
``K x K`` matrix :math:`A = I + W_o^\top \Psi_o^{-1} W_o`:

.. math::

    \log p(x_o) = -\tfrac12 \Big[ r^\top \Psi_o^{-1} r - b^\top A^{-1} b + \log\det\Psi_o + \log\det A
                  + D_o \log 2\pi \Big], \qquad r = x_o - \mu_o, \quad b = W_o^\top \Psi_o^{-1} r .
"""

from __future__ import annotations

import numpy as np

from jaxspec.models.ppca._data import _inputs, _missing
from jaxspec.models.ppca._model import Model

__all__ = ["log_prob"]

_BLOCK = 32  # stars per float64 block: (block, D, K) temporaries


def log_prob(model: Model, spectra, *, ivar=None, mask=None) -> np.ndarray:
    """``(N,)`` log-density (nats, data units) of each star's observed entries under the PPCA (module docstring).

    ``spectra``: ``(N, D)`` array (NaN = missing) or Spectra, as :func:`~jaxspec.models.ppca.encode` takes
    them; ``ivar`` is needed when the fit was weighted by ``ivar``.  A star with no observed entry gets NaN.
    Computed in float64 numpy, 32 stars at a time.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a ppca.Model, found {type(model).__name__}")
    x, ivar, mask = _inputs(spectra, ivar, mask)
    w = np.asarray(model.loadings, np.float64)
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"spectra: expected {w.shape[0]} pixels as in the fit, found {x.shape[1]}")
    if model.ivar_scale is not None and ivar is None:
        raise ValueError("ivar: the fit was weighted by ivar; pass ivar= (or a Spectra)")
    mean, sigma2, k = np.asarray(model.mean, np.float64), float(model.noise_variance), w.shape[1]
    out = np.empty(x.shape[0])
    for lo in range(0, x.shape[0], _BLOCK):
        xc, miss, ivc = _missing(x, ivar, mask, lo, min(lo + _BLOCK, x.shape[0]))
        weight = np.where(miss, 0.0, 1.0 if model.ivar_scale is None else ivc / float(model.ivar_scale))
        prec = weight / sigma2  # Psi^-1 on observed entries, 0 on missing ones
        r = np.where(miss, 0.0, np.asarray(xc, np.float64) - mean)
        a = np.eye(k) + np.matmul((prec[:, :, None] * w).transpose(0, 2, 1), w)
        b = (prec * r) @ w
        sol = np.linalg.solve(a, b[:, :, None])[:, :, 0]
        observed = ~miss
        n_obs = observed.sum(axis=1)
        log_det_psi = -np.sum(np.log(np.where(observed, prec, 1.0)), axis=1)
        quad = np.sum(prec * r * r, axis=1) - np.sum(b * sol, axis=1)
        value = -0.5 * (quad + log_det_psi + np.linalg.slogdet(a)[1] + n_obs * np.log(2 * np.pi))
        out[lo : lo + len(value)] = np.where(n_obs > 0, value, np.nan)
    return out
