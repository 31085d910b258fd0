"""The ``jaxspec`` command's entry point: the parser of every subcommand and the error handling.

A bad argument or file is exit status 2 and one line on stderr,
``jaxspec <command>: error: <argument>: <message>`` (see :mod:`jaxspec.cli._args`);
Ctrl-C is exit status 130 without a traceback.  Other exceptions are bugs and
keep their traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from jaxspec.cli import demo, info, lux, payne
from jaxspec.cli._args import EXPECTED, ArgumentError, Parser, one_line

__all__ = ["build_parser", "main"]

_COMMANDS = (demo, info, lux, payne)  # each module adds its subcommand


def build_parser() -> Parser:
    parser = Parser(
        prog="jaxspec",
        description="jaxspec: JAX-native data-driven generative models for stellar spectra.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in _COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jaxspec`` console script (a usage error raises ``SystemExit(2)``, as argparse does)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ArgumentError, *EXPECTED, ImportError) as exc:  # OSError: missing, corrupt or truncated files
        command = " ".join(filter(None, [args.command, getattr(args, f"{args.command}_command", None)]))
        print(f"jaxspec {command}: error: {one_line(exc) or type(exc).__name__}", file=sys.stderr)
        return 2
