"""Model files: exact round trip, atomic writes, refusal of pickles, unknown and malformed content (issue 14)."""

from __future__ import annotations

import dataclasses
import importlib
import io as pyio
import json
import re
import zipfile
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import io
from jaxspec.data.preprocess import Standardizer  # registered with io by its module


@io.register("test.Params", arrays={"A": io.Array(2), "B": io.Array(2), "ln_s": io.Array(1)})
class _Params(NamedTuple):
    A: np.ndarray
    B: jnp.ndarray
    ln_s: np.ndarray


@io.register("test.Toy", family="test-toy", arrays={"wavelength": io.Array(1)})
@dataclasses.dataclass(frozen=True)
class _Toy:
    params: _Params
    config: dict
    label_names: tuple
    wavelength: np.ndarray
    standardizer: Standardizer
    step: int = 0


@io.register("test.Other", family="test-other")  # no declaration: its arrays go unchecked
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


LUX = Path(__file__).resolve().parent / "data" / "lux-v0.2.0.dev0.npz"  # a real model file (tests/data)
LUX_V1 = LUX.with_name("lux-v0.1.0.npz")


def _entries(path) -> tuple[dict, dict]:
    """Every entry of a model file written by the tests or kept in tests/data, and its parsed metadata."""
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files}
    return entries, json.loads(str(entries["__metadata__"]))


def _rewrite(path, entries: dict, meta=None, raw: dict | None = None) -> Path:
    """A zip of ``entries`` as ``.npy`` (``meta``, a dict or JSON text, as ``__metadata__``) and ``raw`` bytes."""
    if meta is not None:
        entries = {**entries, "__metadata__": np.array(meta if isinstance(meta, str) else json.dumps(meta))}
    with zipfile.ZipFile(path, "w") as zf:
        for key, value in entries.items():
            buf = pyio.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(value), allow_pickle=True)
            zf.writestr(f"{key}.npy", buf.getvalue())
        for key, data in (raw or {}).items():
            zf.writestr(f"{key}.npy", data)
    return Path(path)


def _lux_key(meta: dict, *fields: str) -> str:
    """The entry of the array at ``fields`` (``"params", "A"``) of the lux file's tree."""
    node = meta["tree"]
    for f in fields:
        node = node["fields"][f]
    return node["key"]


def _same_model(a, b) -> bool:
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return (
        type(a) is type(b)
        and jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
        and all(np.asarray(x).dtype == np.asarray(y).dtype for x, y in zip(leaves_a, leaves_b, strict=True))
        and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b, strict=True))
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
    entries, meta = _entries(path)
    key = meta["tree"]["fields"]["params"]["fields"]["A"]["key"]
    bad = _rewrite(tmp_path / "evil.npz", {**entries, key: np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match=f"evil.npz: entry '{key}' holds a pickled object; .* refusing it"):
        io.load(bad)
    checkpoint_like = _rewrite(tmp_path / "ckpt.npz", {"w": np.ones(2), "evil": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="'evil' holds a pickled object"):
        io.read_npz(checkpoint_like)
    assert io.read_npz(path)[key].shape == (3, 12)


def test_missing_or_foreign_metadata_is_refused(tmp_path):
    np.savez(tmp_path / "plain.npz", x=np.ones(3))
    with pytest.raises(ValueError, match="plain.npz: not a jaxspec model file .no __metadata__ entry"):
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


# -- hostile and careless files (issue 14) ------------------------------------------------------------


def _not_models(tmp_path) -> list[Path]:
    rng = np.random.default_rng(0)
    files = {
        "image.fits": b"SIMPLE  =                    T / a FITS file".ljust(2880, b" "),
        "notes.txt": b"TEFF LOGG FE_H\n4500 2.5 0.0\n",
        "empty.npz": b"",
        "noise.npz": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "fake.npz": b"PK\x03\x04" + rng.integers(0, 256, 200, dtype=np.uint8).tobytes(),
    }
    paths = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        paths.append(tmp_path / name)
    np.save(tmp_path / "single.npy", np.ones(3))
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "not arrays")
    return [*paths, tmp_path / "single.npy", tmp_path / "other.zip"]


def test_a_file_that_is_no_model_is_named_and_pickle_is_never_advised(tmp_path):
    """A FITS, text, empty, random or ``.npy`` file: "<file>: not a jaxspec model file (...)", for load and info."""
    for path in _not_models(tmp_path):
        for reader in (io.load, io.info):
            with pytest.raises(ValueError, match="not a jaxspec model file") as exc:
                reader(path)
            message = str(exc.value)
            assert message.startswith(f"{path}: "), message
            assert "allow_pickle" not in message and "pickle" not in message.lower(), message
    with pytest.raises(ValueError, match=r"single.npy: .*a single .npy array, not an .npz archive"):
        io.load(tmp_path / "single.npy")
    with pytest.raises(ValueError, match=r"image.fits: .*a FITS file"):
        io.load(tmp_path / "image.fits")
    with pytest.raises(ValueError, match=r"empty.npz: .*the file is empty"):
        io.info(tmp_path / "empty.npz")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("complex", r"lux.Model.params.A: expected a finite real-float array of rank 2, found a complex64 array"),
        ("int", r"lux.Model.params.A: expected a finite real-float array of rank 2, found an int32 array"),
        ("rank", r"lux.Model.params.A: expected .* of rank 2, found a float32 array of shape \(3, 6, 1\)"),
        ("nan", r"lux.Model.params.B: expected a finite .*, found 1 NaN or infinite of 900 values"),
        ("none", r"lux.Model.params.B: expected a finite real-float array of rank 2, found NoneType"),
        ("json", r"lux.Model.params.ln_s: expected .* of rank 1, found list"),
        ("mask", r"lux.Model.label_masks: expected a bool array of rank 2, or None, found a float64 array"),
        ("grid", r"lux.Model.wavelengths\[0\]: expected .* rank 1, found a bool array"),
        ("undeclared", r"lux.Model.label_names\[0\]: found a float32 array where class 'lux.Model' declares none"),
        ("structured", r"entry 'a2' has dtype .*, which model files never hold; refusing it"),
    ],
)
def test_arrays_are_checked_against_their_declared_fields(tmp_path, case, message):
    """A complex, integer, wrong-rank or non-finite array fails at load, naming the file and the field."""
    entries, meta = _entries(LUX)
    a, b, ln_s = (_lux_key(meta, "params", f) for f in ("A", "B", "ln_s"))
    fields = meta["tree"]["fields"]
    if case == "complex":
        entries[a] = entries[a].astype(np.complex64)
    elif case == "int":
        entries[a] = entries[a].astype(np.int32)
    elif case == "rank":
        entries[a] = entries[a][..., None]
    elif case == "nan":
        entries[b][7, 2] = np.nan
    elif case == "none":
        fields["params"]["fields"]["B"] = {"t": "json", "v": None}
    elif case == "json":
        fields["params"]["fields"]["ln_s"] = {"t": "json", "v": entries[ln_s].tolist()}
    elif case == "mask":
        fields["label_masks"] = {"t": "array", "key": "mask"}
        entries["mask"] = np.ones((3, 150))
    elif case == "grid":
        grid = fields["wavelengths"]["items"][0]["key"]
        entries[grid] = entries[grid] > 0
    elif case == "undeclared":
        fields["label_names"]["items"][0] = {"t": "array", "key": a}
    elif case == "structured":
        entries[ln_s] = np.zeros(150, dtype=[("x", "f4")])
    path = _rewrite(tmp_path / "bad.npz", entries, meta)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: .*{message}"):
        io.load(path)


def test_wrong_shapes_fail_at_load_not_in_a_verb(tmp_path):
    """Shapes that do not fit together are the class's ``__post_init__``'s to refuse: at load, naming the file."""
    entries, meta = _entries(LUX)
    a = _lux_key(meta, "params", "A")
    path = _rewrite(tmp_path / "rows.npz", {**entries, a: entries[a][:2]}, meta)
    with pytest.raises(ValueError, match=r"rows.npz: cannot rebuild class 'lux.Model' at lux.Model .*3 names"):
        io.load(path)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_value", r"malformed model structure in metadata at lux.Model.label_masks \(a value without 'v'\)"),
        ("dict_items", r"malformed model structure in metadata at lux.Model.config \(a dict without 'items'\)"),
        ("tuple_items", r"malformed model structure in metadata at lux.Model.label_names \(a tuple without 'items'\)"),
        ("key_list", r"malformed model structure in metadata at lux.Model.params.A \(an array named \['a0'\]\)"),
        ("key_meta", r"at lux.Model.params.A \(an array named '__metadata__'\)"),
        ("key_missing", r"metadata names array 'a99', which the file lacks"),
        ("bool_version", r"class 'lux.Model' of layout version True; this jaxspec reads 1..2"),
        ("no_version", r"cannot upgrade class 'lux.Model' at lux.Model from layout version 1 \(KeyError: 'omega'\)"),
        ("v1_no_omega", r"cannot upgrade class 'lux.Model' at lux.Model from layout version 1 \(KeyError: 'omega'\)"),
        ("format_bool", r"format_version True; this jaxspec reads \[1, 2\]"),
        ("long_int", r"__metadata__ is not valid JSON"),
        ("not_text", r"not a jaxspec model file \(__metadata__ is a float64 array, not a JSON text\)"),
    ],
)
def test_malformed_metadata_is_a_value_error_naming_the_file(tmp_path, case, message):
    """Tree nodes lacking fields or of the wrong type never escape as KeyError, AttributeError or TypeError."""
    src = LUX_V1 if case == "v1_no_omega" else LUX
    entries, meta = _entries(src)
    tree = meta["tree"]
    fields = tree["fields"]
    if case == "no_value":
        fields["label_masks"] = {"t": "json"}
    elif case == "dict_items":
        fields["config"] = {"t": "dict", "items": [1]}
    elif case == "tuple_items":
        fields["label_names"]["items"] = 5
    elif case == "key_list":
        fields["params"]["fields"]["A"]["key"] = ["a0"]
    elif case == "key_meta":
        fields["params"]["fields"]["A"]["key"] = "__metadata__"
    elif case == "key_missing":
        fields["params"]["fields"]["A"]["key"] = "a99"
    elif case == "bool_version":
        tree["v"] = True
    elif case in ("no_version", "v1_no_omega"):
        tree.pop("v", None)
        fields.pop("omega", None)
    elif case == "format_bool":
        meta["format_version"] = True
    text = json.dumps(meta)
    if case == "long_int":
        text = text.replace('"user": {', '"user": {"n": ' + "7" * 5000 + ", ", 1)
    if case == "not_text":
        path = _rewrite(tmp_path / "bad.npz", {**entries, "__metadata__": np.array(1.5)})
    else:
        path = _rewrite(tmp_path / "bad.npz", entries, text)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: .*{message}"):
        io.load(path)


def test_nesting_is_bounded(tmp_path):
    """A tree nested beyond ``MAX_DEPTH`` levels, or JSON nested too deeply to parse: a ValueError naming the file."""
    entries, meta = _entries(LUX)
    meta["tree"]["fields"]["label_masks"] = "DEEP"
    deep = '{"t": "list", "items": [' * 200 + '{"t": "json", "v": null}' + "]}" * 200
    path = _rewrite(tmp_path / "deep.npz", entries, json.dumps(meta).replace('"DEEP"', deep))
    where = re.escape(str(path))
    with pytest.raises(ValueError, match=f"^{where}: the model structure nests more than MAX_DEPTH=64 levels"):
        io.load(path)
    path = _rewrite(tmp_path / "deeper.npz", entries, json.dumps(meta).replace('"DEEP"', "[" * 10**5 + "]" * 10**5))
    where = re.escape(str(path))
    for reader in (io.load, io.info):
        with pytest.raises(ValueError, match=f"^{where}: __metadata__ nests too deeply to parse"):
            reader(path)


def test_sizes_are_bounded_before_anything_is_allocated(tmp_path, monkeypatch):
    """A huge declared shape, arrays beyond ``max_bytes`` or a huge metadata entry: a ValueError, never MemoryError."""
    entries, meta = _entries(LUX)
    b = _lux_key(meta, "params", "B")
    header = pyio.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**40, 6)})
    others = {k: v for k, v in entries.items() if k != b}
    path = _rewrite(tmp_path / "huge.npz", others, meta, raw={b: header.getvalue()})
    with pytest.raises(
        ValueError,
        match=rf"^{re.escape(str(path))}: entry '{b}' declares a float32 array of shape \(1099511627776, 6\)",
    ):
        io.load(path)
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(LUX))}: its arrays take \d+ bytes uncompressed \(entry 'a1': 3728\), more"
    ):
        io.load(LUX, max_bytes=1000)
    assert _same_model(io.load(LUX, max_bytes=None), io.load(LUX))
    with pytest.raises(ValueError, match="max_bytes: expected an int >= 0 or None"):
        io.load(LUX, max_bytes=-1)
    monkeypatch.setattr(io, "MAX_METADATA_BYTES", 1000)
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(LUX))}: not a jaxspec model file \(__metadata__ takes \d+ bytes, more"
    ):
        io.info(LUX)


def test_only_the_entries_the_metadata_references_are_read(tmp_path, monkeypatch):
    """An unreferenced entry (a pickle, 32 MB of zeros compressed to a few KB) is never decompressed."""
    entries, meta = _entries(LUX)
    path = _rewrite(tmp_path / "extra.npz", {**entries, "evil": np.array([{"a": 1}], dtype=object)}, meta)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.npy", np.lib.format.magic(1, 0) + b"\0" * (32 * 2**20))
    assert path.stat().st_size < 200_000
    opened = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, *args, **kwargs):
        opened.append(name if isinstance(name, str) else name.filename)
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    assert _same_model(io.load(path), io.load(LUX))
    assert "evil.npy" not in opened and "bomb.npy" not in opened
    opened.clear()
    assert io.info(path)["family"] == "lux" and opened == ["__metadata__.npy"]


def test_byte_order_and_memory_order_are_read_exactly(tmp_path):
    entries, meta = _entries(LUX)
    a, b = _lux_key(meta, "params", "A"), _lux_key(meta, "params", "B")
    swapped = {**entries, a: entries[a].astype(">f4"), b: np.asfortranarray(entries[b])}
    assert _same_model(io.load(_rewrite(tmp_path / "order.npz", swapped, meta)), io.load(LUX))


def test_save_refuses_what_load_would_refuse(tmp_path):
    toy = _toy()
    bad_a = toy.params.A.copy()
    bad_a[1, 2] = np.inf
    with pytest.raises(ValueError, match=r"model.params.A: expected a finite real-float array of rank 2, found 1 NaN"):
        io.save(tmp_path / "bad.npz", dataclasses.replace(toy, params=toy.params._replace(A=bad_a)))
    with pytest.raises(ValueError, match=r"model.config\['grid'\]: found a float64 array where class 'test.Toy'"):
        io.save(tmp_path / "bad.npz", dataclasses.replace(toy, config={"grid": np.ones(3)}))
    assert not list(tmp_path.iterdir())


def test_every_jaxspec_class_declares_its_arrays():
    for module in sorted(set(io.MODULES.values())):
        importlib.import_module(module)
    ours = sorted(n for n in io._TYPES if n.split(".")[0] in {p.split(".")[0] for p in io.MODULES})
    assert len(ours) >= 18 and {io.FAMILY_CLASSES[f] for f in io.FAMILY_CLASSES} <= set(ours)
    assert [n for n in ours if io._TYPES[n].arrays is None] == []
    assert io._TYPES["lux.Params"].arrays["A"] == io.Array(2)


def test_register_checks_the_declaration():
    class Pair(NamedTuple):
        x: np.ndarray
        y: np.ndarray

    with pytest.raises(ValueError, match="arrays: Pair has no field 'z'"):
        io.register("test.Pair", arrays={"z": io.Array(1)})(Pair)
    with pytest.raises(TypeError, match=r"arrays\['x'\]: expected a jaxspec.io.Array"):
        io.register("test.Pair", arrays={"x": 1})
    with pytest.raises(ValueError, match=r"arrays\['x'\].kind: expected dtype kinds"):
        io.register("test.Pair", arrays={"x": io.Array(1, kind="O")})
    with pytest.raises(ValueError, match=r"arrays\['x'\].rank: expected an int >= 0"):
        io.register("test.Pair", arrays={"x": io.Array(-1)})
    assert "test.Pair" not in io._TYPES
