"""``jaxspec demo [NAME]``: an end-to-end job on built-in mock data, with a short printed report."""

from __future__ import annotations

import argparse
import importlib

from jaxspec.cli._args import output_folder, seed
from jaxspec.cli.demos import DEMOS, FLAGSHIP

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    name = args.name or FLAGSHIP
    out = output_folder(args.out)  # before a demo runs for minutes
    module, func = DEMOS[name][0].split(":")
    getattr(importlib.import_module(module), func)(
        out=out, seed=args.seed, progress=not args.no_progress, quick=args.quick
    )
    return 0


def add_parser(sub) -> None:
    """Add ``demo`` to the subcommands ``sub``."""
    demo = sub.add_parser(
        "demo",
        help=f"run an end-to-end demo on mock data (default: {FLAGSHIP})",
        description="Demos: " + "; ".join(f"{k}: {v[1]}" for k, v in DEMOS.items()),
    )
    demo.add_argument("name", nargs="?", choices=sorted(DEMOS), help=f"which demo (default: {FLAGSHIP})")
    demo.add_argument("--out", default="jaxspec-output", help="folder for figures and reports (default: %(default)s)")
    demo.add_argument(
        "--seed", type=seed, default=0, help="random seed of the jax.random key, in [0, 2**32) (default: %(default)s)"
    )
    demo.add_argument("--quick", action="store_true", help="smaller sizes, for tests and a first look")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    demo.set_defaults(func=_run)
