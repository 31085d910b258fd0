r"""Cycle-StarNet's missing-lines experiment, set-up (a) (O'Briain et al. 2021, Section 4.2; issue 17).

The synthetic domain is The Payne's shipped emulator (``NN_normalized_spectra.npz``, per-pixel, 5 labels)
with the paper's own line mask (``total_mask`` of ``cycle_starnet_mock_missing_lines.npz``: 1177 of 7214
pixels, the strong features of a third of each element's lines) set to the continuum, 1.0.  The observed
domain is the same emulator without the mask plus Gaussian noise of the real APOGEE error spectrum
(``spectrum_ap_id_2M13012770+5754582_.npz``'s ``spec_err``, floored at 0.005, scaled by a per-star factor
drawn from 0.5 to 2); the two domains are unpaired (independent label draws over the central 80% of the
emulator's box, vbroad 0-20 km/s).  Cycle-StarNet (``Config.missing_lines()``: one split channel, weights
90 / 90 / 1) is trained at a reduced size (``--width`` times the paper's filters) for ``--iterations``,
the learning-rate milestones scaled to the run (at 1/7, 2/7, 3/7, 4/7 of it as 50k..200k of 350k).

Score (the paper's Table 1): test labels, their synthetic (masked) spectra sent to the observed domain with
the split latent of an observed spectrum of the same labels, against the noise-free unmasked emulator
spectrum; the mean over test stars and masked pixels (those the networks see, after the crop) of
``100 |T(x) - truth| / truth`` (%).  The same for the synthetic spectrum itself (the floor of a network that
recovers nothing).  Prints and appends a JSON record to ``benchmarks/results.jsonl``.

    python benchmarks/cycle_starnet_missing_lines.py --iterations 12000 --width 0.5 --stars 8000

Needs ``../shared/data/payne`` (``--data``).  A checkpoint (``--checkpoint``) lets a run resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import numpy as np
from _harness import write_record

from jaxspec import Spectra, io
from jaxspec.models import cycle_starnet as cs
from jaxspec.models import payne
from jaxspec.optim.train import Checkpoint

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "payne"


def scaled_config(width: float, iterations: int, base: cs.Config | None = None) -> cs.Config:
    """``base`` (``Config.missing_lines()``) with every filter count times ``width`` and milestones scaled to the
    run."""
    base = cs.Config.missing_lines() if base is None else base
    scale = lambda t: tuple(max(1, round(width * f)) for f in t)  # noqa: E731
    return dataclasses.replace(
        base, domain_filters=scale(base.domain_filters), shared_filters=scale(base.shared_filters),
        split_filters=scale(base.split_filters), critic_filters=scale(base.critic_filters),
        critic_latent_filters=scale(base.critic_latent_filters), iterations=iterations,
        decay_at=scaled_milestones(iterations, base),
    )  # fmt: skip


def scaled_milestones(iterations: int, base: cs.Config) -> tuple[int, ...]:
    """``base.decay_at`` (the paper's 50k-200k of 350k iterations) scaled to a run of ``iterations``."""
    return tuple(sorted({max(1, round(iterations * t / 350_000)) for t in base.decay_at}))


def labels(rng, emulator: payne.Model, n: int) -> np.ndarray:
    lo, hi = np.asarray(emulator.x_min, np.float64), np.asarray(emulator.x_max, np.float64)
    span = hi - lo
    y = lo + span * (0.1 + 0.8 * rng.random((n, lo.size)))
    y[:, 4] = rng.uniform(0.0, 20.0, n)  # vbroad, km/s
    return y


def domains(emulator, mask, err0, n: int, seed: int):
    rng = np.random.default_rng(seed)
    y_syn, y_obs = labels(rng, emulator, n), labels(rng, emulator, n)
    syn = np.asarray(payne.predict_spectra(emulator, y_syn, progress=False).spectra.flux)
    syn[:, mask] = 1.0
    obs = np.asarray(payne.predict_spectra(emulator, y_obs, progress=False).spectra.flux)
    err = err0[None, :] * rng.uniform(0.5, 2.0, (n, 1))
    obs = obs + err * rng.normal(size=obs.shape)
    wave = emulator.wavelength
    synthetic = Spectra(syn, err=np.full(syn.shape, 0.005), wavelength=wave)
    return Spectra(obs, err=err, wavelength=wave), synthetic


def recovery(model: cs.Model, emulator, mask, err0, n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    y = labels(rng, emulator, n)
    truth = np.asarray(payne.predict_spectra(emulator, y, progress=False).spectra.flux)
    syn = truth.copy()
    syn[:, mask] = 1.0
    err = err0[None, :] * rng.uniform(0.5, 2.0, (n, 1))
    obs = Spectra(truth + err * rng.normal(size=truth.shape), err=err, wavelength=emulator.wavelength)
    z_sp = cs.encode(model, obs, progress=False).z_sp
    sent = cs.transfer(model, Spectra(syn, err=np.full(syn.shape, 0.005), wavelength=emulator.wavelength),
                       "synth->obs", z_sp=z_sp, progress=False)  # fmt: skip
    kept = model.kept
    m = mask[kept]
    t_all = truth[:, kept]
    t = t_all[:, m]
    return {
        "recovery_error_pct": float(100 * np.mean(np.abs(sent[:, m] - t) / t)),
        "unrecovered_error_pct": float(100 * np.mean(np.abs(1.0 - t) / t)),
        "median_star_error_pct": float(np.median(100 * np.mean(np.abs(sent[:, m] - t) / t, axis=1))),
        "unmasked_error_pct": float(100 * np.mean(np.abs(sent[:, ~m] - t_all[:, ~m]) / t_all[:, ~m])),
        "test_stars": n,
        "masked_pixels": int(m.sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=12000)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--stars", type=int, default=8000, help="spectra per domain")
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--save", type=Path, default=None, help="save the trained model here")
    args = ap.parse_args()

    emulator = payne.load(args.data / "NN_normalized_spectra.npz")
    mask = np.load(args.data / "cycle_starnet_mock_missing_lines.npz", allow_pickle=True)["total_mask"] > 0
    err0 = np.maximum(np.load(args.data / "spectrum_ap_id_2M13012770+5754582_.npz")["spec_err"], 0.005)
    err0 = np.where(np.isfinite(err0), np.minimum(err0, 0.04), 0.04)
    config = scaled_config(args.width, args.iterations)
    t0 = time.perf_counter()
    observed, synthetic = domains(emulator, mask, err0, args.stars, seed=0)
    data_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    checkpoint = None if args.checkpoint is None else Checkpoint(args.checkpoint, every=1)
    fit = cs.fit(observed, synthetic, key=jax.random.key(0), config=config, emulator=emulator,
                 checkpoint=checkpoint)  # fmt: skip
    train_s = time.perf_counter() - t0
    if args.save is not None:
        io.save(args.save, fit.model)
    score = recovery(fit.model, emulator, mask, err0, args.test, seed=1)
    h = fit.history
    record = {
        "iterations": fit.aux["iterations"],
        "width": args.width,
        "stars_per_domain": args.stars,
        "train_s": round(train_s, 1),
        "data_s": round(data_s, 1),
        "s_per_iteration": round(train_s / fit.aux["iterations"], 4),
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in score.items()},
        "val_loss_first_last": [float(h["val_loss"][0]), float(h["val_loss"][-1])],
        "rec_obs_first_last": [float(h["generator/rec_obs"][0]), float(h["generator/rec_obs"][-1])],
        "config": dataclasses.asdict(config),
    }
    write_record("cycle_starnet_missing_lines_a", record, HERE / "results.jsonl")


if __name__ == "__main__":
    main()
