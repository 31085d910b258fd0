"""payne.fit: a single-network emulator trained on spectra of a known teacher network of the same format.

The teacher (3 labels, 40 pixels, two hidden layers of 16) stands in for a
synthetic grid: it is exactly representable, so the student's held-out error
measures the training.  Tiny shapes; each fit takes about a second.
"""

from __future__ import annotations

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxspec import Labels, Spectra, io
from jaxspec.models import payne
from jaxspec.models.payne import _fit
from jaxspec.optim.train import make_train_step
from tests.conftest import count_compiles

M, L, HIDDEN = 3, 40, (16, 16)
NAMES = ("TEFF", "LOGG", "FE_H")
WAVE = np.linspace(15100.0, 15200.0, L)
# Adam-style steps of a tiny network: a larger learning rate than the recipe's 1e-4, and no loss scale
# (the reference's 1e4 turns RAdam's first ~5 un-rectified steps into SGD steps of 1e4 * lr)
SMALL = payne.Config(hidden=HIDDEN, learning_rate=1e-2, loss_scale=1.0, batch_size=64, epochs=100, validate_every=5)


def _teacher() -> payne.Model:
    """A random single network (flux 1 with an rms of 0.09 over the box), in the format ``fit`` returns."""
    rng = np.random.default_rng(0)
    sizes = (M, *HIDDEN, L)
    layers = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        w, b = rng.normal(size=(n_out, n_in)) * 2.0 / np.sqrt(n_in), 0.3 * rng.normal(size=n_out)
        if i == len(sizes) - 2:
            w, b = 0.15 * w, 1.0 + 0.01 * b
        layers.append(payne.Layer(w.astype(np.float32), b.astype(np.float32)))
    box = np.array([4000.0, 1.0, -2.0]), np.array([6000.0, 5.0, 0.5])
    return payne.Model(tuple(layers), *box, NAMES, WAVE)


def _grid(teacher: payne.Model, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labels uniform in the teacher's box and their spectra (float64)."""
    y = np.random.default_rng(seed).uniform(teacher.x_min, teacher.x_max, size=(n, M))
    return y, np.array(payne.decode(teacher, y), np.float64)


def _data(y, flux, ivar=None, label_ivar=None) -> tuple[Spectra, Labels]:
    ivar = np.full(flux.shape, 1e4) if ivar is None else ivar
    label_ivar = np.ones(y.shape) if label_ivar is None else label_ivar
    return Spectra(flux, ivar, WAVE), Labels(y, label_ivar, NAMES)


@pytest.fixture(scope="module")
def teacher():
    return _teacher()


@pytest.fixture(scope="module")
def grid(teacher):
    return _grid(teacher, 800, seed=1)


@pytest.fixture(scope="module")
def trained(grid):
    return payne.fit(*_data(*grid), key=jax.random.key(0), config=SMALL, progress=False)


def _small_fit(teacher, key=0, n=200, config=None, **data):
    y, flux = _grid(teacher, n, seed=3)
    config = config or dataclasses.replace(SMALL, epochs=3, validate_every=1)
    return payne.fit(*_data(y, flux, **data), key=jax.random.key(key), config=config, progress=False)


# -- what it learns -------------------------------------------------------------------------------


def test_emulator_reproduces_held_out_teacher_spectra(teacher, grid, trained):
    """Mean |flux error| on 200 new stars: measured 0.0078, against 0.070 for the training set's mean
    spectrum (a factor of ~9); required: a factor of 5."""
    model = trained.model
    assert isinstance(model, payne.Model) and model.file_format == "network"
    assert model.label_names == NAMES and model.config == SMALL
    np.testing.assert_array_equal(model.wavelength, WAVE)
    assert [layer.w.shape for layer in model.params] == [(16, 3), (16, 16), (40, 16)]
    y, flux = grid
    stored = np.asarray(_data(y, flux)[1].values, np.float64)  # the labels as the container keeps them
    np.testing.assert_array_equal(model.x_min, stored.min(axis=0))
    np.testing.assert_array_equal(model.x_max, stored.max(axis=0))
    y_test, f_test = _grid(teacher, 200, seed=2)
    y_test = np.clip(y_test, model.x_min, model.x_max)  # the emulator's box is the training grid's
    f_test = np.asarray(payne.decode(teacher, y_test), np.float64)
    error = np.mean(np.abs(np.asarray(payne.decode(model, y_test)) - f_test))
    baseline = np.mean(np.abs(flux.mean(axis=0) - f_test))
    assert error < baseline / 5, (error, baseline)
    predicted = payne.predict_spectra(model, Labels(y_test, np.ones_like(y_test), NAMES), progress=False)
    assert not predicted.flagged.any()
    np.testing.assert_allclose(predicted.spectra.flux, payne.decode(model, y_test), rtol=1e-6, atol=1e-6)


def test_history_and_the_best_validation_weights(grid, trained):
    """Validated after epochs 0, 5, ..., 95 and the last (99); the model's validation loss is their minimum."""
    history, aux = trained.history, trained.aux
    assert trained.converged is False
    assert len(history["loss"]) == len(history["grad_norm"]) == SMALL.epochs
    np.testing.assert_array_equal(history["val_epoch"], [*range(0, 100, 5), 99])
    assert history["val_loss"].shape == history["val_epoch"].shape
    assert history["loss"][-1] < history["loss"][0] / 3 and history["val_loss"][-1] < history["val_loss"][0] / 3
    best = int(np.argmin(history["val_loss"]))
    assert aux["best_epoch"] == history["val_epoch"][best]
    val, train = aux["validation_index"], aux["train_index"]
    assert val.size == 80 and train.size == 720 and np.union1d(val, train).size == 800
    y, flux = grid
    loss = np.mean(np.abs(np.asarray(payne.decode(trained.model, y[val]), np.float64) - flux[val]))
    np.testing.assert_allclose(loss, history["val_loss"][best], rtol=2e-5)
    others = np.delete(history["val_loss"], best)
    assert np.all(np.abs(others - loss) > 1e-4 * loss)  # it is that point, not just near it


def test_without_validation_the_last_weights(teacher):
    result = _small_fit(teacher, config=dataclasses.replace(SMALL, epochs=2, validation_frac=0.0))
    assert set(result.history) == {"loss", "grad_norm"} and result.aux["best_epoch"] is None
    assert result.aux["validation_index"].size == 0 and result.aux["train_index"].size == 200


# -- the loss and the optimiser -------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "want"), [("l1", 1.25 / 3), ("l2", 0.5625 / 3)])
def test_loss_of_a_hand_computed_case(kind, want):
    """f(s) = (2 s + 1, 1) on s = 0.5, -0.5 gives (2, 1), (0, 1); against flux (1.5, 0.5), (0.25, masked):
    residuals 0.5, 0.5, 0.25 over 3 measured entries."""
    params = (payne.Layer(jnp.array([[2.0], [0.0]]), jnp.array([1.0, 1.0])),)
    s = jnp.array([[0.5], [-0.5]])
    flux = jnp.array([[1.5, 0.5], [0.25, 99.0]])
    mask = jnp.array([[True, True], [True, False]])
    loss = _fit.batch_loss(kind)(params, (s, flux, mask), jax.random.key(0))
    np.testing.assert_allclose(float(loss), want, rtol=1e-6)
    nothing = _fit.batch_loss(kind)(params, (s, flux, jnp.zeros_like(mask)), None)
    assert float(nothing) == 0.0


def test_loss_scale_equals_training_on_the_scaled_loss():
    """The reference's ``1e4 * L1`` under RAdam, the same steps as ``loss_scale=1e4`` on the plain loss
    (also through RAdam's first un-rectified steps, where the scale does not cancel)."""
    key = jax.random.key(4)
    params = _fit.init_params(key, (M, 8, L))
    s = jax.random.uniform(jax.random.fold_in(key, 1), (32, M), minval=-0.5, maxval=0.5)
    batch = (s, 1.0 + 0.1 * jax.random.normal(jax.random.fold_in(key, 2), (32, L)), jnp.ones((32, L), bool))
    loss = _fit.batch_loss("l1")
    config = payne.Config(hidden=(8,))
    opt, ref = _fit.make_optimizer(config), optax.radam(config.learning_rate)
    ours = make_train_step(loss, opt)
    reference = make_train_step(lambda p, b, k: 1e4 * loss(p, b, k), ref)
    p1, s1, p2, s2 = params, opt.init(params), params, ref.init(params)
    for _ in range(8):
        p1, s1, m1 = ours(p1, s1, batch, key)
        p2, s2, m2 = reference(p2, s2, batch, key)
        np.testing.assert_allclose(1e4 * m1["loss"], m2["loss"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not np.allclose(p1[0].w, params[0].w)


def test_train_step_compiles_once(teacher, monkeypatch):
    traces = []
    original = _fit.batch_loss

    def counting(kind):
        loss = original(kind)

        def traced(params, batch, key):
            traces.append(1)  # runs only while JAX traces the loss
            return loss(params, batch, key)

        return traced

    monkeypatch.setattr(_fit, "batch_loss", counting)
    _small_fit(teacher)  # compiles what every fit of these shapes shares
    counts = []
    for epochs in (2, 6):
        traces.clear()
        with count_compiles() as compiles:
            result = _small_fit(teacher, config=dataclasses.replace(SMALL, epochs=epochs, validate_every=1))
        # 2 steps an epoch: the train step traced once, the validation loss once (20 stars, one batch)
        assert len(traces) == 2 and len(result.history["loss"]) == epochs
        counts.append(len(compiles))
    assert counts[0] == counts[1], f"{counts}: more epochs, more compilations"


def test_reproducible_from_the_key(teacher):
    a, b, c = (_small_fit(teacher, key=k) for k in (0, 0, 1))
    for x, y in zip(jax.tree.leaves(a.model), jax.tree.leaves(b.model), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
    np.testing.assert_array_equal(a.aux["validation_index"], b.aux["validation_index"])
    assert not np.array_equal(a.model.params[0].w, c.model.params[0].w)
    assert not np.array_equal(a.aux["validation_index"], c.aux["validation_index"])


@pytest.mark.parametrize("setting", [{"loss": "l2"}, {"optimizer": "adam"}, {"hidden": (8, 8, 8)}])
def test_other_losses_optimisers_and_widths_train(teacher, setting):
    result = _small_fit(teacher, config=dataclasses.replace(SMALL, epochs=4, validate_every=1, **setting))
    assert result.history["val_loss"][-1] < result.history["val_loss"][0]
    assert len(result.model.params) == len(result.model.config.hidden) + 1


# -- the trained model as a file ------------------------------------------------------------------


def test_save_payne_format_and_io_round_trip(trained, tmp_path):
    model = trained.model
    path = payne.save_payne_format(model, tmp_path / "NN_trained")
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    assert sorted(arrays) == sorted([*(f"{c}_array_{i}" for c in "wb" for i in range(3)), "x_min", "x_max"])
    assert arrays["w_array_0"].shape == (16, 3) and arrays["w_array_2"].shape == (40, 16)
    back = payne.load(path, label_names=NAMES, wavelength=WAVE)
    assert back.file_format == "network" and back.config is None
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(model), strict=True):
        np.testing.assert_array_equal(a, b)
    loaded = io.load(io.save(tmp_path / "model", model))
    assert loaded.config == model.config and loaded.label_names == NAMES
    np.testing.assert_array_equal(loaded.wavelength, WAVE)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(model), strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(a, b)


def test_model_refuses_a_config_that_does_not_match_its_network(trained):
    model = trained.model
    with pytest.raises(ValueError, match=r"^config: expected a single network of hidden widths"):
        payne.Model(model.params, model.x_min, model.x_max, NAMES, WAVE, payne.Config(hidden=(300, 300)))
    with pytest.raises(TypeError, match=r"^config: expected a payne.Config"):
        payne.Model(model.params, model.x_min, model.x_max, NAMES, WAVE, {"hidden": HIDDEN})


# -- input ----------------------------------------------------------------------------------------


def test_masked_pixels_stars_and_incomplete_labels(teacher):
    """A star with nothing measured is left out quietly, one missing a label with a warning; a pixel
    measured in no star predicts the continuum, 1."""
    y, flux = _grid(teacher, 200, seed=3)
    ivar, label_ivar = np.full(flux.shape, 1e4), np.ones(y.shape)
    ivar[0], ivar[:, 7], label_ivar[1, 2] = 0.0, 0.0, 0.0
    flux[:, 7] = 50.0  # never read
    with pytest.warns(UserWarning, match=r"^labels: 1 of 200 stars miss a label"):
        result = _small_fit(teacher, ivar=ivar, label_ivar=label_ivar)
    used = np.union1d(result.aux["train_index"], result.aux["validation_index"])
    np.testing.assert_array_equal(used, np.arange(2, 200))
    np.testing.assert_allclose(result.model.x_min, y[2:].min(axis=0), rtol=1e-6)
    spectra = np.asarray(payne.decode(result.model, y))
    assert np.all(np.isfinite(spectra)) and np.all(spectra[:, 7] == 1.0)


def _case(name: str, y, flux):
    """(spectra, labels, key, config) for one bad input."""
    spectra, labels = _data(y, flux)
    key, config = jax.random.key(0), SMALL
    if name == "zero stars":
        spectra, labels = _data(y[:0], flux[:0])
    elif name == "every pixel masked":
        spectra = Spectra(flux, np.zeros(flux.shape), WAVE)
    elif name == "a label never measured":
        ivar = np.ones(y.shape)
        ivar[:, 1] = 0.0
        labels = Labels(y, ivar, NAMES)
    elif name == "a label with one value":
        labels = Labels(np.where(np.arange(M) == 2, 0.0, y), np.ones(y.shape), NAMES)
    elif name == "one usable star":
        ivar = np.zeros(y.shape)
        ivar[0] = 1.0
        labels = Labels(y, ivar, NAMES)
    elif name == "lengths differ":
        labels = Labels(y[:-1], np.ones(y[:-1].shape), NAMES)
    elif name == "an int key":
        key = 0
    elif name == "a numpy key":
        key = np.array([0, 1], np.uint32)
    elif name == "bare flux":
        spectra = flux
    elif name == "bare labels":
        labels = y
    elif name == "NaN where ivar > 0":
        object.__setattr__(spectra, "flux", np.where(np.arange(L) == 3, np.nan, np.asarray(spectra.flux)))
    elif name == "a config dict":
        config = {"hidden": HIDDEN}
    return spectra, labels, key, config


BAD = [
    ("zero stars", ValueError, "spectra"),
    ("every pixel masked", ValueError, "spectra"),
    ("a label never measured", ValueError, "labels"),
    ("a label with one value", ValueError, "labels"),
    ("one usable star", ValueError, "labels"),
    ("lengths differ", ValueError, "labels"),
    ("an int key", TypeError, "key"),
    ("a numpy key", TypeError, "key"),
    ("bare flux", TypeError, "spectra"),
    ("bare labels", TypeError, "labels"),
    ("NaN where ivar > 0", ValueError, "spectra"),
    ("a config dict", TypeError, "config"),
]


@pytest.mark.parametrize(("name", "error", "arg"), BAD, ids=[b[0] for b in BAD])
def test_fit_refuses_bad_input_naming_the_argument(teacher, name, error, arg):
    y, flux = _grid(teacher, 20, seed=4)
    spectra, labels, key, config = _case(name, y, flux)
    with pytest.raises(error, match=rf"^{arg}\b"):
        payne.fit(spectra, labels, key=key, config=config, progress=False)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("hidden", (), ValueError),
        ("hidden", (16, 0), ValueError),
        ("hidden", (16, 8.5), TypeError),
        ("hidden", 8, TypeError),
        ("loss", "l3", ValueError),
        ("optimizer", "sgd", ValueError),
        ("learning_rate", 0.0, ValueError),
        ("loss_scale", -1.0, ValueError),
        ("batch_size", 8.7, TypeError),
        ("epochs", 0, ValueError),
        ("validate_every", 8.7, TypeError),
        ("validation_frac", 1.0, ValueError),
    ],
)
def test_config_refuses_bad_settings_naming_the_field(field, value, error):
    with pytest.raises(error, match=rf"^config\.{field}\b"):
        payne.Config(**{field: value})
