r"""Cycle-StarNet's synthetic-gap experiment (Section 4.1) at a larger size than the demo (issue 17).

The computation of ``jaxspec demo cyclestarnet`` (:func:`jaxspec.cli.demos.cyclestarnet.run`): mock domains
(paired draws split in two unpaired halves), a Payne emulator trained on the synthetic half, Cycle-StarNet on
the demo's reduced networks over a window of the grid, held-out observed stars fitted by Eq. 9 (the emulator
alone), Eq. 10 (the observed spectrum sent to the synthetic domain) and Eq. 11 (the emulator's spectrum sent to
the observed domain, with the star's own split latent).  Reports the median reduced chi2, the mean residual
(in units of the error) and the label RMSE against the truth of each, and appends a JSON record.

    python benchmarks/cycle_starnet_synthetic_gap.py --stars 4000 --iterations 8000 --test 150
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _harness import write_record

from jaxspec.cli.demos.cyclestarnet import SHOWN, run

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stars", type=int, default=4000, help="stars drawn (half per domain, less the test stars)")
    ap.add_argument("--iterations", type=int, default=8000)
    ap.add_argument("--epochs", type=int, default=150, help="emulator epochs")
    ap.add_argument("--test", type=int, default=150, help="held-out observed stars fitted")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results.jsonl"), help="JSON lines file ('' writes none)")
    args = ap.parse_args()
    report, _ = run(n_stars=args.stars, iterations=args.iterations, emulator_epochs=args.epochs,
                    n_test=args.test, seed=args.seed, progress=True)  # fmt: skip
    rec, gap = report["recovery"], report["synthetic_gap"]
    print(f"{report['iterations']} iterations in {report['train_s']:.0f} s; label fits {report['fit_s']:.0f} s")
    for eq in ("eq9", "eq11"):
        g = gap[eq]
        print(f"{eq}: mean residual {g['mean_residual_sigma']:+.3f} sigma, scatter {g['scatter_sigma']:.2f}, "
              f"median reduced chi2 {rec[eq]['reduced_chi2_median']:.2f}")  # fmt: skip
    print("label RMSE      Eq. 9    Eq. 10   Eq. 11")
    for name in SHOWN:
        print(f"{name:10s} " + " ".join(f"{rec[eq][name]['rmse']:8.3f}" for eq in ("eq9", "eq10", "eq11")))
    write_record("cycle_starnet_synthetic_gap", {"stars": args.stars, "test_stars": args.test, **report}, args.out)


if __name__ == "__main__":
    main()
