r"""RSCA end to end at the full-survey size of de Mijolla & Ness (2021), on mock data.

Data (built-in generator, seeded): 151,145 field giants (``mock.survey``) and 185
members of 22 open clusters (``mock.open_clusters``; sizes 2-20, drawn once from
the seed), 7514 APOGEE pixels.  Spectra are censored as in the paper: a pixel is
missing where its flux error exceeds 0.05 or the generator flagged it bad
(``Noise(bad_pixel_frac=0.02)``: about 2% of the pixels in all).  Every star
goes into one float32 ``.npy`` file under ``--tmp`` with NaN at missing pixels
(4.5 GB), the members first and then the field, written chunk by chunk, and is
read back as a read-only memory map (with cluster ids, -1 for the field, as
``rsca.fit`` takes them): nothing holds the survey in memory but the page cache,
and the field rows, one contiguous block, are read in place.

Timed end to end, in one process, first call included (JIT compilation counts):

1. ``rsca.fit`` with ``K = 30`` (30 PPCA components fitted directly, the paper's
   ablation setting; ``--ppca-components 60`` for its 60-keep-30 variant): PPCA
   on the field, cluster latents, steps 2-4.  PPCA stops at ``--tol`` (relative
   change of the log-likelihood, default 1e-4) or ``--max-iter``.
2. The leave-one-cluster-out doppelganger rates with the paper's nuisance matching
   (``|dRV| < 5`` km/s, ``|dA_K| < 0.05`` mag) for the top-N table (``N = 1, 2, 3,
   5, 10, 20, 30``) in one pass over the folds; ``N = 30 = K`` is the headline rate
   (what :func:`~jaxspec.models.rsca.leave_one_cluster_out_rate` returns).

Printed and appended to ``--out``: each stage's wall time (``fit_compile_s``: the
part of the fit spent tracing and compiling) and ``total_s``, the EM iterations, the
rates, and the peak resident memory of the process (which counts the memory-mapped
pages it touched).

Run: ``python benchmarks/bench_rsca.py`` (``--n-field 20000`` for a quick run; ``--data DIR``
keeps the generated mock in ``DIR`` and reuses it on the next run with the same ``DIR``).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from _harness import timed_call, write_record

from jaxspec.data import mock
from jaxspec.models import rsca

HERE = Path(__file__).resolve().parent
N_CLUSTERS, N_MEMBERS, MAX_ERR = 22, 185, 0.05
TOL = (5.0, 0.05)  # |dRV| km/s, |dA_K| mag
TOP_N = (1, 2, 3, 5, 10, 20, 30)


def cluster_sizes(seed: int) -> np.ndarray:
    """22 sizes in 2..20 summing to 185 (more small clusters than large ones)."""
    rng = np.random.default_rng(seed)
    sizes = np.full(N_CLUSTERS, 2)
    weights = np.geomspace(1.0, 0.1, N_CLUSTERS)
    while sizes.sum() < N_MEMBERS:
        i = rng.choice(N_CLUSTERS, p=weights / weights.sum())
        sizes[i] += sizes[i] < 20
    return sizes


def _censored(spectra) -> np.ndarray:
    """Flux float32 with NaN where the error exceeds MAX_ERR or the pixel is bad."""
    flux, ivar = np.asarray(spectra.flux), np.asarray(spectra.ivar)
    return np.where(ivar < 1.0 / MAX_ERR**2, np.nan, flux).astype(np.float32)


def generate(path: str, n_field: int, seed: int, chunk: int = 10_000):
    """Write every star to ``path`` (``.npy``: members, then the field); return the ids and nuisances."""
    noise = mock.Noise(bad_pixel_frac=0.02)
    key = jax.random.key(seed)
    cl = mock.open_clusters(
        jax.random.fold_in(key, 2**31), N_CLUSTERS, cluster_sizes(seed).tolist(), 0, noise=noise, progress=False
    )
    m = len(cl.cluster_id)
    out = np.lib.format.open_memmap(path, "w+", np.float32, (m + n_field, 7514))
    out[:m] = _censored(cl.spectra)
    rv, a_k = np.empty(n_field), np.empty(n_field)
    for lo in range(0, n_field, chunk):
        hi = min(lo + chunk, n_field)
        s = mock.survey(jax.random.fold_in(key, lo), hi - lo, noise=noise, progress=False)
        out[m + lo : m + hi] = _censored(s.spectra)
        rv[lo:hi], a_k[lo:hi] = s.rv, s.a_k
    out.flush()
    del out
    ids = np.r_[cl.cluster_id, np.full(n_field, -1)]
    return ids, np.concatenate([np.stack([cl.rv, cl.a_k], 1), np.stack([rv, a_k], 1)])


def run(args) -> dict:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(args.data or tmp)
        t0 = time.perf_counter()
        if (folder / "ids.npz").exists():  # generated before with the same --data
            rest = np.load(folder / "ids.npz")
            ids, nuis = rest["ids"], rest["nuis"]
        else:
            folder.mkdir(parents=True, exist_ok=True)
            ids, nuis = generate(str(folder / "survey.npy"), args.n_field, args.seed)
            np.savez(folder / "ids.npz", ids=ids, nuis=nuis)
        gen = time.perf_counter() - t0
        survey = np.load(folder / "survey.npy", mmap_mode="r")
        member = ids >= 0
        match = {"nuisance_field": nuis[~member], "nuisance_clusters": nuis[member], "tolerances": TOL}

        times = {}
        t_all, cpu0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
        config = rsca.Config(
            n_components=30, ppca_components=args.ppca_components, ppca_tol=args.tol, ppca_max_iter=args.max_iter
        )
        fit, times["fit_s"], times["fit_compile_s"] = timed_call(
            lambda x: rsca.fit(x, ids, key=jax.random.key(args.seed), config=config, progress=False), survey
        )
        zp, zc, member_ids = fit.aux["field_feats"], fit.aux["cluster_feats"], fit.aux["member_ids"]
        t0 = time.perf_counter()
        top = rsca.top_n_table(zp, zc, member_ids, n_dims=TOP_N, **match)
        times["rates_s"] = time.perf_counter() - t0
        times["total_s"] = time.perf_counter() - t_all
        times["total_cpu_s"] = time.process_time() - cpu0  # both cores: up to 2x the wall time
        times["loadavg_1min"] = [load0, os.getloadavg()[0]]  # > 0 before: other processes were running
        raw = rsca.doppelganger_rate(zp, zc, member_ids, **match)
        missing = float(np.mean([np.isnan(survey[i : i + 5000]).mean() for i in range(0, len(survey), 5000)]))
        del survey
    return {
        "n_field": args.n_field,
        "n_clusters": N_CLUSTERS,
        "n_members": int(member.sum()),
        "missing_frac": missing,
        "generate_s": gen,
        **times,
        "ppca_iterations": len(fit.history["log_likelihood"]),
        "ppca_converged": fit.converged,
        "rate_loo": float(top.rates[list(TOP_N).index(30)]),
        "rate_raw_latents": raw.rate,
        "matched_pairs": int(raw.n_pairs.sum()),
        "top_n": dict(zip(map(str, TOP_N), top.rates.tolist(), strict=True)),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-field", type=int, default=151_145)
    parser.add_argument("--ppca-components", type=int, default=None)
    parser.add_argument("--tol", type=float, default=1e-4)
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", default=tempfile.gettempdir())
    parser.add_argument("--data", default=None, help="keep the mock in this folder and reuse it if there")
    parser.add_argument("--out", default=str(HERE / "results.jsonl"))
    args = parser.parse_args(argv)
    record = run(args)
    record.update(n_pix=7514, n_components=30, ppca_components=args.ppca_components or 30, tol=args.tol)
    return write_record("rsca_full_survey", record, args.out)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(sys.argv[1:])
