"""What every subcommand shares: the parser class, argument types and the errors that blame an argument.

A bad argument or file ends the command with exit status 2 and one line on
stderr, ``jaxspec <command>: error: <argument>: <what was expected, what was
found>``, without a usage block or a traceback.  Parse-time problems go
through :meth:`Parser.error` (argparse's own, with the ``type=`` functions
below); problems found while running raise :class:`ArgumentError`, or come
from the library as ``ValueError``/``TypeError``/``OSError`` inside
:func:`blame`, which adds the argument.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

__all__ = [
    "EXPECTED",
    "ArgumentError",
    "Parser",
    "blame",
    "existing_files",
    "finite_float",
    "int_at_least",
    "one_line",
    "output_folder",
    "output_path",
    "seed",
]

#: The exception classes a bad argument or file raises in the library: exit status 2, not a traceback.
EXPECTED = (ValueError, TypeError, OSError)

SEED_LIMIT = 2**32  # jax.random.key(seed) keeps 32 bits (x64 off): 2**32 is key(0) again, 2**64 overflows


class ArgumentError(Exception):
    """A bad value of ``argument`` (``--spectra``, ``--out`` ...): printed as one line, exit status 2."""

    def __init__(self, argument: str | None, message: str):
        self.argument, self.message = argument, message
        super().__init__(f"{argument}: {message}" if argument else message)


def one_line(message: object) -> str:
    """``message`` on one line (multi-line library messages joined by spaces)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def _shown(text: str, limit: int = 60) -> str:
    """``text`` as found: a number as it is, anything else quoted; cut at ``limit`` characters."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    return cut if re.fullmatch(r"[+-]?[0-9_.]*[0-9][0-9_.eE+-]*", text) else repr(cut)


class Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (``prog: error: --arg: message``), exit status 2.

    Subparsers are of this class too (``add_subparsers`` uses the parent's class).
    ``@FILE`` arguments (``fromfile_prefix_chars``) that cannot be read are
    errors naming the ``@FILE``, not argparse's bare ``[Errno 2]`` (or a
    ``UnicodeDecodeError`` traceback for a binary file).
    """

    def error(self, message: str):
        message = one_line(message).removeprefix("argument ")
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _read_args_from_files(self, arg_strings):  # argparse's hook for @FILE, stable since Python 2.7
        new = []
        for arg in arg_strings:
            if not arg or arg[0] not in (self.fromfile_prefix_chars or ""):
                new.append(arg)
                continue
            path = arg[1:]
            try:
                with open(path, encoding=sys.getfilesystemencoding()) as fh:  # strict: a binary file is refused
                    lines = fh.read().splitlines()
            except IsADirectoryError:
                self.error(f"{arg}: {path} is a folder, expected a file of arguments, one per line")
            except FileNotFoundError:
                self.error(f"{arg}: no such file: {path}")
            except OSError as exc:
                self.error(f"{arg}: cannot read {path} ({exc.strerror or exc})")
            except (UnicodeDecodeError, ValueError):  # ValueError: a NUL byte in the name
                self.error(f"{arg}: {path!r} is not a readable text file of arguments, one per line")
            expanded = [a for line in lines for a in self.convert_arg_line_to_args(line)]
            new.extend(self._read_args_from_files(expanded))
        return new


def int_at_least(minimum: int, *, below: int | None = None, below_text: str | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[minimum, below)``, else an error saying so."""
    expected = f"an integer >= {minimum}" if below is None else f"an integer in [{minimum}, {below_text or below})"

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (below is not None and value >= below):
            raise argparse.ArgumentTypeError(f"expected {expected}, found {_shown(text)}")
        return value

    return convert


#: ``--seed``: an integer in [0, 2**32), the seeds that give distinct jax.random keys.
seed = int_at_least(0, below=SEED_LIMIT, below_text="2**32")


def finite_float(minimum: float) -> Callable[[str], float]:
    """An argparse ``type``: a finite number ``>= minimum``."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (value >= minimum and value != float("inf")):  # nan fails every comparison
            raise argparse.ArgumentTypeError(f"expected a finite number >= {minimum:g}, found {_shown(text)}")
        return value

    return convert


def existing_files(paths: list[str], argument: str) -> list[Path]:
    """``paths`` as ``Path`` objects if each is a readable file; else an :class:`ArgumentError` naming one."""
    missing = []
    for p in paths:
        path = Path(p)
        if not p:
            raise ArgumentError(argument, "expected a file name, found ''")
        if path.is_dir():
            raise ArgumentError(argument, f"{p} is a folder, expected a file")
        if not path.is_file():
            missing.append(p)
        elif not os.access(path, os.R_OK):
            raise ArgumentError(argument, f"cannot read {p} (permission denied)")
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ArgumentError(argument, f"no such file: {missing[0]}{more}")
    return [Path(p) for p in paths]


def _not_a_folder(folder: Path) -> str:
    """Why ``folder`` (not an existing folder) cannot hold files: missing, or a file on its path."""
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a folder"
            break
    return f"folder {folder} does not exist"


def output_folder(out: str, argument: str = "--out") -> Path:
    """The folder ``out``, made if missing (with its parents); writable, else an :class:`ArgumentError`."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise ArgumentError(argument, f"{out} is a file, expected a folder")
    if not path.exists():
        reason = _not_a_folder(path)
        if "is a file" in reason:
            raise ArgumentError(argument, reason)
    with blame(argument):
        path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise ArgumentError(argument, f"cannot write in folder {out} (permission denied)")
    return path


def output_path(out: str, argument: str = "--out", *, inputs: Mapping[str, list[Path]] | None = None) -> Path:
    """``out`` if a file can be written there: its folder exists and is writable, it is no folder, no input."""
    if not out:
        raise ArgumentError(argument, "expected a file name, found ''")
    path = Path(out)
    folder = path.parent
    if not folder.is_dir():
        raise ArgumentError(argument, _not_a_folder(folder))
    if path.is_dir():
        raise ArgumentError(argument, f"{out} is a folder, expected a file name")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ArgumentError(argument, f"cannot write in folder {folder} (permission denied)")
    if path.exists():
        for name, files in (inputs or {}).items():
            for f in files:
                with contextlib.suppress(OSError):
                    if os.path.samefile(f, path):
                        raise ArgumentError(argument, f"{out} is also an input ({name}); refusing to overwrite it")
    return path


_PARAMETER = re.compile(r"^(?P<name>[A-Za-z_][\w.]*): ")


@contextlib.contextmanager
def blame(
    argument: str | None, *, file: os.PathLike | str | None = None, renames: Mapping[str, str | None] | None = None
) -> Iterator[None]:
    """Turn a library ``ValueError``/``TypeError``/``OSError`` into an :class:`ArgumentError` of ``argument``.

    The message names ``file`` (added in front if the library's does not).  A
    message that starts with a parameter of the library call (``config.omega:
    ...``) is blamed on the argument ``renames`` maps it to (``--omega``), that
    name dropped.  numpy's advice to load a file "unsafely" with ``allow_pickle``
    is never relayed: a model loader must not suggest it.
    """
    try:
        yield
    except ArgumentError:
        raise
    except EXPECTED as exc:
        message = re.sub(r"^\[Errno \d+\] ", "", one_line(exc)) or type(exc).__name__
        if "allow_pickle" in message:  # np.load's message on a FITS or text file
            message = f"{file or 'the file'}: not a jaxspec model file (an .npz written by jaxspec.io.save)"
        target = argument
        m = _PARAMETER.match(message)
        if m and renames and m["name"] in renames:
            target = renames[m["name"]]
            message = message[m.end() :]
        if file is not None and str(file) not in message:
            message = f"{file}: {message}"
        raise ArgumentError(target, message) from None
