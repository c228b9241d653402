"""matplotlib for every picture hpo draws: the Agg backend (files only, never a window, so it works on
servers and in tests), chosen once here, and one way to save a figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

__all__ = ["plt", "save"]


def save(fig, path: Path, dpi: int = 110, tight: bool = True) -> Path:
    """Write `fig` to `path` as PNG and close it; returns the path."""
    if tight:
        fig.tight_layout()
    # bbox "tight": a title wider than its axes, or a legend placed beside them, is never cut off
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return Path(path)
