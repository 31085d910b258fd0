"""Benchmark harness: time a named benchmark after warm-up, record where it ran (not part of the package).

A benchmark module ``benchmarks/bench_*.py`` defines ``BENCHMARKS``, a dict of
name -> factory.  ``factory()`` does the set-up (data, models) and returns a
zero-argument callable; calling it does the work once and returns its result,
on which the harness calls ``jax.block_until_ready``.  The first call is timed
on its own and the time JAX spent tracing and compiling during it is reported
separately (from ``jax.monitoring`` compile events); the median of the
following ``repeats`` calls is the figure to quote.  Results are JSON lines:
one object per run with the machine, devices, versions and timings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax

from jaxspec.cli.info import machine_info

_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_recording: list[float] | None = None


def _listener(event: str, duration: float, **kwargs) -> None:
    if _recording is not None and event in _COMPILE_EVENTS:
        _recording.append(duration)


jax.monitoring.register_event_duration_secs_listener(_listener)


def timed_call(fn: Callable, *args) -> tuple[object, float, float]:
    """``(result, wall seconds, compile seconds)`` of ``fn(*args)``; compile = tracing plus XLA compilation."""
    global _recording
    _recording = []
    try:
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        return out, time.perf_counter() - t0, sum(_recording)
    finally:
        _recording = None


def time_benchmark(name: str, factory: Callable[[], Callable[[], object]], *, repeats: int = 5) -> dict:
    """Set up, warm up (timed, with compile time) and time ``repeats`` calls.

    Returns a dict with ``setup_s``, ``first_call_s``, ``compile_s`` (tracing
    plus XLA compilation during the first call), ``times_s``, ``median_s``.
    """
    if repeats < 1:
        raise ValueError(f"repeats: expected >= 1, found {repeats}")
    t0 = time.perf_counter()
    fn = factory()
    setup = time.perf_counter() - t0
    _, first, compile_s = timed_call(fn)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return {
        "benchmark": name,
        "setup_s": setup,
        "first_call_s": first,
        "compile_s": compile_s,
        "times_s": times,
        "median_s": statistics.median(times),
        "repeats": repeats,
    }


def write_record(name: str, result: dict, out: str | os.PathLike | None) -> dict:
    """Stamp ``result`` with the time, ``name`` and :func:`machine_info`, print it (without the
    machine) and append it as one JSON line to ``out`` (nothing written when ``out`` is empty)."""
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "benchmark": name, **result, "machine": machine_info()}
    print(json.dumps({k: v for k, v in record.items() if k != "machine"}, indent=1))
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps(record) + "\n")
    return record


def discover(folder: str | os.PathLike) -> dict[str, Callable]:
    """All ``BENCHMARKS`` of the ``bench_*.py`` files in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder: no benchmark folder at {folder}")
    found: dict[str, Callable] = {}
    for path in sorted(folder.glob("bench_*.py")):
        spec = importlib.util.spec_from_file_location(f"_jaxspec_bench_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        for key, factory in getattr(module, "BENCHMARKS", {}).items():
            if key in found:
                raise ValueError(f"{path}: benchmark name {key!r} is defined twice")
            found[key] = factory
    return found


def run(names: list[str], folder: str | os.PathLike, *, repeats: int = 5, out: str | os.PathLike | None = None) -> list:
    """Run benchmarks by name (or glob-free prefix ``all``), print and append JSON lines to ``out``."""
    available = discover(folder)
    if names == ["all"]:
        names = sorted(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"names: unknown benchmark(s) {unknown}; available: {sorted(available)}")
    info = machine_info()
    records = []
    for name in names:
        result = time_benchmark(name, available[name], repeats=repeats)
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **result, "machine": info}
        records.append(record)
        print(
            f"{name}: median {result['median_s']:.4g} s over {repeats} (first call {result['first_call_s']:.4g} s, "
            f"of which compile {result['compile_s']:.3g} s; setup {result['setup_s']:.3g} s) "
            f"on {info['backend']} {info['devices'][0]} x{len(info['devices'])}, jax {info['jax']}"
        )
        if out is not None:
            with open(out, "a") as fh:
                fh.write(json.dumps(record) + "\n")
    return records
