"""The ``jaxspec`` command's entry point: the parser of every subcommand and the error handling."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jaxspec.cli import demo, info, lux

__all__ = ["build_parser", "main"]

_COMMANDS = (demo, info, lux)  # each module adds its subcommand


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jaxspec",
        description="jaxspec: JAX-native data-driven generative models for stellar spectra.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.add_parser(sub)
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
