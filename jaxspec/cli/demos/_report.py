"""What every demo shares: its report (printed and written as JSON) and its figures."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["save_figure", "write_report"]


def write_report(out: Path, name: str, report: dict) -> None:
    """Write ``report`` to ``out/<name>_report.json`` atomically."""
    path = out / f"{name}_report.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=float))
    tmp.replace(path)


def save_figure(fig, path: Path) -> str:
    """Save ``fig`` to ``path`` (110 dpi), close it and return the path."""
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(path)
