"""``jaxspec info``: versions, devices, model families and demos."""

from __future__ import annotations

import argparse
import os
import platform

import jax

from jaxspec.cli.demos import DEMOS, FLAGSHIP

__all__ = ["add_parser", "machine_info"]


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict:
    """Host, CPU count, devices and library versions."""
    import jaxlib
    import numpy

    import jaxspec

    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "processor": _cpu_model() or platform.processor() or platform.machine(),
        "backend": jax.default_backend(),
        "devices": [f"{d.platform}:{d.device_kind}" for d in jax.devices()],
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "numpy": numpy.__version__,
        "jaxspec": jaxspec.__version__,
    }


def _run(args: argparse.Namespace) -> int:
    from jaxspec import io

    info = machine_info()
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:>{width}}: {value}")
    print(f"{'model families':>{width}}: {', '.join(io.families())}")
    print(f"{'demos':>{width}}: {', '.join(DEMOS)} (default: {FLAGSHIP})")
    return 0


def add_parser(sub) -> None:
    """Add ``info`` to the subcommands ``sub``."""
    info = sub.add_parser("info", help="print versions, devices and the model families")
    info.set_defaults(func=_run)
