r"""The Payne's label fitter: ``payne.fit_labels`` on a survey against the reference per-star fitter; training.

Two emulators on the 7214-pixel APOGEE grid (``--emulators``):

``per_pixel``
    The shipped 2019 emulator ``../shared/data/payne/NN_normalized_spectra.npz``
    (5 labels, 5 sigmoid units per pixel).
``network``
    A single network of the current format (25 labels, ``NETWORK_LABEL_NAMES``,
    two hidden layers of 300 LeakyReLU units, ``w (out, in)``) with RANDOM
    weights from a fixed seed (:func:`network_arrays`; no trained 25-label
    network is available here): the hidden layers drawn as PyTorch's
    ``nn.Linear`` starts them, the output layer built so that the spectrum is
    continuum 1 minus about 900 Gaussian lines (widths 0.8-1.6 px, depths
    0.01-0.35) whose depths each vary with the labels by about 30% over the
    box.  Written as a Payne ``.npz`` and read back by ``payne.load`` and by the
    reference, so both fit the same file.  Its cost per model evaluation is the
    real network's; its spectra only look like stellar ones.

Planted truth for each (:func:`make_planted`, seeded numpy): ``--n-stars`` stars
(default 10,000) with scaled labels uniform in the inner 80% of the box,
velocities uniform in [-4, 4] km/s, spectra made by the emulator (rest frame,
``payne.predict_spectra``) and shifted with the reference's own
``doppler_shift`` (``np.interp`` over the full grid), Gaussian noise at an SNR
uniform in 50-200 per star, and 2% bad pixels (garbage flux, ``ivar`` 0 for
jaxspec, error 999 for the reference: its mask).  ``--apogee-mask`` also masks
The Payne's 875 APOGEE pixels in both.

jaxspec: ``payne.fit_labels(model, spectra, rv=True, n_starts=--n-starts,
chunk_size=--chunk-size)`` on all stars at once; one warm-up call (compiles,
timed apart), then ``--repeats`` timed calls, median.  Reference
(``_payne_reference.py``: The Payne's ``curve_fit`` routine in numpy/scipy, one
star at a time, ``trf``, finite differences, the same bounds, tolerances and
start) on the first ``--n-ref`` stars (per-pixel, default 100) or
``--n-ref-network`` (default 10), the same stars, in the same process.

Reported per emulator: ms per star of both and their ratio (reference /
jaxspec; targets 100x per-pixel, 300x network on 2 CPU cores), label and RV
RMSE against the truth for both on the common stars (and jaxspec's on all),
the label agreement ``median |reference - jaxspec| / jaxspec error`` per label
and the RV over the stars where both converged, the fractions converged,
flagged and on a bound.  And the emulator's training throughput: ``payne.fit``
(The Payne's recipe, 25 labels, 300 x 300, batch 512) on ``--n-train`` noiseless
spectra of the ``network`` emulator at labels uniform over its box, spectra per
second of training over ``--train-epochs`` epochs (the fit's wall time less the time JAX spent
compiling in it).

Nothing here is CPU-specific: the same command runs on a GPU (jaxspec on the
default device; the reference is numpy on the host, as ever).  Printed, and one
JSON line with the machine appended to ``--out`` (default
``benchmarks/results.jsonl``; none with ``--quick`` unless given).

Run: ``python benchmarks/bench_payne.py`` (the full benchmark), ``python
benchmarks/bench_payne.py --quick``; the jaxspec halves alone through the harness:
``python benchmarks/run.py payne_fit_labels_per_pixel payne_fit_labels_network payne_train_network``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import _payne_reference as ref
import jax
import numpy as np
from _harness import timed_call

from jaxspec.data.containers import Labels, Spectra
from jaxspec.models import payne

HERE = Path(__file__).resolve().parent
PAYNE_DIR = HERE.parents[1] / "shared" / "data" / "payne"

EMULATORS = ("per_pixel", "network")
N_STARS = 10_000
N_REF = {"per_pixel": 100, "network": 10}
TARGET_RATIO = {"per_pixel": 100.0, "network": 300.0}  # the issue's speed-up per star on 2 CPU cores
SNR = (50.0, 200.0)
BAD_FRACTION = 0.02
RV_PLANTED = 4.0  # km/s
INNER = 0.4  # scaled labels planted in [-0.4, 0.4]: the inner 80% of the box
N_TRAIN, TRAIN_EPOCHS = 4000, 5
QUICK = {"n_stars": 256, "n_ref": 4, "n_ref_network": 2, "repeats": 1, "n_train": 600, "train_epochs": 2}

#: The box of the random 25-label network (physical units, NETWORK_LABEL_NAMES order): Teff, logg,
#: vmicro, 20 [X/H], 12C/13C, vmacro.
NETWORK_BOX = np.array([(3500.0, 6500.0), (0.0, 5.0), (0.3, 3.0)] + [(-1.5, 0.6)] * 20 + [(4.0, 40.0), (0.0, 12.0)]).T


# -- emulators ------------------------------------------------------------------------------


def payne_wavelength() -> np.ndarray:
    """The Payne's own ``apogee_wavelength.npz`` grid (7214 px, vacuum Angstrom), which its fitter uses."""
    with np.load(PAYNE_DIR / "apogee_wavelength.npz") as d:
        return np.asarray(d["wavelength"], np.float64)


def _leaky(z):
    return np.where(z > 0, z, payne.LEAKY_SLOPE * z)


def network_arrays(seed: int = 0, n_pix: int = 7214, hidden: int = 300, n_lines: int | None = None) -> dict:
    r"""The arrays of a random single-network emulator (25 labels, ``hidden`` x ``hidden``, ``n_pix`` pixels).

    Hidden layers as PyTorch's ``nn.Linear`` starts them (uniform on :math:`\pm 1/\sqrt{n_\mathrm{in}}`);
    the output is :math:`f_l = 1 - \sum_k P_{lk}\,(1 + c\, r_k \cdot (h(s) - h(0)))`, with :math:`P_{lk}`
    Gaussian line profiles (``n_lines``, default ``n_pix // 8``), :math:`r_k` a random direction in the
    last hidden layer per line and :math:`c` set so that the line depths vary by 30% (standard deviation
    over the box): a linear last layer, so exactly the current format.  float32, Payne names.
    """
    rng = np.random.default_rng(seed)
    m = NETWORK_BOX.shape[1]
    layers = []
    for n_in, n_out in ((m, hidden), (hidden, hidden)):
        bound = 1.0 / math.sqrt(n_in)
        layers.append((rng.uniform(-bound, bound, (n_out, n_in)), rng.uniform(-bound, bound, n_out)))

    def last_hidden(s):
        x = s.T
        for w, b in layers:
            x = _leaky(w @ x + b[:, None])
        return x.T

    k = n_pix // 8 if n_lines is None else n_lines
    centre, width = rng.uniform(0, n_pix, k), rng.uniform(0.8, 1.6, k)
    depth = rng.uniform(0.01, 0.35, k)
    profile = depth * np.exp(-0.5 * np.square((np.arange(n_pix)[:, None] - centre) / width))  # (L, K)
    direction = rng.standard_normal((k, hidden))
    h0 = last_hidden(np.zeros((1, m)))[0]
    spread = (last_hidden(rng.uniform(-0.5, 0.5, (512, m))) - h0) @ direction.T
    c = 0.3 / float(np.mean(np.std(spread, axis=0)))
    w2 = -c * profile @ direction
    b2 = 1.0 - profile.sum(axis=1) - w2 @ h0
    layers.append((w2, b2))
    arrays = {f"w_array_{i}": w.astype(np.float32) for i, (w, _) in enumerate(layers)}
    arrays.update({f"b_array_{i}": b.astype(np.float32) for i, (_, b) in enumerate(layers)})
    arrays.update(x_min=NETWORK_BOX[0].copy(), x_max=NETWORK_BOX[1].copy())
    return arrays


@functools.lru_cache(maxsize=2)
def make_emulator(kind: str, seed: int = 0) -> tuple[payne.Model, ref.Emulator]:
    """The jaxspec model and the reference's arrays of emulator ``kind``, read from the same Payne file."""
    if kind == "per_pixel":
        path = PAYNE_DIR / "NN_normalized_spectra.npz"
        if not path.is_file():
            raise FileNotFoundError(f"kind: no shipped Payne emulator at {path} (see ../shared/README.md)")
        return payne.load(path), ref.load(path)
    if kind != "network":
        raise ValueError(f"kind: expected one of {EMULATORS}, found {kind!r}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "network.npz"
        np.savez(path, **network_arrays(seed))
        return payne.load(path), ref.load(path)


# -- planted truth ------------------------------------------------------------------------------


class Planted(NamedTuple):
    """Noisy observed-frame spectra of known labels: ``spectra`` (jaxspec's input, ``ivar`` 0 at ``bad``),
    ``flux (n, L)``, per-star noise ``sigma (n,)``, ``bad (n, L)``, truth ``labels (n, M)`` (physical),
    ``s (n, M)`` (scaled) and ``rv (n,)`` km/s."""

    spectra: Spectra
    flux: np.ndarray
    sigma: np.ndarray
    bad: np.ndarray
    labels: np.ndarray
    s: np.ndarray
    rv: np.ndarray


def rest_spectra(model: payne.Model, labels: np.ndarray, chunk: int = 1000) -> np.ndarray:
    """The emulator's rest-frame flux ``(n, L)`` at physical ``labels`` (jaxspec, chunked), float64."""
    out = [
        np.asarray(  # extrapolate: grid labels may sit on the box's edge to rounding
            payne.predict_spectra(model, labels[i : i + chunk], extrapolate=True, progress=False).spectra.flux,
            np.float64,
        )
        for i in range(0, labels.shape[0], chunk)
    ]
    return np.concatenate(out)


@functools.lru_cache(maxsize=2)
def make_planted(kind: str, n: int, seed: int = 0) -> Planted:
    """``n`` planted stars for emulator ``kind`` (cached: the CLI and the harness entries share it)."""
    model, _ = make_emulator(kind)
    wave = payne_wavelength()
    rng = np.random.default_rng(seed)
    m = model.n_labels
    s = rng.uniform(-INNER, INNER, (n, m))
    rv = rng.uniform(-RV_PLANTED, RV_PLANTED, n)
    lo, hi = np.asarray(model.x_min, np.float64), np.asarray(model.x_max, np.float64)
    labels = (s + 0.5) * (hi - lo) + lo
    sigma = 1.0 / rng.uniform(*SNR, n)
    flux = np.empty((n, model.n_pix), np.float32)
    bad = np.empty((n, model.n_pix), bool)
    for a in range(0, n, 1000):
        rest = rest_spectra(model, labels[a : a + 1000])
        for j, row in enumerate(rest):
            i = a + j
            clean = ref.doppler_shift(wave, row, rv[i])
            noisy = clean + sigma[i] * rng.standard_normal(clean.shape)
            bad[i] = rng.uniform(size=clean.shape) < BAD_FRACTION
            noisy[bad[i]] = rng.uniform(-10.0, 10.0, int(bad[i].sum()))
            flux[i] = noisy
    ivar = np.where(bad, 0.0, (1.0 / np.square(sigma))[:, None]).astype(np.float32)
    spectra = Spectra(flux, ivar, model.wavelength)
    return Planted(spectra, flux, sigma, bad, labels, s, rv)


def apogee_mask() -> np.ndarray:
    """The Payne's pixel mask (True = omit; 875 of 7214 pixels)."""
    with np.load(PAYNE_DIR / "apogee_mask.npz") as d:
        return np.asarray(d["apogee_mask"], bool)


# -- the two fitters ------------------------------------------------------------------------------


def fit_jaxspec(model, spectra, *, mask=None, n_starts: int = 1, chunk_size: int = 1024) -> payne.LabelFit:
    """``payne.fit_labels`` with the RV free, as the benchmark times it."""
    return payne.fit_labels(
        model, spectra, rv=True, mask=mask, n_starts=n_starts, chunk_size=chunk_size, progress=False
    )


def _rmse(x, truth) -> list:
    d = np.asarray(x, np.float64) - truth
    d = d[np.all(np.isfinite(d.reshape(d.shape[0], -1)), axis=1)]
    return np.sqrt(np.mean(np.square(d), axis=0)).tolist() if d.size else None


def run_jaxspec(model, data: Planted, *, mask, n_starts: int, chunk_size: int, repeats: int) -> tuple[dict, object]:
    """Warm-up call (compiles), ``repeats`` timed calls; the median and the last fit's accuracy on all stars."""
    call = functools.partial(fit_jaxspec, model, data.spectra, mask=mask, n_starts=n_starts, chunk_size=chunk_size)
    fit, first, compile_s = timed_call(call)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fit = jax.block_until_ready(call())
        times.append(time.perf_counter() - t0)
    n = data.labels.shape[0]
    median = statistics.median(times)
    err = np.sqrt(np.diagonal(np.asarray(fit.covariance, np.float64), axis1=1, axis2=2))
    values = np.asarray(fit.labels.values, np.float64)
    ok = ~np.asarray(fit.flagged)
    pulls = np.column_stack(
        [(values - data.labels) / err, (np.asarray(fit.rv, np.float64) - data.rv) / np.asarray(fit.rv_err, np.float64)]
    )[ok]
    return {
        "dtype": str(np.asarray(fit.labels.values).dtype),
        "n_starts": n_starts,
        "chunk_size": chunk_size,
        "first_call_s": first,
        "compile_s": compile_s,
        "times_s": times,
        "median_s": median,
        "ms_per_star": 1e3 * median / n,
        "spectra_per_s": n / median,
        "label_rmse": _rmse(values, data.labels),
        "rv_rmse": _rmse(fit.rv, data.rv),
        "pull_std": pulls.std(axis=0).tolist() if pulls.size else None,
        "median_reduced_chi2": float(np.median(np.asarray(fit.reduced_chi2, np.float64))),
        "converged": float(np.mean(fit.converged)),
        "flagged": float(np.mean(fit.flagged)),
        "on_bound": float(np.mean(fit.on_bound)),
    }, fit


def run_reference(em: ref.Emulator, data: Planted, n_ref: int, *, mask) -> tuple[dict, ref.Fits]:
    """The reference on the first ``n_ref`` stars, one at a time; per-star times and accuracy."""
    rows = slice(0, n_ref)
    omit = data.bad[rows] if mask is None else data.bad[rows] | mask
    err = np.broadcast_to(data.sigma[rows, None], omit.shape)
    t0 = time.perf_counter()
    fits = ref.fit_stars(em, payne_wavelength(), data.flux[rows].astype(np.float64), err, omit, progress=True)
    wall = time.perf_counter() - t0
    conv = fits.converged
    s = (fits.labels - em.x_min) / (em.x_max - em.x_min) - 0.5
    on_bound = np.any(np.abs(s) > 0.499, axis=1) | (np.abs(fits.rv) > 0.998 * ref.RV_BOUND)
    return {
        "n_stars": n_ref,
        "wall_s": wall,
        "ms_per_star": 1e3 * float(np.mean(fits.seconds)),
        "ms_per_star_median": 1e3 * float(np.median(fits.seconds)),
        "evaluations_median": float(np.median(fits.n_eval)),
        "evaluations_max": int(np.max(fits.n_eval)),
        "converged": float(np.mean(conv)),
        "on_bound": float(np.mean(on_bound & conv)),
        "median_reduced_chi2": float(np.nanmedian(fits.chi2 / (np.sum(~omit, axis=1) - em.n_labels - 1))),
    }, fits


def compare(data: Planted, fit, fits: ref.Fits, n_ref: int) -> dict:
    """Accuracy of both on the common stars against the truth, and their agreement where both converged."""
    rows = slice(0, n_ref)
    js_labels = np.asarray(fit.labels.values, np.float64)[rows]
    js_rv = np.asarray(fit.rv, np.float64)[rows]
    js_err = np.sqrt(np.diagonal(np.asarray(fit.covariance, np.float64), axis1=1, axis2=2))[rows]
    js_rv_err = np.asarray(fit.rv_err, np.float64)[rows]
    both = fits.converged & np.asarray(fit.converged)[rows] & ~np.asarray(fit.flagged)[rows]
    diff = np.column_stack([fits.labels - js_labels, fits.rv - js_rv])[both]
    scale = np.column_stack([js_err, js_rv_err])[both]
    truth, rv = data.labels[rows], data.rv[rows]
    return {
        "n_common": n_ref,
        "n_both_converged": int(both.sum()),
        "label_rmse": {"jaxspec": _rmse(js_labels, truth), "reference": _rmse(fits.labels, truth)},
        "rv_rmse": {"jaxspec": _rmse(js_rv, rv), "reference": _rmse(fits.rv, rv)},
        "agreement_median": np.median(np.abs(diff) / scale, axis=0).tolist() if both.any() else None,
        "agreement_max": np.max(np.abs(diff) / scale, axis=0).tolist() if both.any() else None,
        "error_ratio_median": np.median(np.column_stack([fits.label_err, fits.rv_err])[both] / scale, axis=0).tolist()
        if both.any()
        else None,
    }


# -- training ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def training_grid(n: int, seed: int = 1) -> tuple[Spectra, Labels]:
    """``n`` noiseless rest-frame spectra of the ``network`` emulator at labels uniform over its box."""
    model, _ = make_emulator("network")
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(model.x_min, np.float64), np.asarray(model.x_max, np.float64)
    labels = lo + rng.uniform(size=(n, model.n_labels)) * (hi - lo)
    flux = rest_spectra(model, labels)
    return Spectra(flux, np.ones_like(flux), model.wavelength), Labels(
        labels, np.ones_like(labels), names=model.label_names
    )


def _train(spectra, labels, epochs: int, seed: int = 0):
    config = payne.Config(epochs=epochs, validate_every=epochs)
    out = payne.fit(spectra, labels, key=jax.random.key(seed), config=config, progress=False)
    return jax.block_until_ready(out)


def run_training(n_train: int, epochs: int) -> dict:
    """Spectra per second of ``payne.fit`` (25 labels, 300 x 300, batch 512) over ``epochs`` epochs.

    The fit's wall time less the time JAX spent tracing and compiling in it (each ``payne.fit`` call builds
    and compiles its train step); the spectra are those of the full batches (the last partial one is
    dropped every epoch); two validation passes (first and last epoch) are included.
    """
    spectra, labels = training_grid(n_train)
    out, wall, compile_s = timed_call(_train, spectra, labels, epochs)
    rows = int(np.size(out.aux["train_index"]))
    batch = min(payne.Config().batch_size, rows)
    seen = (rows // batch) * batch * epochs
    run_s = wall - compile_s
    return {
        "n_spectra": n_train,
        "n_train_rows": rows,
        "epochs": epochs,
        "batch_size": batch,
        "fit_s": wall,
        "compile_s": compile_s,
        "epoch_s": run_s / epochs,
        "spectra_per_s": seen / run_s if run_s > 0 else None,
        "loss_first": float(np.asarray(out.history["loss"])[0]),
        "loss_last": float(np.asarray(out.history["loss"])[-1]),
    }


# -- report ------------------------------------------------------------------------------


def _fmt(x, spec: str = ".4g", suffix: str = "") -> str:
    return "" if x is None else f"{x:{spec}}{suffix}"


def _print_emulator(kind: str, model, data: Planted, js: dict, rf: dict | None, cmp: dict | None) -> None:
    n, m = data.labels.shape
    print(
        f"\n{kind}: {n} stars x {model.n_pix} px, {m} labels + RV, jaxspec {js['dtype']} on "
        f"{jax.default_backend()}, n_starts {js['n_starts']}, chunk {js['chunk_size']}"
    )
    print(f"{'':24} {'jaxspec':>12} {'reference':>12} {'ref/jaxspec':>12}")
    ratio = rf and rf["ms_per_star"] / js["ms_per_star"]
    print(f"{'ms per star':24} {_fmt(js['ms_per_star']):>12} {_fmt(rf and rf['ms_per_star']):>12} {_fmt(ratio):>12}")
    print(f"{'spectra per s':24} {_fmt(js['spectra_per_s']):>12} {_fmt(rf and 1e3 / rf['ms_per_star']):>12}")
    print(
        f"jaxspec: median of {len(js['times_s'])} calls {js['median_s']:.4g} s; first call {js['first_call_s']:.4g} s "
        f"(compile {js['compile_s']:.3g} s); converged {js['converged']:.2%}, flagged {js['flagged']:.2%}, "
        f"on a bound {js['on_bound']:.2%}; median reduced chi2 {js['median_reduced_chi2']:.4f}"
    )
    if rf:
        target = TARGET_RATIO[kind]
        print(
            f"reference: {rf['n_stars']} stars in {rf['wall_s']:.3g} s (median {rf['ms_per_star_median']:.4g} ms "
            f"a star, {rf['evaluations_median']:.0f} model evaluations median, {rf['evaluations_max']} max); "
            f"converged {rf['converged']:.2%}, on a bound {rf['on_bound']:.2%}; "
            f"median reduced chi2 {rf['median_reduced_chi2']:.4f}"
        )
        verdict = "met" if ratio >= target else "NOT met"
        print(f"speed-up per star {ratio:.1f}x (target {target:g}x on 2 CPU cores: {verdict})")
    names = [*model.label_names, "RV"]
    print(f"\n{'':10} {'RMSE all':>10}", end="")
    if cmp:
        print(
            f" {'RMSE js':>10} {'RMSE ref':>10}   {'|ref-js|/err_js':>16} {'max':>8} {'err_ref/err_js':>15}"
            f"   (first {cmp['n_common']} stars; {cmp['n_both_converged']} both converged)"
        )
    else:
        print()
    js_all = [*js["label_rmse"], js["rv_rmse"]]
    for i, name in enumerate(names):
        row = f"{name:10} {_fmt(js_all[i]):>10}"
        if cmp:
            a = [*(cmp["label_rmse"]["jaxspec"] or [None] * m), cmp["rv_rmse"]["jaxspec"]]
            b = [*(cmp["label_rmse"]["reference"] or [None] * m), cmp["rv_rmse"]["reference"]]
            agree = cmp["agreement_median"] or [None] * (m + 1)
            worst = cmp["agreement_max"] or [None] * (m + 1)
            errs = cmp["error_ratio_median"] or [None] * (m + 1)
            row += (
                f" {_fmt(a[i]):>10} {_fmt(b[i]):>10}   {_fmt(agree[i], '.3f'):>16} {_fmt(worst[i], '.3f'):>8} "
                f"{_fmt(errs[i], '.3f'):>15}"
            )
        print(row)


def _git_state() -> dict | None:
    """Commit and dirty flag of the checkout the benchmark ran from (None outside git)."""
    try:
        run = functools.partial(subprocess.run, capture_output=True, text=True, cwd=HERE.parent, check=True, timeout=30)
        commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        dirty = bool(run(["git", "status", "--porcelain", "--", "jaxspec"]).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "jaxspec_dirty": dirty}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emulators", nargs="+", choices=EMULATORS, default=list(EMULATORS))
    ap.add_argument("--n-stars", type=int, default=None, help=f"planted stars fitted by jaxspec ({N_STARS})")
    ap.add_argument("--n-ref", type=int, default=None, help=f"reference's stars, per-pixel ({N_REF['per_pixel']})")
    ap.add_argument("--n-ref-network", type=int, default=None, help=f"the same, network ({N_REF['network']})")
    ap.add_argument("--repeats", type=int, default=None, help="timed jaxspec calls after the warm-up (3)")
    ap.add_argument("--n-starts", type=int, default=1, help="fit_labels starts per star (1: the reference's start)")
    ap.add_argument("--chunk-size", type=int, default=1024, help="fit_labels stars per compiled chunk")
    ap.add_argument("--apogee-mask", action="store_true", help="also mask The Payne's 875 APOGEE pixels in both fits")
    ap.add_argument("--n-train", type=int, default=None, help=f"spectra for the training throughput ({N_TRAIN})")
    ap.add_argument("--train-epochs", type=int, default=None, help=f"timed training epochs ({TRAIN_EPOCHS})")
    ap.add_argument("--no-train", action="store_true", help="skip the training throughput")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help=f"small sizes {QUICK}, no record unless --out")
    ap.add_argument("--out", default=None, help="append the JSON record here ('' for none; default results.jsonl)")
    args = ap.parse_args(argv)
    sizes = {"n_stars": N_STARS, "n_ref": N_REF["per_pixel"], "n_ref_network": N_REF["network"], "repeats": 3}
    sizes.update(n_train=N_TRAIN, train_epochs=TRAIN_EPOCHS)
    if args.quick:
        sizes.update(QUICK)
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
        if sizes[key] < (0 if key.startswith("n_ref") else 1):
            ap.error(f"--{key.replace('_', '-')}: expected a positive number, found {sizes[key]}")
    out = args.out if args.out is not None else ("" if args.quick else str(HERE / "results.jsonl"))

    from _harness import machine_info

    mask = apogee_mask() if args.apogee_mask else None
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "benchmark": "payne_fit_labels",
        **sizes,
        "n_starts": args.n_starts,
        "chunk_size": args.chunk_size,
        "apogee_mask": bool(args.apogee_mask),
        "seed": args.seed,
        "emulators": {},
    }
    for kind in args.emulators:
        t0 = time.perf_counter()
        model, em = make_emulator(kind)
        data = make_planted(kind, sizes["n_stars"], args.seed)
        setup = time.perf_counter() - t0
        print(f"{kind}: {sizes['n_stars']} planted stars made in {setup:.3g} s", flush=True)
        js, fit = run_jaxspec(
            model, data, mask=mask, n_starts=args.n_starts, chunk_size=args.chunk_size, repeats=sizes["repeats"]
        )
        n_ref = min(sizes["n_ref" if kind == "per_pixel" else "n_ref_network"], sizes["n_stars"])
        rf = cmp = None
        if n_ref:
            rf, fits = run_reference(em, data, n_ref, mask=mask)
            cmp = compare(data, fit, fits, n_ref)
        _print_emulator(kind, model, data, js, rf, cmp)
        record["emulators"][kind] = {
            "emulator": "shipped NN_normalized_spectra.npz" if kind == "per_pixel" else "random weights, seed 0",
            "n_labels": model.n_labels,
            "n_pix": model.n_pix,
            "setup_s": setup,
            "jaxspec": js,
            "reference": rf,
            "comparison": cmp,
            "ratio_per_star": rf and rf["ms_per_star"] / js["ms_per_star"],
            "target_ratio": TARGET_RATIO[kind],
        }
    if not args.no_train:
        train = run_training(sizes["n_train"], sizes["train_epochs"])
        print(
            f"\ntraining (payne.fit, 25 labels, 300 x 300, batch {train['batch_size']}): {train['n_train_rows']} "
            f"spectra, {train['epoch_s']:.4g} s an epoch = {_fmt(train['spectra_per_s'], '.5g')} spectra/s "
            f"(fit of {train['epochs']} epochs {train['fit_s']:.3g} s, of which compile {train['compile_s']:.3g} s; "
            f"L1 loss {train['loss_first']:.4g} -> {train['loss_last']:.4g})"
        )
        record["training"] = train
    record.update(machine=machine_info(), git=_git_state())
    if out:
        with open(out, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        print(f"appended the record to {out}")
    return record


# -- harness entries (``python benchmarks/run.py payne_fit_labels_per_pixel``) ---------------


def _bench_fit(kind: str):
    def factory():
        model, _ = make_emulator(kind)
        data = make_planted(kind, N_STARS)
        return lambda: fit_jaxspec(model, data.spectra).labels.values

    return factory


def _bench_train():
    spectra, labels = training_grid(N_TRAIN)
    return lambda: _train(spectra, labels, TRAIN_EPOCHS).model.params


BENCHMARKS = {
    "payne_fit_labels_per_pixel": _bench_fit("per_pixel"),
    "payne_fit_labels_network": _bench_fit("network"),
    "payne_train_network": _bench_train,
}

if __name__ == "__main__":
    main()
