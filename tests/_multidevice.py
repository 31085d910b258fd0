"""Run JAX snippets in fresh processes with N CPU devices, or as two ``jax.distributed`` processes.

JAX fixes its device count when its backend starts, so a test that needs 4
devices (``XLA_FLAGS=--xla_force_host_platform_device_count=4``) or several
processes must run in a subprocess.  A snippet is plain Python run after this
prelude, with these names defined:

``np``, ``jax``, ``jnp``, ``sharding`` (``jaxspec.optim.sharding``), ``P``
(``PartitionSpec``), ``mesh`` (``sharding.data_mesh()``: every device of every
process), ``process_id``, ``num_processes``, ``out`` (an empty dict) and the
problem helpers of this module (``make_problem``, ``local_rows``,
``wls_solve``, ``mean_loss``).

The snippet fills ``out`` with arrays (numpy or jax, any sharding) or strings;
each process returns ``out`` as a dict of numpy arrays (a sharded global jax
array comes back whole, gathered over processes).  Example::

    res = run_in_subprocess("out['y'] = jax.jit(jnp.sin)(jnp.arange(4.0))", devices=4)
    res["y"]  # numpy array

For the two-process run (:func:`run_two_processes`) the prelude calls
``sharding.initialize()`` first; it reads ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``, which the launcher sets.  CPU
collectives across processes use gloo (the default of jax 0.10 and 0.12, see
``DEFAULT_CPU_COLLECTIVES_IMPL`` in ``jax/_src/config.py``; set
explicitly through ``JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo``).

Failures: a process that raises exits at once (``os._exit(1)``, skipping
jax.distributed's shutdown barrier); the launcher then kills its peers (which
would otherwise wait ~30 s in a collective) and raises ``AssertionError`` with
every process's output tail.  A run past ``timeout`` seconds is killed the same way.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

__all__ = [
    "free_port",
    "local_rows",
    "make_problem",
    "mean_loss",
    "run_in_subprocess",
    "run_in_subprocesses",
    "run_two_processes",
    "wls_solve",
]

# --------------------------------------------------------------------------- problems
# Shared by the in-process tests and the subprocess snippets (which import this module).


def make_problem(n: int = 32, n_pix: int = 24, k: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """A deterministic float32 per-star weighted least-squares problem.

    ``flux = design @ theta_true + noise`` per star, with ``ivar`` weights and some
    masked pixels (``ivar == 0``).  Returns ``design (n_pix, k)``, ``flux (n, n_pix)``,
    ``ivar (n, n_pix)`` and ``params (k,)`` (a starting point for a mean loss).
    """
    rng = np.random.default_rng(seed)
    x = np.linspace(-1.0, 1.0, n_pix)
    design = np.stack([x**i for i in range(k)], axis=1).astype(np.float32)
    theta = rng.normal(size=(n, k)).astype(np.float32)
    ivar = rng.uniform(0.5, 2.0, size=(n, n_pix)).astype(np.float32)
    ivar[rng.uniform(size=(n, n_pix)) < 0.1] = 0.0
    flux = (theta @ design.T + rng.normal(size=(n, n_pix)) / np.sqrt(np.maximum(ivar, 0.5))).astype(np.float32)
    params = rng.normal(size=k).astype(np.float32)
    return {"design": design, "flux": flux, "ivar": ivar, "params": params}


def local_rows(tree: dict, process_id: int, num_processes: int) -> dict:
    """This process's contiguous block of rows of every ``(n, ...)`` leaf (``design``/``params`` whole)."""
    out = {}
    for name, value in tree.items():
        if name in ("design", "params"):
            out[name] = value
            continue
        n = value.shape[0]
        if n % num_processes:
            raise ValueError(f"{name}: {n} rows do not split over {num_processes} processes")
        step = n // num_processes
        out[name] = value[process_id * step : (process_id + 1) * step]
    return out


def wls_solve(design, flux, ivar):
    """One star's weighted least squares ``argmin_t sum ivar (flux - design t)^2`` (normal equations, Cholesky)."""
    import jax.numpy as jnp
    import jax.scipy.linalg as jsl

    a = design.T @ (ivar[:, None] * design)
    b = design.T @ (ivar * flux)
    a = a + 1e-6 * jnp.trace(a) * jnp.eye(a.shape[0], dtype=a.dtype)
    return jsl.cho_solve(jsl.cho_factor(a), b)


def mean_loss(params, design, flux, ivar):
    """Mean over stars of the chi^2 of a model shared by all stars (``params`` replicated)."""
    import jax.numpy as jnp

    resid = flux - design @ params
    return jnp.mean(jnp.sum(ivar * resid**2, axis=-1))


# --------------------------------------------------------------------------- launchers

_PRELUDE = """\
import numpy as np
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P
from jaxspec.optim import sharding
if os.environ.get("JAX_NUM_PROCESSES"):
    sharding.initialize()
from tests._multidevice import local_rows, make_problem, mean_loss, wls_solve
process_id = jax.process_index()
num_processes = jax.process_count()
mesh = sharding.data_mesh()
out = {}
"""

_EPILOGUE = """
def _to_numpy(v):
    if isinstance(v, str):
        return np.asarray(v)
    if isinstance(v, jax.Array) and not v.is_fully_addressable:
        if v.is_fully_replicated:
            return np.asarray(v.addressable_data(0))
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(v, tiled=True))
    return np.asarray(v)

_arrays = {k: _to_numpy(v) for k, v in out.items()}
np.savez(os.environ["JAXSPEC_TEST_OUT"], **_arrays)
"""


_RUN_BODY = """\
import os, sys
sys.path.insert(0, {repo!r})
try:
    with open({body!r}) as _f:
        exec(compile(_f.read(), {body!r}, "exec"))
except BaseException:
    # Exit at once: a normal exit would wait in jax.distributed's shutdown barrier for peers
    # that are themselves waiting for this process in a collective.
    import traceback
    traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)
"""


def _script(code: str, body: Path) -> str:
    body.write_text(_PRELUDE + textwrap.dedent(code) + "\n" + _EPILOGUE)
    return _RUN_BODY.format(repo=str(REPO), body=str(body))


def _base_env(devices: int) -> dict[str, str]:
    if devices < 1:
        raise ValueError(f"devices: expected a positive device count, found {devices}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COORDINATOR", "JAX_NUM_PROC", "JAX_PROCESS"))}
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("JAX_NUM_CPU_DEVICES", None)
    return env


def _wait_all(procs: list[subprocess.Popen], timeout: float) -> list[str]:
    """Wait for every process; on a timeout or a failed peer (the others would hang in a collective) kill the rest."""
    deadline = time.monotonic() + timeout
    failures = []
    while any(p.poll() is None for p in procs):
        failed = [i for i, p in enumerate(procs) if p.poll() not in (None, 0)]
        if failed or time.monotonic() > deadline:
            if not failed:
                failures.append(f"timed out after {timeout} s")
            for p in procs:
                if p.poll() is None:
                    p.kill()
            for p in procs:
                p.wait()
            break
        time.sleep(0.05)
    failures += [f"process {i} exited with {p.returncode}" for i, p in enumerate(procs) if p.returncode != 0]
    return failures


def _run(code: str, envs: list[dict[str, str]], timeout: float, python: str) -> list[dict[str, np.ndarray]]:
    """Start one process per env at once, wait for all (killing all on timeout), load each one's ``out``."""
    with tempfile.TemporaryDirectory(prefix="jaxspec-multidevice-") as tmp:
        script = Path(tmp) / "snippet.py"
        script.write_text(_script(code, Path(tmp) / "snippet_body.py"))
        procs, logs = [], []
        try:
            for i, env in enumerate(envs):
                env = {**env, "JAXSPEC_TEST_OUT": str(Path(tmp) / f"out{i}.npz")}
                log = open(Path(tmp) / f"log{i}.txt", "w+b")  # noqa: SIM115 - closed in finally
                logs.append(log)
                procs.append(
                    subprocess.Popen([python, str(script)], env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
                )
            failures = _wait_all(procs, timeout)
            if failures:
                text = []
                for i, log in enumerate(logs):
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-4000:]
                    text.append(f"--- process {i} output (tail) ---\n{tail}")
                raise AssertionError("; ".join(failures) + "\n" + "\n".join(text))
            results = []
            for i in range(len(procs)):
                with np.load(Path(tmp) / f"out{i}.npz", allow_pickle=False) as data:
                    results.append({k: data[k] for k in data.files})
            return results
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for log in logs:
                log.close()


def run_in_subprocesses(
    code: str, devices: tuple[int, ...] = (1, 4), *, timeout: float = 120.0, python: str = sys.executable
) -> list[dict[str, np.ndarray]]:
    """Run ``code`` once per device count, concurrently, each in its own single-process JAX; one ``out`` each."""
    return _run(code, [_base_env(d) for d in devices], timeout, python)


def run_in_subprocess(
    code: str, devices: int, *, timeout: float = 120.0, python: str = sys.executable
) -> dict[str, np.ndarray]:
    """Run ``code`` in a fresh Python with ``devices`` CPU devices; return its ``out`` as numpy arrays."""
    return run_in_subprocesses(code, (devices,), timeout=timeout, python=python)[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_processes(
    code: str,
    devices_per_process: int = 1,
    *,
    num_processes: int = 2,
    timeout: float = 120.0,
    python: str = sys.executable,
) -> list[dict[str, np.ndarray]]:
    """Run ``code`` as ``num_processes`` JAX processes on localhost (``jax.distributed``, gloo CPU collectives).

    Each process gets ``devices_per_process`` CPU devices; ``mesh`` in the snippet
    spans all of them.  Returns each process's ``out`` in process order.
    """
    for attempt in range(2):
        address = f"127.0.0.1:{free_port()}"
        envs = []
        for pid in range(num_processes):
            env = _base_env(devices_per_process)
            env.update(
                JAX_COORDINATOR_ADDRESS=address,
                JAX_NUM_PROCESSES=str(num_processes),
                JAX_PROCESS_ID=str(pid),
                JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
            )
            envs.append(env)
        try:
            return _run(code, envs, timeout, python)
        except AssertionError as err:
            # The free port can be taken between our probe and the coordinator's bind: try another once.
            if attempt or "in use" not in str(err).lower():
                raise
    raise AssertionError("unreachable")
