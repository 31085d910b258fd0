r"""Cycle-StarNet's missing-lines experiment, set-up (b): which element is each missing line? (issue 17).

The mock generator (:func:`jaxspec.data.mock.domains`) ties every line to an element (CO to C, CN to N, OH to O).
A share (``--share``, 0.3) of each element's strong lines (integrated optical depth above 0.5 pixel at the
line list's reference star) is removed from the synthetic domain; the observed domain keeps every line and
adds the mock's instrument (a broader LSF, a continuum tilt, tellurics, the DIB), sky lines and noise; the two
are unpaired.  A Payne emulator is trained on the synthetic domain (every mock label), Cycle-StarNet on the
two domains: ``Config.missing_lines()`` (the authors' weights for this experiment, 90 / 90 / 1) but with
``--split-z`` (4, the paper's default) split channels, since the mock's observed stars differ from the synthetic
ones by more than lines (their instrument varies from star to star); every filter count times ``--width``, the
learning-rate milestones scaled to ``--iterations``.

Two scores:

* **recovery**: held-out stars seen in both domains (paired, observed at SNR 10,000 without sky lines or dead
  pixels): their synthetic spectra sent to the observed domain with the split latent of their observed
  spectra, against the observed spectra, on the pixels of the removed lines (those that change a K giant by
  more than 0.005); ``100 |T(x) - truth| / truth`` (%), beside the same for the synthetic spectrum itself
  (what a network that recovers nothing scores, the instrument's differences included);
* **attribution**: the features of the Jacobian difference (Eq. 8) at the paper's reference K giant
  (4750 K, logg 2.5, solar), threshold 0.005 flux per 100 K, 0.1 dex of logg or 0.05 dex of an abundance.
  Each removed line whose centre falls in a feature is *found*; the feature's element is the [X/Fe] label
  with the largest summed response if that response is at least half of [Fe/H]'s, else Fe (in [X/Fe]
  labels every line of X answers [X/Fe] and [Fe/H] alike, an Fe line only [Fe/H]).  *Attributed*: the
  element is the line's; lenient: C, N and O count as one (they act through shared molecules); strict too.

    python benchmarks/cycle_starnet_missing_elements.py --iterations 8000 --width 0.5 --stars 4000

``--abundance-scatter`` (dex) gives every star's [X/Fe] independent scatter (:func:`mock.domains`): the
field population ties them to [Fe/H] and [alpha/Fe] with 0.025-0.075 dex of their own, too little for an
unsupervised network to learn how a missing line answers its own element (it learns Teff's and [Fe/H]'s);
the paper's domains were computed from measured APOGEE-Payne labels, which vary more independently.

Prints and appends a JSON record to ``benchmarks/results.jsonl``; ``--save`` keeps the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import jax
import numpy as np
from _harness import write_record
from cycle_starnet_missing_lines import scaled_config

from jaxspec import Labels, io
from jaxspec.data import mock
from jaxspec.models import cycle_starnet as cs
from jaxspec.models import payne
from jaxspec.optim.train import Checkpoint

HERE = Path(__file__).resolve().parent
CNO = {"C", "N", "O"}


def removed_lines(share: float, seed: int) -> np.ndarray:
    """``share`` of each element's strong lines (at least one where it has any), line-list indices."""
    ll = mock.line_list()
    rng = np.random.default_rng(seed)
    picked = []
    for element in sorted(set(ll.element) - {""}):
        strong = np.flatnonzero((ll.element == element) & (ll.log_strength > np.log10(0.5)))
        if strong.size:
            picked.append(rng.choice(strong, max(1, round(share * strong.size)), replace=False))
    return np.sort(np.concatenate(picked))


def element_of(response: np.ndarray, names: tuple) -> str:
    """The element a feature's summed label responses point to (see the module docstring)."""
    fe = response[names.index("FE_H")]
    xfe = [(response[j], n[: -len("_FE")]) for j, n in enumerate(names) if n.endswith("_FE")]
    best, element = max(xfe)
    return element if best >= 0.5 * fe else "FE"


def attribution(difference: np.ndarray, wave: np.ndarray, names: tuple, dropped: np.ndarray) -> dict:
    """Found and attributed removed lines, from a Jacobian difference ``(L, M)`` on the pixels ``wave``."""
    units = np.array([100.0, 0.1] + [0.05] * (len(names) - 2))
    found = cs.features(difference, threshold=0.005, label_names=names, units=units)
    wave_net = np.asarray(wave)
    owner = np.full(wave_net.size, -1)
    for i, f in enumerate(found):
        owner[f.start : f.stop] = i
    ll = mock.line_list()
    rows = []
    gaps = np.abs(np.diff(wave_net))
    step = np.minimum(np.r_[gaps, gaps[-1]], np.r_[gaps[0], gaps])  # a pixel's own width, not a chip gap
    for line in dropped:
        w = ll.wavelength[line]
        pixel = int(np.argmin(np.abs(wave_net - w)))
        if abs(wave_net[pixel] - w) > step[pixel]:
            continue  # outside the pixels the networks see: the crop or a gap between chips
        i = owner[pixel]
        element = str(ll.element[line])
        got = None if i < 0 else element_of(found[i].response, names)
        rows.append((element, got))
    per_element = {}
    for e, g in rows:
        d = per_element.setdefault(e, {"removed": 0, "found": 0, "strict": 0, "lenient": 0})
        d["removed"] += 1
        d["found"] += g is not None
        d["strict"] += g == e
        d["lenient"] += g is not None and (g == e or {e, g} <= CNO)
    n, found_n, strict, lenient = (
        sum(d[k] for d in per_element.values()) for k in ("removed", "found", "strict", "lenient")
    )
    return {
        "removed_lines_in_window": n,
        "found": found_n,
        "attributed_lenient_pct": 100.0 * lenient / max(1, found_n),
        "attributed_strict_pct": 100.0 * strict / max(1, found_n),
        "attributed_lenient_of_removed_pct": 100.0 * lenient / max(1, n),
        "features": len(found),
        "per_element": per_element,
    }


def reference_giant(names: tuple) -> np.ndarray:
    ref = np.zeros(len(names))
    ref[:2] = (4750.0, 2.5)
    return ref


def generator_difference(dropped: np.ndarray, n_pix: int, crop: int) -> np.ndarray:
    """The ceiling: the mock's own Jacobian difference, all lines minus the synthetic domain's, same LSF."""
    keep = np.ones(mock.line_list().wavelength.size, np.float32)
    keep[dropped] = 0.0
    full = lambda y: mock.spectrum(y, n_pix=n_pix)[crop:]  # noqa: E731
    kept = lambda y: mock.spectrum(y, keep=keep, n_pix=n_pix)[crop:]  # noqa: E731
    return cs.jacobian_difference(full, kept, reference_giant(mock.LABEL_NAMES).astype(np.float32))[2]


def recovery(model: cs.Model, test: mock.MockDomains) -> dict:
    kept = model.kept
    truth = np.asarray(test.observed.flux, np.float64)[:, kept]
    syn = np.asarray(test.synthetic.flux, np.float64)[:, kept]
    z_sp = cs.encode(model, test.observed, progress=False).z_sp
    sent = np.asarray(cs.transfer(model, test.synthetic, "synth->obs", z_sp=z_sp, progress=False), np.float64)
    m = np.asarray(test.dropped_mask)[kept]
    err = lambda x: float(100 * np.mean(np.abs(x[:, m] - truth[:, m]) / truth[:, m]))  # noqa: E731
    rest = lambda x: float(100 * np.mean(np.abs(x[:, ~m] - truth[:, ~m]) / truth[:, ~m]))  # noqa: E731
    return {"recovery_error_pct": err(sent), "unrecovered_error_pct": err(syn), "other_pixels_error_pct": rest(sent),
            "other_pixels_unrecovered_pct": rest(syn), "masked_pixels": int(m.sum())}  # fmt: skip


def train(args, dropped, n_pix: int, k_train, k_emu, k_cs) -> tuple[dict, cs.Model]:
    """The unpaired training domains, the emulator of the synthetic one and Cycle-StarNet: (record, model)."""
    t0 = time.perf_counter()
    data = mock.domains(k_train, args.stars, paired=False, drop=[int(i) for i in dropped],
                        abundance_scatter=args.abundance_scatter, n_pix=n_pix)  # fmt: skip
    data_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    truth = np.asarray(data.labels.values, np.float64)
    emu_config = payne.Config(hidden=(128, 128), learning_rate=3e-3, loss_scale=1.0, batch_size=128,
                              epochs=args.emulator_epochs, validate_every=10)  # fmt: skip
    labels = Labels(truth, ivar=np.ones_like(truth), names=tuple(data.labels.names), dtype=np.float64)
    emulator = payne.fit(data.synthetic, labels, key=k_emu, config=emu_config).model
    emulator_s = time.perf_counter() - t0
    base = dataclasses.replace(cs.Config.missing_lines(), split_z=args.split_z)
    config = scaled_config(args.width, args.iterations, base)
    t0 = time.perf_counter()
    checkpoint = None if args.checkpoint is None else Checkpoint(args.checkpoint, every=1)
    fit = cs.fit(data.observed, data.synthetic, key=k_cs, config=config, emulator=emulator, checkpoint=checkpoint)
    train_s = time.perf_counter() - t0
    if args.save is not None:
        io.save(args.save, fit.model)
    record = {"iterations": fit.aux["iterations"], "width": args.width, "stars_per_domain": args.stars,
              "abundance_scatter": args.abundance_scatter,
              "data_s": round(data_s, 1), "emulator_s": round(emulator_s, 1), "train_s": round(train_s, 1),
              "config": dataclasses.asdict(config)}  # fmt: skip
    return record, fit.model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=8000)
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--stars", type=int, default=4000, help="spectra per domain")
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--share", type=float, default=0.3)
    ap.add_argument("--split-z", type=int, default=4)
    ap.add_argument("--emulator-epochs", type=int, default=150)
    ap.add_argument(
        "--abundance-scatter",
        type=float,
        default=0.0,
        help="independent [X/Fe] scatter (dex) of both domains' stars (mock.domains)",
    )
    ap.add_argument("--checkpoint", type=Path, default=None, help="resume from / write to this checkpoint")
    ap.add_argument("--save", type=Path, default=None, help="save the trained model here")
    ap.add_argument("--load", type=Path, default=None, help="score a model saved by --save (no training)")
    ap.add_argument("--out", default=str(HERE / "results.jsonl"), help="JSON lines file ('' writes none)")
    args = ap.parse_args()

    n_pix = 7214  # the networks see 7167 after the paper's crop
    dropped = removed_lines(args.share, seed=0)
    k_train, k_test, k_emu, k_cs = jax.random.split(jax.random.key(0), 4)
    quiet = mock.Noise(snr=1e4, bad_pixel_frac=0.0, sky=0.0, missing_label_frac=0.0)
    test = mock.domains(k_test, args.test, paired=True, drop=[int(i) for i in dropped], noise=quiet,
                        abundance_scatter=args.abundance_scatter, n_pix=n_pix)  # fmt: skip
    if args.load is None:
        record, model = train(args, dropped, n_pix, k_train, k_emu, k_cs)
    else:
        model = io.load(args.load)
        record = {"loaded": str(args.load), "config": dataclasses.asdict(model.config)}
    names = tuple(model.emulator.label_names)
    z_sp = cs.encode(model, test.observed[:32], progress=False).z_sp
    learned = cs.line_jacobians(model, reference_giant(names), z_sp).difference
    wave = np.asarray(model.net_wavelength)
    ceiling = attribution(generator_difference(dropped, n_pix, model.config.crop[0]), wave, names, dropped)
    record = {
        "share": args.share,
        "test_stars": args.test,
        "removed_lines": int(dropped.size),
        **recovery(model, test),
        **attribution(learned, wave, names, dropped),
        "generator_ceiling": {k: v for k, v in ceiling.items() if k != "per_element"},
        **record,
    }
    write_record("cycle_starnet_missing_lines_b", record, args.out)


if __name__ == "__main__":
    main()
