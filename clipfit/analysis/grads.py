"""Plots of the gradient statistics a run recorded (``TRAINER.CLIPFIT.LOG_GRAD_STATS``):
the squared gradient sum per tuned layer over training (the paper's Figures 4a and 11a)
and the change of the first text-bias and first LayerNorm layers at each iteration (11b)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import torch
from matplotlib.ticker import MaxNLocator

from clipfit.training.grad_stats import load_grad_stats
from .changes import CHANGE_SYMBOL
from .layers import TensorInfo, describe, series_order, series_title, x_label
from .plotting import TITLE_SIZE, layer_ticks, new_figure, save_figure
from .runs import ANALYSIS_FOLDER
from .tables import write_csv, write_rows_csv


@dataclass
class GradRow:
    """One tuned tensor's gradient total (a row of ``grads_layers.csv``)."""

    encoder: str
    series: str
    position: int
    label: str
    tensor: str
    numel: int
    grad_sq_sum: float  # sum over the recorded iterations with a finite gradient
    iterations: int  # how many iterations entered the sum


def layer_totals(stats: Dict[str, Any]) -> List[GradRow]:
    """Squared gradient sums per tensor over all iterations whose gradients are finite.

    Iterations with an infinite or NaN gradient (AMP steps the loss scaler skips) are left out.
    """
    grad_sq = stats["grad_sq"]
    finite = torch.isfinite(grad_sq).all(dim=1)
    totals = grad_sq[finite].sum(dim=0)
    used = int(finite.sum())
    return [
        GradRow(i.encoder, i.series, i.position, i.label, i.name, n, float(t), used)
        for i, n, t in zip(describe(stats["names"]), stats["numel"], totals)
    ]


def traced_tensors(infos: Sequence[TensorInfo]) -> List[TensorInfo]:
    """The first layer of every series: the first text bias, the first LayerNorm's gain and bias."""
    return [members[0] for members in series_order(infos).values()]


def write_iterations_csv(stats: Dict[str, Any], path: str) -> str:
    """Per iteration, every tensor's ``grad_sq`` and ``change`` (wide format)."""
    names = stats["names"]
    header = ["iteration"] + [f"grad_sq[{n}]" for n in names] + [f"change[{n}]" for n in names]
    rows = zip(stats["iterations"].tolist(), stats["grad_sq"].tolist(), stats["change"].tolist())
    return write_csv(path, header, ([it] + g + c for it, g, c in rows))


def plot_grads(stats: Dict[str, Any], rows: Sequence[GradRow], path: str, title: str, log_y: bool = False) -> str:
    """Left: squared gradient sum per layer, one panel per series. Right: change per iteration."""
    infos = describe(stats["names"])
    groups = series_order(infos)
    n = len(groups)
    width = max(12.0, 0.32 * max(map(len, groups.values())) + 8.0)
    fig, axes = new_figure(n, 2, width, 3.4)
    totals = {r.tensor: r.grad_sq_sum for r in rows}
    for ax, (series, members) in zip(axes[:, 0], groups.items()):
        ax.plot([m.position for m in members], [totals[m.name] for m in members], marker="o", markersize=4)
        layer_ticks(ax, [m.label for m in members])
        ax.set_title(f"{series_title(series)}: squared gradient sum", fontsize=TITLE_SIZE)
        ax.set_xlabel(x_label(series))
        ax.set_ylabel(r"$\sum_t \|\nabla p\|^2$")
        if log_y:
            ax.set_yscale("log")
    gs = axes[0, 1].get_gridspec()
    for ax in axes[:, 1]:
        ax.remove()
    right = fig.add_subplot(gs[:, 1])
    iterations = stats["iterations"].numpy()
    column = {name: j for j, name in enumerate(stats["names"])}
    for info in traced_tensors(infos):
        label = f"{series_title(info.series)}, layer {info.label}"
        right.plot(iterations, stats["change"][:, column[info.name]].numpy(), label=label)
    right.set_title("Change of the first layer of each kind at each iteration", fontsize=TITLE_SIZE)
    right.set_xlabel("iteration (updates so far)")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_ylabel(f"squared change {CHANGE_SYMBOL}")
    if log_y:
        right.set_yscale("log")
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    used, total = rows[0].iterations, len(iterations)
    skipped = f"; {total - used} iterations with non-finite gradients left out" if used < total else ""
    fig.suptitle(f"Gradient statistics of {title} ({total} iterations{skipped})")
    return save_figure(fig, path)


def run_grads(run_dir: str, out_dir: str = "", log_y: bool = False) -> List[str]:
    """The ``grads`` subcommand: ``grads.png``, ``grads_layers.csv`` and ``grads_iterations.csv``
    in ``out_dir`` (default ``<run>/analysis``)."""
    stats = load_grad_stats(run_dir)
    out_dir = out_dir or os.path.join(run_dir, ANALYSIS_FOLDER)
    rows = layer_totals(stats)
    if rows[0].iterations == 0:
        raise ValueError(f"Every recorded iteration of {run_dir} has a non-finite gradient: nothing to plot.")
    os.makedirs(out_dir, exist_ok=True)
    title = os.path.basename(os.path.normpath(os.path.abspath(run_dir)))
    return [
        plot_grads(stats, rows, os.path.join(out_dir, "grads.png"), title, log_y),
        write_rows_csv(rows, os.path.join(out_dir, "grads_layers.csv")),
        write_iterations_csv(stats, os.path.join(out_dir, "grads_iterations.csv")),
    ]
