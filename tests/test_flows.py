"""The Mendis flow as a model: fit, log_prob, sample, io, masked data, checkpoints, data parallelism.

Tiny shapes throughout: a correlated Gaussian ``x = (S, y)`` of 5 pixels and
2 labels, flows of 2 blocks with conditioners of width 8.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import Labels, Spectra, io
from jaxspec.models import flows
from jaxspec.models.flows import _fit
from jaxspec.models.flows._model import joint_to_base, sample_standard, standardise
from jaxspec.optim import _loop
from jaxspec.optim.train import Checkpoint
from tests._multidevice import run_in_subprocess
from tests.conftest import assert_allclose

L, M, NAMES = 5, 2, ("TEFF", "LOGG")
SCALE = np.r_[np.full(L, 0.02), 40.0, 0.1]
OFFSET = np.r_[np.ones(L), 4400.0, 2.0]


def gaussian(n: int, seed: int = 0):
    """``n`` draws of a correlated Gaussian in (flux, K, dex), as containers, and its covariance in units of SCALE."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(L + M, L + M))
    cov = a @ a.T / (L + M) + 0.2 * np.eye(L + M)
    x = OFFSET + SCALE * rng.multivariate_normal(np.zeros(L + M), cov, size=n)
    spectra = Spectra(x[:, :L], err=np.full((n, L), 0.01), wavelength=np.linspace(15100.0, 15110.0, L))
    return spectra, Labels(x[:, L:], err=np.tile([25.0, 0.1], (n, 1)), names=NAMES), cov


def tiny(kind: str = "joint", **changes) -> flows.Config:
    settings = {"blocks": 2, "hidden": (8, 8, 8), "epochs": 3, "batch_size": 40, "learning_rate": 1e-2}
    return flows.Config(kind=kind, **{**settings, **changes})


@pytest.fixture(scope="module")
def data():
    return gaussian(160)


STEPS: dict[str, list] = {}  # the train steps each kind's fit made (test_train_step_compiles_once)


@pytest.fixture(scope="module", params=["joint", "structured"])
def trained(request, data):
    spectra, labels, _ = data
    steps = STEPS.setdefault(request.param, [])
    make = _fit.make_train_step

    def recording(*args, **kwargs):
        steps.append(make(*args, **kwargs))
        return steps[-1]

    _fit._STEPS.clear()  # compile here, whatever ran before
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_fit, "make_train_step", recording)
        return flows.fit(spectra, labels, key=jax.random.key(0), config=tiny(request.param), progress=False)


def test_fit_history_and_model(trained, data):
    result = trained
    assert set(result.history) >= {"loss", "nll_std", "grad_norm", "val_loss"}
    assert result.history["loss"].shape == (3,) and np.all(np.isfinite(result.history["loss"]))
    # the loss in data units is the standardised one plus sum(log spread)
    offset = float(np.sum(np.log(np.asarray(result.model.spread, np.float64))))
    assert_allclose(result.history["loss"], result.history["nll_std"] + offset, scale=100)
    assert result.model.n_pix == L and result.model.label_names == NAMES
    spectra, labels, _ = data
    rows = result.aux["train_rows"]
    x = np.hstack([np.asarray(spectra.flux)[rows], np.asarray(labels.values)[rows]])
    assert_allclose(result.model.center, x.mean(axis=0), scale=10)  # the training set's statistics
    assert_allclose(result.model.spread, x.std(axis=0), scale=10)


def test_log_prob_is_the_change_of_variables(trained, data):
    """log p(x) = log N(z) + log|det dz/dx|, the Jacobian by jax.jacobian through standardisation and flow."""
    model = trained.model
    spectra, labels, _ = data
    x = np.hstack([np.asarray(spectra.flux), np.asarray(labels.values)])[:4]
    got = flows.log_prob(model, spectra[:4], labels[:4], progress=False)

    def to_z(xi):
        return joint_to_base(model, standardise(model, xi))[0]

    zs, jacs = jax.jit(jax.vmap(lambda xi: (to_z(xi), jax.jacobian(to_z)(xi))))(jnp.asarray(x, model.center.dtype))
    for i in range(4):
        jac, z = np.asarray(jacs[i], np.float64), np.asarray(zs[i], np.float64)
        want = -0.5 * z @ z - 0.5 * z.size * np.log(2 * np.pi) + np.linalg.slogdet(jac)[1]
        assert abs(got[i] - want) < 2e-3 * max(1.0, abs(want))


def test_inverse_round_trip(trained):
    model = trained.model
    z = jax.random.normal(jax.random.key(1), (50, model.dim), model.center.dtype)
    u = sample_standard(model, z)
    back = joint_to_base(model, u)[0]
    assert float(jnp.max(jnp.abs(back - z))) < 1e-4


def test_io_round_trip_predicts_identically(trained, data, tmp_path):
    spectra, labels, _ = data
    model = trained.model
    loaded = io.load(io.save(tmp_path / "flow", model))
    assert loaded.config == model.config and loaded.label_names == NAMES
    np.testing.assert_array_equal(
        flows.log_prob(loaded, spectra, labels, progress=False), flows.log_prob(model, spectra, labels, progress=False)
    )
    a, b = (flows.sample(m, jax.random.key(2), 9, progress=False) for m in (loaded, model))
    np.testing.assert_array_equal(a.spectra, b.spectra)


def test_sample_is_reproducible_whatever_the_chunks(trained):
    a = flows.sample(trained.model, jax.random.key(3), 10, chunk_size=3, progress=False)
    b = flows.sample(trained.model, jax.random.key(3), 10, progress=False)
    assert a.spectra.shape == (10, L) and a.labels.shape == (10, M)
    assert_allclose(a.spectra, b.spectra, scale=10)
    assert_allclose(a.labels, b.labels, scale=10)


def test_train_step_compiles_once(trained):
    kind = trained.model.config.kind
    # 3 epochs of 3 steps (the fit calls the step with the key folded in): one compilation
    assert len(STEPS[kind]) == 1 and _loop._keyed(STEPS[kind][0])._cache_size() == 1


@pytest.mark.slow
def test_checkpoint_resumes_exactly(data, trained, tmp_path):
    """Stopped after epoch 1 and resumed to epoch 3: the fixture's uninterrupted 3 epochs, bit for bit."""
    spectra, labels, _ = data
    whole, kind, path = trained, trained.model.config.kind, tmp_path / "ckpt.npz"
    config = tiny(kind, epochs=1)
    flows.fit(spectra, labels, key=jax.random.key(0), config=config, checkpoint=Checkpoint(path), progress=False)
    resumed = flows.fit(
        spectra, labels, key=jax.random.key(0), config=tiny(kind), checkpoint=Checkpoint(path), progress=False
    )
    for a, b in zip(jax.tree.leaves(resumed.model), jax.tree.leaves(whole.model), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(resumed.history["loss"], whole.history["loss"])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["joint", "structured"])
def test_masked_pixels_and_missing_labels_never_give_nan(kind):
    spectra, labels, _ = gaussian(160, seed=1)
    rng = np.random.default_rng(2)
    ivar = np.where(rng.uniform(size=(160, L)) < 0.3, 0.0, np.asarray(spectra.ivar))
    ivar[7] = 0.0  # a star with nothing measured: left out of training, NaN score
    label_ivar = np.where(rng.uniform(size=(160, M)) < 0.2, 0.0, np.asarray(labels.ivar))
    flux = np.where(ivar > 0, np.asarray(spectra.flux), 1e30)  # what hides behind a mask must not matter
    spectra = Spectra(flux, ivar, spectra.wavelength)
    labels = Labels(np.asarray(labels.values), label_ivar, names=NAMES)
    result = flows.fit(spectra, labels, key=jax.random.key(0), config=tiny(kind, epochs=4), progress=False)
    assert np.all(np.isfinite(result.history["loss"])) and np.all(np.isfinite(result.history["val_loss"]))
    empty = ~(ivar > 0).any(axis=1)  # star 7, and any other the random mask emptied
    used = np.r_[result.aux["train_rows"], result.aux["validation_rows"]]
    assert not np.isin(np.flatnonzero(empty), used).any() and used.size == np.sum(~empty)
    lp = flows.log_prob(result.model, spectra, labels, progress=False)
    np.testing.assert_array_equal(np.isnan(lp), empty)
    # a masked pixel is scored at its training mean, whatever its placeholder
    other = Spectra(np.where(ivar > 0, np.asarray(spectra.flux), -5.0), ivar, spectra.wavelength)
    np.testing.assert_array_equal(flows.log_prob(result.model, other, labels, progress=False), lp)


@pytest.mark.slow
def test_learns_a_gaussian():
    """A planted truth: on held-out draws the flow's mean log density approaches the true Gaussian's."""
    spectra, labels, cov = gaussian(1200, seed=3)
    config = flows.Config(blocks=2, hidden=(16, 16, 16), epochs=25, batch_size=100, learning_rate=3e-3)
    model = flows.fit(spectra[:1000], labels[:1000], key=jax.random.key(7), config=config, progress=False).model
    got = flows.log_prob(model, spectra[1000:], labels[1000:], progress=False)
    x = np.hstack([np.asarray(spectra.flux), np.asarray(labels.values)])[1000:]
    r = (x - OFFSET) / SCALE
    true = -0.5 * np.einsum("ni,ij,nj->n", r, np.linalg.inv(cov), r)
    true -= 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1] + np.sum(np.log(SCALE))
    # the entropy of the Gaussian bounds the expected log density; a good fit comes within a few tenths of a nat
    gap = true.mean() - got.mean()
    assert -0.3 < gap < 0.5, gap


@pytest.mark.slow
def test_data_parallel_equals_one_device():
    code = """
from jaxspec import Labels, Spectra
from jaxspec.models import flows
from tests.test_flows import gaussian, tiny
spectra, labels, _ = gaussian(160)
one = flows.fit(spectra, labels, key=jax.random.key(8), config=tiny(), progress=False)
two = flows.fit(spectra, labels, key=jax.random.key(8), config=tiny(), mesh=mesh, progress=False)
out['n'] = np.asarray(mesh.devices.size)
out['one'] = np.concatenate([np.ravel(a) for a in jax.tree.leaves(one.model.params)])
out['two'] = np.concatenate([np.ravel(a) for a in jax.tree.leaves(two.model.params)])
out['loss_one'], out['loss_two'] = one.history['loss'], two.history['loss']
"""
    res = run_in_subprocess(code, devices=2)
    assert int(res["n"]) == 2
    assert_allclose(res["loss_two"], res["loss_one"], scale=1e4)
    assert np.max(np.abs(res["two"] - res["one"])) < 1e-3 * max(1.0, np.max(np.abs(res["one"])))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "mixed"}, "config.kind"),
        ({"blocks": 0}, "config.blocks"),
        ({"hidden": ()}, "config.hidden"),
        ({"channels": 0}, "config.channels"),
        ({"validation_frac": 1.0}, "config.validation_frac"),
        ({"patience": 2, "validation_frac": 0.0}, "config.patience"),
        ({"epochs": 2.5}, "config.epochs"),
        ({"init": "pca"}, "config.init"),
    ],
)
def test_bad_config(changes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        flows.Config(**changes)


def test_bad_fit_and_verb_input(data, trained):
    spectra, labels, _ = data
    with pytest.raises(ValueError, match="config.channels"):
        flows.fit(spectra, labels, key=jax.random.key(0), config=tiny(channels=3), progress=False)
    with pytest.raises(ValueError, match="labels: config.kind = 'structured' needs at least 2"):
        flows.fit(spectra, labels.select(["TEFF"]), key=jax.random.key(0), config=tiny("structured"), progress=False)
    with pytest.raises(TypeError, match="labels: expected Labels"):
        flows.fit(spectra, np.asarray(labels.values), key=jax.random.key(0), config=tiny(), progress=False)
    with pytest.raises(ValueError, match="spectra: expected 5 pixels"):
        flows.log_prob(trained.model, Spectra(np.ones((3, 4)), np.ones((3, 4))), labels[:3], progress=False)
    with pytest.raises(ValueError, match="labels: expected the model's labels"):
        flows.log_prob(
            trained.model, spectra[:3], Labels(np.ones((3, 2)), np.ones((3, 2)), names=("A", "B")), progress=False
        )
    with pytest.raises(ValueError, match="n: expected an int >= 1"):
        flows.sample(trained.model, jax.random.key(0), 0, progress=False)
