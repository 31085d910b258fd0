"""models/payne: both Payne file formats against explicit numpy evaluations, exact round trips, load errors,
predict_spectra's flags and its single compilation.

Small synthetic emulators (random weights, tens of pixels) for most tests; the
shipped 2019 APOGEE emulator (``../shared/data/payne``) where it is checked.
"""

from __future__ import annotations

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxspec import Labels, io
from jaxspec.models import payne
from jaxspec.models._common import SpectraPrediction
from tests.conftest import assert_allclose, count_compiles

# -- synthetic Payne files and their numpy evaluation -------------------------------------------


def _box(m: int, rng) -> tuple[np.ndarray, np.ndarray]:
    lo = rng.uniform(-1.0, 1.0, m) * 10.0 ** rng.integers(0, 4, m)
    return lo, lo + rng.uniform(0.5, 2.0, m) * np.abs(lo).clip(1.0)


def _per_pixel_arrays(n_pix=40, hidden=5, m=3, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    x_min, x_max = _box(m, rng)
    f32 = np.float32
    return {
        "w_array_0": rng.normal(size=(n_pix, hidden, m)).astype(f32),
        "w_array_1": (0.1 * rng.normal(size=(n_pix, hidden))).astype(f32),
        "b_array_0": rng.normal(size=(n_pix, hidden)).astype(f32),
        "b_array_1": (1.0 + 0.01 * rng.normal(size=n_pix)).astype(f32),
        "x_min": x_min,
        "x_max": x_max,
    }


def _network_arrays(m=25, hidden=16, n_pix=50, n_layers=3, seed=1) -> dict:
    rng = np.random.default_rng(seed)
    sizes = [m] + [hidden] * (n_layers - 1) + [n_pix]
    arrays = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        arrays[f"w_array_{i}"] = (rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)).astype(np.float32)
        arrays[f"b_array_{i}"] = (0.1 * rng.normal(size=n_out)).astype(np.float32)
    arrays["x_min"], arrays["x_max"] = _box(m, rng)
    return arrays


def _write(path, arrays: dict, *, compressed: bool = False):
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def _scaled(arrays: dict, y: np.ndarray) -> np.ndarray:
    x_min, x_max = (np.asarray(arrays[k], np.float64) for k in ("x_min", "x_max"))
    return (y - x_min) / (x_max - x_min) - 0.5


def _numpy_per_pixel(arrays: dict, y: np.ndarray) -> np.ndarray:
    """``f = w1 . sigmoid(w0 s + b0) + b1`` in float64, ``(n, L)``."""
    w0, w1, b0, b1 = (np.asarray(arrays[k], np.float64) for k in ("w_array_0", "w_array_1", "b_array_0", "b_array_1"))
    inside = np.einsum("lhm,nm->nlh", w0, _scaled(arrays, y)) + b0
    return np.einsum("lh,nlh->nl", w1, 1.0 / (1.0 + np.exp(-inside))) + b1


def _numpy_network(arrays: dict, y: np.ndarray) -> np.ndarray:
    """The Payne's single network in float64: LeakyReLU(0.01) after every hidden layer, linear output."""
    k = sum(1 for name in arrays if name.startswith("w_array_"))
    x = _scaled(arrays, y)
    for i in range(k):
        x = x @ np.asarray(arrays[f"w_array_{i}"], np.float64).T + np.asarray(arrays[f"b_array_{i}"], np.float64)
        if i < k - 1:
            x = np.maximum(0, x) + 0.01 * np.minimum(0, x)
    return x


def _in_box(arrays: dict, n: int, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return arrays["x_min"] + rng.uniform(0.0, 1.0, (n, arrays["x_min"].size)) * (arrays["x_max"] - arrays["x_min"])


def _raw(path) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _assert_same_arrays(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k])


@pytest.fixture
def per_pixel_file(tmp_path):
    arrays = _per_pixel_arrays()
    return _write(tmp_path / "per_pixel.npz", arrays), arrays


@pytest.fixture
def network_file(tmp_path):
    arrays = _network_arrays()
    return _write(tmp_path / "network.npz", arrays, compressed=True), arrays


@pytest.fixture(scope="module")
def shipped(shared_data):
    path = shared_data / "payne" / "NN_normalized_spectra.npz"
    return path, _raw(path)


# -- the shipped 2019 emulator ------------------------------------------------------------------


def test_shipped_emulator_equals_its_formula(shipped, shared_data):
    path, arrays = shipped
    model = payne.load(path)
    assert model.file_format == "per_pixel" and model.n_pix == 7214
    assert model.label_names == ("TEFF", "LOGG", "FE_H", "ALPHA_FE", "VBROAD")
    y = _in_box(arrays, 300)
    want = _numpy_per_pixel(arrays, y)
    assert_allclose(payne.decode(model, y), want, dtype=np.float32)
    assert_allclose(jax.jit(payne.decode)(model, y[:7]), want[:7], dtype=np.float32)
    pred = payne.predict_spectra(model, y, chunk_size=128, progress=False)
    assert isinstance(pred, SpectraPrediction) and not pred.flagged.any()
    assert_allclose(pred.spectra.flux, want, dtype=np.float32)
    # the default grid is The Payne's APOGEE grid (computed, not read: equal to its file to rounding)
    with np.load(shared_data / "payne" / "apogee_wavelength.npz") as f:
        np.testing.assert_allclose(model.wavelength, f["wavelength"], rtol=1e-12, atol=0)
    np.testing.assert_array_equal(pred.spectra.wavelength, model.wavelength)


def test_shipped_emulator_round_trips_exactly(shipped, tmp_path):
    path, arrays = shipped
    model = payne.load(path)
    _assert_same_arrays(_raw(payne.save_payne_format(model, tmp_path / "again.npz")), arrays)
    loaded = io.load(io.save(tmp_path / "jaxspec", model), family="payne")
    assert loaded.label_names == model.label_names and loaded.file_format == "per_pixel"
    np.testing.assert_array_equal(loaded.wavelength, model.wavelength)
    y = _in_box(arrays, 5)
    np.testing.assert_array_equal(np.asarray(payne.decode(loaded, y)), np.asarray(payne.decode(model, y)))


# -- synthetic files of both formats ------------------------------------------------------------


def test_network_file_equals_leaky_relu_network(network_file):
    path, arrays = network_file
    model = payne.load(path)
    assert model.file_format == "network" and len(model.params) == 3 and model.n_pix == 50
    assert model.label_names == payne.NETWORK_LABEL_NAMES and model.wavelength is None
    y = _in_box(arrays, 200)
    want = _numpy_network(arrays, y)
    assert np.any(_scaled(arrays, y) @ arrays["w_array_0"].T.astype(np.float64) + arrays["b_array_0"] < 0)
    assert_allclose(payne.decode(model, y), want, dtype=np.float32)
    pred = payne.predict_spectra(model, y, chunk_size=64, progress=False)
    assert_allclose(pred.spectra.flux, want, dtype=np.float32)
    assert pred.spectra.wavelength is None and pred.z is None and pred.reduced_chi2 is None


@pytest.mark.parametrize("n_layers", [1, 2, 4])
def test_network_of_any_depth(tmp_path, n_layers):
    arrays = _network_arrays(m=4, hidden=8, n_pix=12, n_layers=n_layers)
    model = payne.load(_write(tmp_path / "net.npz", arrays), label_names=("A", "B", "C", "D"))
    y = _in_box(arrays, 30)
    assert_allclose(payne.decode(model, y), _numpy_network(arrays, y), dtype=np.float32)
    _assert_same_arrays(_raw(payne.save_payne_format(model, tmp_path / "back")), arrays)


def test_per_pixel_file_equals_sigmoid_formula(per_pixel_file):
    path, arrays = per_pixel_file
    model = payne.load(path, label_names=("A", "B", "C"), wavelength=np.linspace(15000.0, 15100.0, 40))
    assert model.label_names == ("A", "B", "C") and model.wavelength.dtype == np.float64
    y = _in_box(arrays, 100)
    assert_allclose(payne.decode(model, y), _numpy_per_pixel(arrays, y), dtype=np.float32)


@pytest.mark.parametrize("which", ["per_pixel", "network"])
def test_both_formats_round_trip_exactly(which, per_pixel_file, network_file, tmp_path):
    path, arrays = per_pixel_file if which == "per_pixel" else network_file
    model = payne.load(path)
    assert model.file_format == which
    out = payne.save_payne_format(model, tmp_path / "copy")
    assert out.name == "copy.npz" and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    _assert_same_arrays(_raw(out), arrays)
    _assert_same_arrays(_raw(payne.save_payne_format(payne.load(out), tmp_path / "copy2.npz")), arrays)
    loaded = io.load(io.save(tmp_path / "model", model))
    assert type(loaded) is payne.Model and loaded.label_names == model.label_names
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(model)
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(model), strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    y = _in_box(arrays, 9)
    first = payne.predict_spectra(model, y, progress=False).spectra.flux
    np.testing.assert_array_equal(payne.predict_spectra(loaded, y, progress=False).spectra.flux, first)


def test_save_payne_format_refuses(tmp_path, per_pixel_file):
    model = payne.load(per_pixel_file[0])
    with pytest.raises(TypeError, match="model: expected a payne.Model"):
        payne.save_payne_format(per_pixel_file[1], tmp_path / "x.npz")
    with pytest.raises(FileNotFoundError, match="path: folder"):
        payne.save_payne_format(model, tmp_path / "nowhere" / "x.npz")


# -- the forward model --------------------------------------------------------------------------


def test_scale_labels_maps_the_box_and_inverts(per_pixel_file):
    path, arrays = per_pixel_file
    model = payne.load(path)
    corners = np.stack([arrays["x_min"], arrays["x_max"]])
    assert_allclose(payne.scale_labels(model, corners), [[-0.5] * 3, [0.5] * 3], dtype=np.float32)
    y = _in_box(arrays, 10)
    s = payne.scale_labels(model, y)
    assert_allclose(s, _scaled(arrays, y), dtype=np.float32)
    rel = (payne.unscale_labels(model, s) - y) / (arrays["x_max"] - arrays["x_min"])
    assert_allclose(rel, np.zeros_like(y), dtype=np.float32)
    assert_allclose(payne.decode_scaled(model, s), payne.decode(model, y), dtype=np.float32)


def test_forward_model_batches_jits_and_differentiates(network_file):
    path, arrays = network_file
    model = payne.load(path)
    y = _in_box(arrays, 6).reshape(2, 3, 25)
    flux = payne.decode(model, y)
    assert flux.shape == (2, 3, 50) and payne.decode(model, y[0, 0]).shape == (50,)
    assert payne.decode(model, np.zeros((0, 25))).shape == (0, 50)
    assert_allclose(jax.jit(payne.decode)(model, y), flux, dtype=np.float32)
    assert_allclose(jax.vmap(payne.decode, in_axes=(None, 0))(model, y), flux, dtype=np.float32)
    s = payne.scale_labels(model, y[0, 0])
    jac = jax.jacfwd(lambda s: payne.decode_scaled(model, s))(s)
    eps = 1e-5
    fd = (_numpy_network(arrays, _unscale(arrays, s, eps)) - _numpy_network(arrays, _unscale(arrays, s, -eps))) / (
        2 * eps
    )
    assert_allclose(jac, fd.T, dtype=np.float32, scale=10)
    floats = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), model)
    grads = jax.grad(lambda m: jnp.sum(payne.decode(m, y)))(floats)
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    with pytest.raises(ValueError, match=r"labels: expected shape \(\.\.\., 25\)"):
        payne.decode(model, np.zeros((3, 5)))


def _unscale(arrays, s, eps):
    """Physical labels of ``s + eps e_m`` for every ``m``, rows ``(M, M)``."""
    s = np.asarray(s, np.float64) + eps * np.eye(s.shape[0])
    return (s + 0.5) * (arrays["x_max"] - arrays["x_min"]) + arrays["x_min"]


def test_model_checks_its_shapes(per_pixel_file, network_file):
    pp = payne.load(per_pixel_file[0])
    net = payne.load(network_file[0])
    with pytest.raises(ValueError, match=r"params.b0 \(40, 4\) \(expected \(40, 5\)\)"):
        payne.Model(pp.params._replace(b0=np.zeros((40, 4), np.float32)), pp.x_min, pp.x_max, pp.label_names)
    layers = (net.params[0], payne.Layer(np.zeros((16, 15), np.float32), net.params[1].b), net.params[2])
    with pytest.raises(ValueError, match=r"params\[1\].w \(16, 15\) \(expected \(16, 16\)\)"):
        payne.Model(layers, net.x_min, net.x_max, net.label_names)
    with pytest.raises(ValueError, match=r"x_min \(2,\) \(expected \(3,\)\)"):
        payne.Model(pp.params, pp.x_min[:2], pp.x_max, pp.label_names)
    with pytest.raises(ValueError, match="x_max: expected finite x_max > x_min"):
        payne.Model(pp.params, pp.x_max, pp.x_min, pp.label_names)
    with pytest.raises(TypeError, match="params: expected a payne.PerPixel or a tuple of payne.Layer"):
        payne.Model([net.params[0]], net.x_min, net.x_max, net.label_names)
    with pytest.raises(ValueError, match="label_names: expected a tuple of distinct str"):
        payne.Model(pp.params, pp.x_min, pp.x_max, ("A", "A", "B"))
    with pytest.raises(ValueError, match="wavelength: expected finite, positive, strictly increasing"):
        payne.Model(pp.params, pp.x_min, pp.x_max, pp.label_names, np.linspace(2.0, 1.0, 40))


# -- load errors --------------------------------------------------------------------------------


def _drop(arrays, *keys):
    return {k: v for k, v in arrays.items() if k not in keys}


def _with(arrays, **changes):
    return {**arrays, **changes}


def _nan(a):
    a = a.copy()
    a.flat[3] = np.nan
    return a


PP, NET = _per_pixel_arrays(), _network_arrays(m=3, hidden=6, n_pix=8)
BAD_FILES = {
    "neither format": ({"spectra": np.ones((2, 3))}, "missing \\['x_min', 'x_max'\\]"),
    "no weights": (_drop(PP, *[k for k in PP if k.startswith(("w_", "b_"))]), "expected w_array_0"),
    "missing x_max": (_drop(PP, "x_max"), "missing \\['x_max'\\]"),
    "per-pixel missing b_array_1": (_drop(PP, "b_array_1"), "missing \\['b_array_1'\\]"),
    "per-pixel extra array": (_with(PP, w_array_2=np.ones(40, np.float32)), "unexpected \\['w_array_2'\\]"),
    "network missing b_array_1": (_drop(NET, "b_array_1"), "missing \\['b_array_1'\\]"),
    "network gap": (_drop(NET, "w_array_1", "b_array_1"), "unexpected \\['b_array_2', 'w_array_2'\\]"),
    "network extra array": (_with(NET, wavelength=np.arange(8.0)), "found \\{'wavelength'\\}"),
    "w_array_0 4-D": (_with(PP, w_array_0=np.ones((40, 5, 3, 1), np.float32)), "found shape \\(40, 5, 3, 1\\)"),
    "per-pixel w_array_1 short": (_with(PP, w_array_1=PP["w_array_1"][:-1]), "w_array_1 \\(39, 5\\)"),
    "per-pixel wrong M": (_with(PP, x_min=PP["x_min"][:2], x_max=PP["x_max"][:2]), "w_array_0 \\(40, 5, 3\\)"),
    "network wrong input": (_with(NET, w_array_0=NET["w_array_0"][:, :2]), "w_array_0 \\(6, 2\\)"),
    "network bias 2-D": (_with(NET, b_array_2=NET["b_array_2"][:, None]), "b_array_2 \\(8, 1\\)"),
    "x_min 2-D": (_with(PP, x_min=PP["x_min"][None]), "x_min \\(1, 3\\)"),
    "NaN weights": (_with(PP, w_array_0=_nan(PP["w_array_0"])), "w_array_0 holds 1 NaN"),
    "inf bias": (_with(NET, b_array_1=NET["b_array_1"] * np.inf), "b_array_1 holds 6 NaN or infinite"),
    "integer weights": (_with(NET, w_array_2=NET["w_array_2"].astype(np.int32)), "w_array_2 is int32"),
    "x_max <= x_min": (_with(PP, x_max=np.r_[PP["x_max"][:2], PP["x_min"][2]]), "x_max > x_min .* label 2"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_load_refuses_a_bad_file_naming_it(tmp_path, case):
    arrays, what = BAD_FILES[case]
    path = _write(tmp_path / "bad.npz", arrays)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + what):
        payne.load(path)


@pytest.mark.parametrize("content", [b"not an archive", b"", np.ones(3)])
def test_load_refuses_a_file_that_is_not_an_npz(tmp_path, content):
    path = tmp_path / "model.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path.with_suffix(".npy"), content)
        path.with_suffix(".npy").rename(path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        payne.load(path)
    with pytest.raises(FileNotFoundError):
        payne.load(tmp_path / "absent.npz")


def test_load_refuses_names_and_grids_that_do_not_fit(per_pixel_file):
    with pytest.raises(ValueError, match="label_names: expected 3 names"):
        payne.load(per_pixel_file[0], label_names=("A", "B"))
    with pytest.raises(ValueError, match=r"wavelength: expected a real array of shape \(40,\)"):
        payne.load(per_pixel_file[0], wavelength=np.arange(39.0))


def test_default_names_and_grid(tmp_path):
    model = payne.load(_write(tmp_path / "pp.npz", _per_pixel_arrays(n_pix=7214, hidden=2, m=5)))
    assert model.label_names == payne.PER_PIXEL_LABEL_NAMES and model.wavelength.shape == (7214,)
    assert np.all(np.diff(model.wavelength) > 0) and 15160 < model.wavelength[0] < model.wavelength[-1] < 16940
    other = payne.load(_write(tmp_path / "net.npz", _network_arrays(m=4, n_pix=7)))
    assert other.label_names == ("label_0", "label_1", "label_2", "label_3") and other.wavelength is None


# -- predict_spectra ----------------------------------------------------------------------------


def test_predict_spectra_flags_missing_and_out_of_box_labels(per_pixel_file):
    path, arrays = per_pixel_file
    model = payne.load(path, label_names=("A", "B", "C"))
    y = _in_box(arrays, 6)
    y[4, 0] = arrays["x_max"][0] + 1.0  # outside the box
    ivar = np.ones_like(y)
    ivar[1, 2] = 0.0  # missing
    labels = Labels(y[:, ::-1], ivar=ivar[:, ::-1], names=("C", "B", "A"))
    pred = payne.predict_spectra(model, labels, progress=False)
    assert pred.flagged.tolist() == [False, True, False, False, True, False]
    flux, weight = np.asarray(pred.spectra.flux), np.asarray(pred.spectra.ivar)
    assert np.all(np.isfinite(flux)) and np.all(np.isfinite(weight))
    assert np.all(flux[pred.flagged] == 1.0) and np.all(weight[pred.flagged] == 0.0)
    good = ~pred.flagged
    assert np.all(weight[good] > 1e30)
    y32 = np.asarray(labels.select(("A", "B", "C")).values, np.float64)  # the container stores float32
    assert_allclose(flux[good], _numpy_per_pixel(arrays, y32[good]), dtype=np.float32)
    nan = y.copy()
    nan[1, 2] = np.nan
    assert payne.predict_spectra(model, nan, progress=False).flagged.tolist() == pred.flagged.tolist()
    out = payne.predict_spectra(model, y, extrapolate=True, progress=False)
    assert not out.flagged.any()
    assert_allclose(out.spectra.flux[4], _numpy_per_pixel(arrays, y[4:5])[0], dtype=np.float32)


def test_predict_spectra_refuses_bad_labels(per_pixel_file):
    model = payne.load(per_pixel_file[0], label_names=("A", "B", "C"))
    with pytest.raises(ValueError, match="labels: expected at least one star, found 0"):
        payne.predict_spectra(model, np.zeros((0, 3)), progress=False)
    with pytest.raises(ValueError, match=r"labels: expected shape \(n_stars, 3\)"):
        payne.predict_spectra(model, np.zeros((2, 4)), progress=False)
    with pytest.raises(ValueError, match="labels: expected the model's labels"):
        payne.predict_spectra(model, Labels(np.zeros((2, 2)), ivar=np.ones((2, 2)), names=("A", "B")))
    with pytest.raises(ValueError, match="labels: expected finite values"):
        payne.predict_spectra(model, np.full((2, 3), np.inf), progress=False)
    with pytest.raises(TypeError, match="model: expected a payne.Model"):
        payne.predict_spectra("model.npz", np.zeros((2, 3)))
    with pytest.raises(TypeError, match="extrapolate: expected a bool"):
        payne.predict_spectra(model, np.zeros((2, 3)), extrapolate="yes")


def test_predict_spectra_compiles_once_per_chunk_shape(network_file, tmp_path):
    path, arrays = network_file
    model = payne.load(path)
    twin = payne.load(_write(tmp_path / "twin.npz", _network_arrays(seed=7)))  # same shapes, other weights
    first = payne.predict_spectra(model, _in_box(arrays, 10), chunk_size=4, progress=False)
    with count_compiles() as compiles:
        second = payne.predict_spectra(model, _in_box(arrays, 7, seed=3), chunk_size=4, progress=False)
        third = payne.predict_spectra(twin, _in_box(arrays, 5, seed=4), chunk_size=4, progress=False)
    assert len(compiles) == 0, f"later predict_spectra calls compiled {len(compiles)} time(s)"
    assert first.spectra.n_stars == 10 and second.spectra.n_stars == 7 and third.spectra.n_stars == 5
    y = _in_box(arrays, 7, seed=3)
    assert_allclose(second.spectra.flux, _numpy_network(arrays, y), dtype=np.float32)
