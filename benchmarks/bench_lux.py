r"""Lux (Horta et al. 2025) at the paper's sizes, and the same fit with pollux on identical data.

Sizes (the paper's): 5000 training stars, 10,000 test stars, float32.  Two data sets:

``mock``
    :func:`jaxspec.data.mock.survey` (7514 APOGEE pixels, 12 labels, SNR log-uniform
    in 100-300, the mock's default dead pixels, sky residuals, label errors and 5%
    missing labels), bad pixels masked with
    :func:`jaxspec.data.preprocess.mask_bad_pixels`; the first ``n_train`` stars
    train, the rest are the test set.
``payne``
    Spectra from The Payne emulator in ``../shared/data/payne/`` (7214 pixels,
    5 labels: Teff, logg, [Fe/H], [alpha/Fe], vbroad) at labels drawn uniformly in
    the inner 80% of its label box (as ``bench_latents.py`` does), photon noise
    :math:`\sigma^2 = \max(f, 0.05)/\mathrm{SNR}^2` with SNR log-uniform in 100-300,
    and training labels perturbed by Gaussian errors ``PAYNE_LABEL_ERRORS``
    (50 K, 0.05 dex, 0.03 dex, 0.03 dex, 1 km/s).

Label RMSE and bias are against the TRUE (noise-free) labels of the test stars,
over every test star (a flagged star counts at its fallback value).

Two ways to run it:

* the full comparison, by hand::

      python benchmarks/bench_lux.py --data mock  --n-train 5000 --n-test 10000 --pollux --repeats 3
      python benchmarks/bench_lux.py --data payne --n-train 5000 --n-test 10000 --pollux --repeats 3

  It builds the data once (seeded), runs jaxspec (one warm-up fit + prediction
  that compiles, then ``--repeats`` timed ones, medians quoted), then pollux in a
  subprocess (``benchmarks/_pollux_reference.py`` under ``--pollux-python``) on an
  ``.npz`` of the same arrays, prints times, ratios (pollux / jaxspec) and
  per-label RMSE side by side, and appends one JSON line to ``--out``.
* the jaxspec halves alone through the harness (``python benchmarks/run.py
  lux_fit_mock lux_predict_mock``, or ``jaxspec bench ... --dir benchmarks``):
  ``BENCHMARKS`` below.

pollux's training time (``train_seconds``) is one full ``model.optimize`` call,
which compiles its SVI loop again on every call (numpyro builds a fresh closure),
so it is what a user waits for; ``train_overhead_seconds`` (a 1-step call after
warm-up) estimates that fixed cost and the table also shows the ratio without it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from _harness import timed_call

from jaxspec.data import mock
from jaxspec.data.containers import Labels, Spectra, default_float
from jaxspec.data.preprocess import mask_bad_pixels
from jaxspec.metrics import bias_rmse
from jaxspec.models import lux

HERE = Path(__file__).resolve().parent
PAYNE_DIR = HERE.parents[1] / "shared" / "data" / "payne"
POLLUX_SCRIPT = HERE / "_pollux_reference.py"
POLLUX_PYTHON = os.environ.get("POLLUX_PYTHON", "/tmp/venvpollux/bin/python")

N_TRAIN, N_TEST = 5000, 10_000
SNR = (100.0, 300.0)
PAYNE_LABEL_NAMES = ("TEFF", "LOGG", "FE_H", "ALPHA_FE", "VBROAD")
PAYNE_LABEL_ERRORS = (50.0, 0.05, 0.03, 0.03, 1.0)  # K, dex, dex, dex, km/s

# -- data ------------------------------------------------------------------------------


class LuxData(NamedTuple):
    """Train and test sets: noisy ``train_labels`` and ``true`` test labels ``(n_test, M)``."""

    name: str
    train_spectra: Spectra
    train_labels: Labels
    test_spectra: Spectra
    test_true: np.ndarray
    label_names: tuple


def _mock(n_train: int, n_test: int, seed: int) -> LuxData:
    s = mock.survey(jax.random.key(seed), n_train + n_test, noise=mock.Noise(snr=SNR), progress=False)
    spectra = mask_bad_pixels(s.spectra)
    train, test = np.arange(n_train), np.arange(n_train, n_train + n_test)
    true = np.asarray(s.true_labels.values, np.float64)[test]
    return LuxData("mock", spectra[train], s.labels[train], spectra[test], true, tuple(s.labels.names))


def load_payne_emulator(folder: Path = PAYNE_DIR) -> tuple[dict, np.ndarray]:
    """The Payne emulator's arrays (``w0 (L, H, K)``, ``w1 (L, H)``, ``b0 (L, H)``, ``b1``, ``x_min``, ``x_max``)
    and its wavelength grid ``(L,)`` (vacuum Angstrom)."""
    path = Path(folder) / "NN_normalized_spectra.npz"
    if not path.is_file():
        raise FileNotFoundError(f"folder: no Payne emulator at {path} (see ../shared/README.md)")
    with np.load(path) as d:
        em = {
            "w0": d["w_array_0"],
            "w1": d["w_array_1"],
            "b0": d["b_array_0"],
            "b1": d["b_array_1"],
            "x_min": d["x_min"],
            "x_max": d["x_max"],
        }
    with np.load(Path(folder) / "apogee_wavelength.npz") as d:
        wave = np.asarray(d["wavelength"], np.float64)
    return em, wave


@jax.jit
def _payne_flux(em: dict, labels: jax.Array) -> jax.Array:
    r"""Emulated normalised flux ``(n, L)`` at physical labels ``(n, 5)``.

    :math:`f = b_1 + \sum_h w_{1,h}\,\sigma(\sum_k w_{0,hk} s_k + b_{0,h})`, ``s`` the labels scaled to [-1/2, 1/2].
    """
    s = (labels - em["x_min"]) / (em["x_max"] - em["x_min"]) - 0.5
    hidden = jax.nn.sigmoid(jnp.einsum("lhk,nk->nlh", em["w0"], s) + em["b0"])
    return jnp.einsum("lh,nlh->nl", em["w1"], hidden) + em["b1"]


def _payne(n_train: int, n_test: int, seed: int, chunk: int = 500) -> LuxData:
    em, wave = load_payne_emulator()
    em_j = {k: jnp.asarray(v, jnp.float32) for k, v in em.items()}
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    span = em["x_max"] - em["x_min"]
    true = (rng.uniform(-0.4, 0.4, size=(n, span.size)) + 0.5) * span + em["x_min"]
    flux = np.concatenate(
        [np.asarray(_payne_flux(em_j, jnp.asarray(true[i : i + chunk], jnp.float32))) for i in range(0, n, chunk)]
    ).astype(np.float64)
    snr = np.exp(rng.uniform(np.log(SNR[0]), np.log(SNR[1]), size=(n, 1)))
    err = np.sqrt(np.maximum(flux, 0.05)) / snr
    observed = flux + err * rng.normal(size=flux.shape)
    spectra = mask_bad_pixels(Spectra(observed, wavelength=wave, err=err))
    lab_err = np.broadcast_to(np.asarray(PAYNE_LABEL_ERRORS), (n_train, span.size))
    noisy = true[:n_train] + lab_err * rng.normal(size=lab_err.shape)
    train_labels = Labels(noisy, names=PAYNE_LABEL_NAMES, err=lab_err)
    train, test = np.arange(n_train), np.arange(n_train, n)
    return LuxData("payne", spectra[train], train_labels, spectra[test], true[n_train:], PAYNE_LABEL_NAMES)


@functools.lru_cache(maxsize=2)
def make_data(kind: str, n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 0) -> LuxData:
    """The benchmark's data set ``kind`` in {"mock", "payne"} (cached: fit and predict benchmarks share it)."""
    if kind == "mock":
        return _mock(n_train, n_test, seed)
    if kind == "payne":
        return _payne(n_train, n_test, seed)
    raise ValueError(f"kind: expected 'mock' or 'payne', found {kind!r}")


def write_pollux_input(data: LuxData, path: str | os.PathLike) -> None:
    """The arrays of ``data`` in the ``.npz`` layout ``_pollux_reference.py`` reads (float32, ivar 0 = missing)."""
    f32 = np.float32
    np.savez(
        path,
        train_flux=np.asarray(data.train_spectra.flux, f32),
        train_flux_ivar=np.asarray(data.train_spectra.ivar, f32),
        train_labels=np.asarray(data.train_labels.values, f32),
        train_label_ivar=np.asarray(data.train_labels.ivar, f32),
        test_flux=np.asarray(data.test_spectra.flux, f32),
        test_flux_ivar=np.asarray(data.test_spectra.ivar, f32),
    )


# -- jaxspec ------------------------------------------------------------------------------


def _fit(data: LuxData, n_latents: int | None, omega: float, seed: int) -> lux.FitResult:
    config = lux.Config(n_latents=n_latents, omega=omega)
    out = lux.fit(data.train_spectra, data.train_labels, key=jax.random.key(seed), config=config, progress=False)
    jax.block_until_ready((out.model.params, out.aux["z"]))
    return out


def _predict(model: lux.Model, data: LuxData) -> lux.LabelPrediction:
    out = lux.predict_labels(model, data.test_spectra, progress=False)
    jax.block_until_ready((out.labels.values, out.covariance))
    return out


def run_jaxspec(data: LuxData, *, n_latents: int | None, omega: float, repeats: int, seed: int) -> dict:
    """Warm-up fit + prediction (compiles), then ``repeats`` timed ones; medians and RMSE vs true labels."""
    fit_out, fit_first, fit_compile = timed_call(_fit, data, n_latents, omega, seed)
    pred, pred_first, pred_compile = timed_call(_predict, fit_out.model, data)
    fit_times, pred_times = [], []
    for _ in range(repeats):
        fit_out, t, _ = timed_call(_fit, data, n_latents, omega, seed)
        fit_times.append(t)
        pred, t, _ = timed_call(_predict, fit_out.model, data)
        pred_times.append(t)
    pred_values = np.asarray(pred.labels.values, np.float64)
    stats = bias_rmse(pred_values, data.test_true)
    fit_med, pred_med = statistics.median(fit_times), statistics.median(pred_times)
    return {
        "n_latents": fit_out.model.n_latents,
        "omega": omega,
        "dtype": str(default_float()),
        "fit_first_s": fit_first,
        "fit_compile_s": fit_compile,
        "fit_times_s": fit_times,
        "fit_median_s": fit_med,
        "predict_first_s": pred_first,
        "predict_compile_s": pred_compile,
        "predict_times_s": pred_times,
        "predict_median_s": pred_med,
        "end_to_end_s": fit_med + pred_med,
        "rmse": stats.rmse.tolist(),
        "bias": stats.bias.tolist(),
        "n_flagged": int(np.sum(pred.flagged)),
        "final_objective": _last(fit_out.history.get("objective")),
    }


def _last(values) -> float | None:
    return float(values[-1]) if values is not None and len(values) else None


def _git_state() -> dict | None:
    """Commit and dirty flag of the checkout the benchmark ran from (None outside git)."""
    try:
        run = functools.partial(subprocess.run, capture_output=True, text=True, cwd=HERE.parent, check=True, timeout=30)
        commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        dirty = bool(run(["git", "status", "--porcelain", "--", "jaxspec"]).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "jaxspec_dirty": dirty}


# -- pollux -------------------------------------------------------------------------------


def run_pollux(
    data: LuxData,
    *,
    n_latents: int,
    steps: int,
    recipe: str,
    float32: bool,
    seed: int,
    python: str = POLLUX_PYTHON,
    workdir: str | os.PathLike | None = None,
) -> dict:
    """pollux on the same arrays, in a subprocess; its times and RMSE vs the true labels."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        inp, out = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        write_pollux_input(data, inp)
        cmd = [python, str(POLLUX_SCRIPT), str(inp), str(out), "--latents", str(n_latents)]
        cmd += ["--steps", str(steps), "--recipe", recipe, "--seed", str(seed)] + (["--float32"] if float32 else [])
        print("$ " + " ".join(cmd), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise RuntimeError(f"pollux run failed with exit status {proc.returncode}: {' '.join(cmd)}")
        with np.load(out) as d:
            res = {k: d[k] for k in d.files}
    version = re.search(r"pollux (\S+) jax (\S+)", proc.stdout)
    pred = np.asarray(res["test_labels_pred"], np.float64)
    finite = np.all(np.isfinite(pred), axis=1)
    stats = bias_rmse(pred, data.test_true, mask=np.broadcast_to(finite[:, None], pred.shape))
    losses = np.asarray(res["loss_history"], np.float64)
    train, overhead, test = (float(res[k]) for k in ("train_seconds", "train_overhead_seconds", "test_seconds"))
    return {
        "pollux": version.group(1) if version else None,
        "jax": version.group(2) if version else None,
        "recipe": recipe,
        "x64": not float32,
        "steps": steps,
        "n_latents": int(res["latent_size"]),
        "warmup_s": float(res["warmup_seconds"]),
        "train_s": train,
        "train_overhead_s": overhead,
        "train_steps_only_s": train - overhead,
        "test_s": test,
        "end_to_end_s": train + test,
        "subprocess_wall_s": wall,
        "rmse": stats.rmse.tolist(),
        "bias": stats.bias.tolist(),
        "n_nonfinite": int(np.sum(~finite)),
        "loss_first": float(losses[0]) if losses.size else None,
        "loss_last": float(losses[-1]) if losses.size else None,
        "loss_finite": bool(np.all(np.isfinite(losses))),
    }


# -- report ---------------------------------------------------------------------------------


def baseline_rmse(data: LuxData) -> list:
    """RMSE of predicting every test star at the mean of the (observed) training labels: the no-skill reference."""
    lab = data.train_labels
    obs = np.asarray(lab.ivar) > 0
    mean = np.where(obs, lab.values, 0.0).sum(0) / np.maximum(obs.sum(0), 1)
    return np.sqrt(np.mean((data.test_true - mean) ** 2, axis=0)).tolist()


def _ratios(js: dict, px: dict) -> dict:
    return {
        "train": px["train_s"] / js["fit_median_s"],
        "train_steps_only": px["train_steps_only_s"] / js["fit_median_s"],
        "test": px["test_s"] / js["predict_median_s"],
        "end_to_end": px["end_to_end_s"] / js["end_to_end_s"],
    }


def _print_report(data: LuxData, js: dict, px: dict | None, ratios: dict | None, baseline: list) -> None:
    n_train, n_test = data.train_spectra.n_stars, data.test_spectra.n_stars
    print(
        f"\nLux on {data.name}: train {n_train}, test {n_test}, {data.train_spectra.n_pix} px, "
        f"M = {len(data.label_names)}, P = {js['n_latents']}, omega = {js['omega']:g}, jaxspec {js['dtype']}"
    )
    rows = [
        ("train (s)", js["fit_median_s"], px and px["train_s"], ratios and ratios["train"]),
        ("  steps only", None, px and px["train_steps_only_s"], ratios and ratios["train_steps_only"]),
        ("test step (s)", js["predict_median_s"], px and px["test_s"], ratios and ratios["test"]),
        ("end to end (s)", js["end_to_end_s"], px and px["end_to_end_s"], ratios and ratios["end_to_end"]),
    ]
    print(f"{'':16} {'jaxspec':>10} {'pollux':>10} {'pollux/jaxspec':>15}")
    for name, a, b, r in rows:
        print(f"{name:16} {_fmt(a):>10} {_fmt(b):>10} {_fmt(r, 'x'):>15}")
    print(
        f"jaxspec first calls: fit {js['fit_first_s']:.3g} s (compile {js['fit_compile_s']:.3g} s), "
        f"predict {js['predict_first_s']:.3g} s (compile {js['predict_compile_s']:.3g} s); "
        f"flagged test stars: {js['n_flagged']}"
    )
    if px:
        print(
            f"pollux {px['pollux']} (jax {px['jax']}), recipe {px['recipe']}, x64 {px['x64']}, {px['steps']} Adam "
            f"steps, P = {px['n_latents']}: warm-up {px['warmup_s']:.3g} s, per-call fixed cost "
            f"{px['train_overhead_s']:.3g} s, loss {px['loss_first']:.6g} -> {px['loss_last']:.6g}"
            f"{'' if px['loss_finite'] else ' (NON-FINITE)'}, non-finite predictions: {px['n_nonfinite']}"
        )
    print(
        f"\n{'label RMSE':12} {'jaxspec':>11} {'pollux':>11} {'(no skill)':>11}   {'bias jaxspec':>12} {'pollux':>11}"
    )
    for i, name in enumerate(data.label_names):
        p_rmse, p_bias = (px["rmse"][i], px["bias"][i]) if px else (None, None)
        print(
            f"{name:12} {_fmt(js['rmse'][i]):>11} {_fmt(p_rmse):>11} {_fmt(baseline[i]):>11}   "
            f"{_fmt(js['bias'][i]):>12} {_fmt(p_bias):>11}"
        )
    print("(no skill: every test star at the mean training label)")


def _fmt(x, suffix: str = "") -> str:
    return "" if x is None else f"{x:.4g}{suffix}"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["mock", "payne"], default="mock")
    ap.add_argument("--n-train", type=int, default=N_TRAIN)
    ap.add_argument("--n-test", type=int, default=N_TEST)
    ap.add_argument("--n-latents", type=int, default=None, help="P (default 4 M: 48 on the mock, 20 on Payne)")
    ap.add_argument("--omega", type=float, default=1e3, help="jaxspec's latent penalty (the paper's 1e3)")
    ap.add_argument("--repeats", type=int, default=3, help="timed jaxspec fits and predictions after the warm-up")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pollux", action="store_true", help="also run pollux on the same data")
    ap.add_argument("--pollux-steps", type=int, default=2000)
    ap.add_argument("--pollux-recipe", choices=["tutorial", "lux"], default="tutorial")
    ap.add_argument("--pollux-float32", action="store_true", help="pollux without jax_enable_x64 (tutorial uses x64)")
    ap.add_argument("--pollux-python", default=POLLUX_PYTHON)
    ap.add_argument("--out", default=str(HERE / "results.jsonl"), help="append the JSON record here ('' for none)")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats: expected >= 1, found {args.repeats}")

    from _harness import machine_info

    t0 = time.perf_counter()
    data = make_data(args.data, args.n_train, args.n_test, args.seed)
    setup = time.perf_counter() - t0
    print(
        f"data {args.data}: {args.n_train} + {args.n_test} stars x {data.train_spectra.n_pix} px, "
        f"{len(data.label_names)} labels, made in {setup:.3g} s",
        flush=True,
    )
    js = run_jaxspec(data, n_latents=args.n_latents, omega=args.omega, repeats=args.repeats, seed=args.seed)
    px = ratios = None
    if args.pollux:
        px = run_pollux(
            data,
            n_latents=js["n_latents"],
            steps=args.pollux_steps,
            recipe=args.pollux_recipe,
            float32=args.pollux_float32,
            seed=args.seed,
            python=args.pollux_python,
        )
        ratios = _ratios(js, px)
    baseline = baseline_rmse(data)
    _print_report(data, js, px, ratios, baseline)
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "benchmark": f"lux_{args.data}",
        "data": args.data,
        "n_train": args.n_train,
        "n_test": args.n_test,
        "n_pix": data.train_spectra.n_pix,
        "labels": list(data.label_names),
        "seed": args.seed,
        "repeats": args.repeats,
        "setup_s": setup,
        "baseline_rmse": baseline,
        "jaxspec": js,
        "pollux": px,
        "ratios": ratios,
        "machine": machine_info(),
        "git": _git_state(),
    }
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        print(f"appended the record to {args.out}")
    return record


# -- harness entries (``python benchmarks/run.py lux_fit_mock``) ---------------


def _bench_fit(kind: str):
    def factory():
        data = make_data(kind, N_TRAIN, N_TEST)
        return lambda: _fit(data, None, 1e3, 0).model.params

    return factory


def _bench_predict(kind: str):
    def factory():
        data = make_data(kind, N_TRAIN, N_TEST)
        model = _fit(data, None, 1e3, 0).model
        return lambda: _predict(model, data).labels.values

    return factory


BENCHMARKS = {
    "lux_fit_mock": _bench_fit("mock"),
    "lux_predict_mock": _bench_predict("mock"),
    "lux_fit_payne": _bench_fit("payne"),
    "lux_predict_payne": _bench_predict("payne"),
}

if __name__ == "__main__":
    main()
