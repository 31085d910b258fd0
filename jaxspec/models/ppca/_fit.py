"""PPCA fitting by EM and the posterior latents of new data (the equations are in the package docstring)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxspec.data._checks import check_key
from jaxspec.models._common import CHUNK_SIZE, FitResult, on_device
from jaxspec.models.ppca._data import _aligned, _chunk, _chunks, _Data, _dtype, _inputs, _load, _missing
from jaxspec.models.ppca._kernels import _estep_chunk, _power
from jaxspec.models.ppca._model import Config, Model
from jaxspec.optim._units import check_finite_fit, flux_scale, in_unit, power_of_two
from jaxspec.typing import Key

__all__ = ["encode", "fit"]

_INIT_PASSES = 2  # passes of the randomised subspace iteration that starts EM
_INIT_STARS = 32768  # the start uses every (N // this)-th chunk: at least this many stars, under twice it
_DIRECT_MAX = 512  # encode() of at most this many stars: direct float64 solves, no compilation
_OVERSAMPLE = 10


def fit(
    spectra,
    *,
    key: Key,
    config: Config = Config(),  # noqa: B008 - a frozen dataclass
    ivar=None,
    mask=None,
    progress: bool = True,
) -> FitResult:
    r"""Fit PPCA with missing data by EM (see the package docstring for the equations).

    Parameters
    ----------
    spectra : array ``(N, D)`` or :class:`~jaxspec.data.containers.Spectra`
        Fluxes; non-finite values count as missing (a star with none observed
        is missing data, a pixel observed in no star gets mean and loadings
        ~0).  numpy, memmap or jax arrays of a real dtype.  Any unit: EM runs
        on ``x / u`` (a copy; none when ``u = 1``), ``u`` the power of two
        nearest the median observed ``|x|``, and the mean and loadings scale
        back by ``u``, :math:`\sigma^2` by ``u**2`` (exactly).
    key : jax.random key
        Seeds the initial subspace; the fit is a deterministic function of it.
    config : Config
        ``K``, weighting, iterations, tolerance, EM chunk size.
    ivar, mask : array ``(N, D)``, optional
        ``ivar == 0`` or ``mask == True`` marks missing entries (a ``Spectra``
        brings its ``ivar``).
    progress : bool
        ``tqdm`` bar over iterations.

    Returns
    -------
    FitResult
        ``model`` (a :class:`Model` in PCA axes); ``history["log_likelihood"]``:
        the observed-data log-likelihood before each update and at the result;
        ``converged``: the relative change (on ``x / u``) reached
        ``config.tol`` and :math:`\sigma^2` is above its floor (float32's
        smallest normal number times ``u**2``, where data of rank ``<= K``
        end);
        ``aux["latents"]``: posterior means :math:`E[z_n]` ``(N, K)`` of the
        training stars, ``aux["n_iter"]``: EM updates made.

    Raises
    ------
    TypeError, ValueError
        Naming the argument: not a real 2-D array or Spectra, zero stars,
        every entry missing, a bad ``key``, ``config``, ``ivar`` or ``mask``;
        a fit that failed (singular linear algebra, non-finite parameters: the
        message names the flux scale).
    """
    if not isinstance(config, Config):
        raise TypeError(f"config: expected a ppca.Config, found {type(config).__name__}")
    check_key(key)
    x, ivar, mask = _inputs(spectra, ivar, mask)
    n, d = x.shape
    k = config.n_components
    if not k < min(n, d):
        raise ValueError(f"config.n_components: expected 1 <= K < min(N, D) = {min(n, d)}, found {k}")
    weighted = config.weights == "ivar"
    if weighted and ivar is None:
        raise ValueError("config.weights: 'ivar' needs inverse variances (ivar= or a Spectra), found none")
    chunk = _chunk(config.chunk_size, n)
    # EM runs on x / unit; the mean and loadings scale back by unit, sigma2 by unit**2
    unit = power_of_two(flux_scale(x, ivar, mask))
    x, ivar = _in_unit(x, ivar, unit, chunk)
    prep, scale = _load(x, ivar, mask, chunk, weighted)
    if prep.n_obs == 0 or not prep.sq > 0:
        raise ValueError("spectra: every entry is missing, or the observed data have no variance")
    dense = prep.w is not None
    history, change, it = [], np.inf, 0
    bar = tqdm(total=config.max_iter, desc="ppca fit", unit="iter", disable=not progress)
    try:
        w, sigma2 = _init(prep, k, key)
        while True:
            stats = _estep(prep, w, sigma2)
            history.append(_loglike(prep, stats, sigma2, k))
            if it > 0:
                change = abs(history[-1] - history[-2]) / abs(history[-1])
            bar.set_postfix(loglike=f"{history[-1]:.8g}", change=f"{change:.2g}")
            if change <= config.tol or it >= config.max_iter:
                break
            w, sigma2 = (_mstep_dense if dense else _mstep_sparse)(prep, stats, w, sigma2)
            it += 1
            bar.update()
        loadings, latents = _to_pca_axes(w, stats["z"][:n])
    except np.linalg.LinAlgError as err:
        raise ValueError(
            f"spectra: EM's linear algebra failed ({err}) at flux scale {unit:.3g} (fitted in units of it); "
            "the data may be degenerate"
        ) from None
    finally:
        bar.close()
    check_finite_fit(unit, "spectra", mean=prep.mean, loadings=loadings, noise_variance=sigma2, latents=latents)
    model = Model(
        in_unit(prep.mean, unit, "spectra", "mean"),
        in_unit(loadings, unit, "spectra", "loadings"),
        np.asarray(sigma2 * unit**2, np.float64),
        np.asarray(scale / unit**2, np.float64) if weighted else None,
        config,
    )
    # sigma2 at its floor (float32's smallest normal number) is no estimate: the data are rank <= K to float32
    converged = change <= config.tol and sigma2 > np.finfo(np.float32).tiny
    history = {"log_likelihood": np.array(history) - prep.n_obs * np.log(unit)}  # densities in the data's unit
    return FitResult(on_device(model), history, bool(converged), {"latents": latents, "n_iter": it})


def encode(model: Model, spectra, *, ivar=None, mask=None, chunk_size: int = CHUNK_SIZE, progress: bool = True):
    r"""Posterior mean latents :math:`E[z_n | x_{n,\mathrm{obs}}]` ``(N, K)`` of spectra under a fit.

    Uses the fit's weighting (``ivar`` needed when it was ``weights="ivar"``);
    on the training data it returns the fit's ``aux["latents"]``.  At most
    512 stars are solved directly in float64 (nothing to compile); more go
    through the chunked E-step.

    Parameters
    ----------
    model : Model
    spectra : array ``(N, D)`` or Spectra (NaN = missing)
    ivar, mask : array ``(N, D)``, optional
    chunk_size : int
        Stars per compiled chunk.
    progress : bool

    Returns
    -------
    numpy array ``(N, K)``
        Finite; a star with no observed entry gets the prior mean, 0.

    Raises
    ------
    TypeError, ValueError
        Naming the argument: not a real 2-D array or Spectra, zero stars, a
        pixel count other than the fit's, bad ``ivar`` or ``mask``.
    """
    if not isinstance(model, Model):
        raise TypeError(f"model: expected a ppca.Model, found {type(model).__name__}")
    x, ivar, mask = _inputs(spectra, ivar, mask)
    d = np.shape(model.mean)[0]
    if x.shape[1] != d:
        raise ValueError(f"spectra: expected {d} pixels as in the fit, found {x.shape[1]}")
    weighted = model.ivar_scale is not None
    if weighted and ivar is None:
        raise ValueError("ivar: the fit was weighted by ivar; pass ivar= (or a Spectra)")
    if x.shape[0] <= _DIRECT_MAX:
        return _encode_direct(model, x, ivar, mask)
    chunk = _chunk(chunk_size, x.shape[0])
    # the float32 E-step runs on x / unit and the model in that unit (the latents have no unit)
    unit = power_of_two(flux_scale(np.asarray(model.mean)[None, :]))
    x, ivar = _in_unit(x, ivar, unit, chunk)
    mean = np.asarray(np.asarray(model.mean, np.float64) / unit, _dtype())
    scale = float(model.ivar_scale) * unit**2 if weighted else None
    prep, _ = _load(x, ivar, mask, chunk, weighted, mean=mean, scale=scale)
    loadings = np.asarray(np.asarray(model.loadings, np.float64) / unit, _dtype())
    stats = _estep(prep, loadings, float(model.noise_variance) / unit**2, progress=progress)
    return stats["z"][: x.shape[0]]


def _in_unit(x, ivar, unit: float, chunk: int):
    """``x / unit`` (an aligned copy in the default float; non-finite stays missing) and ``ivar * unit**2``;
    ``x`` and ``ivar`` themselves (no copy) when ``unit`` is 1."""
    if unit == 1.0:
        return x, ivar
    n = x.shape[0]
    xs, ivs = _aligned(x.shape), None if ivar is None else np.empty(x.shape, _dtype())
    with np.errstate(over="ignore"):  # an ivar that overflows is refused by _load's checks
        for lo in range(0, n, chunk):
            xs[lo : lo + chunk] = np.asarray(x[lo : lo + chunk], np.float64) / unit
            if ivs is not None:
                ivs[lo : lo + chunk] = np.asarray(ivar[lo : lo + chunk], np.float64) * unit**2
    return xs, ivs


def _encode_direct(model: Model, x, ivar, mask) -> np.ndarray:
    r"""The posterior means of a few stars in float64 numpy, one ``K x K`` solve each (nothing to compile):
    :math:`E[z_n] = (\sigma^2 I + W^\top \mathrm{diag}(w_n) W)^{-1} W^\top \mathrm{diag}(w_n)(x_n - \mu)`."""
    xc, miss, ivc = _missing(x, ivar, mask, 0, x.shape[0])
    w = np.asarray(model.loadings, np.float64)
    wt = np.where(miss, 0.0, 1.0 if model.ivar_scale is None else ivc / float(model.ivar_scale))
    resid = np.where(miss, 0.0, np.asarray(xc, np.float64) - np.asarray(model.mean, np.float64))
    blocks = range(0, len(wt), 32)  # (32, D, K) float64 temporaries
    gram = np.concatenate([np.matmul((wt[a : a + 32, :, None] * w).transpose(0, 2, 1), w) for a in blocks])
    rhs = (wt * resid) @ w
    z = np.linalg.solve(float(model.noise_variance) * np.eye(w.shape[1]) + gram, rhs[:, :, None])[:, :, 0]
    return z.astype(_dtype())


# ---------------------------------------------------------------- EM


def _init(prep: _Data, k: int, key):
    """Randomised subspace iteration on the centred, zero-filled data; Rayleigh-Ritz; PPCA closed form.

    Runs on every ``stride``-th chunk (``_INIT_STARS`` to twice that many stars, spread over the whole input).
    """
    d = prep.mean.shape[0]
    n_chunks = -(-prep.n // prep.chunk)
    stride = max(1, n_chunks * prep.chunk // _INIT_STARS)
    n_used = sum(min(prep.chunk, prep.n - lo) for lo in range(0, prep.n, prep.chunk * stride))
    ell = min(k + _OVERSAMPLE, d, prep.n)
    q = _orth(np.asarray(jax.random.normal(key, (d, ell)), np.float64))
    mu = jnp.asarray(np.append(prep.mean, 0.0), _dtype())
    for p in range(_INIT_PASSES):
        qj = jnp.asarray(np.vstack([q, np.zeros((1, ell))]), _dtype())
        last = p == _INIT_PASSES - 1
        sums = [_power(x, extra, valid, qj, mu, last) for x, extra, valid in _chunks(prep, stride)]
        if last:
            gram = np.sum([np.asarray(t, np.float64) for t in sums], axis=0)
        else:
            q = _orth(np.ascontiguousarray(np.sum([np.asarray(t, np.float64) for t in sums], axis=0).T))
    theta, v = np.linalg.eigh((gram + gram.T) / 2)
    order = np.argsort(theta)[::-1][:k]
    lam = np.maximum(theta[order], 0.0) / n_used
    total = prep.sq / prep.n
    sigma2 = max((total - lam.sum()) / (d - k), 1e-6 * total / d, np.finfo(np.float32).tiny)
    w = np.einsum("dl,lk->dk", q, v[:, order]) * np.sqrt(np.maximum(lam - sigma2, 1e-3 * sigma2))
    return w.astype(_dtype()), float(sigma2)


def _orth(z):
    """Orthonormal columns spanning ``z`` (Cholesky-QR twice via a small eigh).

    ``np.einsum`` rather than BLAS: a threaded BLAS competes with XLA's threads
    for the cores and runs these thin products far slower.
    """
    for _ in range(2):
        lam, v = np.linalg.eigh(np.einsum("dk,dl->kl", z, z))
        z = np.einsum("dk,kl->dl", z, v / np.sqrt(np.maximum(lam, 1e-15 * lam.max())))
    return z


def _estep(prep: _Data, w, sigma2, *, progress: bool = False):
    """One pass over the data: latents and the sufficient statistics of the M-step."""
    w = jnp.asarray(w, _dtype())
    s2 = jnp.asarray(sigma2, _dtype())
    if prep.w is not None:
        args = ((w[:, :, None] * w[:, None, :]).reshape(w.shape[0], -1),)
    else:
        pad = jnp.zeros((1, w.shape[1]), w.dtype)
        w = jnp.concatenate([w, pad])  # row D: the padding of the missing index
        args = (w[:-1].T @ w[:-1], jnp.asarray(np.append(prep.mean, 0.0), _dtype()))
    zs, acc, scalars = [], None, []
    for x, extra, valid in tqdm(_chunks(prep), disable=not progress, desc="ppca encode", unit="chunk"):
        z, *mats, sc = _estep_chunk(x, extra, valid, w, s2, *args)
        zs.append(z)
        acc = mats if acc is None else [a + m for a, m in zip(acc, mats, strict=True)]
        scalars.append(sc)
    scal = np.sum([np.asarray(s, np.float64) for s in scalars], axis=0)
    out = {"z": np.concatenate([np.asarray(z) for z in zs]), "logdet": scal[0], "quad": scal[1], "miss": scal[2]}
    out["a"], out["bt"], out["zz"] = (np.asarray(m, np.float64) for m in acc)
    return out


def _mstep_sparse(prep: _Data, stats, w, sigma2):
    a, bt = stats["a"], stats["bt"]
    w_new = np.einsum("kl,ld->dk", np.linalg.inv((a + a.T) / 2), bt)  # K x K inverse: no threaded BLAS
    d = w.shape[0]
    n_miss = prep.n * d - prep.n_obs
    resid = prep.sq + stats["miss"] + n_miss * sigma2 - np.sum(w_new * bt.T)
    return _expand(w_new, stats["zz"], prep.n), float(max(resid / (prep.n * d), np.finfo(np.float32).tiny))


def _mstep_dense(prep: _Data, stats, w, sigma2):
    d, k = w.shape
    a = stats["a"].T.reshape(d, k, k)
    a = (a + np.swapaxes(a, 1, 2)) / 2
    ridge = 1e-9 * np.trace(a, axis1=1, axis2=2).mean() + np.finfo(np.float32).tiny
    bt = stats["bt"]
    w_new = np.linalg.solve(a + ridge * np.eye(k), bt.T[:, :, None])[:, :, 0]
    resid = prep.sq - np.sum(w_new * bt.T)
    return _expand(w_new, stats["zz"], prep.n), float(max(resid / prep.n_obs, np.finfo(np.float32).tiny))


def _expand(w, zz, n):
    r"""PX-EM (Liu, Rubin & Wu 1998): :math:`W \leftarrow W\,\mathrm{chol}(\sum_n E[z_n z_n^\top]/N)`.

    The M-step of the latent covariance in the expanded model, folded back
    into ``W``: the same fixed points and still monotone, but the scale of
    ``W`` no longer creeps at the rate :math:`1 - \sigma^2/\lambda` of plain
    EM (slow whenever the signal dominates the noise).
    """
    chol = np.linalg.cholesky((zz + zz.T) / (2 * n))
    return np.einsum("dk,kl->dl", w, chol).astype(_dtype())


def _loglike(prep: _Data, stats, sigma2, k):
    r""":math:`\sum_n \log N(x_{n,obs} | \mu, W W^\top + \sigma^2 \mathrm{diag}(1/w_n))` via Woodbury."""
    return -0.5 * (
        prep.n_obs * np.log(2 * np.pi * sigma2)
        - prep.sum_log_w
        - prep.n * k * np.log(sigma2)
        + stats["logdet"]
        + (prep.sq - stats["quad"]) / sigma2
    )


def _to_pca_axes(w, z):
    """Rotate ``W`` (and the latents) so its columns are orthogonal, sorted by norm, sign-fixed."""
    w = np.asarray(w, np.float64)
    ev, rot = np.linalg.eigh(np.einsum("dk,dl->kl", w, w))
    order = np.argsort(ev)[::-1]
    rot = rot[:, order]
    loadings = np.einsum("dk,kl->dl", w, rot)
    sign = np.sign(loadings[np.argmax(np.abs(loadings), axis=0), np.arange(loadings.shape[1])])
    sign[sign == 0] = 1.0
    rot = rot * sign
    dtype = _dtype()
    return (loadings * sign).astype(dtype), np.einsum("nk,kl->nl", z, rot.astype(z.dtype)).astype(dtype)
