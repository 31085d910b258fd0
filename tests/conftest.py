"""Shared fixtures: the ../shared data folder, dtype-aware tolerances, a compilation counter."""

from __future__ import annotations

import contextlib
import gc
import os
from pathlib import Path

# The suite is bound by XLA's compile time, not by running the programs: LLVM's optimisation level 0 compiles
# the larger programs (the families' train steps, fitters) in about half the time (the suite passes unchanged;
# programs that run long get slower), and the demos' and notebooks' subprocesses inherit it.  A persistent
# compilation cache shared between the test processes was tried and left out.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TOLERANCES = {np.dtype(np.float32): 5e-4, np.dtype(np.float64): 5e-7}


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop every compiled program when a test file ends.

    Each CPU executable XLA keeps maps a few memory regions; a test process that runs many files kept
    thousands of them (18,000 mappings after four files, against the kernel's ``vm.max_map_count`` of
    65,530), and two CI runs segfaulted inside XLA's compiler late in a worker: the likely cause (the
    crash itself was not reproduced).  Programs a file shares with the next are compiled again.
    """
    yield
    jax.clear_caches()
    gc.collect()


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
