"""The paper's tables filled with this project's numbers, each cell beside the paper's.

For every table of the selection (setting and shots), one row per dataset and an Average row,
and per trainer its metrics (base2new: Base, New, HM; otherwise accuracy). A cell is the mean
over the selected seeds of the runs that finished *with the identity the protocol gives them*
(:func:`clipfit.experiments.run.spec_state`):

- a seed whose run is missing or unfinished is named, and the mean over the others is marked
  ``[k/n]``; a seed whose folder holds a run with other settings is named as ``mixed`` and left
  out. Such a cell gets no difference to the paper;
- a complete cell shows ``mean ± std`` (population std over seeds, as CoOp's parser) and, where
  the paper reports this trainer, dataset and shots, ``(ours - paper)``;
- data the paper does not have (the toy world, your own data) gets no paper number and no
  difference; the Average is compared only when it covers exactly the paper's datasets.

Formats: ``markdown``, ``csv`` (one line per cell) and ``json`` (tables with their cells).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from tabulate import tabulate

from clipfit.experiments import paper
from clipfit.experiments.paper.plan import Task
from clipfit.experiments.protocol import SOURCE_DATASET, dataset_order, display_name
from clipfit.experiments.results import harmonic_mean, summarize
from clipfit.experiments.run import OTHER_SETTINGS, spec_state
from clipfit.training.run_spec import RunSpec

FORMATS = ("markdown", "csv", "json")
AVERAGE = "Average"
DASH = "-"
METRIC_NAMES = {"base": "Base", "new": "New", "hm": "HM", "accuracy": ""}


@dataclass
class Cell:
    """One number of a table: ours over the seeds, and the paper's."""

    table: str
    setting: str
    shots: int
    trainer: str
    dataset: str
    metric: str
    expected: List[int]  # the seeds the selection asks for
    values: Dict[int, float] = field(default_factory=dict)  # seed -> accuracy, finished runs only
    missing: List[int] = field(default_factory=list)  # seeds without a finished run
    mixed: List[int] = field(default_factory=list)  # seeds whose folder holds other settings
    mean: Optional[float] = None
    std: Optional[float] = None
    paper: Optional[float] = None
    delta: Optional[float] = None

    @property
    def complete(self) -> bool:
        return not self.missing and not self.mixed and bool(self.values)

    def text(self) -> str:
        if self.mean is None:
            return "mixed: seed " + ", ".join(map(str, self.mixed)) if self.mixed else DASH
        out = f"{self.mean:.2f}"
        if self.std is not None and len(self.values) > 1:
            out += f" ± {self.std:.2f}"
        if not self.complete and self.expected:
            out += f" [{len(self.values)}/{len(self.expected)}]"
        if self.mixed:
            out += " mixed"
        if self.delta is not None:
            out += f" ({self.delta:+.2f})"
        return out


@dataclass
class PaperTable:
    table: str
    setting: str
    shots: int
    metrics: List[str]
    trainers: List[str]
    datasets: List[str]
    cells: Dict[Tuple[str, str, str], Cell]  # (trainer, dataset, metric)
    notes: List[str] = field(default_factory=list)


def _role(spec: RunSpec) -> Tuple[str, str]:
    """(setting, metric) a run's accuracy fills."""
    if spec.setting == "base2new":
        return "base2new", "base" if spec.part == "train_base" else "new"
    return spec.setting, "accuracy"


def _paper_value(trainer: str, setting: str, dataset: str, metric: str, shots: int) -> Optional[float]:
    return paper.lookup(trainer, setting, dataset, metric, shots) if paper.canonical_dataset(dataset) else None


def _paper_average(setting: str, datasets: Sequence[str]) -> bool:
    """Whether ``datasets`` are exactly those the paper's Average of ``setting`` covers."""
    table = paper.load_table(paper.settings()[setting]["tables"][0])
    ours = sorted(paper.canonical_dataset(d) or d for d in datasets)
    return ours == sorted(table["average"]["of"])


def build(tasks: Sequence[Task], settings: Sequence[str], seeds: Sequence[int]) -> List[PaperTable]:
    """The tables of the runs of ``tasks`` (the selection's settings and seeds)."""
    from clipfit.experiments.paper.status import source_of, table_label

    tables: Dict[Tuple[str, int], PaperTable] = {}
    for task in tasks:
        for spec in task.specs:
            run = spec_state(spec)
            setting, metric = _role(spec)
            targets = source_of(spec, settings) if spec.part == "train" else [setting]
            for setting in targets:
                key = (setting, spec.shots)
                if key not in tables:
                    metrics = ["base", "new", "hm"] if setting == "base2new" else ["accuracy"]
                    tables[key] = PaperTable(table_label(setting, spec.shots), setting, spec.shots, metrics, [], [], {})
                t = tables[key]
                t.trainers += [spec.trainer] if spec.trainer not in t.trainers else []
                t.datasets += [spec.dataset] if spec.dataset not in t.datasets else []
                cell = t.cells.setdefault((spec.trainer, spec.dataset, metric), Cell(
                    t.table, setting, spec.shots, spec.trainer, spec.dataset, metric, list(seeds)))
                if run.finished:
                    cell.values[spec.seed] = run.accuracy
                elif run.status == OTHER_SETTINGS:
                    cell.mixed.append(spec.seed)
                else:
                    cell.missing.append(spec.seed)
    for t in tables.values():
        t.datasets = dataset_order(t.datasets)
        if t.setting in ("xd", "dg") and SOURCE_DATASET in t.datasets:
            t.datasets = [SOURCE_DATASET] + [d for d in t.datasets if d != SOURCE_DATASET]
        _fill(t)
    return [tables[k] for k in sorted(tables, key=lambda k: (list(paper.SETTINGS).index(k[0]), k[1]))]


def _fill(t: PaperTable) -> None:
    """Means, HM, Average row and the differences to the paper."""
    for cell in t.cells.values():
        stat = summarize([cell.values[s] for s in sorted(cell.values)])
        if stat is not None:
            cell.mean, cell.std = stat.mean, stat.std
    for trainer in t.trainers:
        for dataset in t.datasets:
            if t.setting == "base2new" and (trainer, dataset, "base") in t.cells:
                base, new = t.cells[(trainer, dataset, "base")], t.cells.get((trainer, dataset, "new"))
                hm = Cell(t.table, t.setting, t.shots, trainer, dataset, "hm", [])
                if new is not None and base.complete and new.complete:
                    hm.mean = harmonic_mean(base.mean, new.mean)
                t.cells[(trainer, dataset, "hm")] = hm
        averaged = [d for d in t.datasets if not (t.setting in ("xd",) and d == SOURCE_DATASET)]
        for metric in t.metrics:
            if metric == "hm":
                continue
            parts = [t.cells.get((trainer, d, metric)) for d in averaged]
            avg = Cell(t.table, t.setting, t.shots, trainer, AVERAGE, metric, [])
            if parts and all(c is not None and c.complete for c in parts):
                avg.mean = sum(c.mean for c in parts) / len(parts)
            t.cells[(trainer, AVERAGE, metric)] = avg
        if t.setting == "base2new":
            base, new = t.cells[(trainer, AVERAGE, "base")], t.cells[(trainer, AVERAGE, "new")]
            avg_hm = Cell(t.table, t.setting, t.shots, trainer, AVERAGE, "hm", [])
            if base.mean is not None and new.mean is not None:
                avg_hm.mean = harmonic_mean(base.mean, new.mean)
            t.cells[(trainer, AVERAGE, "hm")] = avg_hm
        compare_average = _paper_average(t.setting, averaged)
        for (tr, dataset, metric), cell in t.cells.items():
            if tr != trainer:
                continue
            if dataset == AVERAGE and not compare_average:
                continue
            cell.paper = _paper_value(trainer, t.setting, dataset, metric, t.shots)
            if cell.paper is not None and cell.mean is not None and (cell.complete or not cell.expected):
                cell.delta = cell.mean - cell.paper
    t.notes = [
        "mean ± std over seeds " + ", ".join(map(str, _seeds(t))) + "; (+d): ours minus the paper's number, "
        "only where the paper reports it and every seed finished; [k/n]: only k of n seeds finished "
        "(the others are listed below, and the cell is not compared); mixed: a seed's folder holds a run "
        "with other settings (left out).",
        "HM = 2·Base·New/(Base+New) of the means; the Average averages the per-dataset means, only when "
        "all of them are complete." if t.setting == "base2new" else
        "The Average averages the per-dataset means, only when all of them are complete.",
    ]
    if not _paper_average(t.setting, [d for d in t.datasets if not (t.setting == "xd" and d == SOURCE_DATASET)]):
        t.notes.append("The Average covers other datasets than the paper's: not compared.")


def _seeds(t: PaperTable) -> List[int]:
    return sorted({s for c in t.cells.values() for s in c.expected})


def incomplete(t: PaperTable) -> List[str]:
    """One line per cell with seeds left out, saying which and why."""
    lines = []
    for c in t.cells.values():
        where = f"{c.trainer} {display_name(c.dataset)} {METRIC_NAMES[c.metric] or c.metric}"
        if c.missing:
            lines.append(f"{where}: seed "
                         f"{', '.join(map(str, sorted(c.missing)))} not finished")
        if c.mixed:
            lines.append(f"{where}: seed "
                         f"{', '.join(map(str, sorted(c.mixed)))} holds a run with other settings")
    return lines


def _rows(t: PaperTable) -> Tuple[List[str], List[List[str]]]:
    header = ["Dataset"] + [f"{tr} {METRIC_NAMES[m]}".strip() for tr in t.trainers for m in t.metrics]
    rows = []
    for dataset in t.datasets + [AVERAGE]:
        row = [display_name(dataset)]
        for tr in t.trainers:
            for m in t.metrics:
                cell = t.cells.get((tr, dataset, m))
                row.append(cell.text() if cell is not None else DASH)
        rows.append(row)
    return header, rows


def render(tables: Sequence[PaperTable], fmt: str) -> str:
    """``tables`` as markdown, CSV (one line per cell) or JSON."""
    if fmt == "json":
        return json.dumps([{"table": t.table, "setting": t.setting, "shots": t.shots, "notes": t.notes,
                            "incomplete": incomplete(t),
                            "cells": [{**asdict(c), "complete": c.complete} for c in t.cells.values()]}
                           for t in tables], indent=1)
    if fmt == "csv":
        out = io.StringIO()
        names = ["table", "setting", "shots", "trainer", "dataset", "metric", "mean", "std", "n", "seeds",
                 "missing", "mixed", "paper", "delta"]
        writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for t in tables:
            for c in t.cells.values():
                writer.writerow({"table": c.table, "setting": c.setting, "shots": c.shots, "trainer": c.trainer,
                                 "dataset": c.dataset, "metric": c.metric, "mean": _num(c.mean), "std": _num(c.std),
                                 "n": len(c.values), "seeds": " ".join(map(str, sorted(c.values))),
                                 "missing": " ".join(map(str, c.missing)), "mixed": " ".join(map(str, c.mixed)),
                                 "paper": _num(c.paper), "delta": _num(c.delta)})
        return out.getvalue()
    if fmt != "markdown":
        raise ValueError(f"Unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    blocks = []
    for t in tables:
        header, rows = _rows(t)
        body = tabulate(rows, headers=header, tablefmt="github", disable_numparse=True)
        lines = [f"## {t.table}", "", body, ""] + [f"- {n}" for n in t.notes]
        gaps = incomplete(t)
        if gaps:
            lines += ["", f"Not in the means ({len(gaps)}):"] + [f"- {g}" for g in gaps]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _num(value: Optional[float]) -> str:
    return "" if value is None else f"{value:.4f}"

