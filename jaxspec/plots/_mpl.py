"""matplotlib on demand (the ``plot`` extra) and small drawing helpers shared by the figure modules."""

from __future__ import annotations

import numpy as np

__all__ = ["broken_line", "gap_positions", "require_matplotlib"]


def require_matplotlib():
    """Import ``matplotlib.pyplot`` or explain how to get it."""
    try:
        import matplotlib

        if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
            import os

            if not os.environ.get("DISPLAY"):
                matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError('plots need matplotlib: pip install "jaxspec-stellar[plot]"') from None
    return plt


def gap_positions(x: np.ndarray) -> np.ndarray:
    """Indices after which the grid jumps by more than three typical steps."""
    if x.size < 3:
        return np.zeros(0, int)
    step = np.diff(x)
    return np.flatnonzero(step > 3 * np.median(step))


def broken_line(x: np.ndarray, y: np.ndarray, gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x, y`` with a NaN inserted at each gap so a line plot does not bridge it."""
    return np.insert(x, gaps + 1, np.nan), np.insert(y, gaps + 1, np.nan)
