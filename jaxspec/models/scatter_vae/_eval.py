r"""Evaluation of a scatter VAE against a supervised baseline (Laroche & Speagle 2023, sec. 3).

* :func:`latent_coverage`: the relative latent volume :math:`\Delta V / V_\mathrm{sup}`
  covered by a full (unlabelled) set but not by the labelled subset, by Monte
  Carlo integration of kernel-density occupancy;
* :func:`residual_stats`: median, robust spread, 16/84 percentiles and the
  fraction beyond :math:`3\sigma` of normalised residuals, per label bin (Fig. 2);
* :func:`roc_auc`: the area under the ROC curve of an outlier score.

Re-exported by :mod:`jaxspec.models.scatter_vae`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.data._checks import check_key
from jaxspec.data.containers import default_float
from jaxspec.metrics import robust_sigma

_KDE_ROWS = 4096  # evaluation points per block of the kernel sum: a (4096, max_points) float64 block, ~130 MB

__all__ = ["LatentCoverage", "ResidualStats", "latent_coverage", "residual_stats"]


class LatentCoverage(NamedTuple):
    r"""Result of :func:`latent_coverage` (volumes in standardised latent units: per-dimension std of ``z_all``).

    ``ratio``: :math:`\Delta V / V_\mathrm{sup} = (V_\mathrm{all} - V_\mathrm{sup}) / V_\mathrm{sup}`
    (the paper's); ``ratio_outside``: :math:`|O_\mathrm{all} \setminus O_\mathrm{sup}| / V_\mathrm{sup}`,
    the volume the full set occupies outside the labelled region (>= ``ratio``;
    kernel-density noise at the contours makes it > 0 even for two samples of
    one distribution); ``v_sup``, ``v_all``, ``v_outside``: those volumes;
    ``stderr``: Monte Carlo standard error of ``ratio`` (not the subsampling's); ``bandwidth``: kernel
    width (standardised units); ``n_samples``.
    """

    ratio: float
    ratio_outside: float
    v_sup: float
    v_all: float
    v_outside: float
    stderr: float
    bandwidth: float
    n_samples: int


class ResidualStats(NamedTuple):
    """Result of :func:`residual_stats`, each field ``(n_bins,)`` except ``edges`` ``(n_bins + 1,)``.

    ``count``: finite residuals in the bin (stars x coefficients); ``median``;
    ``spread``: 1.4826 x the median absolute deviation (1 for a unit Gaussian);
    ``p16``, ``p84``; ``mean``; ``std``; ``frac_gt3``: fraction with
    :math:`|r| > 3`.  NaN in empty bins.
    """

    edges: np.ndarray
    count: np.ndarray
    median: np.ndarray
    spread: np.ndarray
    p16: np.ndarray
    p84: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    frac_gt3: np.ndarray


def _latents(z, name: str) -> np.ndarray:
    z = np.asarray(z)
    if z.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected a real array (n, n_z), found dtype {z.dtype}")
    if z.ndim != 2 or z.shape[0] < 2 or z.shape[1] < 1:
        raise ValueError(f"{name}: expected shape (n, n_z) with n >= 2, found {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError(f"{name}: expected finite values, found NaN or inf")
    return z.astype(np.float64)


@jax.jit
def _log_kde_chunk(x, points, inv_h2, log_norm):
    """Gaussian-KDE log density at ``x`` ``(c, d)`` of ``points`` ``(m, d)`` (``log_norm`` includes ``-log m``)."""
    d2 = jnp.sum(x**2, 1)[:, None] + jnp.sum(points**2, 1)[None, :] - 2.0 * x @ points.T
    return jax.nn.logsumexp(-0.5 * inv_h2 * jnp.maximum(d2, 0.0), axis=1) + log_norm


def _log_kde(x: np.ndarray, points: np.ndarray, h: float, chunk: int = _KDE_ROWS) -> np.ndarray:
    """:math:`\\log \\frac1m \\sum_p \\mathcal N(x; p, h^2 I)` for every row of ``x``, in fixed-size chunks."""
    dtype = default_float()
    d = x.shape[1]
    log_norm = float(-np.log(points.shape[0]) - 0.5 * d * np.log(2 * np.pi * h * h))
    pts = jnp.asarray(points, dtype)
    out = []
    for start in range(0, x.shape[0], chunk):
        rows = np.minimum(np.arange(start, start + chunk), x.shape[0] - 1)  # pad: one compilation
        part = _log_kde_chunk(
            jnp.asarray(x[rows], dtype), pts, jnp.asarray(1.0 / (h * h), dtype), jnp.asarray(log_norm, dtype)
        )
        out.append(np.asarray(part, np.float64)[: min(chunk, x.shape[0] - start)])
    return np.concatenate(out)


def latent_coverage(
    z_labelled,
    z_all,
    *,
    n_samples: int = 100_000,
    bandwidth: float | None = None,
    level: float = 0.95,
    max_points: int = 4000,
    key: jax.Array | None = None,
) -> LatentCoverage:
    r"""Relative latent volume :math:`\Delta V / V_\mathrm{sup}` (paper sec. 3, Fig. 3), by Monte Carlo.

    The paper projects the labelled cross-match and the unlabelled stars into
    the latent space and integrates numerically how much more latent volume
    the unlabelled stars cover, relative to the labelled volume
    (:math:`\approx 0.3` for Gaia/APOGEE: "30% more latent space").  It does
    not state the estimator; this one is:

    1. standardise both sets by the mean and standard deviation of ``z_all``
       per dimension (the result does not depend on the latent units);
    2. the region :math:`O` a set occupies is its highest-density region
       holding the fraction ``level`` of its stars: its Gaussian kernel
       density estimate (isotropic, width ``bandwidth``) above the
       ``1 - level`` quantile of the leave-one-out estimate at its own stars.
       Each set gets its own contour, so two samples of one distribution of
       different sizes occupy the same region in expectation;
    3. the volumes of :math:`O_\mathrm{sup}` (labelled) and
       :math:`O_\mathrm{all}` by importance-sampled Monte Carlo, ``n_samples``
       draws from the mixture of the two kernel density estimates
       (:math:`V = \mathrm{E}_q[\mathbb 1_O / q]`), and

    .. math::
        \frac{\Delta V}{V_\mathrm{sup}} = \frac{V_\mathrm{all} - V_\mathrm{sup}}{V_\mathrm{sup}}.

    Identical sets give exactly 0, two samples of one distribution about 0,
    a labelled set filling half of the full set's region about 1.  The
    contours are blurred by about one bandwidth: a boundary that the data cut
    sharply moves by a fraction of ``bandwidth``.  ``ratio_outside`` (the
    set difference) is also returned.

    ``stderr`` is the Monte Carlo error only.  The kernel centres are a
    random subsample and the tails of the sets are sparse: in 6 dimensions,
    on ~1e4 stars with filamentary structure, two subsamples of one set can
    differ by ~0.2 in ``ratio``.  Repeat with other ``key`` values (and
    compare two random halves of ``z_all``) to see that spread; 2-d
    projections are far less noisy.

    Parameters
    ----------
    z_labelled : ``(n_sup, n_z)``
        Latents of the labelled (supervised) stars, e.g. posterior means.
    z_all : ``(n_all, n_z)``
        Latents of the full or unlabelled set.
    n_samples : int
        Monte Carlo points (the standard error falls as ``n_samples**-0.5``).
    bandwidth : float, optional
        Kernel width in standardised units; default Scott's rule
        :math:`m^{-1/(n_z + 4)}` with :math:`m` the labelled points used.
    level : float in (0, 1)
        Fraction of each set's stars inside its occupied region.
    max_points : int
        Each set is randomly subsampled to at most this many kernel centres
        (cost :math:`\propto` ``n_samples * max_points``).
    key : jax.random key, optional
        Subsampling and Monte Carlo points (default ``jax.random.key(0)``).

    Returns
    -------
    LatentCoverage
    """
    sup, full = _latents(z_labelled, "z_labelled"), _latents(z_all, "z_all")
    if sup.shape[1] != full.shape[1]:
        raise ValueError(f"z_labelled: expected {full.shape[1]} latent dimensions (as z_all), found {sup.shape[1]}")
    for name, v in (("n_samples", n_samples), ("max_points", max_points)):
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < 2:
            raise ValueError(f"{name}: expected an int >= 2, found {v!r}")
    if not 0 < level < 1:
        raise ValueError(f"level: expected a value in (0, 1), found {level!r}")
    key = jax.random.key(0) if key is None else check_key(key)
    k_sup, k_all, k_mc = jax.random.split(key, 3)
    center, scale = full.mean(axis=0), full.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    sup, full = (sup - center) / scale, (full - center) / scale

    def subsample(z, k):
        if z.shape[0] <= max_points:
            return z
        return z[np.sort(np.asarray(jax.random.choice(k, z.shape[0], (int(max_points),), replace=False)))]

    sup, full = subsample(sup, k_sup), subsample(full, k_all)
    d = sup.shape[1]
    h = float(sup.shape[0] ** (-1.0 / (d + 4))) if bandwidth is None else float(bandwidth)
    if not (np.isfinite(h) and h > 0):
        raise ValueError(f"bandwidth: expected a finite value > 0, found {bandwidth!r}")
    log_t_sup, log_t_all = _hpd_level(sup, h, level), _hpd_level(full, h, level)
    # importance sampling from q = (KDE_sup + KDE_all) / 2: q >= t / 2 inside either region, so the
    # weights 1/q stay bounded however far outliers stretch the sets (a bounding box would not)
    k_pick, k_set, k_noise = jax.random.split(k_mc, 3)
    from_sup = np.asarray(jax.random.bernoulli(k_set, 0.5, (int(n_samples),)))
    u = np.asarray(jax.random.uniform(k_pick, (int(n_samples),)), np.float64)
    centers = np.where(
        from_sup[:, None],
        sup[np.minimum((u * sup.shape[0]).astype(int), sup.shape[0] - 1)],
        full[np.minimum((u * full.shape[0]).astype(int), full.shape[0] - 1)],
    )
    x = centers + h * np.asarray(jax.random.normal(k_noise, (int(n_samples), d)), np.float64)
    lp_sup, lp_all = _log_kde(x, sup, h), _log_kde(x, full, h)
    w = np.exp(-(np.logaddexp(lp_sup, lp_all) - np.log(2.0)))
    in_sup, in_all = lp_sup > log_t_sup, lp_all > log_t_all
    v_sup, v_all, v_out = (float(np.mean(w * m)) for m in (in_sup, in_all, in_all & ~in_sup))
    if v_sup == 0:
        raise ValueError("n_samples: no Monte Carlo point fell in the labelled region; raise n_samples")
    ratio = v_all / v_sup - 1.0
    # delta method for a ratio of two means of the same draws
    stderr = np.std(w * (in_all - (1.0 + ratio) * in_sup)) / (v_sup * np.sqrt(n_samples))
    return LatentCoverage(
        ratio=float(ratio),
        ratio_outside=v_out / v_sup,
        v_sup=v_sup,
        v_all=v_all,
        v_outside=v_out,
        stderr=float(stderr),
        bandwidth=h,
        n_samples=int(n_samples),
    )


def _hpd_level(points: np.ndarray, h: float, level: float) -> float:
    """Log density above which the fraction ``level`` of ``points`` lies (leave-one-out KDE at each point)."""
    m, d = points.shape
    lp = _log_kde(points, points, h)
    log_self = -np.log(m) - 0.5 * d * np.log(2 * np.pi * h * h)  # each point's own kernel at distance 0
    with np.errstate(divide="ignore", invalid="ignore"):
        loo = lp + np.log1p(-np.exp(np.minimum(log_self - lp, 0.0))) + np.log(m / (m - 1))
    return float(np.quantile(np.where(np.isfinite(loo), loo, -np.inf), 1.0 - level))


def _edges(values: np.ndarray, bins) -> np.ndarray:
    if isinstance(bins, int | np.integer) and not isinstance(bins, bool):
        if bins < 1:
            raise ValueError(f"bins: expected an int >= 1 or increasing edges, found {bins!r}")
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            raise ValueError("labels: expected at least one finite value, found none")
        lo, hi = float(finite.min()), float(finite.max())
        return np.linspace(lo, hi if hi > lo else lo + 1.0, int(bins) + 1)
    edges = np.asarray(bins, np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0) or not np.all(np.isfinite(edges)):
        raise ValueError(f"bins: expected an int >= 1 or finite increasing edges, found {bins!r}")
    return edges


def residual_stats(resid, labels=None, bins=10) -> ResidualStats:
    r"""Normalised residuals summarised per bin of one label (paper Fig. 2; the side-by-side table).

    Parameters
    ----------
    resid : ``(n,)`` or ``(n, k)``
        Normalised residuals :math:`(x - \hat x)/\sqrt{\sigma_x^2 + s^2}` of
        ``n`` stars (``k`` coefficients pooled); NaN = masked, ignored.
    labels : ``(n,)``, optional
        The label to bin by (stars with NaN are left out); None: one bin, all stars.
    bins : int or array ``(n_bins + 1,)``
        Number of equal-width bins over the finite range of ``labels``, or
        increasing edges (a bin is ``[lo, hi)``, the last one ``[lo, hi]``).

    Returns
    -------
    ResidualStats

    Examples
    --------
    >>> r = residual_stats(np.array([[-1.0, 1.0], [0.0, 5.0]]))
    >>> float(r.median[0]), float(r.frac_gt3[0]), int(r.count[0])
    (0.5, 0.25, 4)
    """
    r = np.asarray(resid)
    if r.dtype.kind not in "biuf":
        raise TypeError(f"resid: expected a real array (n,) or (n, k), found dtype {r.dtype}")
    if r.ndim not in (1, 2) or r.shape[0] == 0:
        raise ValueError(f"resid: expected shape (n,) or (n, k) with n >= 1, found {r.shape}")
    r = r.astype(np.float64).reshape(r.shape[0], -1)
    if labels is None:
        values, edges = np.zeros(r.shape[0]), np.array([-0.5, 0.5])
    else:
        values = np.asarray(labels, np.float64)
        if values.shape != (r.shape[0],):
            raise ValueError(f"labels: expected shape ({r.shape[0]},) (one value per star), found {values.shape}")
        edges = _edges(values, bins)
    n_bins = edges.size - 1
    which = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n_bins - 1)
    inside = np.isfinite(values) & (values >= edges[0]) & (values <= edges[-1])
    out = {f: np.full(n_bins, np.nan) for f in ResidualStats._fields[1:]}
    out["count"] = np.zeros(n_bins, int)
    for b in range(n_bins):
        v = r[inside & (which == b)].ravel()
        v = v[np.isfinite(v)]
        out["count"][b] = v.size
        if v.size == 0:
            continue
        med = np.median(v)
        out["median"][b], out["mean"][b], out["std"][b] = med, v.mean(), v.std()
        out["spread"][b] = robust_sigma(v)
        out["p16"][b], out["p84"][b] = np.percentile(v, [16, 84])
        out["frac_gt3"][b] = np.mean(np.abs(v) > 3)
    return ResidualStats(edges=edges, **out)
