"""Shared fixtures: the ../shared data folder, dtype-aware tolerances, a compilation counter."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

# One persistent XLA compilation cache for the whole run, made by the first process (the xdist controller)
# and inherited by its workers and by the demos' and notebooks' subprocesses: a program that several
# tests, fixtures or demos compile with the same shapes is compiled once.  The
# subprocesses read it from the environment, this process from jax's config (jax may be imported already);
# removed when the run ends (pytest_unconfigure).  A cache the caller gives is used and kept.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxspec-tests-xla-")
    os.environ["JAXSPEC_TESTS_OWN_XLA_CACHE"] = os.environ["JAX_COMPILATION_CACHE_DIR"]
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

import jax
import numpy as np
import pytest

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update(
    "jax_persistent_cache_min_compile_time_secs", float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"])
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TOLERANCES = {np.dtype(np.float32): 5e-4, np.dtype(np.float64): 5e-7}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real third-party data not found at {SHARED_DATA} (the ../shared folder beside the checkout)")
    return SHARED_DATA


def assert_allclose(actual, desired, *, dtype=None, scale: float = 1.0, **kwargs) -> None:
    """``numpy.testing.assert_allclose`` with tolerances set by dtype (float32 ~5e-4, float64 ~5e-7)."""
    actual = np.asarray(actual)
    dtype = np.dtype(dtype) if dtype is not None else np.result_type(actual.dtype, np.float32)
    tol = TOLERANCES.get(dtype, 5e-4) * scale
    kwargs.setdefault("rtol", tol)
    kwargs.setdefault("atol", tol)
    np.testing.assert_allclose(actual, np.asarray(desired), **kwargs)


@contextlib.contextmanager
def count_compiles():
    """A list that gets one entry per XLA compilation made inside the ``with`` block."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiles
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


def pytest_unconfigure(config):
    """Remove this run's compilation cache (in the process that made it, once every worker is done)."""
    own = os.environ.get("JAXSPEC_TESTS_OWN_XLA_CACHE")
    if own and own == os.environ.get("JAX_COMPILATION_CACHE_DIR") and not hasattr(config, "workerinput"):
        shutil.rmtree(own, ignore_errors=True)
