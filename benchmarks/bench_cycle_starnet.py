r"""Cycle-StarNet (issue 17): training iterations per second and label-fitting throughput against PyTorch.

**Training.**  Both sides run the paper's architecture and iteration (``cycle_starnet.Config()``: 7167-pixel
spectra, batch 8 per domain, one generator step then one critic step on the generator's outputs of that
pass, Adam 1e-4 with betas 0.5 / 0.999) on the same normalised spectra and weights.  jaxspec: the compiled
iteration ``cycle_starnet.fit`` uses (``make_step``), driven by ``jaxspec.optim.train.train_loop`` over an
``Unpaired`` pair of the domains (one pass of ``--iterations`` steps per call: the host gathers each batch,
as in a fit).  PyTorch: ``benchmarks/_cycle_starnet_torch_reference.py train`` (the identical architecture
and step written for this benchmark; its losses equal jaxspec's to float32 rounding with the weights
transferred), in a subprocess with ``--torch-threads`` threads.  Each side warms up (jaxspec's warm-up
includes compilation) and then times ``--iterations`` iterations; the figure is iterations per second.

**Label fitting.**  ``--stars`` observed spectra (the shipped Payne emulator's spectra at random labels, with
noise of 0.01) fitted by Eq. 11 (the emulator's spectrum sent to the observed domain with the star's own
split latent) from the same starting labels: jaxspec's ``cycle_starnet.fit_labels`` (every star at once,
dense Gauss-Newton, exact Jacobians) against the authors' recipe (``fit``: one star at a time, torch L-BFGS
lr 0.01, max_iter 100, strong Wolfe, 10 outer steps) on ``--torch-stars`` of them.  The networks are freshly
initialised on both sides (the cost does not depend on their values); the figure is stars per second.

Ratios are jaxspec throughput / PyTorch throughput (> 1: jaxspec faster).  The same script runs on a GPU
unchanged (``--torch-device cuda`` for the PyTorch side).

    python benchmarks/bench_cycle_starnet.py --iterations 20 --stars 256 --torch-stars 4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from _harness import write_record

from jaxspec import Spectra
from jaxspec.models import cycle_starnet as cs
from jaxspec.models import payne
from jaxspec.models.cycle_starnet._losses import Domain
from jaxspec.optim import train

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "payne"
TORCH_SCRIPT = HERE / "_cycle_starnet_torch_reference.py"
TORCH_PYTHON = os.environ.get("TORCH_PYTHON", "/tmp/venvtorch/bin/python")


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _spectra(emulator: payne.Model, n: int, seed: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(emulator.x_min, np.float64), np.asarray(emulator.x_max, np.float64)
    y = lo + (hi - lo) * (0.1 + 0.8 * rng.random((n, lo.size)))
    flux = np.asarray(payne.predict_spectra(emulator, y, progress=False).spectra.flux, np.float64)
    return flux + noise * rng.normal(size=flux.shape), y


def jaxspec_training(obs: Domain, syn: Domain, config: cs.Config, iterations: int) -> dict:
    n = obs.x.shape[1]
    params = cs.init_params(jax.random.key(0), config, n)
    state = train.init_groups(cs.groups(config), params)
    step = cs.make_step(config)
    data = train.Unpaired(obs, syn)
    times = []
    for r in range(2):  # a warm-up pass (compilation), then the timed one
        t0 = time.perf_counter()
        res = train.train_loop(step, params, state, data, key=jax.random.key(r), epochs=1,
                               batch_size=config.batch_size, progress=False)  # fmt: skip
        jax.block_until_ready(res.params)
        times.append(time.perf_counter() - t0)
        params, state = res.params, res.opt_state
    steps = obs.x.shape[0] // config.batch_size
    return {
        "warmup_s": times[0],
        "iterations": steps,
        "seconds": times[1],
        "iters_per_s": steps / times[1],
        "generator_loss_last": float(res.history["generator/loss"][-1]),
    }


def torch_run(cmd: list[str]) -> dict:
    out = subprocess.run([TORCH_PYTHON, str(TORCH_SCRIPT), *cmd], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"PyTorch side failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--stars", type=int, default=256, help="stars fitted by jaxspec")
    ap.add_argument("--torch-stars", type=int, default=4, help="stars fitted by the one-star PyTorch loop")
    ap.add_argument("--torch-threads", type=int, default=os.cpu_count())
    ap.add_argument("--torch-device", default="cpu")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--skip", choices=("train", "fit"), default=None)
    ap.add_argument("--out", default=str(HERE / "results.jsonl"))
    args = ap.parse_args()

    emulator = payne.load(args.data / "NN_normalized_spectra.npz")
    config = cs.Config()
    n_pix, kept = emulator.n_pix, slice(config.crop[0], emulator.n_pix - config.crop[1])
    result = {"config": "paper (cycle_starnet.Config())", "load1_before": _load()}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        if args.skip != "train":
            n = args.iterations * config.batch_size
            f_obs, _ = _spectra(emulator, n, 0, 0.01)
            f_syn, _ = _spectra(emulator, n, 1, 0.0)
            mean, std = float(f_syn.mean()), float(f_syn.std())
            obs = Domain(((f_obs[:, kept] - mean) / std).astype(np.float32),
                         np.full((n, n_pix - 47), std / 0.01, np.float32))  # fmt: skip
            syn = Domain(((f_syn[:, kept] - mean) / std).astype(np.float32),
                         np.full((n, n_pix - 47), std / 0.005, np.float32))  # fmt: skip
            for name, a in (("obs_x", obs.x), ("obs_w", obs.w), ("syn_x", syn.x), ("syn_w", syn.w)):
                np.save(d / f"{name}.npy", a)
            result["jaxspec_train"] = jaxspec_training(obs, syn, config, args.iterations)
            result["torch_train"] = torch_run(["train", str(d), "--iterations", str(args.iterations), "--threads",
                                               str(args.torch_threads), "--device", args.torch_device])  # fmt: skip
            result["train_ratio"] = result["jaxspec_train"]["iters_per_s"] / result["torch_train"]["iters_per_s"]
        if args.skip != "fit":
            flux, y = _spectra(emulator, args.stars, 2, 0.01)
            wave = emulator.wavelength
            spectra = Spectra(flux, err=np.full(flux.shape, 0.01), wavelength=wave)
            params = cs.init_params(jax.random.key(0), config, n_pix - 47)
            norm = np.array([float(flux.mean()), float(flux.std())], np.float32)
            model = cs.Model(params, norm, emulator, n_pix, wave, config)
            lo, hi = np.asarray(emulator.x_min, np.float64), np.asarray(emulator.x_max, np.float64)
            start = y + 0.05 * (hi - lo) * np.random.default_rng(3).uniform(-1, 1, y.shape)
            z_sp = cs.encode(model, spectra, progress=False).z_sp
            # warm-up: compiles the chunk shape of the timed call (8 stars padded to one chunk)
            cs.fit_labels(model, spectra[:8], z_sp=z_sp[:8], start=start[:8], chunk_size=args.stars, progress=False)
            t0 = time.perf_counter()
            fit = cs.fit_labels(model, spectra, z_sp=z_sp, start=start, chunk_size=args.stars, progress=False)
            seconds = time.perf_counter() - t0
            result["jaxspec_fit"] = {
                "stars": args.stars, "seconds": seconds, "stars_per_s": args.stars / seconds,
                "converged": int(fit.converged.sum()),
            }  # fmt: skip
            k = args.torch_stars
            for field in ("w0", "b0", "w1", "b1"):  # the per-pixel emulator's arrays
                np.save(d / f"emu_{field}.npy", np.asarray(getattr(emulator.params, field), np.float32))
            np.save(d / "norm.npy", norm)
            np.save(d / "fit_flux.npy", flux[:k].astype(np.float32))
            np.save(d / "fit_ivar.npy", np.full((k, n_pix), 1e4, np.float32))
            np.save(d / "fit_zsp.npy", z_sp[:k].astype(np.float32))
            np.save(d / "fit_start.npy", ((start[:k] - lo) / (hi - lo) - 0.5).astype(np.float32))
            result["torch_fit"] = torch_run(["fit", str(d), "--stars", str(k), "--threads", str(args.torch_threads),
                                             "--device", args.torch_device])  # fmt: skip
            result["fit_ratio"] = result["jaxspec_fit"]["stars_per_s"] / result["torch_fit"]["stars_per_s"]
    result["load1_after"] = _load()
    write_record("cycle_starnet_vs_torch", result, args.out)


if __name__ == "__main__":
    main()
