r"""Mendis flows (issue 16): training samples per second and ``log_prob`` throughput against PyTorch.

Both sides train the default ``flows.Config()`` architecture (joint flow of ``x = (S, y)``, 4 blocks of
ActNorm -> full LU 1x1 mixing -> rational-quadratic spline coupling of both halves, conditioners of three
hidden layers of 64 units, 8 bins on [-3, 3], Adam 1e-5 with L2 weight decay 1e-6, batch 200) on the same
standardised ``mock.mendis`` vectors (2404 pixels and 3 labels: 2407 dimensions).  PyTorch:
``benchmarks/_flows_torch_reference.py`` (written for this benchmark; its spline is distrax's to float32
rounding), run in a subprocess with ``--torch-threads`` threads.  jaxspec: the train step ``flows.fit``
compiles, driven by ``jaxspec.optim.train.train_loop`` one epoch per call (what ``fit`` runs per epoch),
and ``flows.log_prob`` of every star.  Each side runs a warm-up epoch (jaxspec's includes compilation),
then ``--epochs`` timed ones; the figures are medians.  Ratios are torch time / jaxspec time (> 1:
jaxspec faster).  ``--paper`` times the authors' size (12 blocks x 1000, ``Config.reference()``) on the
jaxspec side only: a GPU's work.

    python benchmarks/bench_flows.py --stars 2000 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from _harness import write_record

from jaxspec.data import mock
from jaxspec.models import flows
from jaxspec.models.flows import _fit
from jaxspec.optim import train

HERE = Path(__file__).resolve().parent
TORCH_SCRIPT = HERE / "_flows_torch_reference.py"
TORCH_PYTHON = os.environ.get("TORCH_PYTHON", "/tmp/venvtorch/bin/python")


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def jaxspec_side(data: mock.MockMendis, config: flows.Config, epochs: int, seed: int) -> tuple[dict, np.ndarray]:
    """Epoch times of the compiled step under ``train_loop``, ``log_prob`` throughput; also the standardised
    vectors the PyTorch side trains on."""
    key = jax.random.key(seed)
    x, measured = _fit.data_vectors(data.spectra, data.labels)
    center, spread = _fit._statistics(x, measured)
    u = ((x - center) / spread).astype(np.float32)
    t0 = time.perf_counter()
    template = _fit._initial(key, config, u[: config.batch_size], tuple(data.labels.names),
                             data.spectra.wavelength, center, spread, u)  # fmt: skip
    init_s = time.perf_counter() - t0
    step, _ = _fit._step(template, config, None)
    optimizer = _fit.make_optimizer(config)
    params = (template.params, template.label_params)
    opt_state = optimizer.init(params)
    times, losses = [], []
    for r in range(epochs + 1):
        t0 = time.perf_counter()
        res = train.train_loop(step, params, opt_state, (u, measured), key=jax.random.fold_in(key, r), epochs=1,
                               batch_size=config.batch_size, progress=False)  # fmt: skip
        jax.block_until_ready(res.params)
        times.append(time.perf_counter() - t0)
        params, opt_state = res.params, res.opt_state
        losses.append(float(res.history["loss"][-1]))
        print(f"jaxspec epoch {r}: {times[-1]:.2f} s, loss {losses[-1]:.1f}", flush=True)
    steps = u.shape[0] // config.batch_size
    med = statistics.median(times[1:])
    model = _fit.with_params(template, *params)
    lp_times = []
    for _ in range(epochs + 1):
        t0 = time.perf_counter()
        lp = flows.log_prob(model, data.spectra, data.labels, progress=False)
        lp_times.append(time.perf_counter() - t0)
    lp_med = statistics.median(lp_times[1:])
    out = {
        "init_s": init_s,
        "epoch_times_s": times,
        "epoch_median_s": med,
        "samples_per_s": steps * config.batch_size / med,
        "losses": losses,
        "log_prob_times_s": lp_times,
        "log_prob_per_s": u.shape[0] / lp_med,
        "log_prob_finite": bool(np.all(np.isfinite(lp))),
        "parameters": flows.n_parameters(template.specs[0])["total"],
    }
    return out, u


def torch_side(u: np.ndarray, config: flows.Config, epochs: int, threads: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "u.npy", u)
        cmd = [TORCH_PYTHON, str(TORCH_SCRIPT), tmp, "--epochs", str(epochs), "--threads", str(threads),
               "--blocks", str(config.blocks), "--hidden", *map(str, config.hidden), "--bins", str(config.bins),
               "--bound", str(config.bound), "--batch", str(config.batch_size), "--lr", str(config.learning_rate),
               "--weight-decay", str(config.weight_decay), "--seed", str(seed)]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if run.returncode:
        raise RuntimeError(f"the PyTorch reference failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stars", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per side (after one warm-up)")
    parser.add_argument("--rounds", type=int, default=1, help="alternate jaxspec and torch this many times")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--paper", action="store_true", help="Config.reference() (12 x 1000): jaxspec only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results.jsonl"))
    args = parser.parse_args()
    config = flows.Config.reference() if args.paper else flows.Config()
    data = mock.mendis(jax.random.key(args.seed), args.stars, progress=False)
    result: dict = {"stars": args.stars, "config": "reference" if args.paper else "default", "rounds": []}
    for _r in range(args.rounds):
        one: dict = {"load1_before": _load()}
        one["jaxspec"], u = jaxspec_side(data, config, args.epochs, args.seed)
        print(f"jaxspec: {one['jaxspec']['samples_per_s']:.1f} samples/s, log_prob "
              f"{one['jaxspec']['log_prob_per_s']:.1f} stars/s", flush=True)  # fmt: skip
        if not (args.skip_torch or args.paper):
            one["torch"] = torch_side(u, config, args.epochs, args.torch_threads, args.seed)
            one["train_ratio"] = one["torch"]["epoch_median_s"] / one["jaxspec"]["epoch_median_s"]
            one["log_prob_ratio"] = one["jaxspec"]["log_prob_per_s"] / one["torch"]["log_prob_per_s"]
            print(f"torch {one['torch']['torch']}: {one['torch']['samples_per_s']:.1f} samples/s, log_prob "
                  f"{one['torch']['log_prob_per_s']:.1f} stars/s; ratios train {one['train_ratio']:.2f}, "
                  f"log_prob {one['log_prob_ratio']:.2f}", flush=True)  # fmt: skip
        one["load1_after"] = _load()
        result["rounds"].append(one)
    if result["rounds"] and "train_ratio" in result["rounds"][0]:
        result["train_ratio_median"] = statistics.median(o["train_ratio"] for o in result["rounds"])
        result["log_prob_ratio_median"] = statistics.median(o["log_prob_ratio"] for o in result["rounds"])
    write_record("flows_train_vs_torch", result, args.out)


if __name__ == "__main__":
    sys.exit(main())
