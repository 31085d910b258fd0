"""The family contract (docs/families.md), checked the same way for every family.

For each family, on tiny planted data: ``fit`` returns a ``FitResult``; the
model is a pytree whose leaves are arrays and whose static part (names, grids,
config) survives ``jax.tree.map``; the family's forward model (a pure function
of the model) gives the same numbers eagerly, under ``jax.jit`` and
``jax.vmap``, and ``jax.grad`` goes through it; an ``io`` round trip is exact
(leaves bit for bit, static fields equal); the batch verbs return the shared
result types; and the family's saved reference files of every earlier version
load and predict what that version predicted (``tests/test_reference_files.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import Labels, Spectra, io
from jaxspec.data import mock
from jaxspec.models import cannon, flows, lux, payne, ppca, rsca
from jaxspec.models import cycle_starnet as cs
from jaxspec.models._common import FitResult, LabelPrediction, SpectraPrediction
from tests.conftest import assert_allclose
from tests.test_reference_files import CHECKS, versions

N, N_PIX, NAMES = 80, 30, ("TEFF", "LOGG")
WAVE = np.linspace(15100.0, 15160.0, N_PIX)


def _labelled(seed: int = 0):
    """Labels linear in two latent factors; fluxes quadratic in them (a Cannon's model), 1% noise."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(N, 2))
    values = np.array([4800.0, 2.5]) + u * np.array([300.0, 0.4])
    basis = 0.05 * rng.normal(size=(3, N_PIX))
    flux = 1.0 + u @ basis[:2] + 0.3 * (u[:, :1] ** 2 - 1) * basis[2] + 0.01 * rng.normal(size=(N, N_PIX))
    labels = Labels(values, err=np.tile([20.0, 0.03], (N, 1)), names=NAMES)
    return Spectra(flux, err=np.full(flux.shape, 0.01), wavelength=WAVE), labels


def _clusters(seed: int = 1):
    """60 field stars and 4 clusters of 5 members (ids, -1 for the field), low-rank spectra."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(4, N_PIX)) * np.linspace(1.0, 0.3, 4)[:, None]
    ids = np.r_[np.full(60, -1), np.repeat(np.arange(4), 5)]
    z = rng.normal(size=(ids.size, 4))
    z[60:] = rng.normal(size=(4, 4))[ids[60:]] + 0.05 * rng.normal(size=(20, 4))
    flux = 1.0 + 0.05 * z @ basis + 1e-3 * rng.normal(size=(ids.size, N_PIX))
    return Spectra(flux, err=np.full(flux.shape, 0.01), wavelength=WAVE), ids


@dataclasses.dataclass(frozen=True)
class Family:
    """How the contract is exercised for one family."""

    name: str  # the io family
    module: Any
    data: Callable[[], tuple]  # -> (spectra, second positional argument of fit)
    config: Any
    forward: Callable  # pure (model, x) -> arrays
    forward_input: Callable  # (model) -> x, a batch of inputs of the forward model
    verbs: Callable  # (model, spectra, second) -> list of (result, expected type)
    fit_kwargs: Callable = dict


def _lux_verbs(model, spectra, labels):
    return [
        (lux.predict_labels(model, spectra, progress=False), LabelPrediction),
        (lux.predict_spectra(model, labels, progress=False), SpectraPrediction),
    ]


def _cannon_verbs(model, spectra, labels):
    return [
        (cannon.predict_labels(model, spectra, progress=False), LabelPrediction),
        (cannon.predict_spectra(model, labels), SpectraPrediction),
    ]


def _payne_verbs(model, spectra, labels):
    # labels -> spectra only: The Payne's spectra -> labels verb (``fit_labels``, issue 15) does not exist yet
    return [(payne.predict_spectra(model, labels, progress=False), SpectraPrediction)]


def _flows_verbs(model, spectra, labels):
    return [
        (flows.log_prob(model, spectra, labels, progress=False), np.ndarray),
        (flows.sample(model, jax.random.key(1), 5, progress=False), flows.Draws),
    ]


def _flows_input(model):
    z = np.random.default_rng(5).normal(size=(7, model.dim))
    return jnp.asarray(np.asarray(model.center) + np.asarray(model.spread) * z, model.center.dtype)


def _mlp_base():
    spectra, labels = _labelled()
    return {"base": lux.fit(spectra, labels, key=jax.random.key(5), config=lux.Config(omega=1.0), progress=False)}


def _xp():
    xp = mock.gaia_xp(jax.random.key(2), 96)
    return xp, None


def _svae():
    from jaxspec.models import scatter_vae

    return scatter_vae


def _svae_verbs(model, xp, _):
    sv = _svae()
    mu, logvar = sv.encode(model, xp, progress=False)
    return [((mu, logvar), tuple), (sv.reconstruct(model, xp, progress=False), sv.Reconstruction)]


def _mlp():
    from jaxspec.models.lux import mlp

    return mlp


def _z(n_latents_of):
    return lambda model: np.random.default_rng(3).normal(size=(7, n_latents_of(model))).astype(np.float32)


def _domains():
    from tests.test_cycle_starnet import domains

    return domains()


def _cs_verbs(model, spectra, _):
    latents = cs.encode(model, spectra, progress=False)
    return [(latents, cs.Latents), (cs.transfer(model, spectra, "obs->synth", progress=False), np.ndarray)]


def _cs_config():
    from tests.test_cycle_starnet import tiny

    return tiny()


FAMILIES = [
    Family(
        "lux",
        lux,
        _labelled,
        lux.Config(n_latents=5, omega=1.0),
        lux.decode,
        _z(lambda m: m.n_latents),
        _lux_verbs,
    ),
    Family(
        "lux_mlp",
        None,
        _labelled,
        None,
        lambda model, z: _mlp().decode(model, z),
        _z(lambda m: m.lux.n_latents),
        lambda model, spectra, _: [(_mlp().predict_labels(model, spectra, progress=False), LabelPrediction)],
        _mlp_base,
    ),
    Family(
        "cannon",
        cannon,
        _labelled,
        cannon.Config(n_iter=5),
        cannon.decode,
        lambda model: np.array([[4800.0, 2.5], [5100.0, 2.2], [4500.0, 2.9]]),
        _cannon_verbs,
    ),
    Family(
        "ppca",
        ppca,
        lambda: (_clusters()[0], None),
        ppca.Config(n_components=3, max_iter=20),
        ppca.decode,
        _z(lambda m: m.n_components),
        lambda model, spectra, _: [(ppca.encode(model, spectra, progress=False), np.ndarray)],
    ),
    Family(
        "rsca",
        rsca,
        _clusters,
        rsca.Config(n_components=3, ppca_components=4),
        rsca.embed,
        lambda model: jnp.asarray(np.random.default_rng(4).normal(size=(6, 3)), jnp.float32),
        lambda model, spectra, _: [(rsca.transform(model, spectra, progress=False), np.ndarray)],
    ),
    Family(
        "svae",
        None,
        _xp,
        None,
        lambda model, z: _svae().decode(model, z),
        _z(lambda m: m.config.latent_dim),
        _svae_verbs,
    ),
    Family(
        "payne",
        payne,
        _labelled,
        payne.Config(hidden=(8, 8), epochs=5, batch_size=32, validate_every=1, learning_rate=1e-2, loss_scale=1.0),
        payne.decode,
        lambda model: np.array([[4800.0, 2.5], [5100.0, 2.2], [4500.0, 2.9]]),
        _payne_verbs,
    ),
    Family(
        "flows",
        flows,
        _labelled,
        flows.Config(blocks=1, hidden=(8, 8, 8), epochs=2, batch_size=40),
        flows.log_density,
        _flows_input,
        _flows_verbs,
    ),
    Family(
        "cycle_starnet",
        cs,
        _domains,
        None,
        lambda model, z: cs.decode(model, *z),
        lambda model: tuple(np.asarray(a)[:5] for a in cs.encode(model, _domains()[0], progress=False)),
        _cs_verbs,
    ),
]


def _module(family: Family):
    return {"lux_mlp": _mlp, "svae": _svae}.get(family.name, lambda: family.module)()


def _config(family: Family):
    if family.name == "lux_mlp":
        return _mlp().Config(hidden=(8,), epochs=2, batch_size=40)
    if family.name == "svae":
        return _svae().Config(hidden=(12, 8), latent_dim=3, batch_size=32, epochs=2)
    if family.name == "cycle_starnet":
        return _cs_config()
    return family.config


@pytest.fixture(scope="module", params=FAMILIES, ids=[f.name for f in FAMILIES])
def fitted(request):
    family = request.param
    spectra, second = family.data()
    args = (spectra,) if second is None else (spectra, second)
    result = _module(family).fit(
        *args, key=jax.random.key(0), config=_config(family), progress=False, **family.fit_kwargs()
    )
    return family, spectra, second, result


def test_fit_returns_a_fit_result(fitted):
    family, _, _, result = fitted
    assert isinstance(result, FitResult)
    assert type(result.model).__dict__.get("_jaxspec_family") == family.name
    assert isinstance(result.history, dict) and result.history
    assert all(isinstance(v, np.ndarray) and v.ndim >= 1 for v in result.history.values())
    assert isinstance(result.converged, bool) and isinstance(result.aux, dict)
    assert result.model.config == _config(family)  # the config is stored in the model


def test_model_is_a_pytree_of_arrays(fitted):
    _, _, _, result = fitted
    model = result.model
    leaves, treedef = jax.tree_util.tree_flatten(model)
    assert leaves and all(isinstance(x, jax.Array | np.ndarray) for x in leaves)
    # a tree_map rebuilds the same class with the same static part (names, grids, config)
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, model)
    assert type(doubled) is type(model) and jax.tree_util.tree_structure(doubled) == treedef
    assert doubled.config == model.config
    for a, b in zip(jax.tree_util.tree_leaves(doubled), leaves, strict=True):
        np.testing.assert_array_equal(np.asarray(a), 2 * np.asarray(b))
    # the static part is hashable: the model can be a jit argument without recompiling for an equal twin
    hash(treedef)
    # fit leaves arrays on the device where the precision keeps them (no re-upload per prediction)
    assert any(isinstance(x, jax.Array) for x in leaves)


def test_forward_model_is_pure_jit_vmap_and_grad(fitted):
    family, _, _, result = fitted
    model, x = result.model, family.forward_input(result.model)
    eager = jax.tree_util.tree_leaves(family.forward(model, x))
    jitted = jax.tree_util.tree_leaves(jax.jit(family.forward)(model, x))
    mapped = jax.tree_util.tree_leaves(jax.vmap(family.forward, in_axes=(None, 0))(model, x))
    for a, b, c in zip(eager, jitted, mapped, strict=True):
        assert np.all(np.isfinite(np.asarray(a)))
        scale = float(np.max(np.abs(np.asarray(a, np.float64)))) + 1.0
        assert_allclose(np.asarray(b) / scale, np.asarray(a) / scale, dtype=np.float32)
        assert_allclose(np.asarray(c) / scale, np.asarray(a) / scale, dtype=np.float32)

    def total(m):
        return sum(jnp.sum(jnp.asarray(v, jnp.float32)) for v in jax.tree_util.tree_leaves(family.forward(m, x)))

    floats = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32) if v.dtype.kind == "f" else v, model)
    grads = jax.grad(total, allow_int=True)(floats)
    assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(floats)
    flat = [np.asarray(g, np.float64) for g in jax.tree_util.tree_leaves(grads) if np.asarray(g).dtype.kind == "f"]
    assert all(np.all(np.isfinite(g)) for g in flat) and any(np.any(g != 0) for g in flat)


def test_io_round_trip_is_exact(fitted, tmp_path):
    family, _, _, result = fitted
    path = io.save(tmp_path / family.name, result.model)
    assert io.info(path)["family"] == family.name
    loaded = io.load(path, family=family.name)
    assert type(loaded) is type(result.model)
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(result.model)
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(result.model), strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert isinstance(a, jax.Array) == isinstance(b, jax.Array)  # loaded onto the device as fit leaves them


def test_batch_verbs_return_the_shared_types(fitted):
    family, spectra, second, result = fitted
    for out, kind in family.verbs(result.model, spectra, second):
        assert isinstance(out, kind), (family.name, type(out).__name__)
        if isinstance(out, LabelPrediction):
            n = out.labels.n_stars
            assert out.covariance.shape[0] == n and np.shape(out.flagged) == (n,)
            assert np.shape(out.reduced_chi2) == (n,)
        if isinstance(out, SpectraPrediction):
            assert isinstance(out.spectra, Spectra) and np.shape(out.flagged) == (out.spectra.n_stars,)


@pytest.mark.parametrize("family", [f.name for f in FAMILIES])
def test_saved_reference_files_load_and_predict_identically(family):
    assert versions(family), f"{family}: no reference file in tests/data"
    for version in versions(family):
        CHECKS[family](version)
