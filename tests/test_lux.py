"""models/lux.py: exact block steps, scatter, planted latent structure, missing data, outputs, masks, io, compilation.

Everything runs on a tiny planted problem: three latent factors, three labels
and 40 pixels, where the labels and the fluxes are both linear in the factors.
The first half of the pixels is blind to the factor that drives ``MG_FE``, so
a label mask can be tested against a known answer.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxspec.io
from jaxspec.data.containers import Labels, Spectra, default_float
from jaxspec.models import lux
from jaxspec.models.lux import _steps as steps
from jaxspec.optim.latents import GaussianPrior
from jaxspec.optim.solvers import weighted_lstsq
from tests.conftest import assert_allclose, count_compiles

NAMES = ("TEFF", "LOGG", "MG_FE")
N_STARS, N_TRAIN, N_PIX, N_BLIND = 100, 70, 40, 20
NOISE = 0.01  # flux error
LABEL_ERR = np.array([6.0, 0.01, 0.002])
LABEL_SCALE = np.array([300.0, 0.5, 0.1])
LABEL_CENTER = np.array([4500.0, 2.5, 0.0])
N_LATENTS, OMEGA = 5, 1.0  # the paper's 1e3 is tuned to 7514 APOGEE pixels; 40 pixels need a weaker penalty
WAVE = np.linspace(15100.0, 15200.0, N_PIX)


class Planted:
    """Planted data: ``labels``/``spectra`` (noisy containers), ``true_labels``/``true_flux`` (exact arrays)."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        z = rng.normal(size=(N_STARS, 3))
        a = np.array([[1.0, 0.3, 0.0], [-0.2, 1.0, 0.0], [0.2, 0.0, 1.0]])
        b = 0.05 * rng.normal(size=(N_PIX, 3))
        b[:N_BLIND, 2] = 0.0  # these pixels carry no information on MG_FE's own factor
        self.true_labels = LABEL_CENTER + (z @ a.T) * LABEL_SCALE
        self.true_flux = 1.0 + z @ b.T
        err = np.broadcast_to(LABEL_ERR, self.true_labels.shape)
        self.labels = Labels(self.true_labels + err * rng.normal(size=err.shape), err=err, names=NAMES)
        flux = self.true_flux + NOISE * rng.normal(size=self.true_flux.shape)
        self.spectra = Spectra(flux, err=np.full(flux.shape, NOISE), wavelength=WAVE)

    @property
    def train(self):
        return self.labels[:N_TRAIN], self.spectra[:N_TRAIN]

    @property
    def test(self):
        return self.labels[N_TRAIN:], self.spectra[N_TRAIN:]


def fit(labels, spectra, *, label_masks=None, **config):
    config = lux.Config(**{"n_latents": N_LATENTS, "omega": OMEGA, **config})
    return lux.fit(spectra, labels, key=jax.random.key(0), config=config, label_masks=label_masks, progress=False)


def rmse(pred, truth):
    return np.sqrt(np.mean((np.asarray(pred, np.float64) - truth) ** 2, axis=0))


@pytest.fixture(scope="module")
def data():
    return Planted()


@pytest.fixture(scope="module")
def trained(data):
    return fit(*data.train)


# -- block steps -----------------------------------------------------------------------


def _normal_equations(design, y, w, prec):
    """float64 reference: each row solves (D^T W D + prec) x = D^T W y."""
    design = np.asarray(design, np.float64)
    return np.array(
        [
            np.linalg.solve(design.T @ (wr[:, None] * design) + prec, design.T @ (wr * yr))
            for yr, wr in zip(np.asarray(y, np.float64), np.asarray(w, np.float64), strict=True)
        ]
    )


def _step_problem(seed=0, n=24, p=4, m=3, n_pix=30):
    rng = np.random.default_rng(seed)
    dtype = default_float()
    z = rng.normal(size=(n, p))
    z[:, 0] = 1.0
    a = rng.normal(size=(m, p))
    b = rng.normal(size=(n_pix, p))
    lab = z @ a.T + 0.1 * rng.normal(size=(n, m))
    lab_w = rng.uniform(0.5, 2.0, size=(n, m)) * (rng.random((n, m)) > 0.3)
    flux = z @ b.T + 0.1 * rng.normal(size=(n, n_pix))
    flux_w = rng.uniform(50.0, 150.0, size=(n, n_pix)) * (rng.random((n, n_pix)) > 0.3)
    return tuple(np.asarray(x, dtype) for x in (z, a, b, lab, lab_w, flux, flux_w))


def test_a_and_b_steps_equal_normal_equations():
    z, a, b, lab, lab_w, flux, flux_w = _step_problem()
    assert (lab_w == 0).any() and (flux_w == 0).any()
    zero = np.zeros((z.shape[1], z.shape[1]))
    a_new = steps.a_step(jnp.zeros_like(a), z, lab, lab_w)
    assert_allclose(a_new, _normal_equations(z, lab.T, lab_w.T, zero), scale=4)
    b_new = steps.b_step(jnp.zeros_like(b), z, flux, flux_w)
    assert_allclose(b_new, _normal_equations(z, flux.T, flux_w.T, zero), scale=4)
    # the chunked path (last chunk padded) gives the same answer
    assert_allclose(steps.b_step(jnp.zeros_like(b), z, flux, flux_w, batch_size=7), b_new, scale=4)


@pytest.mark.parametrize("omega", [0.0, 0.7])
def test_z_step_equals_normal_equations(omega):
    z, a, b, lab, lab_w, flux, flux_w = _step_problem(seed=1)
    design = np.concatenate([a, b])
    y, w = np.concatenate([lab, flux], axis=1), np.concatenate([lab_w, flux_w], axis=1)
    prec = GaussianPrior.l2(omega, z.shape[1]).precision  # the one L2 convention
    z_new = steps.z_step(jnp.zeros_like(z), a, b, lab, lab_w, flux, flux_w, omega)
    assert_allclose(z_new, _normal_equations(design, y, w, prec), scale=4)


def test_weighted_lstsq_with_prior_equals_normal_equations():
    _, _, b, _, _, flux, flux_w = _step_problem(seed=2)
    prec = np.diag([0.5, 1.0, 2.0, 3.0])
    rhs = prec @ np.array([0.1, -0.2, 0.3, 0.0])
    x, gram = weighted_lstsq(b, flux, flux_w, precision=prec.astype(b.dtype), prior_rhs=rhs.astype(b.dtype))
    b64, w64 = np.asarray(b, np.float64), np.asarray(flux_w, np.float64)
    want = np.array(
        [
            np.linalg.solve(b64.T @ (wr[:, None] * b64) + prec, b64.T @ (wr * yr) + rhs)
            for yr, wr in zip(np.asarray(flux, np.float64), w64, strict=True)
        ]
    )
    assert_allclose(x, want, scale=4)
    assert_allclose(gram, np.einsum("li,nl,lj->nij", b64, w64, b64) + prec, rtol=5e-5 * 4, atol=1e-2)


# -- training on planted data ----------------------------------------------------------------


def test_fit_returns_model_and_history(trained):
    model = trained.model
    assert isinstance(model, lux.Model) and isinstance(model.params, lux.Params)
    assert model.params.A.shape == (len(NAMES), N_LATENTS)
    assert model.params.B.shape == (N_PIX, N_LATENTS)
    assert model.params.ln_s.shape == (N_PIX,)
    assert model.label_names == NAMES and model.n_latents == N_LATENTS and model.n_pix == (N_PIX,)
    assert trained.aux["z"].shape == (N_TRAIN, N_LATENTS) and trained.converged
    assert list(trained.history["step"][-3:]) == ["agenda2.scatter", "agenda2.B", "agenda2.z"]
    assert all(np.all(np.isfinite(np.asarray(x))) for x in model.params)


def test_agenda1_objective_does_not_increase(trained):
    hist = trained.history
    agenda1 = np.array([s.startswith("agenda1") for s in hist["step"]])
    assert agenda1.sum() == lux.Config().n_iter
    obj = np.asarray(hist["objective"])[agenda1]
    np.testing.assert_array_less(np.diff(obj), 1e-5 * np.abs(obj[1:]) + 1e-6)
    # the scatter step and the B step of Agenda 2 (same penalty-free objective) go on decreasing
    after = np.asarray(hist["objective"])[agenda1.sum() : agenda1.sum() + 2]
    np.testing.assert_array_less(np.diff(np.r_[obj[-1], after]), 1e-5 * np.abs(after) + 1e-6)


def test_predict_labels_recovers_planted_labels(data, trained):
    _, spectra = data.test
    pred = lux.predict_labels(trained.model, spectra, progress=False)
    assert isinstance(pred, lux.LabelPrediction)
    assert pred.labels.names == NAMES and not pred.flagged.any()
    truth = data.true_labels[N_TRAIN:]
    err = rmse(pred.labels.values, truth)
    np.testing.assert_array_less(err, 0.1 * truth.std(axis=0))
    assert 0.7 < np.median(pred.reduced_chi2) < 1.5
    # the reported uncertainties are of the size of the actual errors
    sigma = np.sqrt(np.median(1.0 / np.asarray(pred.labels.ivar, np.float64), axis=0))
    np.testing.assert_array_less(0.5 * sigma, err)
    np.testing.assert_array_less(err, 2.0 * sigma)
    assert pred.covariance.shape == (N_STARS - N_TRAIN, len(NAMES), len(NAMES))


def test_missing_labels_barely_hurt(data, trained):
    labels, spectra = data.train
    rng = np.random.default_rng(7)
    missing = rng.random(labels.n_stars) < 0.3
    ivar = np.asarray(labels.ivar).copy()
    ivar[missing, NAMES.index("MG_FE")] = 0.0
    partial = fit(labels.replace(ivar=ivar), spectra)
    col = NAMES.index("MG_FE")
    truth = data.true_labels[N_TRAIN:, col]
    full = rmse(lux.predict_labels(trained.model, data.test[1], progress=False).labels.values[:, col], truth)
    part = rmse(lux.predict_labels(partial.model, data.test[1], progress=False).labels.values[:, col], truth)
    assert part <= 1.1 * full, (part, full)


def test_calibrate_scatter_is_the_excess_variance(data, trained):
    """s^2 = mean(r^2 - sigma_ref^2 - sigma_pred^2): reference labels planted at known offsets from the predictions."""
    labels, spectra = data.test
    bare = lux.calibrate_scatter(trained.model, spectra, labels)  # any model: the estimate starts from no scatter
    pred = lux.predict_labels(dataclasses.replace(bare, label_scatter=None), spectra, progress=False)
    offsets = np.array([50.0, 0.08, 0.02]) * np.where(np.arange(labels.n_stars) % 2, 1.0, -1.0)[:, None]
    ref_err = np.array([10.0, 0.02, 0.005])
    reference = Labels(
        np.asarray(pred.labels.values, np.float64) + offsets, err=np.broadcast_to(ref_err, offsets.shape), names=NAMES
    )
    model = lux.calibrate_scatter(trained.model, spectra, reference)
    pred_var = np.diagonal(np.asarray(pred.covariance, np.float64), axis1=1, axis2=2)
    want = np.sqrt(np.mean(offsets**2 - ref_err**2 - pred_var, axis=0))
    assert_allclose(model.label_scatter, want, scale=50)
    # the scatter is added to the predicted variances
    after = lux.predict_labels(model, spectra, progress=False)
    assert_allclose(1.0 / np.asarray(after.labels.ivar), pred_var + want**2, scale=50)


# -- predicting spectra from labels --------------------------------------------------------------


def test_predict_spectra_recovers_planted_flux(data, trained):
    labels, _ = data.test
    pred = lux.predict_spectra(trained.model, labels, progress=False)  # default: the training latents' prior
    truth = data.true_flux[N_TRAIN:]
    assert np.sqrt(np.mean((pred.spectra.flux - truth) ** 2)) < 0.2 * truth.std(axis=0).mean()
    # the paper's L2 penalty pulls the constant latent (the '1' of Eq. 9) towards 0: the continuum is lost
    l2 = lux.predict_spectra(trained.model, labels, omega=OMEGA, progress=False)
    assert np.sqrt(np.mean((l2.spectra.flux - truth) ** 2)) > 0.5


def test_predict_spectra_flags_star_without_labels(data, trained):
    labels, _ = data.test
    ivar = np.asarray(labels.ivar).copy()
    ivar[2] = 0.0
    pred = lux.predict_spectra(trained.model, labels.replace(ivar=ivar), omega=OMEGA, progress=False)
    assert isinstance(pred, lux.SpectraPrediction)
    assert pred.flagged.tolist() == [i == 2 for i in range(labels.n_stars)]
    assert np.all(pred.spectra.ivar[2] == 0) and np.all(pred.spectra.ivar[~pred.flagged] > 0)
    assert np.all(np.isfinite(pred.spectra.flux))
    assert pred.spectra.flux.shape == (labels.n_stars, N_PIX)


def test_predict_spectra_keeps_wavelength_grid(data, trained):
    pred = lux.predict_spectra(trained.model, data.test[0], progress=False)
    np.testing.assert_array_equal(pred.spectra.wavelength, WAVE)


def test_predict_spectra_of_a_model_trained_without_a_grid(data, trained):
    """Its stand-in grid (pixel indices 0, 1, ...) is not a wavelength: the prediction has none (it raised)."""
    model = dataclasses.replace(trained.model, wavelengths=(np.arange(N_PIX, dtype=np.float64),))
    pred = lux.predict_spectra(model, data.test[0], progress=False)
    want = lux.predict_spectra(trained.model, data.test[0], progress=False)
    assert pred.spectra.wavelength is None
    np.testing.assert_array_equal(pred.spectra.flux, want.spectra.flux)


def test_latents_from_labels_with_empirical_prior_are_the_conditional_mean(data, trained):
    """z | labels under z ~ N(mu, C), labels = A z + noise: mu + C A^T (A C A^T + D)^-1 (l - A mu)."""
    labels, _ = data.test
    model = trained.model
    latents = lux.encode(model, labels=labels, omega="empirical", progress=False)
    std = model.label_scaler.transform(labels)
    a = np.asarray(model.params.A, np.float64)
    mu, cov = np.asarray(model.latent_mean, np.float64), np.asarray(model.latent_cov, np.float64)
    want = []
    for y, w in zip(np.asarray(std.values, np.float64), np.asarray(std.ivar, np.float64), strict=True):
        gain = cov @ a.T @ np.linalg.inv(a @ cov @ a.T + np.diag(1.0 / w))
        want.append(mu + gain @ (y - a @ mu))
    np.testing.assert_allclose(np.asarray(latents.z, np.float64), np.array(want), atol=2e-3 * np.abs(want).max())


def test_infer_latents_from_spectra_reproduces_flux(data, trained):
    _, spectra = data.test
    latents = lux.encode(trained.model, spectra=spectra, progress=False)
    model_flux = np.asarray(latents.z) @ np.asarray(trained.model.params.B).T
    resid = rmse(model_flux.ravel(), data.true_flux[N_TRAIN:].ravel())
    assert resid < NOISE


# -- bad input ---------------------------------------------------------------------------------


def test_mismatched_label_names_raise(data, trained):
    labels, _ = data.test
    renamed = Labels(labels.values, labels.ivar, ("TEFF", "LOGG", "SI_FE"))
    with pytest.raises(ValueError, match="labels"):
        lux.predict_spectra(trained.model, renamed, progress=False)
    # the same names in another order are accepted
    shuffled = labels.select(("MG_FE", "TEFF", "LOGG"))
    a = lux.encode(trained.model, labels=shuffled, progress=False)
    b = lux.encode(trained.model, labels=labels, progress=False)
    assert_allclose(a.z, b.z)


def test_wrong_pixels_raise(data, trained):
    _, spectra = data.test
    fewer = Spectra(spectra.flux[:, :-1], spectra.ivar[:, :-1], WAVE[:-1])
    with pytest.raises(ValueError, match=r"spectra.*pixels"):
        lux.predict_labels(trained.model, fewer, progress=False)
    shifted = Spectra(spectra.flux, spectra.ivar, WAVE + 5.0)
    with pytest.raises(ValueError, match=r"spectra.*wavelength"):
        lux.predict_labels(trained.model, shifted, progress=False)
    with pytest.raises(ValueError, match="spectra"):
        lux.predict_labels(trained.model, [spectra, spectra], progress=False)
    with pytest.raises(TypeError, match="spectra"):
        lux.predict_labels(trained.model, [np.asarray(spectra.flux)], progress=False)


def test_training_rows_must_match(data):
    labels, spectra = data.train
    with pytest.raises(ValueError, match="spectra"):
        fit(labels, spectra[:-1])


def test_nan_flux_is_masked_and_never_reaches_params(data):
    labels, spectra = data.train
    flux = np.asarray(spectra.flux, np.float64).copy()
    rng = np.random.default_rng(4)
    flux[rng.random(flux.shape) < 0.1] = np.nan
    nan_spectra = Spectra(flux, err=np.full(flux.shape, NOISE), wavelength=WAVE)
    assert np.all(np.asarray(nan_spectra.ivar)[np.isnan(flux)] == 0)
    result = fit(labels, nan_spectra)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in result.model.params)
    assert np.all(np.isfinite(result.aux["z"])) and np.all(np.isfinite(result.history["objective"]))
    pred = lux.predict_labels(result.model, data.test[1], progress=False)
    np.testing.assert_array_less(rmse(pred.labels.values, data.true_labels[N_TRAIN:]), 0.15 * LABEL_SCALE)


def test_star_with_every_pixel_masked_is_flagged(data, trained):
    _, spectra = data.test
    ivar = np.asarray(spectra.ivar).copy()
    ivar[3] = 0.0
    pred = lux.predict_labels(trained.model, spectra.replace(ivar=ivar), progress=False)
    assert pred.flagged.tolist() == [i == 3 for i in range(spectra.n_stars)]
    assert np.all(pred.labels.ivar[3] == 0) and np.all(pred.labels.ivar[~pred.flagged] > 0)
    assert np.all(np.isfinite(pred.labels.values))


def test_pixel_masked_in_every_training_star_carries_no_weight(data):
    """Issue 14: a pixel no training star measures kept B's random start and steered every prediction."""
    labels, spectra = data.train
    ivar = np.asarray(spectra.ivar).copy()
    ivar[:, 7] = 0.0
    model = fit(labels, spectra.replace(ivar=ivar)).model
    assert np.all(np.asarray(model.params.B)[7] == 0)
    _, test = data.test
    flux = np.asarray(test.flux).copy()
    flux[:, 7] = 50.0
    wild = lux.predict_labels(model, test.replace(flux=flux), progress=False)
    tame = lux.predict_labels(model, test, progress=False)
    np.testing.assert_allclose(wild.labels.values, tame.labels.values, rtol=1e-5)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"ivar": 0.0}, "^spectra: expected at least one measured pixel"),
        ({"label_ivar": 0.0}, "^labels: expected at least one measured label"),
        (
            {"label_ivar_column": 1},
            r"^labels: expected every label measured for at least one star, found none for \['LOGG'\]",
        ),
        ({"nan": True}, "^spectra: expected finite values wherever ivar > 0"),
    ],
)
def test_fit_refuses_data_it_cannot_learn_from(data, change, match):
    """Issue 14: with every pixel masked B stayed at its random start and predictions were unflagged nonsense."""
    labels, spectra = data.train
    ivar, label_ivar = np.asarray(spectra.ivar).copy(), np.asarray(labels.ivar).copy()
    if "ivar" in change:
        ivar[:] = change["ivar"]
    if "label_ivar" in change:
        label_ivar[:] = change["label_ivar"]
    if "label_ivar_column" in change:
        label_ivar[:, change["label_ivar_column"]] = 0.0
    spectra, labels = spectra.replace(ivar=ivar), labels.replace(ivar=label_ivar)
    if change.get("nan"):
        flux = np.array(spectra.flux)
        flux[4, 2] = np.nan
        object.__setattr__(spectra, "flux", flux)
    with pytest.raises(ValueError, match=match):
        fit(labels, spectra)


def test_verbs_name_the_spectra_for_a_bare_array_or_zero_stars(data, trained):
    """Issue 14: ``predict_labels(model, ndarray)`` called the array's rows "spectral outputs"."""
    _, spectra = data.test
    with pytest.raises(TypeError, match=r"^spectra: expected Spectra \(or a list of Spectra.*found ndarray"):
        lux.predict_labels(trained.model, np.asarray(spectra.flux), progress=False)
    with pytest.raises(ValueError, match="^spectra: expected at least one star, found 0"):
        lux.predict_labels(trained.model, spectra[:0], progress=False)
    with pytest.raises(ValueError, match="^labels: expected at least one star, found 0"):
        lux.predict_spectra(trained.model, data.test[0][:0], progress=False)


@pytest.mark.parametrize("n_latents", [len(NAMES), N_TRAIN])
def test_n_latents_out_of_range_raises(data, n_latents):
    with pytest.raises(ValueError, match="n_latents"):
        fit(*data.train, n_latents=n_latents)


def test_negative_omega_raises(data, trained):
    with pytest.raises(ValueError, match="omega"):
        fit(*data.train, omega=-1.0)
    with pytest.raises(ValueError, match="omega"):
        lux.predict_labels(trained.model, data.test[1], omega=-1.0, progress=False)
    with pytest.raises(ValueError, match="omega"):
        lux.predict_spectra(trained.model, data.test[0], omega=float("nan"), progress=False)


# -- io, several outputs, label masks --------------------------------------------------------


def test_save_load_roundtrip_gives_identical_predictions(tmp_path, data, trained):
    path = jaxspec.io.save(tmp_path / "lux.npz", trained.model)
    loaded = jaxspec.io.load(path)
    assert isinstance(loaded, lux.Model)
    assert loaded.label_names == NAMES and loaded.config == trained.model.config
    a = lux.predict_labels(trained.model, data.test[1], progress=False)
    b = lux.predict_labels(loaded, data.test[1], progress=False)
    np.testing.assert_array_equal(a.labels.values, b.labels.values)
    np.testing.assert_array_equal(a.labels.ivar, b.labels.ivar)


def _split(spectra, at=25):
    return (
        Spectra(spectra.flux[:, :at], spectra.ivar[:, :at], WAVE[:at]),
        Spectra(spectra.flux[:, at:], spectra.ivar[:, at:], WAVE[at:]),
    )


def test_two_outputs_equal_one_concatenated(data, trained):
    labels, spectra = data.train
    two = fit(labels, _split(spectra))
    assert two.model.n_pix == (25, N_PIX - 25)
    # B's random start is scaled by each output's median flux (so that a fit scales with the data's unit), and
    # the two outputs' medians differ from the whole's: the fits differ by their convergence, ~5e-4 relative
    for got, want in zip(two.model.params, trained.model.params, strict=True):
        assert_allclose(got, want, rtol=2e-3, atol=2e-3)
    test_parts = _split(data.test[1])
    a = lux.predict_labels(two.model, test_parts, progress=False)
    b = lux.predict_labels(trained.model, data.test[1], progress=False)
    assert_allclose(a.labels.values / LABEL_SCALE, b.labels.values / LABEL_SCALE, rtol=2e-3, atol=2e-3)
    # a star set without its second output still gets labels
    one = lux.predict_labels(two.model, [test_parts[0], None], progress=False)
    assert not one.flagged.any() and np.all(np.isfinite(one.labels.values))
    assert np.all(np.asarray(one.labels.ivar) > 0)
    assert np.all(rmse(one.labels.values, data.true_labels[N_TRAIN:]) < 0.5 * LABEL_SCALE)
    with pytest.raises(ValueError, match="spectra"):
        lux.predict_labels(two.model, [None, None], progress=False)


def test_label_mask_to_blind_pixels_hurts(data, trained):
    blind = np.arange(N_PIX) < N_BLIND
    masked = fit(*data.train, label_masks={"MG_FE": blind})
    assert masked.model.label_masks.shape == (len(NAMES), N_PIX)
    col = NAMES.index("MG_FE")
    truth = data.true_labels[N_TRAIN:, col]
    good = rmse(lux.predict_labels(trained.model, data.test[1], progress=False).labels.values[:, col], truth)
    bad = rmse(lux.predict_labels(masked.model, data.test[1], progress=False).labels.values[:, col], truth)
    assert bad > 5 * good
    # a mask on the informative pixels keeps the label good
    informed = fit(*data.train, label_masks={"MG_FE": ~blind})
    ok = rmse(lux.predict_labels(informed.model, data.test[1], progress=False).labels.values[:, col], truth)
    assert ok < 2 * good


@pytest.mark.parametrize(
    ("masks", "match"),
    [
        ({"MG_FE": np.zeros(N_PIX, bool)}, "label_masks"),
        ({"MG_FE": np.ones(N_PIX - 1, bool)}, "label_masks"),
        ({"SI_FE": np.ones(N_PIX, bool)}, "label_masks"),
    ],
)
def test_bad_label_masks_raise(data, masks, match):
    with pytest.raises(ValueError, match=match):
        fit(*data.train, label_masks=masks)


# -- derivative spectra (planted) and compilation -----------------------------------------------


def test_derivative_spectra_map_flux_changes_to_label_changes(trained):
    model = trained.model
    deriv = lux.derivative_spectra(model)
    assert deriv.shape == (len(NAMES), N_PIX) and np.all(np.isfinite(deriv))
    # a flux change B dz moves the labels by A dz (physical units): A B^+ B = A for B of full column rank
    b = np.asarray(model.params.B, np.float64)
    want = np.asarray(model.params.A, np.float64) * np.asarray(model.label_scaler.scale)[:, None]
    assert_allclose((deriv @ b) / LABEL_SCALE[:, None], want / LABEL_SCALE[:, None], dtype=np.float64, scale=100)


def test_test_step_compiles_once(data, trained):
    labels, spectra = data.test
    lux.predict_labels(trained.model, spectra, progress=False)  # warm
    lux.predict_spectra(trained.model, labels, omega=OMEGA, progress=False)
    other = spectra.replace(flux=np.asarray(spectra.flux)[::-1].copy(), ivar=np.asarray(spectra.ivar)[::-1].copy())
    other_labels = labels.replace(
        values=np.asarray(labels.values)[::-1].copy(), ivar=np.asarray(labels.ivar)[::-1].copy()
    )
    with count_compiles() as compiles:
        pred = lux.predict_labels(trained.model, other, progress=False)
        jax.block_until_ready(pred.labels.values)
        n_labels = len(compiles)
        flux = lux.predict_spectra(trained.model, other_labels, omega=OMEGA, progress=False).spectra.flux
        jax.block_until_ready(flux)
    assert n_labels == 0, f"second predict_labels call compiled {n_labels} time(s)"
    assert len(compiles) == n_labels, f"second predict_spectra call compiled {len(compiles) - n_labels} time(s)"
