"""Building blocks of the results tables: column groups (methods), formatted cells with their
tidy records, table notes, and rendering as text, markdown, CSV or JSON.
"""
from __future__ import annotations

import csv
import io
import json
import textwrap
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from tabulate import tabulate

from clipfit.experiments.protocol import display_name
from clipfit.errors import ConfigValueError
from clipfit.experiments.results import RunKey, RunResult, Stat, ci95, summarize

FORMATS = ("table", "markdown", "csv", "json")
# Column order of methods: the paper's, then any other trainer alphabetically.

METHOD_ORDER = ("ZeroshotCLIP", "CoOp", "CoCoOp", "ProGrad", "CLIP_Adapter", "Tip-Adapter", "Tip-Adapter-F",
                "KgCoOp", "MaPLe", "CLIPFit")
# Column labels where the paper's spelling differs from the trainer's registry name
PAPER_LABELS = {"TipAdapter": "Tip-Adapter", "TipAdapterF": "Tip-Adapter-F"}

SETTING_TITLES = {
    "base2new": "Base-to-new generalization",
    "fewshot": "Few-shot classification",
    "xd": "Cross-dataset transfer (trained on ImageNet)",
    "dg": "Distribution shift (trained on ImageNet)",
}

DASH = "-"
TERMINAL_WIDTH = 100  # the text format fits this many columns (the other formats are full width)


@dataclass
class Table:
    """One results table: rendered rows for text formats, tidy records for CSV and JSON."""

    setting: str
    shots: List[int]
    header: List[str]
    rows: List[List[str]]
    records: List[Dict] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    incomplete: List[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        shots = "/".join(map(str, self.shots))
        return f"{SETTING_TITLES[self.setting]}, {shots} shot{'s' if self.shots != [1] else ''}"


@dataclass
class Method:
    """A column group: one trainer (with one config per dataset) or one trainer/config pair."""

    label: str
    trainer: str
    runs: Dict[Tuple[str, str, int], RunResult]  # (role, dataset, seed) -> run
    cfgs: Dict[str, str]  # dataset -> config name
    seeds: List[int]  # the seeds this method is expected to have

    def has(self, dataset: str) -> bool:
        """Whether this method has any run (finished or not) on ``dataset``."""
        return dataset in self.cfgs

    def stat(self, role: str, dataset: str) -> Optional[Stat]:
        values = [r.accuracy for (ro, d, _), r in sorted(self.runs.items())
                  if ro == role and d == dataset and r.finished]
        return summarize(values)


def method_sort_key(label: str) -> Tuple[int, str]:
    trainer = label.split("/")[0]
    order = [m.lower() for m in METHOD_ORDER]
    rank = order.index(trainer.lower()) if trainer.lower() in order else len(order)
    return rank, label


def group_methods(runs: Dict[RunKey, RunResult], seeds: Optional[Sequence[int]] = None
                  ) -> List[Method]:
    """Column groups of one setting and shots: per trainer, split by config only where one
    dataset has runs of several configs. Expected seeds: ``seeds``, else all seen for it."""
    by_trainer: Dict[str, Dict[RunKey, RunResult]] = defaultdict(dict)
    for key, run in runs.items():
        by_trainer[key.trainer][key] = run
    groups: Dict[str, Dict[RunKey, RunResult]] = {}
    for trainer, trainer_runs in by_trainer.items():
        cfgs_per_dataset: Dict[str, set] = defaultdict(set)
        for key in trainer_runs:
            cfgs_per_dataset[key.dataset].add(key.cfg)
        split = any(len(c) > 1 for c in cfgs_per_dataset.values())
        for key, run in trainer_runs.items():
            name = PAPER_LABELS.get(trainer, trainer)
            label = f"{name}/{key.cfg}" if split else name
            groups.setdefault(label, {})[key] = run
    methods = []
    for label in sorted(groups, key=method_sort_key):
        group = groups[label]
        methods.append(Method(
            label=label,
            trainer=next(iter(group)).trainer,
            runs={(k.role, k.dataset, k.seed): r for k, r in group.items()},
            cfgs={k.dataset: k.cfg for k in group},
            seeds=sorted(seeds) if seeds else sorted({k.seed for k in group}),
        ))
    return methods


def incomplete_lines(method: Method, role: str, dataset: str, role_name: str) -> List[str]:
    """Lines naming the missing seeds and unfinished runs of one cell."""
    lines = []
    where = f"{method.label} {display_name(dataset)}" + (f" {role_name}" if role_name else "")
    for seed in method.seeds:
        run = method.runs.get((role, dataset, seed))
        if run is None:
            lines.append(f"{where} seed {seed}: missing (no run folder)")
        elif not run.finished:
            lines.append(f"{where} seed {seed}: {run.status}, {run.reason} ({run.path})")
    return lines


class Cells:
    """Formats numbers for the text formats and collects tidy records."""

    def __init__(self, use_ci95: bool, decimals: int = 2):
        self.use_ci95 = use_ci95
        self.decimals = decimals
        self.records: List[Dict] = []

    def stat(self, stat: Optional[Stat], expected: int, record: Dict) -> str:
        """"mean ± spread" (with [k] when over k < expected seeds); records it."""
        if stat is None:
            return DASH
        spread = ci95(stat.values) if self.use_ci95 else stat.std
        self.records.append({**record, "mean": stat.mean, "std": stat.std,
                             "ci95": ci95(stat.values), "n": stat.n, "values": stat.values})
        text = f"{stat.mean:.{self.decimals}f}"
        if stat.n > 1:
            text += f" ± {spread:.{self.decimals}f}"
        return text + (f" [{stat.n}]" if stat.n < expected else "")

    def value(self, value: Optional[float], record: Dict, suffix: str = "") -> str:
        """A number without spread (HM, averages, paper values); records it."""
        if value is None:
            return DASH
        self.records.append({**record, "mean": value, "std": None, "ci95": None, "n": None,
                             "values": None})
        return f"{value:.{self.decimals}f}{suffix}"


    def paper(self, value: Optional[float], ours: Optional[float], record: Dict) -> str:
        """The paper's number and, beside it, yours minus the paper's; records both."""
        if value is None:
            return DASH
        delta = None if ours is None else ours - value
        self.records.append({**record, "mean": value, "std": None, "ci95": None, "n": None,
                             "values": None, "delta": delta})
        text = f"{value:.{self.decimals}f}"
        return text if delta is None else f"{text} ({delta:+.{self.decimals}f})"


def mean_of(values: Iterable[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def seed_note(methods: Sequence[Method], use_ci95: bool, incomplete: bool) -> str:
    spread = "95% confidence interval" if use_ci95 else "std (np.std, as CoOp's parser)"
    seeds = {m.label: ", ".join(map(str, m.seeds)) for m in methods}
    if len(set(seeds.values())) == 1:
        expected = f"seeds {next(iter(seeds.values()))}"
    else:
        expected = "seeds " + "; ".join(f"{label}: {s}" for label, s in seeds.items())
    gaps = "; [k]: a mean over only k of them (see the incomplete runs below)" if incomplete else ""
    return f"Mean ± {spread} over {expected}{gaps}."


def cfg_note(methods: Sequence[Method]) -> str:
    parts = []
    for m in methods:
        by_cfg: Dict[str, List[str]] = defaultdict(list)
        for dataset, cfg in m.cfgs.items():
            by_cfg[cfg].append(display_name(dataset))
        text = "; ".join(f"{cfg} ({', '.join(sorted(d))})" if len(by_cfg) > 1 else cfg
                         for cfg, d in sorted(by_cfg.items()))
        parts.append(f"{m.label}: {text}")
    return "Configs: " + " | ".join(parts)


def render(tables: Sequence[Table], fmt: str) -> str:
    """``tables`` as ``table`` (aligned text), ``markdown``, ``csv`` or ``json``."""
    if fmt == "json":
        return json.dumps([{"setting": t.setting, "title": t.title, "shots": t.shots,
                            "header": t.header, "rows": t.rows, "records": t.records,
                            "notes": t.notes, "incomplete": t.incomplete} for t in tables],
                          indent=2)
    if fmt == "csv":
        fields = ["setting", "shots", "method", "trainer", "cfg", "dataset", "role", "metric",
                  "mean", "std", "ci95", "n", "values", "datasets"]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        for t in tables:
            for rec in t.records:
                values = rec.get("values")
                writer.writerow({**rec, "values": ";".join(f"{v:.4f}" for v in values)
                                 if values else ""})
        return out.getvalue()
    if fmt not in ("table", "markdown"):
        raise ConfigValueError(f"Unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    blocks = []
    for t in tables:
        if fmt == "markdown":
            lines = [f"## {t.title}", "", _grid(t.header, t.rows, "github"), ""]
            lines += [f"- {n}" for n in t.notes]
        else:
            lines = [t.title, "=" * len(t.title), "", fit_width(t.header, t.rows), ""]
            lines += [wrapped for n in t.notes for wrapped in _wrap(n, "")]
        if t.incomplete:
            lines += ["", f"Incomplete runs ({len(t.incomplete)}, not in the means):"]
            lines += [f"- {line}" for line in t.incomplete] if fmt == "markdown" else \
                [wrapped for line in t.incomplete for wrapped in _wrap(line, "  ")]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]], style: str = "simple", left: int = 1) -> str:
    """Aligned rows: the first ``left`` columns (names) left-aligned, the numbers right-aligned."""
    return tabulate(rows, headers=list(header), tablefmt=style, disable_numparse=True,
                    colalign=["left"] * left + ["right"] * (len(header) - left))


def _width(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def _wrap(text: str, indent: str) -> List[str]:
    return textwrap.wrap(text, TERMINAL_WIDTH, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_long_words=False, break_on_hyphens=False) or [indent]


def column_groups(header: Sequence[str]) -> Optional[List[Tuple[str, List[int]]]]:
    """``[(prefix, column indices)]`` when every column after the first is ``"<prefix> <what>"``
    with each prefix's columns side by side and some prefix over several columns (a method's
    Base/New/HM, its shots); None otherwise (e.g. one column per dataset)."""
    groups: List[Tuple[str, List[int]]] = []
    for i, name in enumerate(header[1:], 1):
        if " " not in name:
            return None
        prefix = name.rsplit(" ", 1)[0]
        if groups and groups[-1][0] == prefix:
            groups[-1][1].append(i)
        elif any(p == prefix for p, _ in groups):
            return None
        else:
            groups.append((prefix, [i]))
    return groups if any(len(cols) > 1 for _, cols in groups) else None


def long_layout(header: Sequence[str], rows: Sequence[Sequence[str]]
                ) -> Optional[Tuple[List[str], List[List[str]]]]:
    """The table with one row per (first-column entry, column group): columns ``Method`` and the
    groups' common suffixes (Base, New, HM; or 1-shot, 2-shot, ...). None when the columns do
    not form groups (:func:`column_groups`)."""
    groups = column_groups(header)
    if groups is None:
        return None
    suffixes: List[str] = []
    for _, cols in groups:
        suffixes += [header[i].rsplit(" ", 1)[1] for i in cols if header[i].rsplit(" ", 1)[1] not in suffixes]
    out = []
    for row in rows:
        for n, (prefix, cols) in enumerate(groups):
            cells = {header[i].rsplit(" ", 1)[1]: row[i] for i in cols}
            out.append([row[0] if n == 0 else "", prefix] + [cells.get(s, DASH) for s in suffixes])
    return [header[0], "Method"] + suffixes, out


def split_columns(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """The table cut into tables of at most :data:`TERMINAL_WIDTH` columns, each repeating the
    first column; a column group (:func:`column_groups`) is never cut."""
    groups = [cols for _, cols in column_groups(header) or []] or [[i] for i in range(1, len(header))]
    parts: List[List[int]] = [[]]
    for cols in groups:
        trial = parts[-1] + cols
        if parts[-1] and _width(_grid(*_pick(header, rows, trial))) > TERMINAL_WIDTH:
            parts.append(list(cols))
        else:
            parts[-1] = trial
    return [_grid(*_pick(header, rows, cols)) for cols in parts]


def _pick(header: Sequence[str], rows: Sequence[Sequence[str]], cols: List[int]):
    keep = [0] + cols
    return [header[i] for i in keep], [[row[i] for i in keep] for row in rows]


def fit_width(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The aligned text table, within :data:`TERMINAL_WIDTH` columns where it can be: as it is
    when it fits, else one row per method (:func:`long_layout`), else cut into several tables
    (:func:`split_columns`)."""
    full = _grid(header, rows)
    if _width(full) <= TERMINAL_WIDTH:
        return full
    long = long_layout(header, rows)
    if long is not None and _width(_grid(*long, left=2)) <= TERMINAL_WIDTH:
        return _grid(*long, left=2)
    return "\n\n".join(split_columns(header, rows))
