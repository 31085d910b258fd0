"""The bad-input suite every family inherits (docs/families.md, "Bad input"; issue 14).

Each family is one entry of ``ENTRIES``: a tiny valid training set as plain
arrays, how to pack arrays into its spectra argument, a tiny ``fit`` and its
prediction verbs.  Every test below is parametrised over the table and feeds
each family the same hostile input: every pixel masked, one star with every
pixel masked, a pixel masked in every star, labels never measured, NaN with
``ivar > 0`` smuggled past the container, integer and float16 arrays, a
``key`` that is not a key, mismatched lengths, the wrong pixel count or
wavelength grid, zero stars, a bare array instead of a container, a
non-integral float for an int setting.  Each asserts a clear error (its type,
and a message that begins with the argument's name) or a flagged star with
finite placeholders.

**A new family joins by adding one entry to ``ENTRIES``.**
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import pytest

from jaxspec import Labels, Spectra
from jaxspec.data import mock
from jaxspec.models import cannon, flows, lux, payne, ppca, rsca
from jaxspec.models import cycle_starnet as cs
from jaxspec.models import scatter_vae as svae
from jaxspec.models._common import FitResult
from jaxspec.models.lux import mlp
from jaxspec.models.lux.cv import fold_indices
from tests.test_contract import _clusters, _labelled


class Data(NamedTuple):
    """A valid tiny training set as plain arrays: what every hostile case is made from."""

    flux: np.ndarray  # (n, L) float64
    ivar: np.ndarray  # (n, L) float64, 0 = masked
    wave: np.ndarray | None  # (L,) or None (no wavelength grid)
    second: Any  # fit's second argument (Labels, cluster ids, G fluxes) or None


@dataclasses.dataclass(frozen=True)
class Entry:
    """How the bad-input cases reach one family."""

    name: str
    data: Callable[[], Data]
    pack: Callable  # (flux, ivar, wave) -> the family's spectra argument
    fit: Callable  # (spectra, second, key) -> FitResult, tiny
    verbs: dict  # name -> (model, spectra, second) -> (values (n, k), flagged (n,) bool or None)
    config: type  # the family's Config
    arg: str = "spectra"  # the name the family's messages give its spectra argument
    second: str | None = None  # ... and fit's second argument
    label_verbs: dict = dataclasses.field(default_factory=dict)  # name -> (model, labels) -> (values, flagged)
    arrays: frozenset = frozenset()  # arguments documented to take a bare array too ("spectra", "labels")
    grid: bool = False  # the model keeps the wavelength grid: another grid is refused


# -- valid tiny data, packing ---------------------------------------------------------------------


def _arrays(spectra: Spectra, second) -> Data:
    flux, ivar = np.asarray(spectra.flux, np.float64), np.asarray(spectra.ivar, np.float64)
    return Data(flux, ivar, spectra.wavelength, second)


def _labelled_data() -> Data:
    return _arrays(*_labelled())


def _field_data() -> Data:
    return _arrays(_clusters()[0], None)


def _cluster_data() -> Data:
    return _arrays(*_clusters())


def _xp_data() -> Data:
    xp = mock.gaia_xp(jax.random.key(2), 64)
    coef, err = np.asarray(xp.coefficients, np.float64), np.asarray(xp.errors, np.float64)
    return Data(coef, 1.0 / err**2, None, np.asarray(xp.phot_g_mean_flux, np.float64))


def _spectra(flux, ivar, wave):
    return Spectra(flux, ivar, wave)


def _xp(flux, ivar, wave):
    """(coefficients, errors): an error of inf marks a masked coefficient."""
    ivar = np.asarray(ivar, np.float64)
    with np.errstate(divide="ignore"):
        return flux, np.where(ivar > 0, 1.0 / np.sqrt(np.where(ivar > 0, ivar, 1.0)), np.inf)


# -- tiny fits ------------------------------------------------------------------------------------

LUX = lux.Config(n_latents=5, omega=1.0, n_iter=2, scatter_maxiter=5, calibrate=False)


@functools.cache
def _mlp_base() -> FitResult:
    d = _labelled_data()
    return lux.fit(_spectra(d.flux, d.ivar, d.wave), d.second, key=jax.random.key(5), config=LUX, progress=False)


def _fit_lux(x, labels, key):
    return lux.fit(x, labels, key=key, config=LUX, progress=False)


def _fit_mlp(x, labels, key):
    config = mlp.Config(hidden=(8,), epochs=1, batch_size=40)
    return mlp.fit(x, labels, key=key, base=_mlp_base(), config=config, progress=False)


def _fit_cannon(x, labels, key):
    return cannon.fit(x, labels, key=key, config=cannon.Config(n_iter=3), progress=False)


def _fit_ppca(x, _, key):
    return ppca.fit(x, key=key, config=ppca.Config(n_components=3, max_iter=10), progress=False)


def _fit_flows(x, labels, key):
    config = flows.Config(blocks=1, hidden=(4, 4, 4), epochs=1, batch_size=32)
    return flows.fit(x, labels, key=key, config=config, progress=False)


def _fit_rsca(x, ids, key):
    config = rsca.Config(n_components=3, ppca_components=4, ppca_max_iter=10)
    return rsca.fit(x, ids, key=key, config=config, progress=False)


def _fit_payne(x, labels, key):
    config = payne.Config(hidden=(8, 8), epochs=5, batch_size=32, validate_every=1, learning_rate=1e-2, loss_scale=1.0)
    return payne.fit(x, labels, key=key, config=config, progress=False)


def _fit_svae(x, g_flux, key):
    config = svae.Config(hidden=(12, 8), latent_dim=3, batch_size=32, epochs=1)
    return svae.fit(x, g_flux=g_flux, key=key, config=config, progress=False)


# -- verbs as (values, flagged) -------------------------------------------------------------------


def _labels(pred):
    """A LabelPrediction: its values and its flags."""
    return np.asarray(pred.labels.values, np.float64), np.asarray(pred.flagged)


def _spectra_out(pred):
    return np.asarray(pred.spectra.flux, np.float64), np.asarray(pred.flagged)


def _latent_fit(fit_):
    return np.asarray(fit_.z, np.float64), ~np.asarray(fit_.converged)


def _bare(x):
    return np.asarray(x, np.float64).reshape(len(x), -1), None


def _score(score):
    """``anomaly_score`` is NaN for a star with nothing measured: NaN is its flag."""
    score = np.asarray(score, np.float64)
    return np.nan_to_num(score, nan=0.0)[:, None], np.isnan(score)


def _cs_data() -> Data:
    from tests.test_cycle_starnet import domains

    observed, _ = domains(24, 4)
    return _arrays(observed, None)


def _fit_cs(x, _, key):
    """Cycle-StarNet against a fixed synthetic domain (the observed spectra are the hostile argument)."""
    from tests.test_cycle_starnet import domains, tiny

    synthetic = domains(4, 16, seed=1)[1]
    return cs.fit(x, synthetic, key=key, config=tiny(iterations=2), progress=False)


ENTRIES = [
    Entry(
        "lux",
        _labelled_data,
        _spectra,
        _fit_lux,
        {
            "predict_labels": lambda m, x, _: _labels(lux.predict_labels(m, x, progress=False)),
            "encode": lambda m, x, _: _latent_fit(lux.encode(m, x, progress=False)),
        },
        lux.Config,
        second="labels",
        label_verbs={"predict_spectra": lambda m, lab: _spectra_out(lux.predict_spectra(m, lab, progress=False))},
        grid=True,
    ),
    Entry(
        "lux_mlp",
        _labelled_data,
        _spectra,
        _fit_mlp,
        {"predict_labels": lambda m, x, _: _labels(mlp.predict_labels(m, x, progress=False))},
        mlp.Config,
        second="labels",
        grid=True,
    ),
    Entry(
        "cannon",
        _labelled_data,
        _spectra,
        _fit_cannon,
        {"predict_labels": lambda m, x, _: _labels(cannon.predict_labels(m, x, progress=False))},
        cannon.Config,
        second="labels",
        label_verbs={"predict_spectra": lambda m, lab: _spectra_out(cannon.predict_spectra(m, lab))},
        arrays=frozenset({"labels"}),
        grid=True,
    ),
    Entry(
        "ppca",
        _field_data,
        _spectra,
        _fit_ppca,
        {"encode": lambda m, x, _: _bare(ppca.encode(m, x, progress=False))},
        ppca.Config,
        arrays=frozenset({"spectra"}),
    ),
    Entry(
        "rsca",
        _cluster_data,
        _spectra,
        _fit_rsca,
        {"transform": lambda m, x, _: _bare(rsca.transform(m, x, progress=False))},
        rsca.Config,
        second="cluster_ids",
        arrays=frozenset({"spectra"}),
    ),
    Entry(
        "svae",
        _xp_data,
        _xp,
        _fit_svae,
        {
            "encode": lambda m, x, g: _bare(np.hstack(svae.encode(m, x, g, progress=False))),
            "reconstruct": lambda m, x, g: _bare(svae.reconstruct(m, x, g, progress=False).coefficients),
            "anomaly_score": lambda m, x, g: _score(svae.anomaly_score(m, x, g, progress=False)),
        },
        svae.Config,
        arg="data",
        second="g_flux",
    ),
    Entry(
        "payne",
        _labelled_data,
        _spectra,
        _fit_payne,
        {"predict_labels": lambda m, x, _: _labels(payne.predict_labels(m, x, chunk_size=8, progress=False))},
        payne.Config,
        second="labels",
        label_verbs={"predict_spectra": lambda m, lab: _spectra_out(payne.predict_spectra(m, lab, progress=False))},
        grid=True,
    ),
    Entry(
        "flows",
        _labelled_data,
        _spectra,
        _fit_flows,
        {"log_prob": lambda m, x, lab: _score(flows.log_prob(m, x, lab, progress=False))},
        flows.Config,
        second="labels",
        grid=True,
    ),
    Entry(
        "cycle_starnet",
        _cs_data,
        _spectra,
        _fit_cs,
        {
            "encode": lambda m, x, _: _bare(cs.encode(m, x, progress=False).z_sh.reshape(x.n_stars, -1)),
            "transfer": lambda m, x, _: _bare(cs.transfer(m, x, "obs->synth", progress=False)),
        },
        cs.Config,
        grid=True,
    ),
]
IDS = [e.name for e in ENTRIES]
VERBS = [pytest.param(e, v, id=f"{e.name}.{v}") for e in ENTRIES for v in e.verbs]
LABEL_VERBS = [pytest.param(e, v, id=f"{e.name}.{v}") for e in ENTRIES for v in e.label_verbs]
SUPERVISED = [pytest.param(e, id=e.name) for e in ENTRIES if e.second == "labels"]
PAIRED = [pytest.param(e, id=e.name) for e in ENTRIES if e.second is not None]
GRID = [pytest.param(e, v, id=f"{e.name}.{v}") for e in ENTRIES if e.grid for v in e.verbs]


# -- helpers --------------------------------------------------------------------------------------


@functools.cache
def _fitted(name: str) -> tuple[Data, FitResult]:
    """Each family fitted once on its valid data, shared by every test."""
    entry = next(e for e in ENTRIES if e.name == name)
    d = entry.data()
    return d, entry.fit(entry.pack(d.flux, d.ivar, d.wave), d.second, jax.random.key(0))


def _rows(d: Data, rows) -> Data:
    second = None if d.second is None else d.second[rows]
    return Data(d.flux[rows], d.ivar[rows], d.wave, second)


def _masked(d: Data, stars=(), pixels=()) -> Data:
    ivar = d.ivar.copy()
    ivar[stars if isinstance(stars, slice) else list(stars)] = 0.0
    ivar[:, list(pixels)] = 0.0
    return d._replace(ivar=ivar)


def _named(arg: str) -> str:
    """``match=`` for a message that begins with the argument's name (``spectra``, ``spectra[0]``, ...)."""
    return rf"^({arg})\b"


def _refused_or(call, arg: str):
    """The call's result, or None when it raised a TypeError/ValueError whose message names ``arg``."""
    try:
        return call()
    except (TypeError, ValueError) as exc:
        assert re.match(_named(arg), str(exc)), f"{type(exc).__name__} does not name {arg}: {exc}"
        return None


def _finite_leaves(model) -> None:
    for leaf in jax.tree_util.tree_leaves(model):
        a = np.asarray(leaf)
        assert a.dtype.kind not in "fc" or np.all(np.isfinite(a))


def _assert_flagged(values, flagged, bad: set, n: int) -> None:
    assert values.shape[0] == n and np.all(np.isfinite(values)), "placeholders must be finite"
    if flagged is not None:
        assert flagged.tolist() == [i in bad for i in range(n)]


# -- fit ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_fit_refuses_data_with_every_pixel_masked(entry):
    d = _masked(entry.data(), stars=slice(None))
    with pytest.raises(ValueError, match=_named(entry.arg)):
        entry.fit(entry.pack(d.flux, d.ivar, d.wave), d.second, jax.random.key(0))


@pytest.mark.parametrize("entry", SUPERVISED)
@pytest.mark.parametrize("columns", ["all", "one"])
def test_supervised_fit_refuses_a_label_never_measured(entry, columns):
    d = entry.data()
    ivar = np.array(d.second.ivar, np.float64)
    ivar[:, slice(None) if columns == "all" else 1] = 0.0
    labels = Labels(d.second.values, ivar, d.second.names)
    with pytest.raises(ValueError, match=_named("labels")):
        entry.fit(entry.pack(d.flux, d.ivar, d.wave), labels, jax.random.key(0))


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_fit_trains_past_a_star_with_nothing_measured_and_a_pixel_masked_everywhere(entry):
    """Decision: a star with no measured pixel is left out (or informs through its labels only); a pixel
    masked in every star (a mask applied to all) is allowed.  The model stays finite and predicts."""
    clean = entry.data()
    d = _masked(clean, stars=[0], pixels=[3])
    result = entry.fit(entry.pack(d.flux, d.ivar, d.wave), d.second, jax.random.key(1))
    _finite_leaves(result.model)
    x = entry.pack(clean.flux, clean.ivar, clean.wave)
    for verb in entry.verbs.values():
        values, flagged = verb(result.model, x, clean.second)
        _assert_flagged(values, flagged, set(), len(clean.flux))
    for verb in entry.label_verbs.values():  # labels -> spectra predicts too (The Payne's only verb for now)
        values, flagged = verb(result.model, clean.second)
        _assert_flagged(values, flagged, set(), len(clean.flux))


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
@pytest.mark.parametrize("how", ["setattr", "tree_map"])
def test_fit_never_sees_nan_where_ivar_is_positive(entry, how):
    """NaN smuggled past the container's constructor: refused (naming the argument) or treated as missing."""
    d = entry.data()
    x = _smuggle_nan(entry.pack(d.flux, d.ivar, d.wave), how)
    result = _refused_or(lambda: entry.fit(x, d.second, jax.random.key(0)), f"{entry.arg}|ivar")
    if result is not None:
        _finite_leaves(result.model)
        assert all(np.all(np.isfinite(v)) for v in result.history.values() if v.dtype.kind == "f")


def _smuggle_nan(x, how: str):
    """Star 2's first value NaN with its weight kept (``setattr``) or turned NaN too (``tree_map``)."""
    if isinstance(x, Spectra):
        if how == "setattr":
            flux = np.array(x.flux)
            flux[2, 0] = np.nan
            object.__setattr__(x, "flux", flux)
            return x
        poison = np.zeros(x.flux.shape, x.flux.dtype)
        poison[2, 0] = np.nan
        return jax.tree.map(lambda a: np.asarray(a) + poison, x)
    coef, err = (np.array(a, np.float64) for a in x)  # arrays (svae): NaN is documented as masked
    coef[2, 0] = np.nan
    if how == "tree_map":
        err[2, 0] = np.nan
    return coef, err


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
@pytest.mark.parametrize("key", [0, np.array([0, 1], np.uint32), "seed", None])
def test_fit_refuses_a_key_that_is_not_a_jax_key(entry, key):
    if key is None and entry.name == "cannon":
        pytest.skip("the Cannon's fit is deterministic: key=None is its default")
    d = entry.data()
    with pytest.raises(TypeError, match=_named("key")):
        entry.fit(entry.pack(d.flux, d.ivar, d.wave), d.second, key)


def test_keyed_verbs_refuse_a_key_that_is_not_a_jax_key():
    _, result = _fitted("svae")
    with pytest.raises(TypeError, match=_named("key")):
        svae.sample(result.model, 0, 3)
    with pytest.raises(TypeError, match=_named("key")):
        fold_indices(7, 10, 2)


@pytest.mark.parametrize("entry", PAIRED)
def test_fit_refuses_mismatched_lengths(entry):
    d = entry.data()
    x = entry.pack(d.flux, d.ivar, d.wave)
    with pytest.raises(ValueError, match=_named(f"{entry.arg}|{entry.second}")):
        entry.fit(x, d.second[:-1], jax.random.key(0))


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_fit_refuses_zero_stars(entry):
    d = _rows(entry.data(), slice(0, 0))
    with pytest.raises(ValueError, match=_named(f"{entry.arg}|{entry.second}")):
        entry.fit(entry.pack(d.flux, d.ivar, d.wave), d.second, jax.random.key(0))


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_fit_takes_a_bare_array_only_where_documented(entry):
    d = entry.data()
    if "spectra" in entry.arrays:
        _finite_leaves(entry.fit(d.flux, d.second, jax.random.key(0)).model)
    else:
        with pytest.raises(TypeError, match=_named(entry.arg)):
            entry.fit(d.flux, d.second, jax.random.key(0))
    if entry.second == "labels":
        x = entry.pack(d.flux, d.ivar, d.wave)
        values = np.asarray(d.second.values)
        if "labels" in entry.arrays:
            _finite_leaves(entry.fit(x, values, jax.random.key(0)).model)
        else:
            with pytest.raises(TypeError, match=_named("labels")):
                entry.fit(x, values, jax.random.key(0))


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_config_refuses_a_non_integral_float_for_an_int_setting(entry):
    """``n_latents=8.7`` must not become 8: every int field of every Config refuses it, naming the field."""
    fields = [f.name for f in dataclasses.fields(entry.config) if str(f.type).startswith("int")]
    assert fields, entry.name
    for name in fields:
        with pytest.raises(TypeError, match=rf"^config\.{name}\b"):
            entry.config(**{name: 8.7})


# -- prediction verbs -----------------------------------------------------------------------------


@pytest.mark.parametrize(("entry", "verb"), VERBS)
def test_verb_flags_a_star_with_nothing_measured(entry, verb):
    """Decision: the star is flagged (finite placeholders) or, for a bare-array verb, gets the prior;
    its neighbours get what they get without it."""
    d, result = _fitted(entry.name)
    call = entry.verbs[verb]
    clean = call(result.model, entry.pack(d.flux, d.ivar, d.wave), d.second)
    bad = _masked(d, stars=[1])
    values, flagged = call(result.model, entry.pack(bad.flux, bad.ivar, bad.wave), bad.second)
    _assert_flagged(*clean, set(), len(d.flux))
    _assert_flagged(values, flagged, {1}, len(d.flux))
    others = np.arange(len(d.flux)) != 1
    np.testing.assert_allclose(values[others], clean[0][others], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("entry", "verb"), LABEL_VERBS)
def test_label_verb_flags_a_star_with_no_measured_label(entry, verb):
    d, result = _fitted(entry.name)
    ivar = np.array(d.second.ivar, np.float64)
    ivar[1] = 0.0
    values, flagged = entry.label_verbs[verb](result.model, Labels(d.second.values, ivar, d.second.names))
    assert flagged[1] and np.all(np.isfinite(values))


@pytest.mark.parametrize(("entry", "verb"), VERBS)
@pytest.mark.parametrize("how", ["setattr", "tree_map"])
def test_verb_never_returns_nan_for_nan_where_ivar_is_positive(entry, verb, how):
    d, result = _fitted(entry.name)
    x = _smuggle_nan(entry.pack(d.flux, d.ivar, d.wave), how)
    out = _refused_or(lambda: entry.verbs[verb](result.model, x, d.second), f"{entry.arg}|ivar")
    if out is not None:
        assert np.all(np.isfinite(out[0]))


@pytest.mark.parametrize(("entry", "verb"), VERBS)
@pytest.mark.parametrize("dtype", [np.int32, np.float16])
def test_verb_reads_integer_and_float16_arrays_or_refuses_them(entry, verb, dtype):
    """Integer or float16 input: a clear error naming the array, or the result of the same values as float64."""
    d, result = _fitted(entry.name)
    scale = 1e4 / np.abs(d.flux).max()  # units within float16's range, |flux| <= 1e4, ivar <= 1
    flux = (np.rint(d.flux * scale) if dtype is np.int32 else d.flux * scale).astype(dtype)
    ivar = np.rint(100 * d.ivar / d.ivar.max()) if dtype is np.int32 else d.ivar / d.ivar.max()
    ivar = ivar.astype(dtype)
    names = f"{entry.arg}|flux|ivar|values|err|data"
    try:
        x = entry.pack(flux, ivar, d.wave)
    except (TypeError, ValueError) as exc:
        assert re.match(_named(names), str(exc)), exc
        return
    got = _refused_or(lambda: entry.verbs[verb](result.model, x, d.second), names)
    if got is not None:
        want = entry.verbs[verb](
            result.model, entry.pack(flux.astype(np.float64), ivar.astype(np.float64), d.wave), d.second
        )
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)


@pytest.mark.parametrize(("entry", "verb"), VERBS)
def test_verb_refuses_the_wrong_pixel_count(entry, verb):
    d, result = _fitted(entry.name)
    wave = None if d.wave is None else d.wave[:-1]
    x = entry.pack(d.flux[:, :-1], d.ivar[:, :-1], wave)
    with pytest.raises(ValueError, match=_named(entry.arg)):
        entry.verbs[verb](result.model, x, d.second)


@pytest.mark.parametrize(("entry", "verb"), GRID)
def test_verb_refuses_another_wavelength_grid(entry, verb):
    d, result = _fitted(entry.name)
    with pytest.raises(ValueError, match=_named(entry.arg)):
        entry.verbs[verb](result.model, entry.pack(d.flux, d.ivar, d.wave + 0.5), d.second)


@pytest.mark.parametrize(("entry", "verb"), VERBS)
def test_verb_refuses_zero_stars(entry, verb):
    d, result = _fitted(entry.name)
    e = _rows(d, slice(0, 0))
    with pytest.raises(ValueError, match=_named(f"{entry.arg}|{entry.second}")):
        entry.verbs[verb](result.model, entry.pack(e.flux, e.ivar, e.wave), e.second)


@pytest.mark.parametrize(("entry", "verb"), VERBS)
def test_verb_takes_a_bare_array_only_where_documented(entry, verb):
    d, result = _fitted(entry.name)
    if "spectra" in entry.arrays:
        values, _ = entry.verbs[verb](result.model, d.flux, d.second)
        assert np.all(np.isfinite(values))
    else:
        with pytest.raises(TypeError, match=_named(entry.arg)):
            entry.verbs[verb](result.model, d.flux, d.second)
