"""Mock Gaia XP coefficient spectra (:func:`gaia_xp`, re-exported by :mod:`jaxspec.data.mock`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxspec.data import _linelist as _ll
from jaxspec.data._mock_population import LABEL_ERRORS, LABEL_NAMES, _chemistry, _draws, _hr, _label_noise
from jaxspec.data._mock_star import _map_stars
from jaxspec.data.containers import Labels, Spectra


class MockXP(NamedTuple):
    """Result of :func:`gaia_xp` (host arrays; the fields match ``gaia_xp.XPSpectra``'s).

    ``coefficients`` and ``errors`` float64 ``(n, 110)`` (BP 0-54 then RP 0-54, e-/s),
    ``phot_g_mean_flux`` ``(n,)`` e-/s, ``labels`` (TEFF, LOGG, FE_H; only the
    ``labelled_frac`` subset observed), ``true_labels``, ``a_k`` ``(n,)`` mag,
    ``is_outlier`` ``(n,)`` bool.
    """

    coefficients: np.ndarray
    errors: np.ndarray
    phot_g_mean_flux: np.ndarray
    labels: Labels
    true_labels: Labels
    a_k: np.ndarray
    is_outlier: np.ndarray

    def to_spectra(self, *, dtype=None) -> Spectra:
        """The coefficients as ``Spectra`` (no wavelength grid), ``ivar = 1 / errors**2``."""
        return Spectra(self.coefficients, wavelength=None, err=self.errors, dtype=dtype)


def _xp_star(key, dwarf_frac, outlier_frac, g_range, x: _ll.XPTables):
    """One Gaia XP source: labels, A_K, 110 noisy coefficients, errors, G flux, outlier flag."""
    z, u = _draws(key, 18 + 4 + 2 * _ll.XP_N, 8)
    dwarf, outlier = u[5] < dwarf_frac, u[6] < outlier_frac
    feh = jnp.where(outlier, -2.3 + 0.3 * z[0], _chemistry(z[:12], u[:2], dwarf)[0])
    teff, logg, _ = _hr(z[12:15], u[2:5], feh, dwarf)
    a_k = jnp.minimum(0.1 * jnp.abs(z[15]) + 0.02 * z[16] ** 2, 1.0)
    lam = x.wavelength
    carbon = jnp.where(outlier, 0.2 + 0.15 * jnp.abs(z[17]), 0.0)  # CEMP-like: CN, CH, C2 bands
    metal, hot, cool = (
        10.0 ** (0.3 * feh),
        jax.nn.sigmoid((teff - 5300.0) / 400.0),
        jax.nn.sigmoid((3900.0 - teff) / 120.0),
    )
    depth = jnp.stack(
        [
            0.08 * metal * (1 + 0.15 * (2.5 - logg)),
            0.15 * hot,
            0.06 * metal * (1 + 0.2 * (logg - 2.5)),
            0.5 * cool,
            0.3 * cool,
            0.25 * cool,
            0.2 * hot * (1 - 0.05 * (logg - 4.0)),
            carbon,
            carbon,
            0.8 * carbon,
            0.8 * carbon,
            0.6 * carbon,
        ]
    )
    sed = (
        lam**-5
        / jnp.expm1(1.4388e7 / (lam * teff))  # blackbody, then metal blanketing in the blue
        * jnp.exp(-0.5 * 10.0 ** (0.8 * feh) * (4500.0 / teff) ** 3 * (400.0 / lam) ** 4 - depth @ x.bands)
        * 10.0 ** (-0.4 * a_k * (lam / 2190.0) ** -1.75)
        * (1.0 + (0.01 + 0.03 * cool) * (z[18:22] @ x.smooth))
    )
    g_flux = 10.0 ** (-0.4 * (g_range[0] + u[7] * (g_range[1] - g_range[0]) - 25.6874))  # DR3 G zero point
    coef = g_flux * (sed @ x.project) / (sed @ x.g_band)
    n = jnp.arange(2 * _ll.XP_N)
    err = jnp.sqrt(g_flux) * 0.15 * (0.1 + 0.9 * jnp.exp(-(n % _ll.XP_N) / 12.0)) * jnp.where(n < _ll.XP_N, 1.0, 1.5)
    err = err + 5e-4 * jnp.abs(coef)
    coef = coef + err * z[22:]
    return jnp.stack([teff, logg, feh]), a_k, coef, err, g_flux, outlier


def gaia_xp(
    key,
    n_stars: int,
    *,
    labelled_frac: float = 0.3,
    outlier_frac: float = 0.0,
    dwarf_frac: float = 0.5,
    g_mag: tuple[float, float] = (10.0, 17.5),
) -> MockXP:
    r"""Mock Gaia XP coefficient spectra from a 4-parameter physical model.

    .. math:: S(\lambda) = B_\lambda(T_\mathrm{eff})\, e^{-b([Fe/H], T)(400/\lambda)^4
              - \sum_j d_j(T, \log g, [Fe/H]) \phi_j(\lambda)}\, 10^{-0.4 A_K (\lambda/2190)^{-1.75}}
              (1 + \epsilon(\lambda)),

    bands :math:`\phi_j` for the Ca triplet, H-alpha, MgH, TiO (cool stars) and the
    Balmer region; :math:`\epsilon` a small smooth star-to-star scatter, larger for cool
    stars.  Coefficients are projections of :math:`S` times a BP or RP passband on 55
    Hermite functions, scaled so that they are in e-/s for the drawn
    ``phot_g_mean_flux``; errors grow as its square root.  Outliers are CEMP-like
    ([Fe/H] about -2.3 with strong CN, CH and C2 bands).

    Parameters
    ----------
    key : jax.random key
    n_stars : int
    labelled_frac : float in [0, 1]
        Fraction with observed TEFF, LOGG, FE_H (errors 20 K, 0.02, 0.005 dex);
        the others have all three missing.
    outlier_frac : float in [0, 1]
    dwarf_frac : float in [0, 1]
    g_mag : (float, float)
        G magnitude range (uniform).

    Returns
    -------
    MockXP

    Examples
    --------
    >>> xp = gaia_xp(jax.random.key(0), 5)
    >>> xp.coefficients.shape, bool((xp.errors > 0).all())
    ((5, 110), True)
    """
    if not isinstance(n_stars, int | np.integer) or n_stars < 1:
        raise ValueError(f"n_stars: expected a positive integer, found {n_stars!r}")
    for name, v in (("labelled_frac", labelled_frac), ("outlier_frac", outlier_frac), ("dwarf_frac", dwarf_frac)):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name}: expected a number in [0, 1], found {v!r}")
    if np.shape(g_mag) != (2,) or not g_mag[0] <= g_mag[1]:
        raise ValueError(f"g_mag: expected a range (bright, faint) in magnitudes, found {g_mag!r}")
    k_star, k_lab, k_sub = jax.random.split(key, 3)
    shared = (dwarf_frac, outlier_frac, tuple(float(g) for g in g_mag), _ll.xp_tables())
    true, a_k, coef, err, g_flux, outlier = _map_stars(_xp_star, k_star, n_stars, shared=shared)
    base, snr = np.asarray(LABEL_ERRORS[:3], np.float32), np.full(n_stars, 100.0, np.float32)
    values, label_err = _map_stars(_label_noise, k_lab, n_stars, (true, snr), (base, 0.5, 0.0))
    labelled = np.asarray(jax.random.uniform(k_sub, (n_stars,))) < labelled_frac
    labels = Labels(np.where(labelled[:, None], values, np.nan), err=label_err, names=LABEL_NAMES[:3])
    true_labels = Labels(true, err=label_err, names=LABEL_NAMES[:3])
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    return MockXP(f64(coef), f64(err), f64(g_flux), labels, true_labels, f64(a_k), np.asarray(outlier, bool))
