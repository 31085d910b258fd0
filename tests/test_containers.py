"""Spectra/Labels: conversion rules, validation, pytree behaviour, splitting."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jaxspec.data.containers import Labels, Spectra, concatenate, default_float, train_test_split

WAVE = np.array([15100.0, 15100.2, 15100.4, 15100.6])


def _spectra(n=5, p=4, seed=0):
    rng = np.random.default_rng(seed)
    return Spectra(1 + 0.1 * rng.normal(size=(n, p)), err=np.full((n, p), 0.05), wavelength=WAVE[:p])


def test_err_nan_and_mask_become_zero_weight():
    flux = np.array([[1.0, np.nan, 0.9, 1.1], [0.8, 0.7, np.inf, 1.0]])
    err = np.array([[0.1, 0.1, np.nan, 0.2], [np.inf, 0.5, 0.1, 0.1]])
    mask = np.array([False, False, False, True])
    s = Spectra(flux, err=err, mask=mask, wavelength=WAVE)
    expected_ivar = np.array([[100.0, 0.0, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0]])
    np.testing.assert_allclose(s.ivar, expected_ivar, rtol=1e-6)
    np.testing.assert_array_equal(s.flux, np.array([[1.0, 1.0, 0.9, 1.1], [0.8, 0.7, 1.0, 1.0]], s.flux.dtype))
    assert np.all(np.isfinite(s.flux))
    np.testing.assert_array_equal(s.mask, expected_ivar == 0)
    assert np.isinf(s.err[0, 1]) and s.err[0, 0] == pytest.approx(0.1)
    assert s.flux.dtype == default_float()


def test_one_star_is_promoted_and_indexing_stays_two_dimensional():
    s = Spectra(np.ones(4), ivar=np.ones(4), wavelength=WAVE)
    assert s.flux.shape == (1, 4)
    big = _spectra(6)
    assert big[2].flux.shape == (1, 4)
    np.testing.assert_array_equal(big[2].flux[0], big.flux[2])
    assert big[1:4].n_stars == 3
    assert big[np.array([True, False] * 3)].n_stars == 3
    assert big[[5, 0]].flux[1, 0] == big.flux[0, 0]
    with pytest.raises(TypeError, match="indexed by star only"):
        big[0, 1]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"ivar": np.ones((2, 3)), "err": np.ones((2, 3))}, ValueError, "either ivar or err"),
        ({}, ValueError, "give ivar= .* or err="),
        ({"err": -np.ones((2, 3))}, ValueError, "err: expected errors >= 0.*first at star 0, column 0"),
        ({"err": np.zeros((2, 3))}, ValueError, "err: expected errors > 0"),
        ({"ivar": -np.ones((2, 3))}, ValueError, "ivar: expected inverse variances >= 0"),
        ({"ivar": np.full((2, 3), np.inf)}, ValueError, "ivar: expected finite"),
        ({"ivar": np.ones((2, 4))}, ValueError, r"ivar: expected shape \(2, 3\)"),
        ({"ivar": np.ones((2, 3)), "mask": np.ones(3)}, TypeError, "mask: expected a boolean"),
        ({"ivar": np.ones((2, 3)), "mask": np.ones(4, bool)}, ValueError, "mask: expected shape"),
        ({"ivar": np.ones((2, 3)), "wavelength": [1.0, 2.0]}, ValueError, r"wavelength: expected shape \(3,\)"),
        ({"ivar": np.ones((2, 3)), "wavelength": [3.0, 2.0, 1.0]}, ValueError, "strictly increasing"),
        ({"ivar": np.ones((2, 3)), "wavelength": [-1.0, 2.0, 3.0]}, ValueError, "positive"),
    ],
)
def test_spectra_rejects_bad_input_with_named_argument(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Spectra(np.ones((2, 3)), **kwargs)


def test_spectra_rejects_bad_flux():
    with pytest.raises(TypeError, match="flux: expected a real numeric array"):
        Spectra(np.array([["a", "b"]]), ivar=np.ones((1, 2)))
    with pytest.raises(TypeError, match="flux: expected a real numeric array"):
        Spectra(np.ones((1, 2)) + 1j, ivar=np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"flux: expected a 2-D array .* found shape \(2, 2, 2\)"):
        Spectra(np.ones((2, 2, 2)), ivar=np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="star.* no finite pixel .* row 1"):
        Spectra(np.array([[1.0, 2.0], [np.nan, np.nan]]), ivar=np.ones((2, 2)))


def test_labels_validation_and_missing_values():
    lab = Labels(
        [[4800.0, 2.5, np.nan], [5000.0, -9.0, 0.1]],
        err=[[50.0, 0.1, 0.02], [50.0, np.inf, 0.02]],
        names=["TEFF", "LOGG", "MG_FE"],
    )
    np.testing.assert_array_equal(lab.observed, [[True, True, False], [True, False, True]])
    assert np.all(np.isfinite(lab.values))
    assert np.isnan(lab.as_nan()[0, 2]) and lab.as_nan()[1, 2] == pytest.approx(0.1)
    assert lab.select(["MG_FE", "TEFF"]).names == ("MG_FE", "TEFF")
    np.testing.assert_array_equal(lab.select(["MG_FE", "TEFF"]).values[:, 1], lab.values[:, 0])
    with pytest.raises(KeyError, match="no label 'FE_H'"):
        lab.index("FE_H")
    with pytest.raises(ValueError, match="names: expected 3 names"):
        Labels(np.ones((2, 3)), ivar=np.ones((2, 3)), names=["a", "b"])
    with pytest.raises(ValueError, match="names: expected unique"):
        Labels(np.ones((2, 2)), ivar=np.ones((2, 2)), names=["a", "a"])
    with pytest.raises(TypeError, match="names: expected a sequence of str"):
        Labels(np.ones((2, 2)), ivar=np.ones((2, 2)), names="ab")
    # A star with every label missing is legitimate (a test star).
    assert Labels([[np.nan, np.nan]], err=[[1.0, 1.0]], names=["a", "b"]).observed.sum() == 0


def test_block_conversion_matches_whole_array_and_reports_global_rows(monkeypatch):
    from jaxspec.data import _checks

    rng = np.random.default_rng(5)
    flux = rng.normal(1, 0.1, size=(37, 6))
    err = rng.uniform(0.01, 0.1, size=(37, 6))
    flux[rng.random(flux.shape) < 0.1] = np.nan
    whole = Spectra(flux, err=err)
    monkeypatch.setattr(_checks, "_BLOCK_ELEMENTS", 12)  # two rows per block
    blocked = Spectra(flux, err=err)
    np.testing.assert_array_equal(blocked.flux, whole.flux)
    np.testing.assert_array_equal(blocked.ivar, whole.ivar)
    err[30, 4] = -1.0
    with pytest.raises(ValueError, match="first at star 30, column 4"):
        Spectra(flux, err=err)
    flux[33] = np.nan
    err[30, 4] = 0.1
    with pytest.raises(ValueError, match="no finite pixel .* row 33"):
        Spectra(flux, err=err)


def test_immutable():
    s = _spectra()
    with pytest.raises(AttributeError, match="immutable"):
        s.flux = np.zeros((5, 4))
    lab = Labels(np.ones((2, 2)), ivar=np.ones((2, 2)), names=["a", "b"])
    with pytest.raises(AttributeError, match="immutable"):
        lab.names = ("c", "d")


def test_pytree_jit_vmap_and_static_grid():
    s = _spectra()
    leaves, treedef = jax.tree_util.tree_flatten(s)
    assert len(leaves) == 2
    chi2 = jax.jit(lambda sp: jnp.sum(sp.ivar * (sp.flux - 1.0) ** 2))(s)
    np.testing.assert_allclose(chi2, np.sum(s.ivar * (s.flux - 1.0) ** 2), rtol=1e-5)

    def one_star(sp):
        assert sp.flux.shape == (4,)
        np.testing.assert_array_equal(sp.wavelength, WAVE)
        return jnp.sum(sp.flux * sp.ivar) / jnp.sum(sp.ivar)

    per_star = jax.vmap(one_star)(s)
    np.testing.assert_allclose(per_star, np.average(s.flux, weights=s.ivar, axis=1), rtol=1e-5)
    doubled = jax.tree_util.tree_map(lambda x: 2 * x, s)
    assert isinstance(doubled, Spectra) and doubled.wavelength is s.wavelength
    # Same grid -> same treedef -> jit does not retrace.
    assert jax.tree_util.tree_structure(_spectra(seed=1)) == treedef
    other = Spectra(np.ones((5, 4)), ivar=np.ones((5, 4)), wavelength=WAVE + 1)
    assert jax.tree_util.tree_structure(other) != treedef


def test_concatenate_and_errors():
    a, b = _spectra(3), _spectra(2, seed=1)
    c = concatenate([a, b])
    np.testing.assert_array_equal(c.flux, np.concatenate([a.flux, b.flux]))
    other = Spectra(np.ones((1, 4)), ivar=np.ones((1, 4)), wavelength=WAVE + 1)
    with pytest.raises(ValueError, match=r"items\[1\]: wavelength grid differs"):
        concatenate([a, other])
    la = Labels(np.ones((2, 2)), ivar=np.ones((2, 2)), names=["a", "b"])
    lb = Labels(np.ones((2, 2)), ivar=np.ones((2, 2)), names=["a", "c"])
    with pytest.raises(ValueError, match="label names"):
        concatenate([la, lb])
    with pytest.raises(TypeError, match="all of one type"):
        concatenate([a, la])


def test_split_is_reproducible_disjoint_and_aligned():
    n = 50
    flux = np.arange(n, dtype=float)[:, None] * np.ones((1, 4))
    s = Spectra(flux, ivar=np.ones((n, 4)), wavelength=WAVE)
    lab = Labels(np.arange(n, dtype=float)[:, None], ivar=np.ones((n, 1)), names=["id"])
    s_tr, s_te, l_tr, l_te = train_test_split(jax.random.key(3), s, lab, test_fraction=0.2)
    assert (s_tr.n_stars, s_te.n_stars) == (40, 10)
    np.testing.assert_array_equal(s_tr.flux[:, 0], l_tr.values[:, 0])
    np.testing.assert_array_equal(s_te.flux[:, 0], l_te.values[:, 0])
    ids = np.concatenate([l_tr.values[:, 0], l_te.values[:, 0]])
    np.testing.assert_array_equal(np.sort(ids), np.arange(n))
    again = train_test_split(jax.random.key(3), s, test_fraction=0.2)
    np.testing.assert_array_equal(again[1].flux, s_te.flux)
    other = train_test_split(jax.random.key(4), s, test_fraction=0.2)
    assert not np.array_equal(other[1].flux, s_te.flux)
    with pytest.raises(ValueError, match=r"items\[1\]: expected 50 stars"):
        train_test_split(jax.random.key(0), s, lab[:10])
    with pytest.raises(ValueError, match="test_fraction"):
        s.split(jax.random.key(0), test_fraction=1.5)


def test_float64_under_x64():
    with jax.enable_x64(True):
        s = Spectra(np.ones((2, 3)), ivar=np.ones((2, 3)))
        assert s.flux.dtype == np.float64
    assert Spectra(np.ones((2, 3)), ivar=np.ones((2, 3)), dtype=np.float64).ivar.dtype == np.float64


_floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flux=hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5), elements=_floats),
    weight=hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5), elements=_floats),
    use_err=st.booleans(),
)
def test_random_arrays_give_valid_containers_or_clear_errors(flux, weight, use_err):
    kw = {"err": weight} if use_err else {"ivar": weight}
    try:
        s = Spectra(flux, **kw)
    except (ValueError, TypeError) as exc:
        assert str(exc).split(":")[0] in {"flux", "err", "ivar", "mask", "wavelength"} or "give" in str(exc)
        return
    f2 = np.atleast_2d(flux)
    assert s.flux.shape == f2.shape
    assert np.all(np.isfinite(s.flux))
    assert np.all(np.isfinite(s.ivar)) and np.all(s.ivar >= 0)
    assert np.all(s.ivar[~np.isfinite(f2)] == 0)
    try:
        lab = Labels(flux, names=[f"l{i}" for i in range(f2.shape[-1])], **kw)
    except (ValueError, TypeError) as exc:
        assert str(exc).split(":")[0] in {"values", "err", "ivar", "names"}
        return
    assert np.all(np.isfinite(lab.values)) and np.all(lab.ivar >= 0)


# issue 14: hostile or careless input to the containers ---------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.complex64, bool, "not a dtype"])
def test_issue14_non_float_storage_dtype_is_refused(dtype):
    # int8 turned Teff 5000 into -120 and int32 turned an ivar of 1e-4 into 0 ("missing"), silently
    with pytest.raises(TypeError, match=r"dtype: expected a floating-point dtype \(float16, float32 or float64\)"):
        Labels([[5000.0]], ivar=[[1e-4]], names=["TEFF"], dtype=dtype)
    with pytest.raises(TypeError, match="dtype: expected a floating-point dtype"):
        Spectra(np.ones((1, 2)), ivar=np.ones((1, 2)), dtype=dtype)


def test_issue14_bool_and_complex_arrays_are_refused_naming_the_field():
    with pytest.raises(TypeError, match="values: expected a real numeric array, found dtype bool"):
        Labels([[True, False]], ivar=np.ones((1, 2)), names=["a", "b"])
    with pytest.raises(TypeError, match="ivar: expected a real numeric array, found dtype bool"):
        Spectra(np.ones((1, 2)), ivar=np.array([[True, False]]))
    with pytest.raises(TypeError, match="err: expected a real numeric array, found dtype complex64"):
        Labels([[1.0]], err=np.ones((1, 1), np.complex64), names=["a"])


def test_issue14_integer_input_is_converted_exactly_or_refused():
    lab = Labels(np.array([[5000, -3]], np.int16), ivar=np.array([[2, 0]], np.uint8), names=["TEFF", "X"])
    assert lab.values.dtype == default_float()
    assert lab.values.tolist() == [[5000.0, 0.0]] and lab.ivar.tolist() == [[2.0, 0.0]]
    s = Spectra(np.array([[2**24, -(2**30), 7]], np.int64), ivar=np.ones((1, 3), np.int32))  # exact in float32
    assert s.flux.tolist() == [[2.0**24, -(2.0**30), 7.0]]
    with pytest.raises(
        ValueError, match=r"flux: expected integers that float32 holds exactly, found 16777217 first at"
    ):
        Spectra(np.array([[1, 16777217]], np.int32), ivar=np.ones((1, 2)), dtype=np.float32)
    with pytest.raises(ValueError, match=r"ivar: expected integers that float16 holds exactly, found 65535"):
        Spectra(np.ones((1, 1)), ivar=np.array([[65535]], np.uint16), dtype=np.float16)
    big = np.array([[2**53 + 1]], np.int64)
    with pytest.raises(
        ValueError, match="values: expected integers that float64 holds exactly, found 9007199254740993"
    ):
        Labels(big, ivar=[[1.0]], names=["a"], dtype=np.float64)


def test_issue14_float16_input_is_upcast_and_casts_down_are_refused():
    s = Spectra(np.array([[0.5, 65504.0]], np.float16), ivar=np.array([[1.0, 4.0]], np.float16))
    assert s.flux.dtype == default_float() and s.flux.tolist() == [[0.5, 65504.0]]
    with pytest.raises(ValueError, match="values: a value beyond the range of float16"):
        Labels([[1e5]], ivar=[[1.0]], names=["a"], dtype=np.float16)
    with pytest.raises(ValueError, match="flux: a value beyond the range of float32"):
        Spectra([[1.0, 1e39]], ivar=np.ones((1, 2)), dtype=np.float32)
    # a positive weight that the dtype rounds to 0 would turn a measured label into a missing one
    with pytest.raises(ValueError, match=r"ivar: expected weights that float16 can hold, found an inverse variance"):
        Labels([[5000.0]], ivar=[[1e-9]], names=["TEFF"], dtype=np.float16)
    with pytest.raises(ValueError, match=r"err: expected weights that float32 can hold, found 1/err\*\*2 of 1e-60"):
        Labels([[5000.0]], err=[[1e30]], names=["TEFF"], dtype=np.float32)
    assert Labels([[5000.0]], err=[[1e30]], names=["TEFF"], dtype=np.float64).observed.all()


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf])
def test_issue14_non_finite_fill_value_is_refused(fill):
    with pytest.raises(ValueError, match="fill_value: expected a finite value, found"):
        Spectra([[np.nan, 1.0]], ivar=np.ones((1, 2)), fill_value=fill)


def test_issue14_fill_value_must_fit_the_dtype_and_be_a_number():
    with pytest.raises(ValueError, match="fill_value: expected a value within the range of float16, found 1000000.0"):
        Spectra([[np.nan, 1.0]], ivar=np.ones((1, 2)), fill_value=1e6, dtype=np.float16)
    with pytest.raises(TypeError, match="fill_value: expected a number, found str"):
        Spectra([[np.nan, 1.0]], ivar=np.ones((1, 2)), fill_value="1")


def test_issue14_select_refuses_duplicates_unknown_and_bare_names():
    lab = Labels(np.ones((2, 3)), ivar=np.ones((2, 3)), names=["TEFF", "LOGG", "FE_H"])
    with pytest.raises(ValueError, match=r"names: expected each label once, found \['TEFF'\] more than once"):
        lab.select(["TEFF", "LOGG", "TEFF"])
    with pytest.raises(ValueError, match=r"names: expected label names among .*found unknown \['MG_FE'\]"):
        lab.select(["TEFF", "MG_FE"])
    with pytest.raises(TypeError, match="names: expected a sequence of label names"):
        lab.select("TEFF")  # would have selected the columns 'T', 'E', 'F', 'F'
    with pytest.raises(ValueError, match="names: expected at least one label name"):
        lab.select([])


def test_issue14_train_test_split_checks_its_arguments():
    s = Spectra(np.ones((6, 2)), ivar=np.ones((6, 2)))
    with pytest.raises(TypeError, match=r"key: expected a jax.random key .*found int 0; for a seed use"):
        train_test_split(0, s)
    with pytest.raises(TypeError, match="key: expected a jax.random key .*found NoneType None"):
        s.split(None)
    with pytest.raises(TypeError, match="test_fraction: expected a number, found str '0.2'"):
        train_test_split(jax.random.key(0), s, test_fraction="0.2")
    for bad in (0.0, 1.0, np.nan, -0.5):
        with pytest.raises(ValueError, match=r"test_fraction: expected a finite value > 0 and < 1"):
            train_test_split(jax.random.key(0), s, test_fraction=bad)
    with pytest.raises(ValueError, match="items: expected at least one container"):
        train_test_split(jax.random.key(0))
    lab = Labels(np.ones((5, 1)), ivar=np.ones((5, 1)), names=["a"])
    with pytest.raises(ValueError, match=r"items\[1\]: expected 6 stars \(as items\[0\]\), found 5; lengths: \[6, 5\]"):
        train_test_split(jax.random.key(0), s, lab)
    with pytest.raises(TypeError, match=r"items\[1\]: expected Spectra, Labels or an array of stars, found int"):
        train_test_split(jax.random.key(0), s, 3)


# issue 14: check_key (jaxspec/data/_checks.py, used by train_test_split and every fit) refuses without crashing
@pytest.mark.parametrize(
    ("key", "exc", "match"),
    [
        (None, TypeError, r"key: expected a jax.random key \(jax.random.key\(seed\)\), found NoneType None"),
        (7, TypeError, r"found int 7; for a seed use jax.random.key\(7\)"),
        (
            np.zeros(2, np.uint32),
            TypeError,
            r"found a numpy array \(dtype uint32, shape \(2,\)\); a numpy array is not",
        ),
        (np.zeros(2, np.float32), TypeError, r"found a numpy array \(dtype float32, shape \(2,\)\)"),
        (jnp.zeros(2, jnp.float32), TypeError, r"found a jax array \(dtype float32, shape \(2,\)\)"),
        ("seed", TypeError, "found str 'seed'"),
        (jax.random.split(jax.random.key(0), 3), ValueError, r"key: expected a single key, found shape \(3,\)"),
        (jax.random.split(jax.random.PRNGKey(0), 3), ValueError, r"key: expected a single key, found shape \(3, 2\)"),
    ],
)
def test_issue14_check_key_refuses_non_keys_and_batches(key, exc, match):
    from jaxspec.data._checks import check_key

    with pytest.raises(exc, match=match):
        check_key(key)


def test_issue14_check_key_accepts_single_new_and_legacy_keys():
    from jaxspec.data._checks import check_key

    new, legacy = jax.random.key(0), jax.random.PRNGKey(0)
    assert check_key(new) is new and check_key(legacy) is legacy
    assert jax.jit(lambda k: jax.random.normal(check_key(k)))(new).shape == ()  # tracers of keys pass too
