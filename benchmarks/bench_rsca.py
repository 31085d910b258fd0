r"""RSCA end to end at the full-survey size of de Mijolla & Ness (2021), on mock data.

Data (built-in generator, seeded): 151,145 field giants (``mock.survey``) and 185
members of 22 open clusters (``mock.open_clusters``; sizes 2-20, drawn once from
the seed), 7514 APOGEE pixels.  Spectra are censored as in the paper: a pixel is
missing where its flux error exceeds 0.05 or the generator flagged it bad
(``Noise(bad_pixel_frac=0.02)``: about 2% of the pixels in all).  The field is
written chunk by chunk to a float32 ``.npy`` file under ``--tmp`` with NaN at
missing pixels (4.5 GB), and read back as a read-only memory map: nothing holds
the survey in memory but the page cache.

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
    """Write the field to ``path`` (``.npy``); return the field nuisances, cluster flux/ids/nuisances."""
    noise = mock.Noise(bad_pixel_frac=0.02)
    key = jax.random.key(seed)
    out = np.lib.format.open_memmap(path, "w+", np.float32, (n_field, 7514))
    rv, a_k = np.empty(n_field), np.empty(n_field)
    for lo in range(0, n_field, chunk):
        hi = min(lo + chunk, n_field)
        s = mock.survey(jax.random.fold_in(key, lo), hi - lo, noise=noise, progress=False)
        out[lo:hi] = _censored(s.spectra)
        rv[lo:hi], a_k[lo:hi] = s.rv, s.a_k
    out.flush()
    del out
    cl = mock.open_clusters(
        jax.random.fold_in(key, 2**31), N_CLUSTERS, cluster_sizes(seed).tolist(), 0, noise=noise, progress=False
    )
    return np.stack([rv, a_k], 1), _censored(cl.spectra), cl.cluster_id, np.stack([cl.rv, cl.a_k], 1)


def run(args) -> dict:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        folder = Path(args.data or tmp)
        t0 = time.perf_counter()
        if (folder / "rest.npz").exists():  # generated before with the same --data
            rest = np.load(folder / "rest.npz")
            nf, clusters, ids, nc = rest["nf"], rest["clusters"], rest["ids"], rest["nc"]
        else:
            folder.mkdir(parents=True, exist_ok=True)
            nf, clusters, ids, nc = generate(str(folder / "field.npy"), args.n_field, args.seed)
            np.savez(folder / "rest.npz", nf=nf, clusters=clusters, ids=ids, nc=nc)
        gen = time.perf_counter() - t0
        field = np.load(folder / "field.npy", mmap_mode="r")
        match = {"nuisance_field": nf, "nuisance_clusters": nc, "tolerances": TOL}

        times = {}
        t_all, cpu0, load0 = time.perf_counter(), time.process_time(), os.getloadavg()[0]
        kwargs = {"tol": args.tol, "max_iter": args.max_iter, "progress": False}
        fit, times["fit_s"], times["fit_compile_s"] = timed_call(
            lambda f: rsca.fit(f, clusters, ids, n_components=30, key=jax.random.key(args.seed),
                               ppca_components=args.ppca_components, ppca_kwargs=kwargs),
            field,
        )  # fmt: skip
        t0 = time.perf_counter()
        top = rsca.top_n_table(fit.field_feats, fit.cluster_feats, ids, n_dims=TOP_N, **match)
        times["rates_s"] = time.perf_counter() - t0
        times["total_s"] = time.perf_counter() - t_all
        times["total_cpu_s"] = time.process_time() - cpu0  # both cores: up to 2x the wall time
        times["loadavg_1min"] = [load0, os.getloadavg()[0]]  # > 0 before: other processes were running
        raw = rsca.doppelganger_rate(fit.field_feats, fit.cluster_feats, ids, **match)
        missing = float(np.mean([np.isnan(field[i : i + 5000]).mean() for i in range(0, len(field), 5000)]))
        del field
    return {
        "n_field": args.n_field,
        "n_clusters": N_CLUSTERS,
        "n_members": int(ids.size),
        "missing_frac": missing,
        "generate_s": gen,
        **times,
        "ppca_iterations": len(fit.log_likelihood),
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
