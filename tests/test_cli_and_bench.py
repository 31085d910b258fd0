"""The jaxspec command and the benchmark harness."""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import pytest

from jaxspec import cli
from jaxspec._bench import discover, machine_info, run, time_benchmark


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "info", "bench"):
        assert command in out


def test_info_prints_versions_and_devices(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert jax.__version__ in out
    assert str(jax.devices()[0].platform) in out


def test_unknown_demo_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "nonsense"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


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
    assert cli.main(["bench", "--list", "--dir", str(tmp_path)]) == 0
