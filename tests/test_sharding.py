"""jaxspec.optim.sharding: padding, placement, and identical results on 1, 4 devices and 2 processes.

The multi-device and multi-process runs are subprocesses (JAX fixes its device
count at start-up); see ``tests/_multidevice.py`` for the snippet conventions.

What "identical" means here:

- per-star results (a vmapped per-row solve) must be bitwise equal: every row is
  computed by the same program on its own data wherever it lives;
- batch reductions (mean loss, its gradient over stars) may differ in the last
  bits, because with D devices XLA sums D partial sums (then all-reduces them)
  instead of one sum over all rows: float32 addition is not associative.  They
  are compared with ``rtol=1e-6`` (float32 eps is 1.2e-7; observed: ~3e-7) plus
  ``atol = 1e-6 * max|component|`` for gradient components that are small
  differences of large per-star terms (observed ~9e-7 relative on such a one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxspec.optim import sharding
from tests._multidevice import make_problem, mean_loss, run_in_subprocesses, run_two_processes, wls_solve

N_STARS = 32

# --------------------------------------------------------------------------- unit tests (this process)


def test_pad_rows_repeats_last_row_and_returns_n():
    tree = {"a": np.arange(10.0).reshape(5, 2), "b": jnp.arange(5)}
    padded, n = sharding.pad_rows(tree, 4)
    assert n == 5
    assert padded["a"].shape == (8, 2) and padded["b"].shape == (8,)
    np.testing.assert_array_equal(padded["a"][:5], tree["a"])
    np.testing.assert_array_equal(padded["a"][5:], np.repeat(tree["a"][-1:], 3, axis=0))
    np.testing.assert_array_equal(padded["b"], [0, 1, 2, 3, 4, 4, 4, 4])
    assert isinstance(padded["a"], np.ndarray) and isinstance(padded["b"], jax.Array)


def test_pad_rows_already_a_multiple_is_unchanged():
    tree = (np.ones((8, 3)), np.zeros(8))
    padded, n = sharding.pad_rows(tree, 4)
    assert n == 8
    assert padded is tree


def test_pad_rows_mismatched_leading_axes():
    with pytest.raises(ValueError, match=r"leading \(star\) axis: 5 vs 4"):
        sharding.pad_rows({"a": np.ones((5, 2)), "b": np.ones(4)}, 2)


def test_pad_rows_empty_tree():
    with pytest.raises(ValueError, match="at least one array"):
        sharding.pad_rows({}, 2)


def test_data_mesh_and_shardings_single_process():
    mesh = sharding.data_mesh()
    assert mesh.axis_names == (sharding.AXIS,) == ("data",)
    assert mesh.devices.size == jax.device_count()
    assert sharding.batch_sharding(mesh).spec == P("data")
    assert sharding.replicated(mesh).spec == P()
    assert sharding.data_mesh(jax.devices()[:1]).devices.size == 1
    with pytest.raises(ValueError, match="at least one device"):
        sharding.data_mesh([])


def test_shard_batch_one_device_places_whole_batch():
    mesh = sharding.data_mesh(jax.devices()[:1])
    x = np.arange(12.0, dtype=np.float32).reshape(6, 2)
    xs = sharding.shard_batch({"x": x}, mesh)["x"]
    assert xs.sharding == sharding.batch_sharding(mesh)
    np.testing.assert_array_equal(np.asarray(xs), x)


def test_wls_solve_matches_numpy():
    """The per-star problem the device comparisons run is itself right."""
    prob = make_problem(n=4)
    theta = jax.vmap(wls_solve, in_axes=(None, 0, 0))(prob["design"], prob["flux"], prob["ivar"])
    for i in range(4):
        w = prob["ivar"][i].astype(np.float64)
        a = prob["design"].astype(np.float64)
        expected = np.linalg.solve(a.T @ (w[:, None] * a), a.T @ (w * prob["flux"][i]))
        np.testing.assert_allclose(theta[i], expected, rtol=1e-3, atol=1e-3)


# --------------------------------------------------------------------------- the shared data-parallel snippet

# Runs unchanged with 1 device, 4 devices, or as one of several processes: every
# process loads its own rows (local_rows), sharding.global_batch assembles the
# global batch, one jitted function does per-star solves and a batch reduction.
# To compare another computation across devices/processes, add lines that put
# its results in `out` here and assertions in test_data_parallel_identical_one_vs_four_devices
# and test_two_processes_match_one_process below.
DATA_PARALLEL = f"""
from jaxspec.optim.latents import FitOptions
LATENT_OPTIONS = FitOptions(chunk_size=16)
prob = make_problem(n={N_STARS})
local = local_rows(prob, process_id, num_processes)
batch = sharding.global_batch({{"flux": local["flux"], "ivar": local["ivar"]}}, mesh)
design = jax.device_put(prob["design"], sharding.replicated(mesh))
params = jax.device_put(prob["params"], sharding.replicated(mesh))

@jax.jit
def step(params, design, flux, ivar):
    theta = jax.vmap(wls_solve, in_axes=(None, 0, 0))(design, flux, ivar)
    loss, grad = jax.value_and_grad(mean_loss)(params, design, flux, ivar)
    return theta, loss, grad

theta, loss, grad = step(params, design, batch["flux"], batch["ivar"])
out["theta"], out["loss"], out["grad"] = theta, loss, grad
# The engine on the same mesh: per-star latent fits (every process passes all rows) and a train step.
from jaxspec.optim.latents import fit_latents
from jaxspec.optim.train import make_train_step
import optax

def decode(design, z):
    return jnp.tanh(design @ z)

for method in ("linear", "dense_gauss_newton"):
    dec = (lambda d, z: d @ z) if method == "linear" else decode
    y = prob["flux"] if method == "linear" else np.tanh(0.3 * prob["flux"]).astype(np.float32)
    fit = fit_latents(dec, prob["design"], (y, prob["ivar"]), np.zeros(prob["design"].shape[1], np.float32),
                      method=method, mesh=mesh, progress=False, options=LATENT_OPTIONS)
    out[f"latents_{{method}}"], out[f"chi2_{{method}}"] = fit.z, fit.chi2

def train_loss(params, batch, key):
    return mean_loss(params, prob["design"], batch["flux"], batch["ivar"])

train_step = make_train_step(train_loss, optax.sgd(0.05), mesh=mesh)
tparams, tstate = jnp.asarray(prob["params"]), optax.sgd(0.05).init(jnp.asarray(prob["params"]))
for i in range(3):
    tparams, tstate, metrics = train_step(tparams, tstate, batch, jax.random.key(i))
out["train_params"], out["train_loss"] = tparams, metrics["loss"]

out["n_devices"] = np.asarray(jax.device_count())
out["theta_devices"] = np.asarray(len(theta.sharding.device_set))
out["theta_spec"] = str(theta.sharding.spec)
out["flux_devices"] = np.asarray(len(batch["flux"].sharding.device_set))
out["flux_global_shape"] = np.asarray(batch["flux"].shape)

if num_processes == 1:
    # shard_batch (single-process placement) gives the same layout and results.
    placed = sharding.shard_batch({{"flux": prob["flux"], "ivar": prob["ivar"]}}, mesh)
    out["flux_shard_rows"] = np.asarray([s.data.shape[0] for s in placed["flux"].addressable_shards])
    out["flux_shards_match"] = np.asarray(all(
        np.array_equal(np.asarray(s.data), prob["flux"][s.index]) for s in placed["flux"].addressable_shards
    ))
    out["flux_spec"] = str(placed["flux"].sharding.spec)
    theta2, loss2, grad2 = step(params, design, placed["flux"], placed["ivar"])
    out["theta_shard_batch"], out["loss_shard_batch"] = theta2, loss2
    # Not a multiple of the device count: a ValueError that says to pad_rows.
    try:
        sharding.shard_batch(prob["flux"][:{N_STARS} - 1], mesh)
        out["indivisible_error"] = "no error"
    except ValueError as err:
        out["indivisible_error"] = str(err)
    padded, n = sharding.pad_rows({{"flux": prob["flux"][:{N_STARS} - 1]}}, mesh.devices.size)
    out["padded_rows"] = np.asarray([sharding.shard_batch(padded, mesh)["flux"].shape[0], n])
    # data_mesh over a subset of devices
    out["sub_mesh_size"] = np.asarray(sharding.data_mesh(jax.devices()[:2]).devices.size)
"""


def _reference() -> dict[str, np.ndarray]:
    """The same computation, unsharded, in this process."""
    prob = make_problem(n=N_STARS)
    theta = jax.vmap(wls_solve, in_axes=(None, 0, 0))(prob["design"], prob["flux"], prob["ivar"])
    loss, grad = jax.value_and_grad(mean_loss)(prob["params"], prob["design"], prob["flux"], prob["ivar"])
    return {"theta": np.asarray(theta), "loss": np.asarray(loss), "grad": np.asarray(grad)}


def assert_reduction_close(actual, desired):
    """Batch reductions: equal up to float32 summation order (see the module docstring)."""
    np.testing.assert_allclose(actual, desired, rtol=1e-6, atol=1e-6 * float(np.max(np.abs(desired))))


def assert_per_star_close(actual, desired):
    """Per-star latent fits: the same problem per star, but the chunk's Gram products are vectorised for the
    per-device row count, so the last bits may differ, and an iterative fit that stops at its tolerance carries
    them on (seen: bitwise equal in float32 on an AVX-512 CPU, 4.8e-5 of the largest latent on an AVX2 one;
    ~1e-14 in float64)."""
    rtol = 2e-4 if np.asarray(desired).dtype == np.float32 else 1e-12
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * float(np.max(np.abs(desired))))


@pytest.fixture(scope="module")
def one_and_four_devices():
    """``out`` of DATA_PARALLEL with 1 and with 4 CPU devices (run concurrently)."""
    one, four = run_in_subprocesses(DATA_PARALLEL, devices=(1, 4))
    return one, four


def test_shard_batch_four_devices(one_and_four_devices):
    _, four = one_and_four_devices
    assert int(four["n_devices"]) == 4
    assert str(four["flux_spec"]) == str(P("data"))
    np.testing.assert_array_equal(four["flux_shard_rows"], [N_STARS // 4] * 4)
    assert bool(four["flux_shards_match"])
    assert int(four["sub_mesh_size"]) == 2


def test_shard_batch_indivisible_names_the_fix(one_and_four_devices):
    one, four = one_and_four_devices
    message = str(four["indivisible_error"])
    assert f"leading axis {N_STARS - 1} is not a multiple of the 4 devices" in message
    assert "pad_rows" in message
    assert str(one["indivisible_error"]) == "no error"  # any count divides over one device
    np.testing.assert_array_equal(four["padded_rows"], [N_STARS, N_STARS - 1])


def test_global_batch_single_process_is_sharded(one_and_four_devices):
    for res, d in zip(one_and_four_devices, (1, 4), strict=True):
        assert int(res["flux_devices"]) == d
        assert int(res["theta_devices"]) == d
        if d > 1:  # per-star results stay split over stars (on one device XLA reports P())
            assert str(res["theta_spec"]) == str(P("data"))
        np.testing.assert_array_equal(res["flux_global_shape"], make_problem(n=N_STARS)["flux"].shape)


def test_data_parallel_identical_one_vs_four_devices(one_and_four_devices):
    one, four = one_and_four_devices
    ref = _reference()
    # Per-star solves: bitwise identical (same program on each row wherever it lives).
    np.testing.assert_array_equal(four["theta"], one["theta"])
    # Sanity check against an eager (op-by-op, unfused) run here: not the same program, so only close.
    np.testing.assert_allclose(one["theta"], ref["theta"], rtol=1e-4, atol=1e-5)
    # shard_batch and global_batch place the same rows the same way.
    for res in (one, four):
        np.testing.assert_array_equal(res["theta_shard_batch"], res["theta"])
        np.testing.assert_array_equal(res["loss_shard_batch"], res["loss"])
    # Batch mean and its gradient: 4 partial sums + all-reduce vs one sum.
    assert_reduction_close(four["loss"], one["loss"])
    assert_reduction_close(four["grad"], one["grad"])
    np.testing.assert_allclose(one["loss"], ref["loss"], rtol=1e-5)
    # fit_latents: per-star fits agree over 1 and 4 devices; the train step reduces over the batch.
    for method in ("linear", "dense_gauss_newton"):
        assert_per_star_close(four[f"latents_{method}"], one[f"latents_{method}"])
        # chi2 sums over pixels inside a kernel vectorised for the per-device row count: last-ulp differences.
        np.testing.assert_allclose(four[f"chi2_{method}"], one[f"chi2_{method}"], rtol=1e-6)
    assert_reduction_close(four["train_params"], one["train_params"])
    assert_reduction_close(four["train_loss"], one["train_loss"])
    np.testing.assert_allclose(one["grad"], ref["grad"], rtol=1e-5, atol=1e-5 * float(np.max(np.abs(ref["grad"]))))


@pytest.mark.parametrize("devices_per_process", [1, 2])
def test_two_processes_match_one_process(devices_per_process, one_and_four_devices):
    """Two jax.distributed processes on localhost (gloo CPU collectives), each loading half the rows."""
    results = run_two_processes(DATA_PARALLEL, devices_per_process=devices_per_process)
    one, four = one_and_four_devices
    shape = make_problem(n=N_STARS)["flux"].shape
    for pid, res in enumerate(results):
        assert int(res["n_devices"]) == 2 * devices_per_process, pid
        assert int(res["theta_devices"]) == 2 * devices_per_process, pid
        np.testing.assert_array_equal(res["flux_global_shape"], shape)
        # Per-star results gathered over processes: bitwise equal to one process.
        np.testing.assert_array_equal(res["theta"], one["theta"])
        # Cross-process reductions (gloo all-reduce): equal up to summation order.
        assert_reduction_close(res["loss"], one["loss"])
        assert_reduction_close(res["grad"], one["grad"])
        if devices_per_process == 2:
            # Same 4-way split as the 4-device process; only the transport differs.
            assert_reduction_close(res["loss"], four["loss"])
            assert_reduction_close(res["grad"], four["grad"])
        for method in ("linear", "dense_gauss_newton"):
            assert_per_star_close(res[f"latents_{method}"], one[f"latents_{method}"])
        assert_reduction_close(res["train_params"], one["train_params"])
    # Every process sees the same replicated reduction.
    np.testing.assert_array_equal(results[0]["loss"], results[1]["loss"])
    np.testing.assert_array_equal(results[0]["grad"], results[1]["grad"])


def test_scalar_leaves_and_bad_multiple_are_clear_errors():
    with pytest.raises(ValueError, match="every leaf needs a leading"):
        sharding.pad_rows({"a": np.ones(3), "b": np.float32(1.0)}, 2)
    with pytest.raises(ValueError, match="multiple: expected an integer >= 1"):
        sharding.pad_rows({"a": np.ones(3)}, 0)
