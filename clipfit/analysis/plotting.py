"""Matplotlib (Agg backend) helpers shared by the analysis figures."""
from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from clipfit.fileio import atomic_path  # noqa: E402

TITLE_SIZE = 11
DPI = 150


def new_figure(n_rows: int, n_cols: int, width: float, height_per_row: float):
    """A figure and its axes grid (always 2-D), with constrained layout."""
    return plt.subplots(
        n_rows, n_cols, figsize=(width, height_per_row * n_rows), squeeze=False, layout="constrained"
    )


def layer_ticks(ax, labels: Sequence[str]) -> None:
    """Every layer labelled on the x axis (rotated when there are many)."""
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=90 if len(labels) > 14 or max(map(len, labels)) > 3 else 0, fontsize=8)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.grid(True, axis="y", alpha=0.3)


def line_style(i: int) -> dict:
    """Marker and dash pattern of the i-th run, so overlapping runs stay distinguishable."""
    markers, dashes = "osD^v", ("-", "--", ":", "-.")
    return {"marker": markers[i % len(markers)], "linestyle": dashes[i % len(dashes)], "markersize": 4.5,
            "markerfacecolor": "none" if i % 2 else None}


def save_figure(fig, path: str) -> str:
    """Write ``fig`` as PNG atomically and close it; returns ``path``."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=DPI, format="png")
    finally:
        plt.close(fig)
    return path
