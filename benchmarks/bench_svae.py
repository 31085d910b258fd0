r"""The scatter VAE (sVAE) train epoch against the same model in PyTorch on identical data; encode throughput.

Data (seeded): :func:`jaxspec.data.mock.gaia_xp` coefficient spectra (110 per star), ``--n-stars``
(default 500,000, the paper's training-set size) made in chunks of 100,000, then
:func:`jaxspec.models.scatter_vae.preprocess` (G-flux normalised and standardised coefficients,
errors and mask).  The three arrays are saved as float32 ``.npy`` for the PyTorch reference
(``benchmarks/_svae_torch_reference.py``, run by ``--torch-python`` in a subprocess with
``--torch-threads`` threads), which trains the identical architecture and loss with
``torch.optim.SGD`` (momentum 0.9, lr 0.1 decayed by 0.97 per epoch) at batch 1024.

jaxspec, batch 1024, one warm-up epoch (which compiles) then ``--repeats`` timed ones, medians:

``fit``
    :func:`jaxspec.optim.train_loop` with ``epochs=1`` on the host (numpy) arrays that
    ``preprocess`` returns, as a user would call it (batches gathered on the host).
``fit_16``
    The same with ``steps_per_call=16`` (16 steps per compiled call, a ``lax.scan`` over batches
    gathered together): what :func:`jaxspec.models.scatter_vae.fit` runs.
``host_keyed`` (with ``--all-variants``, like ``fit_device`` and ``gathered``)
    ``fit``'s epoch on host arrays re-implemented with the step key's ``fold_in`` moved
    inside the jitted step (a candidate change to ``fit``).
``fit_device``
    The same on device (jax) arrays: batches gathered on the device.
``raw_loop``
    The jitted step in a python loop over pre-shuffled, pre-sliced device batches and
    pre-split keys: the step's compute plus its per-call dispatch.
``gathered``
    ``fit``'s epoch on device arrays with the gather and ``fold_in`` moved inside the
    jitted step: one dispatch per step (another candidate change to ``fit``).
``scan``
    The whole epoch (shuffle, gather, every step) in one jitted ``lax.scan``: the floor.

``components`` times, per step, what ``fit`` adds around the step (host gather of the three
row arrays, device gather, ``fold_in``).  ``encode`` is the throughput (spectra per second) of
:func:`jaxspec.models.scatter_vae.encode` on all stars.

The reference starts from the same initial weights (jaxspec's) and runs one warm-up epoch and
``--repeats`` timed ones, once with the default OpenMP wait policy (threads spin) and once with
``OMP_WAIT_POLICY=PASSIVE`` (``--torch-omp``): on a machine shared with other processes spinning
threads slow PyTorch by several times.  The ratios are torch / jaxspec median epoch times, with the
faster torch run (``torch_best``); ``--torch-compile`` adds a run under ``torch.compile``.  Printed,
and appended as one JSON line to ``--out`` (default ``benchmarks/results.jsonl``; none with
``--quick`` unless given).

``--rounds R`` replaces all of the above by ``R`` rounds of ``fit``, the XLA floor
(:func:`floor_step`, the network's matmuls alone, in the ``raw_loop``) and the reference in turn
(``svae_epoch_vs_torch_alternating``): this VM's speed drifts by tens of percent over minutes, so
timings taken minutes apart make a poor ratio; the rounds' timed epochs are pooled.

Run: ``python benchmarks/bench_svae.py`` (500,000 stars), ``python benchmarks/bench_svae.py --quick``,
``python benchmarks/bench_svae.py --rounds 3 --torch-compile --torch-omp default``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _harness import write_record

from jaxspec.data import mock
from jaxspec.models import scatter_vae as svae
from jaxspec.optim import train

HERE = Path(__file__).resolve().parent
TORCH_SCRIPT = HERE / "_svae_torch_reference.py"
TORCH_PYTHON = os.environ.get("TORCH_PYTHON", "/tmp/venvtorch/bin/python")
BATCH = 1024
METHODS = ("fit", "fit_16", "raw_loop", "scan")  # --all-variants adds host_keyed, fit_device, gathered
EXTRA = ("host_keyed", "fit_device", "gathered")


def _load() -> float:
    """The 1-minute load average (the machine may be shared: quote it next to each timing)."""
    return round(os.getloadavg()[0], 2)


# -- data -------------------------------------------------------------------------------------


def make_xp(n_stars: int, seed: int, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coefficients, errors ``(n, 110)`` and G fluxes ``(n,)`` (e-/s) of ``mock.gaia_xp`` in chunks of ``chunk``
    stars (chunk ``i`` from ``fold_in(key(seed), i)``)."""
    key, parts = jax.random.key(seed), []
    for i, lo in enumerate(range(0, n_stars, chunk)):
        xp = mock.gaia_xp(jax.random.fold_in(key, i), min(chunk, n_stars - lo))
        parts.append((xp.coefficients, xp.errors, xp.phot_g_mean_flux))
    coef, err, g = (np.concatenate(p) for p in zip(*parts, strict=True))
    return coef, err, g


# -- jaxspec ----------------------------------------------------------------------------------


def _block(tree):
    return jax.block_until_ready(tree)


def _summary(times: list, losses: list, **extra) -> dict:
    """Warm-up (first) time, the timed ones and their median, the epoch losses."""
    return {"first_s": times[0], "times_s": times[1:], "median_s": statistics.median(times[1:]), "losses": losses,
            **extra}  # fmt: skip


def time_fit(step, params, opt_state, data, key, repeats: int, steps_per_call: int = 1) -> tuple[dict, svae.Params]:
    """``train.train_loop(..., epochs=1)``: a warm-up call, then ``repeats`` calls continuing from its state.

    Each ``time_*`` returns its summary (times, median, epoch losses) and the params it ends with."""
    times, losses = [], []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        res = train.train_loop(step, params, opt_state, data, key=jax.random.fold_in(key, r), epochs=1,
                               batch_size=BATCH, steps_per_call=steps_per_call, progress=False)  # fmt: skip
        _block(res.params)
        times.append(time.perf_counter() - t0)
        params, opt_state = res.params, res.opt_state
        losses.append(float(res.history["loss"][-1]))
    return _summary(times, losses), params


def _shuffled(data, key, n_steps: int):
    """Rows of ``data`` in a random order, reshaped ``(n_steps, BATCH, ...)`` (last partial batch dropped)."""
    order = jax.random.permutation(key, _n_rows(data))[: n_steps * BATCH]
    return jax.tree_util.tree_map(lambda a: a[order].reshape(n_steps, BATCH, *a.shape[1:]), data)


def _n_rows(data) -> int:
    return jax.tree_util.tree_leaves(data)[0].shape[0]


def time_raw_loop(step, params, opt_state, data_dev, key, repeats: int) -> tuple[dict, svae.Params]:
    """The jitted step over pre-sliced device batches; also the time to enqueue the steps (dispatch)."""
    n_steps = _n_rows(data_dev) // BATCH
    times, enqueue, losses = [], [], []
    for r in range(repeats + 1):
        k_shuffle, k_steps = jax.random.split(jax.random.fold_in(key, r))
        shuffled = _shuffled(data_dev, k_shuffle, n_steps)
        batches = [jax.tree_util.tree_map(lambda a, s=s: a[s], shuffled) for s in range(n_steps)]
        keys = list(jax.random.split(k_steps, n_steps))
        _block((batches, keys))
        metrics = []
        t0 = time.perf_counter()
        for s in range(n_steps):
            params, opt_state, m = step(params, opt_state, batches[s], keys[s])
            metrics.append(m["loss"])
        t1 = time.perf_counter()
        _block((params, metrics))
        times.append(time.perf_counter() - t0)
        enqueue.append(t1 - t0)
        losses.append(float(np.mean(jax.device_get(metrics))))
    return _summary(times, losses, enqueue_median_s=statistics.median(enqueue[1:])), params


def time_host_keyed(step, params, opt_state, data_host, key, repeats: int) -> tuple[dict, svae.Params]:
    """``fit``'s epoch on host arrays (same permutation, host gather) with ``fold_in`` inside the jitted step."""
    keyed = jax.jit(lambda p, o, batch, root, s: step(p, o, batch, jax.random.fold_in(root, s)))
    n = _n_rows(data_host)
    times, losses = [], []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        k_shuffle, root = jax.random.split(jax.random.fold_in(key, r))
        order, metrics = np.asarray(jax.random.permutation(k_shuffle, n)), []
        for s in range(n // BATCH):
            idx = order[s * BATCH : (s + 1) * BATCH]
            batch = jax.tree_util.tree_map(lambda a, idx=idx: np.asarray(a[idx]), data_host)
            params, opt_state, m = keyed(params, opt_state, batch, root, s)
            metrics.append(m["loss"])
        _block((params, metrics))
        times.append(time.perf_counter() - t0)
        losses.append(float(np.mean(jax.device_get(metrics))))
    return _summary(times, losses), params


def make_gathered_step(step):
    """``step`` with the minibatch gather and the step key folded into the same jit: one dispatch per step."""

    @jax.jit
    def gathered(params, opt_state, data, order, root, s):
        idx = jax.lax.dynamic_slice_in_dim(order, s * BATCH, BATCH)
        batch = jax.tree_util.tree_map(lambda a: a[idx], data)
        return step(params, opt_state, batch, jax.random.fold_in(root, s))

    return gathered


def time_gathered(step, params, opt_state, data_dev, key, repeats: int) -> tuple[dict, svae.Params]:
    """``fit``'s epoch on device data (same permutation and keys) with :func:`make_gathered_step`."""
    gathered, n = make_gathered_step(step), _n_rows(data_dev)
    times, losses = [], []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        k_shuffle, root = jax.random.split(jax.random.fold_in(key, r))
        order, metrics = jax.random.permutation(k_shuffle, n), []
        for s in range(n // BATCH):
            params, opt_state, m = gathered(params, opt_state, data_dev, order, root, s)
            metrics.append(m["loss"])
        _block((params, metrics))
        times.append(time.perf_counter() - t0)
        losses.append(float(np.mean(jax.device_get(metrics))))
    return _summary(times, losses), params


def make_scan_epoch(step, n_steps: int):
    """One jitted epoch: shuffle, gather and ``lax.scan`` of ``step`` over the batches."""

    @jax.jit
    def epoch(params, opt_state, data, key):
        k_shuffle, k_steps = jax.random.split(key)
        shuffled = _shuffled(data, k_shuffle, n_steps)

        def body(carry, xs):
            p, o, m = step(*carry, *xs)
            return (p, o), m["loss"]

        keys = jax.random.split(k_steps, n_steps)
        (params, opt_state), loss = jax.lax.scan(body, (params, opt_state), (shuffled, keys))
        return params, opt_state, loss.mean()

    return epoch


def time_scan(step, params, opt_state, data_dev, key, repeats: int) -> tuple[dict, svae.Params]:
    """One jitted ``lax.scan`` epoch per call (:func:`make_scan_epoch`), continuing from the last state."""
    epoch = make_scan_epoch(step, _n_rows(data_dev) // BATCH)
    times, losses = [], []
    for r in range(repeats + 1):
        t0 = time.perf_counter()
        params, opt_state, loss = _block(epoch(params, opt_state, data_dev, jax.random.fold_in(key, r)))
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    return _summary(times, losses), params


def time_components(data_host, data_dev, key) -> dict:
    """Per-step cost (ms) of what ``fit`` does around the step, each over one epoch's worth of steps."""
    n = _n_rows(data_host)
    n_steps = n // BATCH
    order = np.asarray(jax.random.permutation(key, n))
    host, dev = data_host[:3], data_dev[:3]  # x, sigma, mask

    def per_step(fn) -> float:
        fn(0)  # warm-up (compiles the device gather, the fold_in)
        t0 = time.perf_counter()
        _block([fn(s) for s in range(n_steps)])
        return 1e3 * (time.perf_counter() - t0) / n_steps

    def rows(s):
        return order[s * BATCH : (s + 1) * BATCH]

    return {
        "host_gather_ms": per_step(lambda s: [np.asarray(a[rows(s)]) for a in host]),
        "host_gather_device_put_ms": per_step(lambda s: jax.device_put([np.asarray(a[rows(s)]) for a in host])),
        "device_gather_ms": per_step(lambda s: [a[rows(s)] for a in dev]),
        "fold_in_ms": per_step(lambda s: jax.random.fold_in(key, s)),
    }


def initial_params(seed: int) -> svae.Params:
    """The initial weights both sides start from."""
    return svae.init_params(jax.random.fold_in(jax.random.key(seed), 1), svae.Config())


def jaxspec_side(data_host: svae.Batch, args) -> tuple[dict, svae.Params]:
    """The four epoch timings and the per-step components; also the trained params (from ``fit``)."""
    config = svae.Config(batch_size=BATCH)
    n_steps = _n_rows(data_host) // BATCH
    key = jax.random.key(args.seed)
    params = initial_params(args.seed)
    optimizer = svae.make_optimizer(config, n_steps)
    step = train.make_train_step(svae.batch_loss(config), optimizer, has_aux=True)
    opt_state = optimizer.init(params)
    data_dev = jax.device_put(data_host)
    k = jax.random.fold_in(key, 2)
    out, trained = {"steps_per_epoch": n_steps, "dtype": str(data_host.x.dtype)}, params
    variants = {
        "fit": (time_fit, data_host),
        "fit_16": (functools.partial(time_fit, steps_per_call=16), data_host),
        "host_keyed": (time_host_keyed, data_host),
        "fit_device": (time_fit, data_dev),
        "raw_loop": (time_raw_loop, data_dev),
        "gathered": (time_gathered, data_dev),
        "scan": (time_scan, data_dev),
    }
    for name in METHODS + (EXTRA if args.all_variants else ()):
        fn, data = variants[name]
        load = _load()
        out[name], p = fn(step, params, opt_state, data, k, args.repeats)
        out[name]["load1"] = [load, _load()]
        out[name]["step_median_ms"] = 1e3 * out[name]["median_s"] / n_steps
        trained = p if name == "fit" else trained
        print(f"jaxspec {name}: {out[name]['median_s']:.3f} s/epoch (load {out[name]['load1']})", flush=True)
    out["components"] = time_components(data_host, data_dev, k)
    return out, trained


def encode_throughput(raw, batch: svae.Batch, params, stats, args) -> dict:
    """``encode`` of every star: from e-/s (includes ``preprocess``), and from the standardised batch at two
    chunk sizes; spectra per second from the median of ``repeats`` calls after a warm-up."""
    model = svae.Model(jax.tree_util.tree_map(jnp.asarray, params), stats, svae.Config())
    coef, err, g = raw
    calls = {
        "raw_chunk1024": lambda: svae.encode(model, (coef, err), g, progress=False),
        "batch_chunk1024": lambda: svae.encode(model, batch, progress=False),
        "batch_chunk8192": lambda: svae.encode(model, batch, chunk_size=8192, progress=False),
    }
    out = {}
    for name, call in calls.items():
        times = []
        for _ in range(args.repeats + 1):
            t0 = time.perf_counter()
            _block(call())
            times.append(time.perf_counter() - t0)
        med = statistics.median(times[1:])
        out[name] = {"first_s": times[0], "median_s": med, "spectra_per_s": len(coef) / med}
        print(f"encode {name}: {len(coef) / med:.4g} spectra/s", flush=True)
    return out


# -- PyTorch ----------------------------------------------------------------------------------


def save_weights(params: svae.Params, path) -> None:
    """``params`` as ``{net}.{i}.kernel`` / ``{net}.{i}.bias`` in an ``.npz`` (the torch reference's ``--params``)."""
    out = {}
    for net in params._fields:
        for name, layer in getattr(params, net).items():
            i = int(name.removeprefix("layer_"))
            out[f"{net}.{i}.kernel"], out[f"{net}.{i}.bias"] = np.asarray(layer["kernel"]), np.asarray(layer["bias"])
    np.savez(path, **out)


def torch_side(data_host, init: svae.Params, args, *, compile_: bool = False, passive: bool = False) -> dict:
    """The reference on the same arrays and initial weights, in a subprocess; its JSON plus the load.

    ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP threads sleep instead of spinning), much faster when
    other processes share the cores, a little slower on an idle machine."""
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for name, a in zip(("x", "sigma", "mask"), data_host[:3], strict=True):
            np.save(Path(tmp) / f"{name}.npy", np.asarray(a, np.float32))
        save_weights(init, Path(tmp) / "params.npz")
        cmd = [args.torch_python, str(TORCH_SCRIPT), tmp, "--epochs", str(args.repeats), "--batch-size", str(BATCH)]
        cmd += ["--params", str(Path(tmp) / "params.npz")]
        cmd += ["--threads", str(args.torch_threads), "--seed", str(args.seed)] + (["--compile"] if compile_ else [])
        print("$ " + "OMP_WAIT_POLICY=PASSIVE " * passive + " ".join(cmd), flush=True)
        load = _load()
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"} if passive else None
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"torch reference failed with exit status {proc.returncode}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load1"] = [load, _load()]
    label = " compiled" * compile_ + " OMP_WAIT_POLICY=PASSIVE" * passive
    print(f"torch{label}: {out['epoch_median_s']:.3f} s/epoch (load {out['load1']})")
    return out


# -- alternating rounds -----------------------------------------------------------------------


def floor_step(optimizer):
    """A lower bound on any XLA train step of this network: its matmuls, bias adds and loss alone.

    No activations (identity instead of GELU), no mask, no gradient clipping, no metrics but the
    loss; plain ``jnp`` matmuls on the batch, not the per-star ``vmap``.
    """

    def run(layers, h):
        for i in range(len(layers)):
            h = h @ layers[f"layer_{i}"]["kernel"] + layers[f"layer_{i}"]["bias"]
        return h

    def loss(params, batch, key):
        mu, logvar = jnp.split(run(params.encoder, batch.x), 2, axis=-1)
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)
        x_hat, s = run(params.decoder, z), jax.nn.softplus(run(params.scatter, z))
        var = jnp.square(batch.sigma) + jnp.square(s)
        kl = jnp.square(mu) + jnp.exp(logvar) - 1.0 - logvar
        return 0.5 * jnp.mean(jnp.square(batch.x - x_hat) / var + jnp.log(var)) + 0.5 * jnp.mean(kl)

    def step(params, opt_state, batch, key):
        value, grads = jax.value_and_grad(loss)(params, batch, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, {"loss": value}

    return jax.jit(step)


def alternating(data_host, args) -> dict:
    """``fit``, :func:`floor_step` and the reference (and ``torch.compile`` with ``--torch-compile``) in turn,
    ``--rounds`` times.

    The speed of this VM drifts by tens of percent over minutes, so a ratio of two runs minutes
    apart says little; here each round times a warm-up and ``--repeats`` epochs of each side,
    and the ratios are of the medians pooled over all rounds' timed epochs (and per round).
    """
    config = svae.Config(batch_size=BATCH)
    n_steps = _n_rows(data_host) // BATCH
    init = initial_params(args.seed)
    optimizer = svae.make_optimizer(config, n_steps)
    step = train.make_train_step(svae.batch_loss(config), optimizer, has_aux=True)
    key = jax.random.fold_in(jax.random.key(args.seed), 2)
    plain = svae.make_optimizer(dataclasses.replace(config, clip_norm=None), n_steps)
    floor, data_dev = floor_step(plain), jax.device_put(data_host)
    sides = ("fit", "xla_floor", "torch") + ("torch_compiled",) * args.torch_compile
    times, rounds = {side: [] for side in sides}, []
    passive = args.torch_omp == ["passive"]
    for r in range(args.rounds):
        load = _load()
        fit, _ = time_fit(step, init, optimizer.init(init), data_host, jax.random.fold_in(key, r), args.repeats)
        low, _ = time_raw_loop(floor, init, plain.init(init), data_dev, jax.random.fold_in(key, r), args.repeats)
        print(f"round {r}: jaxspec fit {fit['median_s']:.3f}, XLA floor {low['median_s']:.3f} s/epoch "
              f"(load {[load, _load()]})", flush=True)  # fmt: skip
        row = {"fit": fit["median_s"], "xla_floor": low["median_s"]}
        times["fit"] += fit["times_s"]
        times["xla_floor"] += low["times_s"]
        for side in sides[2:]:
            ref = torch_side(data_host, init, args, compile_=side == "torch_compiled", passive=passive)
            row[side] = ref["epoch_median_s"]
            times[side] += ref["epoch_times_s"]
        rounds.append(row)
    med = {side: statistics.median(t) for side, t in times.items()}
    return {
        "rounds": rounds,
        "times_s": times,
        "median_s": med,
        "ratio": {side: med[side] / med["fit"] for side in sides[2:]},
        "ratio_per_round": [{side: row[side] / row["fit"] for side in sides[2:]} for row in rounds],
        "ratio_floor": {side: med[side] / med["xla_floor"] for side in sides[2:]},  # the most any XLA step could reach
        "torch_omp": "passive" if passive else "default",
    }


# -- main -------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-stars", type=int, default=500_000)
    ap.add_argument("--quick", action="store_true", help="20,480 stars, one repeat, no results line")
    ap.add_argument("--repeats", type=int, default=3, help="timed epochs after the warm-up one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--torch-python", default=TORCH_PYTHON)
    ap.add_argument("--torch-threads", type=int, default=os.cpu_count())
    ap.add_argument("--torch-compile", action="store_true", help="also run the reference with torch.compile")
    ap.add_argument("--torch-omp", nargs="+", choices=["default", "passive"], default=["default", "passive"],
                    help="OpenMP wait policies to run the reference with; the faster one sets the ratio")  # fmt: skip
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--all-variants", action="store_true", help="also the host_keyed, fit_device, gathered loops")
    ap.add_argument("--rounds", type=int, default=0,
                    help="instead of the variants: alternate fit and the reference this many times")  # fmt: skip
    ap.add_argument("--tmp", default=tempfile.gettempdir())
    ap.add_argument("--out", default=None, help="append the JSON record here ('' for none)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n_stars, args.repeats = 20 * BATCH, 1
    if args.out is None:
        args.out = "" if args.quick else str(HERE / "results.jsonl")

    t0 = time.perf_counter()
    raw = make_xp(args.n_stars, args.seed)
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    data_host, stats = svae.preprocess(raw[:2], raw[2])
    t_pre = time.perf_counter() - t0
    print(f"{args.n_stars} mock XP stars in {t_gen:.3g} s, preprocessed in {t_pre:.3g} s", flush=True)

    record = {"n_stars": args.n_stars, "batch_size": BATCH, "repeats": args.repeats}
    record.update(generate_s=t_gen, preprocess_s=t_pre)
    if args.rounds:
        record["alternating"] = alternating(data_host, args)
        return write_record("svae_epoch_vs_torch_alternating", record, args.out)
    record["jaxspec"], params = jaxspec_side(data_host, args)
    record["encode"] = encode_throughput(raw, data_host, params, stats, args)
    if not args.skip_torch:
        init = initial_params(args.seed)
        runs = {policy: torch_side(data_host, init, args, passive=policy == "passive") for policy in args.torch_omp}
        best = min(runs, key=lambda k: runs[k]["epoch_median_s"])
        record["torch"], record["torch_best"] = runs, best
        if args.torch_compile:
            record["torch_compiled"] = torch_side(data_host, init, args, compile_=True, passive=best == "passive")
        ref = runs[best]["epoch_median_s"]
        record["ratio"] = {k: ref / record["jaxspec"][k]["median_s"] for k in METHODS}
        record["ratio_vs_compiled"] = (
            {k: record["torch_compiled"]["epoch_median_s"] / record["jaxspec"][k]["median_s"] for k in METHODS}
            if args.torch_compile else None
        )  # fmt: skip
    return write_record("svae_epoch_vs_torch", record, args.out)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(sys.argv[1:])
