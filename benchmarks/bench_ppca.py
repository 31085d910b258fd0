r"""``ppca.fit`` against the reference PPCA (PyPI ``pyppca``) on identical data, and at full survey size.

Data (seeded, float32): ``n_stars x 7514`` spectra ``x = m + W z + e`` with a
mean spectrum ``m`` (unit continuum with absorption lines), a planted rank-30
``W`` with column amplitudes falling geometrically from 0.05 to 0.005 (flux
units), ``z ~ N(0, I)``, white noise 0.01 (S/N 100), and 2% of the entries
missing uniformly at random (NaN for ``pyppca``, ``mask=`` for ``ppca.fit``).

Comparison (default): both fit ``K = 30`` components.  ``pyppca.ppca`` stops
when its objective changes by less than ``1e-4`` (relative, after at least 5
iterations; fixed in its code); ``ppca.fit`` runs with ``tol=1e-4`` on the
relative change of its parameters.  ``pyppca`` runs in its own virtual
environment (``--ref-python``, default ``/tmp/venvppca/bin/python``) in a
subprocess on the same array saved as ``.npy``; its time is that of the
``ppca()`` call alone.  ``ppca.fit`` is timed after a warm-up call (which also
compiles), median of ``--repeats``.  Printed and appended to ``--out``: wall
times, their ratio, iteration counts, and the largest principal angle between
the two fitted subspaces and between each and the planted one.

``--full-survey``: 151,145 x 7514 (or ``--n-stars``) generated in chunks into
``np.memmap`` files under ``--tmp`` (4.5 GB of float32 plus a 1.1 GB mask);
times ``ppca.fit`` alone, a first call (which compiles for the padded widths
of this survey's missing-pixel lists) and a second one, and reports the peak
resident memory of the process.

Run: ``python benchmarks/bench_ppca.py --n-stars 20000`` or
``python benchmarks/bench_ppca.py --full-survey``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from _harness import write_record

from jaxspec.models import ppca

HERE = Path(__file__).resolve().parent
N_PIX, RANK, NOISE, MISSING = 7514, 30, 0.01, 0.02

_REFERENCE = r"""
import json, sys, time
import numpy as np
from pyppca import ppca
y = np.load(sys.argv[1])
t0 = time.perf_counter()
c, ss, m, x, ye = ppca(y, int(sys.argv[2]), True)
elapsed = time.perf_counter() - t0
np.save(sys.argv[3], c)
print(json.dumps({"time_s": elapsed, "noise_variance": float(ss)}))
"""


def truth(seed: int = 0, n_pix: int = N_PIX):
    """Mean spectrum ``(D,)`` and planted loadings ``(D, 30)``."""
    rng = np.random.default_rng(seed)
    mean = np.ones(n_pix)
    lines = rng.uniform(0, n_pix, 400), rng.uniform(0.05, 0.6, 400), rng.uniform(1, 4, 400)
    for centre, depth, width in zip(*lines, strict=True):
        mean -= depth * np.exp(-0.5 * ((np.arange(n_pix) - centre) / width) ** 2)
    w = rng.normal(size=(n_pix, RANK)) * np.geomspace(0.05, 0.005, RANK) / np.sqrt(n_pix / 100)
    return mean.astype(np.float32), w.astype(np.float32)


def generate(n_stars: int, seed: int = 0, out=None, mask_out=None, chunk: int = 5000):
    """Data ``(n_stars, D)`` float32 and missing mask, written chunk by chunk (into ``out``/``mask_out`` if given)."""
    mean, w = truth(seed)
    x = np.empty((n_stars, N_PIX), np.float32) if out is None else out
    mask = np.empty((n_stars, N_PIX), bool) if mask_out is None else mask_out
    for lo in range(0, n_stars, chunk):
        hi = min(lo + chunk, n_stars)
        rng = np.random.default_rng([seed, lo])
        z = rng.standard_normal((hi - lo, RANK), np.float32)
        x[lo:hi] = mean + z @ w.T + NOISE * rng.standard_normal((hi - lo, N_PIX), np.float32)
        mask[lo:hi] = rng.random((hi - lo, N_PIX), np.float32) < MISSING
    return x, mask


def max_angle(a, b) -> float:
    """Largest principal angle (degrees) between the column spaces of ``a`` and ``b``."""
    qa, qb = np.linalg.qr(np.asarray(a, np.float64))[0], np.linalg.qr(np.asarray(b, np.float64))[0]
    cos = np.linalg.svd(qa.T @ qb, compute_uv=False).min()
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


class _Fitted(NamedTuple):
    n_iter: int
    converged: bool
    noise_variance: float
    components: np.ndarray


def _fit(x, mask, args) -> _Fitted:
    config = ppca.Config(n_components=RANK, tol=args.tol, max_iter=args.max_iter, chunk_size=args.chunk_size)
    res = ppca.fit(x, key=jax.random.key(args.seed), config=config, mask=mask, progress=False)
    return _Fitted(res.aux["n_iter"], res.converged, float(res.model.noise_variance), res.model.components)


def compare(args) -> dict:
    x, mask = generate(args.n_stars, args.seed)
    _, w_true = truth(args.seed)
    t0 = time.perf_counter()
    res = _fit(x, mask, args)
    first = time.perf_counter() - t0
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res = _fit(x, mask, args)
        times.append(time.perf_counter() - t0)
    record = {
        "n_stars": args.n_stars,
        "ours": {"first_call_s": first, "times_s": times, "median_s": statistics.median(times)},
    }
    record["ours"].update(n_iter=res.n_iter, converged=res.converged, noise_variance=res.noise_variance)
    record["angle_ours_truth_deg"] = max_angle(res.components, w_true)
    if not args.skip_reference:
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            y = np.where(mask, np.nan, x)
            np.save(f"{tmp}/y.npy", y)
            del y
            proc = subprocess.run(
                [args.ref_python, "-c", _REFERENCE, f"{tmp}/y.npy", str(RANK), f"{tmp}/c.npy"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            ref = json.loads(proc.stdout.strip().splitlines()[-1])
            ref["n_iter"] = sum(line.startswith("Objective") for line in proc.stdout.splitlines())
            c_ref = np.load(f"{tmp}/c.npy")
        record["pyppca"] = ref
        record["ratio"] = ref["time_s"] / record["ours"]["median_s"]
        record["angle_ours_pyppca_deg"] = max_angle(res.components, c_ref)
        record["angle_pyppca_truth_deg"] = max_angle(c_ref, w_true)
    return record


def full_survey(args) -> dict:
    n = args.n_stars
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        t0 = time.perf_counter()
        x = np.lib.format.open_memmap(f"{tmp}/x.npy", "w+", np.float32, (n, N_PIX))
        mask = np.lib.format.open_memmap(f"{tmp}/mask.npy", "w+", bool, (n, N_PIX))
        generate(n, args.seed, x, mask)
        x.flush()
        mask.flush()
        gen = time.perf_counter() - t0
        x = np.load(f"{tmp}/x.npy", mmap_mode="r")  # read-only, page-aligned data: used by ppca.fit in place
        mask = np.load(f"{tmp}/mask.npy", mmap_mode="r")
        t0 = time.perf_counter()
        _fit(x, mask, args)  # first call: compiles for this survey's padded missing-pixel widths
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = _fit(x, mask, args)
        elapsed = time.perf_counter() - t0
        _, w_true = truth(args.seed)
        angle = max_angle(res.components, w_true)
        del x, mask
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return {
        "n_stars": n,
        "generate_s": gen,
        "first_call_s": first,
        "fit_s": elapsed,
        "n_iter": res.n_iter,
        "converged": res.converged,
        "peak_rss_gb": peak_gb,
        "angle_ours_truth_deg": angle,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-stars", type=int, default=None, help="default 20000 (151145 with --full-survey)")
    parser.add_argument("--full-survey", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ref-python", default="/tmp/venvppca/bin/python")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--tmp", default=tempfile.gettempdir())
    parser.add_argument("--out", default=str(HERE / "results.jsonl"))
    args = parser.parse_args(argv)
    if args.n_stars is None:
        args.n_stars = 151_145 if args.full_survey else 20_000
    name = "ppca_full_survey" if args.full_survey else "ppca_vs_pyppca"
    record = full_survey(args) if args.full_survey else compare(args)
    record.update(n_pix=N_PIX, n_components=RANK, missing=MISSING, tol=args.tol, chunk_size=args.chunk_size)
    return write_record(name, record, args.out)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(sys.argv[1:])
