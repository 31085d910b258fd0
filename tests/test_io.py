"""Model files: exact round trip, atomic writes, refusal of pickles and unknown content."""

from __future__ import annotations

import dataclasses
import json
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import io
from jaxspec.data.preprocess import Standardizer  # registered with io by its module


@io.register("test.Params")
class _Params(NamedTuple):
    A: np.ndarray
    B: jnp.ndarray
    ln_s: np.ndarray


@io.register("test.Toy", family="test-toy")
@dataclasses.dataclass(frozen=True)
class _Toy:
    params: _Params
    config: dict
    label_names: tuple
    wavelength: np.ndarray
    standardizer: Standardizer
    step: int = 0


@io.register("test.Other", family="test-other")
@dataclasses.dataclass(frozen=True)
class _Other:
    x: np.ndarray


def _toy(seed=0):
    rng = np.random.default_rng(seed)
    return _Toy(
        params=_Params(
            A=rng.normal(size=(3, 12)).astype(np.float32),
            B=jnp.asarray(rng.normal(size=(50, 12)), dtype=jnp.float32),
            ln_s=np.full(50, -8.0),
        ),
        config={"P": 12, "omega": 1e3, "agenda": ("gn", "lbfgs"), "tol": 1e-6, "flag": True, "none": None},
        label_names=("TEFF", "LOGG", "FE_H"),
        wavelength=10 ** (4.179 + 6e-6 * np.arange(50)),
        standardizer=Standardizer(center=np.array([4500.0, 2.5, 0.0]), scale=np.array([300.0, 0.4, 0.2])),
        step=7,
    )


def test_round_trip_is_exact(tmp_path):
    model = _toy()
    path = io.save(tmp_path / "toy", model, metadata={"trained_on": "mock"})
    assert path.name == "toy.npz"
    back = io.load(path)
    assert type(back) is _Toy and type(back.params) is _Params and type(back.standardizer) is Standardizer
    for a, b in [
        (model.params.A, back.params.A),
        (model.params.B, back.params.B),
        (model.params.ln_s, back.params.ln_s),
        (model.wavelength, back.wavelength),
        (model.standardizer.scale, back.standardizer.scale),
    ]:
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert back.config == model.config and back.label_names == model.label_names and back.step == 7
    meta = io.info(path)
    assert meta["family"] == "test-toy" and meta["user"] == {"trained_on": "mock"}
    assert {"jaxspec_version", "jax_version", "created", "format_version"} <= set(meta)
    assert io.load(path, family="test-toy").step == 7
    with pytest.raises(ValueError, match="holds a 'test-toy' model, expected 'test-other'"):
        io.load(path, family="test-other")


def test_pickled_object_is_refused(tmp_path):
    path = io.save(tmp_path / "toy.npz", _toy())
    with np.load(path) as npz:
        entries = {k: npz[k] for k in npz.files}
    entries["evil"] = np.array([{"a": 1}], dtype=object)
    bad = tmp_path / "evil.npz"
    np.savez(bad, **entries)
    with pytest.raises(ValueError, match="'evil' holds a pickled object"):
        io.load(bad)


def test_missing_or_foreign_metadata_is_refused(tmp_path):
    np.savez(tmp_path / "plain.npz", x=np.ones(3))
    with pytest.raises(ValueError, match="no __metadata__ entry"):
        io.load(tmp_path / "plain.npz")
    path = io.save(tmp_path / "toy.npz", _toy())
    with np.load(path) as npz:
        entries = {k: npz[k] for k in npz.files}
    meta = json.loads(str(entries["__metadata__"]))
    meta["family"] = "alien"
    entries["__metadata__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "alien.npz", **entries)
    with pytest.raises(ValueError, match="unknown model family 'alien'"):
        io.load(tmp_path / "alien.npz")
    meta["family"] = "test-toy"
    meta["tree"]["cls"] = "os.system"
    entries["__metadata__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "cls.npz", **entries)
    with pytest.raises(ValueError, match="needs class 'os.system'"):
        io.load(tmp_path / "cls.npz")
    meta["tree"]["cls"] = "test.Toy"
    del meta["tree"]["fields"]["step"], meta["tree"]["fields"]["params"]
    entries["__metadata__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "fields.npz", **entries)
    with pytest.raises(ValueError, match=r"fields.npz: cannot rebuild class 'test.Toy' .*params"):
        io.load(tmp_path / "fields.npz")
    entries["__metadata__"] = np.array("{not json")
    np.savez(tmp_path / "badjson.npz", **entries)
    with pytest.raises(ValueError, match="not valid JSON"):
        io.load(tmp_path / "badjson.npz")
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        io.load(tmp_path / "garbage.npz")
    with pytest.raises(FileNotFoundError):
        io.load(tmp_path / "nothing.npz")


def test_save_refuses_unregistered_content(tmp_path):
    with pytest.raises(TypeError, match="registered model family"):
        io.save(tmp_path / "x.npz", {"A": np.ones(2)})

    class Loose(NamedTuple):
        a: np.ndarray

    with pytest.raises(TypeError, match=r"model\.x: class .*Loose is not registered"):
        io.save(tmp_path / "x.npz", _Other(x=Loose(np.ones(2))))
    with pytest.raises(TypeError, match=r"model\.x: cannot store an array of dtype object"):
        io.save(tmp_path / "x.npz", _Other(x=np.array([object()])))
    assert not list(tmp_path.iterdir())


def test_write_is_atomic(tmp_path, monkeypatch):
    path = io.save(tmp_path / "toy.npz", _toy())
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        io.save(path, _toy(seed=1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["toy.npz"]  # no temporary left behind


def test_files_name_classes_by_stable_name(tmp_path):
    path = io.save(tmp_path / "toy.npz", _toy())
    with np.load(path) as npz:
        meta = json.loads(str(npz["__metadata__"]))
    assert meta["format_version"] == io.FORMAT_VERSION == 2
    assert meta["tree"]["cls"] == "test.Toy"
    assert meta["tree"]["fields"]["params"]["cls"] == "test.Params"
    assert meta["tree"]["fields"]["standardizer"]["cls"] == "data.Standardizer"
    with pytest.raises(ValueError, match="expected a stable class name"):
        io.register("jaxspec.models.lux.LuxModel")
    with pytest.raises(ValueError, match="already registered"):
        io.register("test.Toy")(_Other)


def test_format_1_names_are_read_through_the_alias_table(tmp_path, monkeypatch):
    """A file written when classes were named by module path loads through ``io.ALIASES``."""
    path = io.save(tmp_path / "toy.npz", _toy())
    with np.load(path) as npz:
        entries = {k: npz[k] for k in npz.files}
    meta = json.loads(str(entries["__metadata__"]))
    meta["format_version"] = 1
    meta["tree"]["cls"] = "tests.test_io._Toy"
    meta["tree"]["fields"]["standardizer"]["cls"] = "jaxspec.data.preprocess.Standardizer"
    entries["__metadata__"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "old.npz", **entries)
    with pytest.raises(ValueError, match="needs class 'tests.test_io._Toy'"):
        io.load(tmp_path / "old.npz")
    monkeypatch.setitem(io.ALIASES, "tests.test_io._Toy", "test.Toy")
    back = io.load(tmp_path / "old.npz")
    assert type(back) is _Toy and type(back.standardizer) is Standardizer and back.step == 7


def test_an_older_layout_is_upgraded_and_a_newer_one_refused(tmp_path):
    """A class that changes its fields raises its version; files of the old layout go through ``upgrade``."""

    @io.register("test.Renamed", family="test-renamed")
    @dataclasses.dataclass(frozen=True)
    class Before:
        scale: np.ndarray

    path = io.save(tmp_path / "before.npz", Before(np.array([2.0, 4.0])))
    with np.load(path) as npz:
        assert "v" not in json.loads(str(npz["__metadata__"]))["tree"]  # version 1 is implicit

    def upgrade(fields, version):
        assert version == 1
        return {"inverse_scale": 1.0 / fields["scale"], "note": "upgraded"}

    io._TYPES.pop("test.Renamed"), io._FAMILIES.pop("test-renamed")
    try:

        @io.register("test.Renamed", family="test-renamed", version=2, upgrade=upgrade)
        @dataclasses.dataclass(frozen=True)
        class After:
            inverse_scale: np.ndarray
            note: str = ""

        back = io.load(path)
        assert type(back) is After and back.note == "upgraded"
        np.testing.assert_array_equal(back.inverse_scale, [0.5, 0.25])
        again = io.load(io.save(tmp_path / "after.npz", back))
        assert again.note == "upgraded" and np.array_equal(again.inverse_scale, back.inverse_scale)
        with np.load(tmp_path / "after.npz") as npz:
            entries = {k: npz[k] for k in npz.files}
        meta = json.loads(str(entries["__metadata__"]))
        assert meta["tree"]["v"] == 2
        meta["tree"]["v"] = 3
        entries["__metadata__"] = np.array(json.dumps(meta))
        np.savez(tmp_path / "newer.npz", **entries)
        with pytest.raises(ValueError, match="layout version 3; this jaxspec reads 1..2"):
            io.load(tmp_path / "newer.npz")
    finally:
        io._TYPES.pop("test.Renamed"), io._FAMILIES.pop("test-renamed")
    with pytest.raises(ValueError, match="needs an upgrade"):
        io.register("test.Other2", version=2)
