"""Run benchmarks by hand (never in CI): ``python benchmarks/run.py NAME [NAME ...] | all``.

Each ``bench_*.py`` here defines ``BENCHMARKS = {name: factory}`` (see
``benchmarks/_harness.py`` for the protocol).  Results are printed and appended as
JSON lines to ``benchmarks/results.jsonl``; copy the medians into RESULTS.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _harness import discover, run

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmark names, or 'all'")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "results.jsonl"))
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args()
    if args.list or not args.names:
        print("\n".join(sorted(discover(HERE))))
    else:
        run(args.names, HERE, repeats=args.repeats, out=args.out)
