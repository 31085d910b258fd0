"""models/cannon.py: exact theta step, planted theta and scatter, label inference, masks, bad input, io, compilation.

A planted problem: two labels (Q = 6 terms), 12 pixels, 400 stars, a quadratic
model with known coefficients and a known per-pixel scatter from 0 to 0.05,
heteroscedastic flux errors, and about 10% of the pixels masked.
"""

from __future__ import annotations

import numpy as np
import pytest

import jaxspec.io
from jaxspec.data.containers import Labels, Spectra
from jaxspec.models import cannon
from jaxspec.models.cannon import _fit as cannon_fit
from tests.conftest import assert_allclose, count_compiles

NAMES = ("TEFF", "LOGG")
N_STARS, N_PIX, M = 400, 12, 2
Q = cannon.n_terms(M)
PIVOT, SCALE = np.array([4800.0, 2.5]), np.array([300.0, 0.5])
SCATTER = np.linspace(0.0, 0.05, N_PIX)


class Planted:
    """``labels`` ``(N, M)``, ``theta`` ``(D, Q)``, ``clean`` and noisy ``flux`` ``(N, D)``, ``ivar`` (10% masked)."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        # float32-representable, so a Labels container (float32 by default) holds exactly these values
        self.labels = (PIVOT + SCALE * rng.normal(size=(N_STARS, M))).astype(np.float32).astype(np.float64)
        lin, quad = 0.1 * rng.normal(size=(N_PIX, M)), 0.02 * rng.normal(size=(N_PIX, Q - 1 - M))
        self.theta = np.column_stack([np.ones(N_PIX), lin, quad])
        x = (self.labels - PIVOT) / SCALE
        v = np.column_stack([np.ones(N_STARS), x, x[:, 0] ** 2, x[:, 0] * x[:, 1], x[:, 1] ** 2])
        self.clean = v @ self.theta.T
        sigma = rng.uniform(0.005, 0.02, size=(N_STARS, N_PIX))
        self.flux = self.clean + rng.normal(size=sigma.shape) * np.sqrt(sigma**2 + SCATTER**2)
        self.ivar = np.where(rng.random(sigma.shape) < 0.1, 0.0, 1.0 / sigma**2)

    @property
    def spectra(self):
        return (self.flux, self.ivar)

    def labels_container(self, values=None):
        values = self.labels if values is None else values
        return Labels(values, err=np.ones_like(values), names=NAMES)


@pytest.fixture(scope="module")
def data():
    return Planted()


@pytest.fixture(scope="module")
def trained(data):
    return cannon.fit(data.spectra, data.labels_container(), progress=False)


def _normal_equations(dsg, flux, w):
    """float64 reference: per pixel j, (V^T W_j V) theta_j = V^T W_j f_j."""
    dsg = np.asarray(dsg, np.float64)
    return np.array(
        [np.linalg.solve(dsg.T @ (wj[:, None] * dsg), dsg.T @ (wj * fj)) for fj, wj in zip(flux.T, w.T, strict=True)]
    )


def _true_model(scatter=SCATTER):
    return cannon.Model(PLANTED_THETA, np.asarray(scatter, np.float32), PIVOT, SCALE, NAMES)


PLANTED_THETA = Planted().theta.astype(np.float32)


# -- design and the closed-form theta step ------------------------------------------------


def test_design_is_the_quadratic_label_vector(trained):
    lab = np.array([[5100.0, 2.0], [4500.0, 3.5]])
    x = (lab - PIVOT) / SCALE
    want = np.column_stack([np.ones(2), x, x[:, 0] ** 2, x[:, 0] * x[:, 1], x[:, 1] ** 2])
    assert_allclose(cannon.design((PIVOT, SCALE), lab), want)
    # a Labels container in another column order gives the model's order; a missing label gives a NaN row
    model = trained.model
    swapped = Labels(np.array([[2.0, 5100.0], [np.nan, 4500.0]]), err=np.ones((2, 2)), names=NAMES[::-1])
    got = np.asarray(cannon.design(model, swapped))
    assert_allclose(got[0], cannon.design(model, lab[:1])[0])
    assert np.all(np.isnan(got[1]))


def test_theta_step_equals_weighted_normal_equations_at_fixed_scatter(data):
    dsg = cannon.design((PIVOT, SCALE), data.labels)
    scatter = np.linspace(0.01, 0.1, N_PIX)
    flux = np.where(data.ivar > 0, data.flux, 0.0).astype(np.float32)
    ivar = data.ivar.astype(np.float32)
    got = cannon_fit._theta_step(np.zeros((N_PIX, Q), np.float32), scatter.astype(np.float32), dsg, flux, ivar)
    w = data.ivar / (1.0 + data.ivar * scatter**2)
    assert_allclose(got, _normal_equations(dsg, data.flux * (data.ivar > 0), w), scale=4)


def test_fit_theta_is_the_exact_solve_at_the_returned_scatter(data, trained):
    model = trained.model
    dsg = cannon.design(model, data.labels)
    w = data.ivar / (1.0 + data.ivar * np.asarray(model.scatter, np.float64) ** 2)
    assert_allclose(model.theta, _normal_equations(dsg, data.flux * (data.ivar > 0), w), scale=4)


# -- planted recovery -----------------------------------------------------------------------


def test_fit_recovers_planted_theta_and_scatter(data, trained):
    model = trained.model
    history = trained.history["objective"]
    assert trained.converged and len(history) >= 2 and trained.aux["n_used"] == N_STARS
    assert np.all(np.diff(history) <= 1e-5 * np.abs(history[:-1]))
    assert_allclose(model.pivot, np.median(data.labels, axis=0), dtype=np.float64)
    lo, hi = np.percentile(data.labels, [2.5, 97.5], axis=0)
    assert_allclose(model.scale, (hi - lo) / 4, dtype=np.float64)
    # theta in the model's own scaling; compare through predictions of the noise-free spectra (in sigma units)
    dsg = np.asarray(cannon.design(model, data.labels), np.float64)
    w = data.ivar / (1.0 + data.ivar * np.asarray(model.scatter, np.float64) ** 2)
    for j in range(N_PIX):
        cov = np.linalg.inv(dsg.T @ (w[:, j, None] * dsg))
        err = dsg @ (np.asarray(model.theta[j], np.float64)) - data.clean[:, j]
        pred_sd = np.sqrt(np.einsum("nq,qr,nr->n", dsg, cov, dsg))
        assert np.max(np.abs(err) / pred_sd) < 5.0, f"pixel {j}"
    np.testing.assert_array_less(np.abs(np.asarray(model.scatter) - SCATTER), 0.005)
    assert np.all(np.asarray(model.scatter) >= 0)


def test_normalised_residuals_have_unit_std_and_nan_where_masked(data, trained):
    r = cannon.normalised_residuals(trained.model, data.spectra, data.labels)
    assert r.shape == (N_STARS, N_PIX)
    np.testing.assert_array_equal(np.isnan(r), data.ivar == 0)
    assert abs(np.nanstd(r) - 1.0) < 0.03
    assert np.all(np.abs(np.nanstd(r, axis=0) - 1.0) < 0.12)
    assert abs(np.nanmean(r)) < 0.03
    # without the scatter the residuals of the high-scatter pixels are far too wide
    no_s = cannon.Model(trained.model.theta, 0 * trained.model.scatter, PIVOT, SCALE, NAMES)
    wide = cannon.normalised_residuals(no_s, data.spectra, data.labels)
    assert np.nanstd(wide[:, -1]) > 2.0


def test_predict_labels_recovers_planted_labels(data):
    model = _true_model(np.zeros(N_PIX))
    rng = np.random.default_rng(1)
    n, noise = 30, 1e-4
    flux = data.clean[:n] + noise * rng.normal(size=(n, N_PIX))
    out = cannon.predict_labels(model, Spectra(flux, err=np.full(flux.shape, noise)), progress=False)
    assert not out.flagged.any() and out.labels.names == NAMES and out.z is None
    err = np.asarray(out.labels.values, np.float64) - data.labels[:n]
    sd = np.sqrt(np.diagonal(out.covariance, axis1=1, axis2=2))
    assert np.all(sd < 0.01 * SCALE) and np.all(np.abs(err) < 5 * sd)
    assert_allclose(np.asarray(out.labels.ivar), 1 / sd**2, rtol=1e-3)
    assert_allclose(np.mean(out.reduced_chi2), 1.0, rtol=0.2)  # chi2 / (N_PIX - M)
    # a masked pixel with garbage flux, and an explicit init, give the same labels
    ivar = np.full(flux.shape, noise**-2)
    ivar[:, 3], flux[:, 3] = 0.0, 1e6
    again = cannon.predict_labels(model, (flux, ivar), init=data.labels[:n] + 0.1 * SCALE, progress=False)
    sd = np.sqrt(np.diagonal(again.covariance, axis1=1, axis2=2))
    assert not again.flagged.any() and np.all(np.abs(again.labels.values - data.labels[:n]) < 5 * sd)


def test_predict_spectra_of_the_true_model_is_the_clean_flux(data):
    pred = cannon.predict_spectra(_true_model(), data.labels_container())
    assert_allclose(pred.spectra.flux, data.clean, scale=4)
    # the predictive variance is the intrinsic scatter (the largest finite weight where it is 0)
    assert_allclose(np.asarray(pred.spectra.ivar[0, 1:]), 1.0 / SCATTER[1:] ** 2, rtol=1e-5)
    assert np.isfinite(pred.spectra.ivar).all() and not pred.flagged.any()
    missing = data.labels[:3].copy()
    missing[1, 0] = np.nan
    out = cannon.predict_spectra(_true_model(), missing)
    assert out.flagged.tolist() == [False, True, False]
    assert np.all(np.asarray(out.spectra.flux[1]) == 1.0) and np.all(np.asarray(out.spectra.ivar[1]) == 0.0)
    assert_allclose(np.asarray(out.spectra.flux)[[0, 2]], data.clean[[0, 2]], scale=4)


# -- missing data ------------------------------------------------------------------------------


def _same_model(a, b):
    for f in ("theta", "scatter", "pivot", "scale"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))


def test_stars_with_missing_labels_are_excluded(data, trained):
    lab = data.labels.copy()
    lab[[3, 50], 0] = np.nan
    lab[7, 1] = np.nan
    keep = np.ones(N_STARS, bool)
    keep[[3, 7, 50]] = False
    ref = cannon.fit((data.flux[keep], data.ivar[keep]), data.labels[keep], progress=False).model
    _same_model(cannon.fit(data.spectra, lab, progress=False).model, ref)
    _same_model(cannon.fit(data.spectra, data.labels_container(lab), progress=False).model, ref)


def test_masked_pixels_carry_no_weight(data, trained):
    garbage = np.where(data.ivar > 0, data.flux, 1e6)
    _same_model(cannon.fit((garbage, data.ivar), data.labels, progress=False).model, trained.model)
    nan = np.where(data.ivar > 0, data.flux, np.nan)
    _same_model(cannon.fit((nan, data.ivar), data.labels, progress=False).model, trained.model)


def test_a_pixel_masked_in_every_star_gets_no_confidence(data):
    """Issue 14: predict_spectra claimed flux 0 with ivar ~1e10 at a pixel no training star measured."""
    ivar = data.ivar.copy()
    ivar[:, 4] = 0.0
    model = cannon.fit((data.flux, ivar), data.labels, progress=False).model
    assert np.all(np.asarray(model.theta)[4] == 0)
    pred = cannon.predict_spectra(model, data.labels[:5])
    assert np.all(np.asarray(pred.spectra.ivar)[:, 4] < 1e-2) and np.all(np.isfinite(pred.spectra.ivar))
    wild = data.flux[:20].copy()
    wild[:, 4] = 1e3
    a = cannon.predict_labels(model, (wild, data.ivar[:20]), progress=False)
    b = cannon.predict_labels(model, (data.flux[:20], data.ivar[:20]), progress=False)
    np.testing.assert_allclose(a.labels.values, b.labels.values, rtol=1e-4)


@pytest.mark.parametrize(
    ("flux_ivar", "labels", "match"),
    [
        ("masked", "ok", "^spectra: expected at least one measured pixel"),
        ("ok", "missing", "^labels: expected at least one measured label"),
        ("ok", "one column missing", r"^labels: expected every label measured for at least one star"),
        ("empty", "empty", "^spectra: expected at least one star"),
    ],
)
def test_fit_refuses_data_it_cannot_learn_from(data, flux_ivar, labels, match):
    """Issue 14: every pixel masked was blamed on the labels; an empty set on Q."""
    f, iv, lab = data.flux, data.ivar, data.labels.copy()
    if flux_ivar == "masked":
        iv = np.zeros_like(iv)
    if flux_ivar == "empty":
        f, iv, lab = f[:0], iv[:0], lab[:0]
    if labels == "missing":
        lab[:] = np.nan
    if labels == "one column missing":
        lab[:, 1] = np.nan
    with pytest.raises(ValueError, match=match):
        cannon.fit((f, iv), lab, progress=False)


def test_verbs_refuse_another_grid_or_zero_stars(data, trained):
    """Issue 14: a spectrum on another wavelength grid was read as if on the model's."""
    wave = np.linspace(15100.0, 15200.0, N_PIX)
    model = cannon.fit(Spectra(data.flux, data.ivar, wave), data.labels, progress=False).model
    with pytest.raises(ValueError, match="^spectra: wavelength grid differs"):
        cannon.predict_labels(model, Spectra(data.flux[:3], data.ivar[:3], wave + 1.0), progress=False)
    with pytest.raises(ValueError, match="^spectra: expected at least one star"):
        cannon.predict_labels(trained.model, (data.flux[:0], data.ivar[:0]), progress=False)
    # the prediction of a model with a grid carries it (reading it raised AttributeError)
    np.testing.assert_array_equal(cannon.predict_spectra(model, data.labels[:2]).spectra.wavelength, wave)
    with pytest.raises(ValueError, match="^labels: expected at least one star"):
        cannon.predict_spectra(trained.model, data.labels[:0])


# -- bad input ----------------------------------------------------------------------------------


def _bad_inputs(data):
    f, iv, lab = data.flux, data.ivar, data.labels
    inf_lab = lab.copy()
    inf_lab[0, 0] = np.inf
    neg = iv.copy()
    neg[0, 0] = -1.0
    nan_flux = f.copy()
    nan_flux[iv > 0] = np.nan
    return [
        ((f, iv[:, :-1]), lab, {}, ValueError, "spectra: expected flux and ivar"),
        ((f, neg), lab, {}, ValueError, "spectra: expected ivar finite"),
        ((nan_flux, iv), lab, {}, ValueError, "spectra: expected finite flux"),
        (f, lab, {}, TypeError, "spectra: expected Spectra"),
        ((f, iv), lab[:-1], {}, ValueError, "labels: expected 400 stars"),
        ((f, iv), lab[:, 0], {}, ValueError, r"labels: expected shape \(n_stars, n_labels\)"),
        ((f, iv), inf_lab, {}, ValueError, "labels: expected finite"),
        ((f, iv), lab.astype(complex), {}, TypeError, "labels: expected Labels or a real array"),
        ((f[: Q - 1], iv[: Q - 1]), lab[: Q - 1], {}, ValueError, "labels: expected at least Q = 6 training stars"),
        ((f, iv), lab, {"config": {"n_iter": 4}}, TypeError, "config: expected a cannon.Config"),
        ((f, iv), lab, {"key": 0}, TypeError, "key: expected a jax.random key"),
    ]


@pytest.mark.parametrize("case", range(11))
def test_bad_input_raises(data, case):
    spectra, labels, kwargs, exc, match = _bad_inputs(data)[case]
    with pytest.raises(exc, match=match):
        cannon.fit(spectra, labels, progress=False, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_iter": 0}, ValueError, "config.n_iter: expected an int >= 1"),
        ({"n_iter": 2.5}, TypeError, "config.n_iter: expected an int"),
        ({"tol": -1.0}, ValueError, "config.tol: expected a finite value > 0"),
        ({"tol": float("nan")}, ValueError, "config.tol"),
    ],
)
def test_config_validates_itself(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cannon.Config(**kwargs)


def test_bad_input_to_model_functions_raises(data, trained):
    model = trained.model
    with pytest.raises(ValueError, match=r"spectra: expected flux and ivar of shape \(n_stars, 12\)"):
        cannon.predict_labels(model, (data.flux[:, :-1], data.ivar[:, :-1]))
    with pytest.raises(ValueError, match="init"):
        cannon.predict_labels(model, data.spectra, init=np.zeros(3))
    with pytest.raises(ValueError, match="labels: expected the model's labels"):
        cannon.predict_spectra(model, Labels(data.labels, err=np.ones_like(data.labels), names=("TEFF", "FE_H")))
    with pytest.raises(ValueError, match=r"labels: expected shape \(n_stars, 2\)"):
        cannon.predict_spectra(model, data.labels[:, :1])
    with pytest.raises(ValueError, match="labels: expected 400 stars"):
        cannon.normalised_residuals(model, data.spectra, data.labels[:5])
    with pytest.raises(TypeError, match=r"model: expected a cannon\.Model"):
        cannon.predict_spectra((PIVOT, SCALE), data.labels)
    with pytest.raises(ValueError, match="model: expected finite pivot and positive scale"):
        cannon.design((PIVOT, -SCALE), data.labels)
    with pytest.raises(ValueError, match=r"cannon\.Model: expected theta"):
        cannon.Model(model.theta[:, :-1], model.scatter, PIVOT, SCALE, NAMES)


# -- io and compilation ---------------------------------------------------------------------------


def test_save_load_roundtrip(tmp_path, data, trained):
    path = jaxspec.io.save(tmp_path / "cannon", trained.model)
    assert jaxspec.io.info(path)["family"] == "cannon"
    loaded = jaxspec.io.load(path, family="cannon")
    assert isinstance(loaded, cannon.Model) and loaded.label_names == NAMES and loaded.config == trained.model.config
    _same_model(loaded, trained.model)
    np.testing.assert_array_equal(
        cannon.predict_spectra(loaded, data.labels).spectra.flux,
        cannon.predict_spectra(trained.model, data.labels).spectra.flux,
    )


def test_predict_labels_compiles_once(data, trained):
    first = cannon.predict_labels(trained.model, (data.flux[:20], data.ivar[:20]), progress=False)
    with count_compiles() as compiles:
        second = cannon.predict_labels(trained.model, (data.flux[20:40], data.ivar[20:40]), progress=False)
    assert len(compiles) == 0, f"second predict_labels call compiled {len(compiles)} time(s)"
    assert not first.flagged.any() and not second.flagged.any()
    rmse = np.sqrt(np.mean((np.asarray(second.labels.values, np.float64) - data.labels[20:40]) ** 2, axis=0))
    assert np.all(rmse < 0.15 * SCALE)
