"""Squared change ``||p_pre - p||^2`` of every tuned tensor against the pre-trained CLIP
(the paper's Figures 3 and 7; several runs on one figure: Figures 4b, 8 to 10)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from .layers import TensorInfo, describe, encoder_of, series_title, x_label
from .plotting import TITLE_SIZE, layer_ticks, line_style, new_figure, save_figure
from .runs import PretrainedCLIPs, Run, RunError, load_runs, output_dir, same_backbone
from .tables import write_rows_csv

CHANGE_SYMBOL = r"$\|p_{pre} - p\|^2$"


@dataclass
class ChangeRow:
    """One tuned tensor of one run (a row of ``changes.csv``)."""

    run: str
    encoder: str
    series: str
    position: int
    label: str
    tensor: str
    numel: int
    sq_change: float


def squared_change(tuned: torch.Tensor, pretrained: torch.Tensor) -> float:
    """``sum((pretrained - tuned) ** 2)`` in float64, the pre-trained value first rounded to the
    tuned tensor's dtype: an fp16 run starts from fp16 weights, so an unmoved tensor gives 0."""
    return float((pretrained.to(tuned.dtype).double() - tuned.double()).pow(2).sum())


def ordered_tensor_infos(runs: Sequence[Run], model_order: Sequence[str]) -> Dict[str, TensorInfo]:
    """Every tensor tuned by any run (text encoder first, each in the model's order), so runs
    share layer positions."""
    tuned = set().union(*(run.tuned for run in runs))
    unknown = sorted(tuned - set(model_order))
    if unknown:
        raise RunError(
            f"The checkpoints hold tensors that are not CLIP parameters ({', '.join(unknown[:3])}): "
            "the change analysis covers trainers that tune CLIP's own tensors (CLIPFit and its variants)."
        )
    names = sorted((n for n in model_order if n in tuned), key=lambda n: encoder_of(n) != "text")
    return {info.name: info for info in describe(names)}


def change_rows(runs: Sequence[Run], clips: PretrainedCLIPs) -> List[ChangeRow]:
    """A :class:`ChangeRow` per run and tuned tensor."""
    same_backbone(runs)
    pretrained = [clips.state_dict(run) for run in runs]
    infos = ordered_tensor_infos(runs, list(pretrained[0]))
    rows = []
    for run, ref in zip(runs, pretrained):
        for name, info in infos.items():
            if name in run.tuned:
                value = squared_change(run.tuned[name], ref[name])
                rows.append(ChangeRow(run.label, info.encoder, info.series, info.position, info.label,
                                      name, ref[name].numel(), value))
    return rows


def _series_labels(rows: Sequence[ChangeRow]) -> Dict[str, List[str]]:
    labels: Dict[str, Dict[int, str]] = {}
    for r in rows:
        labels.setdefault(r.series, {})[r.position] = r.label
    return {s: [pos[i] if i in pos else "" for i in range(max(pos) + 1)] for s, pos in labels.items()}


def plot_changes(rows: Sequence[ChangeRow], path: str, log_y: bool = False) -> str:
    """One panel per series (text biases, LayerNorm gains, LayerNorm biases), one line per run."""
    labels = _series_labels(rows)
    runs = list(dict.fromkeys(r.run for r in rows))
    width = max(7.0, 0.32 * max(map(len, labels.values())) + 2.5)
    fig, axes = new_figure(len(labels), 1, width, 3.4)
    for ax, (series, ticks) in zip(axes[:, 0], labels.items()):
        for i, run in enumerate(runs):
            points = sorted((r.position, r.sq_change) for r in rows if r.series == series and r.run == run)
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, color=f"C{i}", label=run, **line_style(i))
        layer_ticks(ax, ticks)
        ax.set_title(series_title(series), fontsize=TITLE_SIZE)
        ax.set_xlabel(x_label(series))
        ax.set_ylabel(f"squared change {CHANGE_SYMBOL}")
        if log_y:
            ax.set_yscale("log")
        ax.legend(title="run", fontsize=8)
    fig.suptitle("Change of the tuned parameters from pre-trained CLIP, per layer")
    return save_figure(fig, path)


def run_changes(
    paths: Sequence[str], out_dir: str = "", labels: Sequence[str] = (), clip_path: str = "",
    load_epoch: Optional[int] = None, log_y: bool = False,
) -> List[str]:
    """The ``changes`` subcommand: ``changes.csv`` and ``changes.png`` in ``out_dir``
    (default ``<run>/analysis``)."""
    runs = load_runs(paths, labels, load_epoch)
    out_dir = output_dir(out_dir, runs)
    rows = change_rows(runs, PretrainedCLIPs(clip_path))
    os.makedirs(out_dir, exist_ok=True)
    return [
        write_rows_csv(rows, os.path.join(out_dir, "changes.csv")),
        plot_changes(rows, os.path.join(out_dir, "changes.png"), log_y),
    ]

