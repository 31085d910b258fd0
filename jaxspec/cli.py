"""The ``jaxspec`` command.

``jaxspec demo [NAME]`` runs an end-to-end job on built-in mock data and
prints a short report; ``jaxspec info`` prints versions and devices;
``jaxspec bench NAME`` times benchmarks from a ``benchmarks/`` folder;
``jaxspec lux train|predict`` fits Lux to APOGEE files and predicts labels.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DEMOS", "FLAGSHIP", "main"]

# name -> (module:function, one-line description).  Each model family adds its demo here.
DEMOS: dict[str, tuple[str, str]] = {
    "mock": ("jaxspec._demos:demo_mock", "generate a mock APOGEE-like survey, summarise it, plot a few spectra"),
    "lux": ("jaxspec._demos:demo_lux", "train Lux on a mock survey, predict 12 labels of held-out stars from flux"),
    "rsca": ("jaxspec._demos:demo_rsca", "RSCA on mock open clusters: doppelganger rates from spectra and from labels"),
    "svae": ("jaxspec._demo_svae:demo_svae", "scatter VAE on mock Gaia XP: residuals and scatter against the Cannon"),
}
FLAGSHIP = "lux"


def _load(target: str):
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def _cmd_demo(args: argparse.Namespace) -> int:
    name = args.name or FLAGSHIP
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _load(DEMOS[name][0])(out=out, seed=args.seed, progress=not args.no_progress, quick=args.quick)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from jaxspec._bench import machine_info

    info = machine_info()
    import jaxspec.io

    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:>{width}}: {value}")
    print(f"{'model families':>{width}}: {', '.join(jaxspec.io.families()) or '(none registered yet)'}")
    print(f"{'demos':>{width}}: {', '.join(DEMOS)} (default: {FLAGSHIP})")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from jaxspec._bench import discover, run

    if args.list:
        for name in sorted(discover(args.dir)):
            print(name)
        return 0
    if not args.names:
        print("jaxspec bench: name at least one benchmark (or 'all'); --list shows them", file=sys.stderr)
        return 2
    run(args.names, args.dir, repeats=args.repeats, out=args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxspec",
        description="jaxspec: JAX-native data-driven generative models for stellar spectra.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo",
        help=f"run an end-to-end demo on mock data (default: {FLAGSHIP})",
        description="Demos: " + "; ".join(f"{k}: {v[1]}" for k, v in DEMOS.items()),
    )
    demo.add_argument("name", nargs="?", choices=sorted(DEMOS), help=f"which demo (default: {FLAGSHIP})")
    demo.add_argument("--out", default="jaxspec-output", help="folder for figures and reports (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the jax.random key (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="smaller sizes, for tests and a first look")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)

    info = sub.add_parser("info", help="print versions, devices and registered model families")
    info.set_defaults(func=_cmd_info)

    bench = sub.add_parser("bench", help="time benchmarks from a benchmarks/ folder (not tests; never in CI)")
    bench.add_argument("names", nargs="*", help="benchmark names, or 'all'")
    bench.add_argument("--dir", default="benchmarks", help="folder with bench_*.py files (default: %(default)s)")
    bench.add_argument("--repeats", type=int, default=5, help="timed calls after the warm-up (default: %(default)s)")
    bench.add_argument("--out", default=None, help="append JSON-lines results to this file")
    bench.add_argument("--list", action="store_true", help="list the available benchmarks")
    bench.set_defaults(func=_cmd_bench)

    from jaxspec._lux_cli import add_parser as add_lux

    add_lux(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxspec`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError, ImportError) as exc:  # OSError: missing, corrupt or truncated files
        command = " ".join(filter(None, [args.command, getattr(args, "lux_command", None)]))
        print(f"jaxspec {command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
