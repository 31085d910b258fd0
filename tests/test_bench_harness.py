"""The benchmark harness of ``benchmarks/`` (outside the package): compile time apart, JSON-lines records."""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import pytest

from benchmarks._harness import discover, run, time_benchmark
from jaxspec.cli.info import machine_info


def test_time_benchmark_separates_compile_from_run():
    def factory():
        x = jnp.ones((64, 64))
        f = jax.jit(lambda a: jnp.tanh(a @ a).sum())

        def call():
            time.sleep(0.01)
            return f(x)

        return call

    res = time_benchmark("toy", factory, repeats=3)
    assert len(res["times_s"]) == 3
    assert res["median_s"] >= 0.01
    assert res["compile_s"] > 0  # the first call compiled f
    assert res["first_call_s"] >= res["compile_s"]
    with pytest.raises(ValueError, match="repeats"):
        time_benchmark("toy", factory, repeats=0)


def test_run_discovers_and_records_json_lines(tmp_path, capsys):
    (tmp_path / "bench_toy.py").write_text(
        "import jax.numpy as jnp\nBENCHMARKS = {'toy_sum': lambda: (lambda: jnp.arange(10).sum())}\n"
    )
    assert list(discover(tmp_path)) == ["toy_sum"]
    out = tmp_path / "results.jsonl"
    run(["toy_sum"], tmp_path, repeats=2, out=out)
    record = json.loads(out.read_text().splitlines()[0])
    assert record["benchmark"] == "toy_sum"
    assert record["machine"]["jax"] == jax.__version__
    assert set(machine_info()) <= set(record["machine"])
    assert "toy_sum: median" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown benchmark"):
        run(["nope"], tmp_path)
