"""Train steps and fit: compile once, hand-computed updates, group ordering, early stopping, exact resume."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxspec import Spectra
from jaxspec.optim.sharding import data_mesh
from jaxspec.optim.train import (
    Checkpoint,
    Group,
    init_groups,
    make_multi_step,
    make_train_step,
    make_validation,
)
from jaxspec.optim.train import train_loop as fit
from tests.conftest import assert_allclose

DTYPES = [
    np.float32,
    pytest.param(
        np.float64, marks=pytest.mark.skipif(not jax.config.jax_enable_x64, reason="float64 needs JAX_ENABLE_X64=1")
    ),
]


class Linear(NamedTuple):
    w: jax.Array
    b: jax.Array


def mse(params, batch, key):
    x, y = batch
    return jnp.mean((x @ params.w + params.b - y) ** 2)


def regression(n=48, d=3, dtype=np.float32, seed=0, noise=0.1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(dtype)
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 + noise * rng.normal(size=n)).astype(dtype)
    return x, y


def zeros(d=3, dtype=np.float32):
    return Linear(jnp.zeros(d, dtype), jnp.zeros((), dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_step_equals_hand_gradient(dtype):
    x, y = regression(dtype=dtype)
    params = Linear(jnp.asarray([0.2, 0.1, -0.3], dtype), jnp.asarray(0.5, dtype))
    lr = 0.1
    step = make_train_step(mse, optax.sgd(lr))
    new, _, metrics = step(params, optax.sgd(lr).init(params), (x, y), jax.random.key(0))

    w, b = np.asarray(params.w, np.float64), float(params.b)
    r = x.astype(np.float64) @ w + b - y
    grad_w, grad_b = 2 * x.T.astype(np.float64) @ r / len(y), 2 * r.mean()
    assert new.w.dtype == dtype and new.b.dtype == dtype
    assert_allclose(new.w, w - lr * grad_w, dtype=dtype)
    assert_allclose(new.b, b - lr * grad_b, dtype=dtype)
    assert_allclose(metrics["loss"], np.mean(r**2), dtype=dtype)
    assert_allclose(metrics["grad_norm"], np.sqrt(np.sum(grad_w**2) + grad_b**2), dtype=dtype)


def test_aux_metrics_are_returned():
    def loss(params, batch, key):
        value = mse(params, batch, key)
        return value, {"rmse": jnp.sqrt(value)}

    params = zeros()
    step = make_train_step(loss, optax.adam(1e-2), has_aux=True)
    _, _, metrics = step(params, optax.adam(1e-2).init(params), regression(), jax.random.key(0))
    assert set(metrics) == {"loss", "rmse", "grad_norm"}
    assert_allclose(metrics["rmse"] ** 2, metrics["loss"])


def test_train_step_does_not_recompile():
    traces = []

    def loss(params, batch, key):
        traces.append(1)
        return mse(params, batch, key) + 0.0 * jax.random.normal(key)

    opt = optax.adam(1e-2)
    step = make_train_step(loss, opt)
    params, state = zeros(), opt.init(zeros())
    x, y = regression()
    for i in range(3):
        params, state, _ = step(params, state, (x[i : i + 8], y[i : i + 8]), jax.random.key(i))
    assert len(traces) == 1
    assert step._cache_size() == 1


def test_multi_step_does_not_recompile():
    traces = []

    def loss_a(params, batch, key):
        traces.append("a")
        return jnp.sum((params["a"] - batch) ** 2)

    groups = [Group("a", loss_a, optax.sgd(0.1)), Group("b", lambda p, b, k: jnp.sum(p["b"] ** 2), optax.adam(0.1))]
    params = {"a": jnp.ones(2), "b": jnp.ones(3)}
    step, state = make_multi_step(groups), init_groups(groups, params)
    for i in range(3):
        params, state, _ = step(params, state, jnp.full(2, float(i)), jax.random.key(i))
    assert traces == ["a"]
    assert step._cache_size() == 1


class Pair(NamedTuple):
    a: jax.Array
    b: jax.Array


@pytest.mark.parametrize("dtype", DTYPES)
def test_multi_step_updates_b_at_the_new_a(dtype):
    # L_A = (a - b)^2, L_B = (b - 2a)^2 with SGD: B must see A's updated value.
    lr = 0.1
    groups = [
        Group("a", lambda p, batch, k: jnp.sum((p.a - p.b) ** 2), optax.sgd(lr)),
        Group("b", lambda p, batch, k: jnp.sum((p.b - 2 * p.a) ** 2), optax.sgd(lr)),
    ]
    a0, b0 = np.array([1.0, -0.5]), np.array([3.0, 0.25])
    params = Pair(jnp.asarray(a0, dtype), jnp.asarray(b0, dtype))
    step = make_multi_step(groups)
    new, state, metrics = step(params, init_groups(groups, params), jnp.zeros(1, dtype), jax.random.key(0))

    a1 = a0 - lr * 2 * (a0 - b0)
    b1 = b0 - lr * 2 * (b0 - 2 * a1)
    stale_b1 = b0 - lr * 2 * (b0 - 2 * a0)
    assert not np.allclose(b1, stale_b1)
    assert new.a.dtype == dtype and len(state) == 2
    assert_allclose(new.a, a1, dtype=dtype)
    assert_allclose(new.b, b1, dtype=dtype)
    assert_allclose(metrics["a/loss"], np.sum((a0 - b0) ** 2), dtype=dtype)
    assert_allclose(metrics["b/loss"], np.sum((b0 - 2 * a1) ** 2), dtype=dtype)
    assert_allclose(metrics["loss"], metrics["a/loss"], dtype=dtype)
    assert_allclose(metrics["b/grad_norm"], np.linalg.norm(2 * (b0 - 2 * a1)), dtype=dtype)


def test_multi_step_gives_each_group_its_own_key():
    seen = {}

    def loss(name):
        def f(p, batch, key):
            return jnp.sum(p[name]) * jax.random.uniform(key)

        return f

    groups = [Group("g", loss("g"), optax.sgd(1.0)), Group("c", loss("c"), optax.sgd(1.0))]
    params = {"g": jnp.zeros(()), "c": jnp.zeros(())}
    _, _, metrics = make_multi_step(groups)(params, init_groups(groups, params), jnp.zeros(1), jax.random.key(3))
    for i, name in enumerate(("g", "c")):
        seen[name] = float(jax.random.uniform(jax.random.fold_in(jax.random.key(3), i)))
        assert_allclose(metrics[f"{name}/grad_norm"], seen[name])
    assert seen["g"] != seen["c"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_multi_step_hands_the_first_groups_values_to_the_next(dtype):
    # A passes a*b computed before its update; B's loss (b - handoff)^2 must use that stale value,
    # and no gradient may flow from B's loss into A through it.
    lr = 0.1

    def loss_a(p, batch, k):
        return jnp.sum((p.a - p.b) ** 2), ({"seen": jnp.sum(p.a)}, p.a * p.b)

    groups = [
        Group("a", loss_a, optax.sgd(lr), has_aux=True, passes=True),
        Group("b", lambda p, batch, k, prod: jnp.sum((p.b - prod) ** 2), optax.sgd(lr)),
    ]
    a0, b0 = np.array([1.0, -0.5]), np.array([3.0, 0.25])
    params = Pair(jnp.asarray(a0, dtype), jnp.asarray(b0, dtype))
    state = init_groups(groups, params)
    new, _, metrics = make_multi_step(groups)(params, state, jnp.zeros(1, dtype), jax.random.key(0))
    a1 = a0 - lr * 2 * (a0 - b0)
    b1 = b0 - lr * 2 * (b0 - a0 * b0)
    assert_allclose(new.a, a1, dtype=dtype)
    assert_allclose(new.b, b1, dtype=dtype)
    assert_allclose(metrics["a/seen"], a0.sum(), dtype=dtype)
    assert "a/__handoff__" not in metrics and not any("handoff" in k for k in metrics)
    with pytest.raises(ValueError, match="has_aux"):
        make_multi_step([Group("a", loss_a, optax.sgd(lr), passes=True), groups[1]])
    with pytest.raises(ValueError, match="last group"):
        make_multi_step([groups[1]._replace(passes=True, has_aux=True)])


def test_unpaired_data_cycles_the_second_set_with_fresh_permutations():
    # first: 10 rows, second: 4 rows, batch 3 -> 3 steps a epoch, 9 rows of second drawn from 3 permutations.
    seen = []

    def loss(p, batch, key):
        jax.debug.callback(lambda a, b: seen.append((np.asarray(a), np.asarray(b))), batch.first, batch.second)
        return jnp.sum(p**2)

    first, second = np.arange(10.0), 100.0 + np.arange(4.0)
    from jaxspec.optim.train import Unpaired

    opt = optax.sgd(0.1)
    p = jnp.ones(())
    fit(make_train_step(loss, opt), p, opt.init(p), Unpaired(first, second), key=jax.random.key(2), epochs=2,
        batch_size=3, progress=False)  # fmt: skip
    assert len(seen) == 6
    for epoch in range(2):
        a = np.concatenate([s[0] for s in seen[3 * epoch : 3 * epoch + 3]])
        b = np.concatenate([s[1] for s in seen[3 * epoch : 3 * epoch + 3]])
        assert len(set(a.tolist())) == 9 and set(a.tolist()) <= set(first.tolist())
        assert sorted(b[:4].tolist()) == sorted(second.tolist())  # a whole permutation before any repeat
        assert sorted(b[4:8].tolist()) == sorted(second.tolist())
    validation = make_validation(lambda p, b, k: jnp.mean(b.second) - jnp.mean(b.first), Unpaired(first, second),
                                 batch_size=4)  # fmt: skip
    rows2 = 100.0 + np.arange(10) % 4
    assert_allclose(validation(p), np.mean(rows2) - np.mean(first))
    with pytest.raises(ValueError, match="data.second"):
        fit(make_train_step(loss, opt), p, opt.init(p), Unpaired(first, second), key=jax.random.key(2), epochs=1,
            batch_size=5, progress=False)  # fmt: skip


def test_multi_step_bad_groups():
    opt = optax.sgd(1.0)
    with pytest.raises(ValueError, match="groups"):
        make_multi_step([])
    with pytest.raises(ValueError, match="distinct"):
        make_multi_step([Group("a", mse, opt), Group("a", mse, opt)])
    with pytest.raises(TypeError, match=r"groups\[0\].optimizer"):
        make_multi_step([Group("a", mse, "sgd")])
    with pytest.raises(ValueError, match="no field 'c'"):
        init_groups([Group("c", mse, opt)], Pair(jnp.zeros(1), jnp.zeros(1)))


def test_step_bad_inputs():
    with pytest.raises(TypeError, match="optimizer"):
        make_train_step(mse, object())
    with pytest.raises(TypeError, match="loss_fn"):
        make_train_step(None, optax.sgd(1.0))
    step = make_train_step(lambda p, b, k: p * b, optax.sgd(1.0))
    with pytest.raises(ValueError, match="scalar loss"):
        step(jnp.ones(2), optax.sgd(1.0).init(jnp.ones(2)), jnp.ones(2), jax.random.key(0))


@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_linear_regression_reaches_least_squares(dtype):
    x, y = regression(n=40, dtype=dtype)
    opt = optax.sgd(0.2)
    result = fit(
        make_train_step(mse, opt), zeros(dtype=dtype), opt.init(zeros(dtype=dtype)), (x, y),
        key=jax.random.key(0), epochs=300, batch_size=40, progress=False,
    )  # fmt: skip
    design = np.column_stack([x, np.ones(len(y))]).astype(np.float64)
    solution = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)[0]
    assert_allclose(result.params.w, solution[:3], dtype=dtype, scale=4)
    assert_allclose(result.params.b, solution[3], dtype=dtype, scale=4)
    assert result.history["loss"].shape == (300,) and result.history["loss"].dtype == dtype
    assert result.history["loss"][-1] < result.history["loss"][0]
    assert not result.converged and result.best_epoch is None and result.best_params is None


def test_fit_minibatches_noiseless_regression_and_memmap(tmp_path):
    x, y = regression(n=50, noise=0.0)
    opt = optax.adam(0.05)
    kwargs = {"key": jax.random.key(1), "epochs": 60, "batch_size": 8, "progress": False}
    step = make_train_step(mse, opt)
    in_memory = fit(step, zeros(), opt.init(zeros()), (x, y), **kwargs)
    assert_allclose(in_memory.params.w, [1.0, -2.0, 0.5], scale=20)

    xm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=x.dtype, shape=x.shape)
    xm[:] = x
    xm.flush()
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    from_disk = fit(step, zeros(), opt.init(zeros()), (xm, y), **kwargs)
    np.testing.assert_array_equal(from_disk.params.w, in_memory.params.w)
    np.testing.assert_array_equal(from_disk.history["loss"], in_memory.history["loss"])


def test_fit_steps_per_call_equals_one_step_per_call_and_compiles_once():
    traces = []

    def loss(params, batch, key):
        traces.append(1)
        return mse(params, batch, key) + 1e-3 * jax.random.normal(key)  # the step keys must match too

    x, y = regression(n=50)
    opt = optax.sgd(0.05, momentum=0.9)
    kwargs = {"key": jax.random.key(1), "epochs": 5, "batch_size": 8, "progress": False}
    one = fit(make_train_step(loss, opt), zeros(), opt.init(zeros()), (x, y), **kwargs)
    n_traces = len(traces)
    step = make_train_step(loss, opt)
    # 6 steps per epoch: one call of 4 and two single steps, on host and on device data
    grouped = fit(step, zeros(), opt.init(zeros()), (x, y), steps_per_call=4, **kwargs)
    on_device = fit(step, zeros(), opt.init(zeros()), (jnp.asarray(x), jnp.asarray(y)), steps_per_call=4, **kwargs)
    for res in (grouped, on_device):
        assert_allclose(res.params.w, one.params.w, scale=10)
        assert_allclose(res.history["loss"], one.history["loss"], scale=10)
    assert len(traces) - n_traces == 1  # traced once: the scanned call and the single steps share the trace
    with pytest.raises(ValueError, match="steps_per_call"):
        fit(step, zeros(), opt.init(zeros()), (x, y), steps_per_call=0, **kwargs)
    mesh_step = make_train_step(loss, opt, mesh=data_mesh())
    with pytest.raises(ValueError, match="without a mesh"):
        fit(mesh_step, zeros(), opt.init(zeros()), (x, y), steps_per_call=2, **kwargs)


class Counter(NamedTuple):
    t: jax.Array


def planted_run(curve, patience, **kwargs):
    # SGD with lr 1 on loss -t adds 1 per step; one step per epoch, so t = epoch + 1 after each epoch.
    opt = optax.sgd(1.0)
    curve = jnp.asarray(curve)
    params = Counter(jnp.zeros(()))
    return fit(
        make_train_step(lambda p, b, k: -p.t, opt), params, opt.init(params), jnp.zeros((4, 1)),
        key=jax.random.key(0), epochs=len(curve), batch_size=4,
        validation=lambda p: curve[p.t.astype(int) - 1], patience=patience, progress=False, **kwargs,
    )  # fmt: skip


def test_early_stopping_on_planted_validation_curve():
    curve = [5.0, 4.0, 3.0, 3.5, 3.0, 3.2, 3.1, 1.0, 0.5, 0.1]
    result = planted_run(curve, patience=4)
    # best at epoch 2 (3.0; the later 3.0 is not strictly lower); epochs 3..6 do not improve: stop after epoch 6.
    assert result.converged
    assert result.best_epoch == 2
    assert_allclose(result.best_params.t, 3.0)
    assert_allclose(result.params.t, 7.0)
    assert_allclose(result.history["val_loss"], curve[:7])
    assert len(result.history["loss"]) == 7

    patient = planted_run(curve, patience=5)
    assert not patient.converged and patient.best_epoch == 9 and len(patient.history["val_loss"]) == 10


def noisy_adam_problem():
    x, y = regression(n=37)

    def loss(params, batch, key):
        bx, by = batch
        jitter = 1 + 0.1 * jax.random.normal(key, by.shape, by.dtype)
        value = jnp.mean(jitter * (bx @ params.w + params.b - by) ** 2)
        return value, {"rmse": jnp.sqrt(value)}

    opt = optax.adam(0.03)
    step = make_train_step(loss, opt, has_aux=True)
    validation = make_validation(mse, (x[:20], y[:20]), batch_size=6)
    return step, opt, (x, y), validation


def assert_trees_equal(a, b):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert np.asarray(u).dtype == np.asarray(v).dtype
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_checkpoint_resume_is_bit_for_bit(tmp_path):
    step, opt, data, validation = noisy_adam_problem()
    kwargs = {"key": jax.random.key(7), "epochs": 9, "batch_size": 5, "progress": False}
    reference = fit(step, zeros(), opt.init(zeros()), data, validation=validation, **kwargs)

    calls = []

    def crashing_validation(params):
        calls.append(1)
        if len(calls) == 6:
            raise RuntimeError("simulated crash")
        return validation(params)

    ckpt = Checkpoint(tmp_path / "run.npz", every=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(step, zeros(), opt.init(zeros()), data, validation=crashing_validation, checkpoint=ckpt, **kwargs)
    with np.load(ckpt.path, allow_pickle=False) as npz:
        assert npz["history/loss"].shape == (4,)  # saved after epochs 2 and 4; the crash came in epoch 6
    assert [p.name for p in tmp_path.iterdir()] == ["run.npz"]

    resumed = fit(step, zeros(), opt.init(zeros()), data, validation=validation, checkpoint=ckpt, **kwargs)
    assert_trees_equal(resumed.params, reference.params)
    assert_trees_equal(resumed.opt_state, reference.opt_state)
    assert_trees_equal(resumed.best_params, reference.best_params)
    assert resumed.best_epoch == reference.best_epoch
    assert set(resumed.history) == {"loss", "rmse", "grad_norm", "val_loss"}
    for name, values in reference.history.items():
        np.testing.assert_array_equal(resumed.history[name], values)

    # the checkpoint now holds the finished run: calling again trains nothing and returns the same state
    again = fit(step, zeros(), opt.init(zeros()), data, validation=validation, checkpoint=ckpt, **kwargs)
    assert_trees_equal(again.params, reference.params)


def test_checkpoint_resume_after_early_stop(tmp_path):
    curve = [5.0, 4.0, 4.5, 4.6, 3.0]
    ckpt = Checkpoint(tmp_path / "stop.npz", every=10)
    first = planted_run(curve, patience=2, checkpoint=ckpt)
    assert first.converged and first.best_epoch == 1
    again = planted_run(curve, patience=2, checkpoint=ckpt)
    assert again.converged and again.best_epoch == 1
    assert_trees_equal(again.params, first.params)
    assert_trees_equal(again.best_params, first.best_params)


def test_checkpoint_refuses_a_different_run(tmp_path):
    step, opt, data, _ = noisy_adam_problem()
    ckpt = Checkpoint(tmp_path / "run.npz")
    kwargs = {"epochs": 2, "batch_size": 5, "progress": False, "checkpoint": ckpt}
    fit(step, zeros(), opt.init(zeros()), data, key=jax.random.key(0), **kwargs)
    with pytest.raises(ValueError, match="key"):
        fit(step, zeros(), opt.init(zeros()), data, key=jax.random.key(1), **kwargs)
    with pytest.raises(ValueError, match="batch_size"):
        fit(step, zeros(), opt.init(zeros()), data, key=jax.random.key(0), **{**kwargs, "batch_size": 4})
    with pytest.raises(ValueError, match="validation"):
        fit(step, zeros(), opt.init(zeros()), data, key=jax.random.key(0), validation=lambda p: 0.0, **kwargs)
    bigger = zeros(d=4)
    with pytest.raises(ValueError, match=r"params\.w is float32\[3\] in the file, float32\[4\]"):
        fit(step, bigger, opt.init(bigger), data, key=jax.random.key(0), **kwargs)
    other = optax.sgd(0.1)
    with pytest.raises(ValueError, match="opt_state"):
        fit(step, zeros(), other.init(zeros()), data, key=jax.random.key(0), **kwargs)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    junk = {**kwargs, "checkpoint": Checkpoint(tmp_path / "junk.npz")}
    with pytest.raises(ValueError, match="not a readable"):
        fit(step, zeros(), opt.init(zeros()), data, key=jax.random.key(0), **junk)


def test_fit_bad_inputs():
    opt = optax.sgd(0.1)
    step, params, state = make_train_step(mse, opt), zeros(), opt.init(zeros())
    x, y = regression(n=10)
    base = {"key": jax.random.key(0), "epochs": 1, "batch_size": 5, "progress": False}
    with pytest.raises(ValueError, match="batch_size"):
        fit(step, params, state, (x, y), **{**base, "batch_size": 11})
    with pytest.raises(ValueError, match="leading"):
        fit(step, params, state, (x, y[:9]), **base)
    with pytest.raises(ValueError, match="patience"):
        fit(step, params, state, (x, y), patience=2, **base)
    with pytest.raises(ValueError, match="epochs"):
        fit(step, params, state, (x, y), **{**base, "epochs": -1})
    with pytest.raises(TypeError, match="checkpoint"):
        fit(step, params, state, (x, y), checkpoint="ckpt.npz", **base)
    with pytest.raises(TypeError, match="key"):
        fit(step, params, state, (x, y), **{**base, "key": 0})
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        fit(step, params, state, (x, y), checkpoint=Checkpoint("/nonexistent/folder/c.npz"), **base)
    with pytest.raises(FloatingPointError, match="epoch 0"):
        fit(step, params, state, (x, np.full_like(y, np.nan)), **base)


def test_fit_progress_bar_and_partial_batches(capsys):
    x, y = regression(n=23)
    opt = optax.sgd(0.05)
    result = fit(
        make_train_step(mse, opt), zeros(), opt.init(zeros()), (x, y),
        key=jax.random.key(0), epochs=2, batch_size=10, progress=True,
    )  # fmt: skip
    assert "train" in capsys.readouterr().err
    assert result.history["loss"].shape == (2,)


def test_fit_on_spectra_with_a_raw_key(tmp_path):
    # a per-pixel mean spectrum fitted by weighted least squares: converges to the ivar-weighted mean
    rng = np.random.default_rng(2)
    flux = 1 + 0.05 * rng.normal(size=(30, 6))
    ivar = rng.uniform(1.0, 4.0, size=(30, 6))
    spectra = Spectra(flux, ivar)

    def chi2(mean, batch, key):
        return jnp.mean(batch.ivar * (batch.flux - mean) ** 2)

    opt = optax.adam(0.05)
    mean0 = jnp.ones(6, spectra.flux.dtype)
    kwargs = {"key": jax.random.PRNGKey(0), "epochs": 4, "batch_size": 30, "progress": False}
    ckpt = Checkpoint(tmp_path / "raw.npz")
    first = fit(make_train_step(chi2, opt), mean0, opt.init(mean0), spectra, checkpoint=ckpt, **kwargs)
    result = fit(make_train_step(chi2, opt), first.params, first.opt_state, spectra, **{**kwargs, "epochs": 400})
    weighted = np.sum(ivar * spectra.flux, axis=0) / np.sum(ivar, axis=0)
    assert_allclose(result.params, weighted, scale=4)
    resumed = fit(make_train_step(chi2, opt), mean0, opt.init(mean0), spectra, checkpoint=ckpt, **kwargs)
    assert_trees_equal(resumed.params, first.params)


def test_make_validation_is_the_mean_over_all_rows():
    x, y = regression(n=23)
    params = Linear(jnp.asarray([0.5, 0.5, 0.5]), jnp.asarray(0.1))
    val = make_validation(mse, (x, y), batch_size=10)
    assert_allclose(val(params), mse(params, (x, y), None))
    with pytest.raises(ValueError, match="batch_size"):
        make_validation(mse, (x, y), batch_size=0)


def test_mesh_step_matches_single_device():
    x, y = regression(n=16)
    opt = optax.adam(0.1)
    plain = make_train_step(mse, opt)
    sharded = make_train_step(mse, opt, mesh=data_mesh())
    a = plain(zeros(), opt.init(zeros()), (x, y), jax.random.key(0))
    b = sharded(zeros(), opt.init(zeros()), (x, y), jax.random.key(0))
    assert_trees_equal(a[0], b[0])


SHARDED_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from jaxspec.optim.sharding import data_mesh
    from jaxspec.optim.train import make_train_step, train_loop as fit
    assert jax.device_count() == 4
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32); y = x @ np.array([1.0, -2.0, 0.5], np.float32)
    traces = []

    def loss(p, b, k):
        traces.append(1)
        return jnp.mean((b[0] @ p - b[1]) ** 2)

    opt = optax.adam(0.1)
    mesh = data_mesh()
    out = {}
    for name, m in (("plain", None), ("sharded", mesh)):
        step = make_train_step(loss, opt, mesh=m)
        r = fit(step, jnp.zeros(3), opt.init(jnp.zeros(3)), (x, y), key=jax.random.key(0), epochs=5,
                batch_size=8, progress=False)
        out[name] = np.asarray(r.params)
    assert r.params.sharding.is_fully_replicated
    assert len(traces) == 2, traces  # one compilation each for the plain and the sharded step
    _, _, m = step(r.params, r.opt_state, (x[:8], y[:8]), jax.random.key(1))
    np.testing.assert_allclose(out["plain"], out["sharded"], rtol=1e-5, atol=1e-6)
    try:
        step(r.params, r.opt_state, (x[:6], y[:6]), jax.random.key(1))
    except ValueError as e:
        assert "multiple of the 4 devices" in str(e)
    else:
        raise AssertionError("no error for a batch of 6 on 4 devices")
    print("OK")
    """
)


def test_data_parallel_step_on_four_cpu_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")
