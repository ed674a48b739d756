"""Results tables across runs: base-to-new (the paper's Table 1), few-shot, cross-dataset and
distribution shift, as text, markdown, CSV or JSON.

Each number is a mean over seeds with its spread (``np.std`` as CoOp's parser, or the 95%
confidence interval); a mean over fewer seeds than its method ran elsewhere is marked ``[k]``.
Missing seeds and unfinished runs are listed under the table, never averaged in silently.
"""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from tabulate import tabulate

from .protocol import SOURCE_DATASET, dataset_order, display_name
from .results import RunKey, RunResult, Stat, ci95, harmonic_mean, summarize

FORMATS = ("table", "markdown", "csv", "json")
# Column order of methods: the paper's, then any other trainer alphabetically.
METHOD_ORDER = ("ZeroshotCLIP", "CoOp", "CoCoOp", "ProGrad", "CLIP_Adapter", "KgCoOp", "MaPLe",
                "CLIPFit")
SETTING_TITLES = {
    "base2new": "Base-to-new generalization",
    "fewshot": "Few-shot classification",
    "xd": "Cross-dataset transfer (trained on ImageNet)",
    "dg": "Distribution shift (trained on ImageNet)",
}
DASH = "-"

class PaperReference:
    """The paper's reported numbers (``clipfit.reference``) for ``--compare-paper``."""

    def __init__(self):
        from . import reference

        self._ref = reference

    def value(self, trainer: str, setting: str, dataset: str, metric: str, shots: int
              ) -> Optional[float]:
        """The paper's number, None where it reports none."""
        return self._ref.lookup(trainer, setting, dataset, metric, shots)

    def average_of(self, setting: str) -> List[str]:
        """The datasets the paper's Average row of ``setting`` covers (canonical names)."""
        table = self._ref.load_table(self._ref.settings()[setting]["tables"][0])
        return sorted(table["average"]["of"])

    def same_average(self, setting: str, datasets: Sequence[str]) -> bool:
        """Whether an average over ``datasets`` is the paper's Average of ``setting``."""
        ours = sorted(self._ref.canonical_dataset(d) or d for d in datasets)
        return ours == self.average_of(setting)


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


def _method_sort_key(label: str) -> Tuple[int, str]:
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
            label = f"{trainer}/{key.cfg}" if split else trainer
            groups.setdefault(label, {})[key] = run
    methods = []
    for label in sorted(groups, key=_method_sort_key):
        group = groups[label]
        methods.append(Method(
            label=label,
            trainer=next(iter(group)).trainer,
            runs={(k.role, k.dataset, k.seed): r for k, r in group.items()},
            cfgs={k.dataset: k.cfg for k in group},
            seeds=sorted(seeds) if seeds else sorted({k.seed for k in group}),
        ))
    return methods


def _incomplete(method: Method, role: str, dataset: str, role_name: str) -> List[str]:
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


class _Cells:
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


def _mean(values: Iterable[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _seed_note(methods: Sequence[Method], use_ci95: bool, incomplete: bool) -> str:
    spread = "95% confidence interval" if use_ci95 else "std (np.std, as CoOp's parser)"
    seeds = {m.label: ", ".join(map(str, m.seeds)) for m in methods}
    if len(set(seeds.values())) == 1:
        expected = f"seeds {next(iter(seeds.values()))}"
    else:
        expected = "seeds " + "; ".join(f"{label}: {s}" for label, s in seeds.items())
    gaps = "; [k]: a mean over only k of them (see the incomplete runs below)" if incomplete else ""
    return f"Mean ± {spread} over {expected}{gaps}."


def _cfg_note(methods: Sequence[Method]) -> str:
    parts = []
    for m in methods:
        by_cfg: Dict[str, List[str]] = defaultdict(list)
        for dataset, cfg in m.cfgs.items():
            by_cfg[cfg].append(display_name(dataset))
        text = "; ".join(f"{cfg} ({', '.join(sorted(d))})" if len(by_cfg) > 1 else cfg
                         for cfg, d in sorted(by_cfg.items()))
        parts.append(f"{m.label}: {text}")
    return "Configs: " + " | ".join(parts)


def _paper_note(paper: Optional[PaperReference], setting: str, averaged: Sequence[str]
                ) -> List[str]:
    """What the (paper) cells show, and a warning when the paper's average covers other
    datasets than yours."""
    if paper is None:
        return []
    lines = ["(paper) columns: the paper's number and, in brackets, yours minus the paper's."]
    if paper.same_average(setting, averaged):
        return lines
    return lines + [f"(paper) Average is the paper's, over {len(paper.average_of(setting))} datasets; "
            f"yours is over {len(averaged)}, so the two averages do not compare."]


def _paper_value(paper: Optional[PaperReference], trainer: str, setting: str, dataset: str,
                 metric: str, shots: int) -> Optional[float]:
    return paper.value(trainer, setting, dataset, metric, shots) if paper else None


def _has_paper(paper: Optional[PaperReference], trainer: str, setting: str, metric: str,
               shots: int, datasets: Sequence[str]) -> bool:
    return paper is not None and any(paper.value(trainer, setting, d, metric, shots) is not None
                                     for d in list(datasets) + ["Average"])


def base2new_table(runs: Dict[RunKey, RunResult], shots: int, use_ci95: bool = False,
                   seeds: Optional[Sequence[int]] = None, paper: Optional[PaperReference] = None
                   ) -> Table:
    """Per dataset Base, New and HM for every method side by side, and their average."""
    methods = group_methods(runs, seeds)
    datasets = dataset_order(k.dataset for k in runs)
    cells = _Cells(use_ci95)
    header = ["Dataset"]
    columns: List[Tuple[Method, bool]] = []  # (method, is_paper)
    for m in methods:
        columns.append((m, False))
        if _has_paper(paper, m.trainer, "base2new", "base", shots, datasets):
            columns.append((m, True))
    for m, is_paper in columns:
        name = f"{m.label} (paper)" if is_paper else m.label
        header += [f"{name} Base", f"{name} New", f"{name} HM"]

    rows, incomplete, notes = [], [], []
    averages: Dict[str, Dict[str, List[float]]] = {m.label: defaultdict(list) for m in methods}
    for dataset in datasets:
        row = [display_name(dataset)]
        ours: Dict[str, Optional[float]] = {}
        for m, is_paper in columns:
            rec = {"setting": "base2new", "shots": shots, "method": m.label, "trainer": m.trainer,
                   "cfg": m.cfgs.get(dataset, ""), "dataset": dataset}
            if is_paper:
                rec = {**rec, "method": f"{m.label} (paper)", "cfg": ""}
                row += [cells.paper(_paper_value(paper, m.trainer, "base2new", dataset, metric,
                                                 shots), ours[metric], {**rec, "metric": metric})
                        for metric in ("base", "new", "hm")]
                continue
            base, new = m.stat("base", dataset), m.stat("new", dataset)
            hm = harmonic_mean(base.mean, new.mean) if base and new else None
            ours = {"base": base.mean if base else None, "new": new.mean if new else None, "hm": hm}
            row += [cells.stat(base, len(m.seeds), {**rec, "metric": "base"}),
                    cells.stat(new, len(m.seeds), {**rec, "metric": "new"}),
                    cells.value(hm, {**rec, "metric": "hm"})]
            if base and new:
                averages[m.label]["base"].append(base.mean)
                averages[m.label]["new"].append(new.mean)
            if m.has(dataset):
                incomplete += _incomplete(m, "base", dataset, "base")
                incomplete += _incomplete(m, "new", dataset, "new")
        rows.append(row)

    row = ["Average"]
    ours = {}
    for m, is_paper in columns:
        rec = {"setting": "base2new", "shots": shots, "method": m.label, "trainer": m.trainer,
               "cfg": "", "dataset": "average"}
        if is_paper:
            rec["method"] = f"{m.label} (paper)"
            row += [cells.paper(_paper_value(paper, m.trainer, "base2new", "Average", metric,
                                             shots), ours[metric], {**rec, "metric": metric})
                    for metric in ("base", "new", "hm")]
            continue
        avg = averages[m.label]
        base, new = _mean(avg["base"]), _mean(avg["new"])
        covered = len(avg["base"])
        mark = " *" if covered < len(datasets) else ""
        if mark:
            notes.append(f"* {m.label}: average over {covered} of {len(datasets)} datasets "
                         "(the others lack Base or New results).")
        hm = harmonic_mean(base, new) if base is not None and new is not None else None
        ours = {"base": base, "new": new, "hm": hm}
        rec["datasets"] = covered
        row += [cells.value(base, {**rec, "metric": "base"}, mark),
                cells.value(new, {**rec, "metric": "new"}, mark),
                cells.value(hm, {**rec, "metric": "hm"}, mark)]
    rows.append(row)
    notes = [_seed_note(methods, use_ci95, bool(incomplete)),
             "HM = 2·Base·New/(Base+New) of the mean Base and mean New; the average row "
             "averages the per-dataset means.",
             _cfg_note(methods)] + _paper_note(paper, "base2new", datasets) + notes
    return Table("base2new", [shots], header, rows, cells.records, notes, incomplete)


def fewshot_table(runs: Dict[RunKey, RunResult], use_ci95: bool = False,
                  seeds: Optional[Sequence[int]] = None, paper: Optional[PaperReference] = None
                  ) -> Table:
    """Accuracy per dataset and number of shots for every method, and the average."""
    shots_list = sorted({k.shots for k in runs})
    by_shots = {s: group_methods({k: r for k, r in runs.items() if k.shots == s}, seeds)
                for s in shots_list}
    labels = sorted({m.label for ms in by_shots.values() for m in ms}, key=_method_sort_key)
    datasets = dataset_order(k.dataset for k in runs)
    cells = _Cells(use_ci95)
    # columns: (label, shots, method or None, is_paper)
    columns: List[Tuple[str, int, Optional[Method], bool]] = []
    for label in labels:
        for is_paper in (False, True):
            for s in shots_list:
                m = next((m for m in by_shots[s] if m.label == label), None)
                if is_paper and (m is None or not _has_paper(paper, m.trainer, "fewshot",
                                                             "accuracy", s, datasets)):
                    continue
                columns.append((label, s, m, is_paper))
    header = ["Dataset"] + [f"{label}{' (paper)' if p else ''} {s}-shot"
                            for label, s, _, p in columns]
    rows, incomplete, notes = [], [], []
    per_column: Dict[int, List[float]] = defaultdict(list)
    for dataset in datasets:
        row = [display_name(dataset)]
        ours_fs: Dict[Tuple[str, int], Optional[float]] = {}
        for i, (label, s, m, is_paper) in enumerate(columns):
            rec = {"setting": "fewshot", "shots": s, "method": label, "dataset": dataset,
                   "metric": "accuracy", "trainer": m.trainer if m else "",
                   "cfg": m.cfgs.get(dataset, "") if m else ""}
            if m is None:
                row.append(DASH)
            elif is_paper:
                row.append(cells.paper(_paper_value(paper, m.trainer, "fewshot", dataset,
                                                    "accuracy", s), ours_fs.get((label, s)),
                                       {**rec, "method": f"{label} (paper)", "cfg": ""}))
            else:
                stat = m.stat("test", dataset)
                ours_fs[(label, s)] = stat.mean if stat else None
                row.append(cells.stat(stat, len(m.seeds), rec))
                if stat:
                    per_column[i].append(stat.mean)
                if m.has(dataset):
                    incomplete += _incomplete(m, "test", dataset, f"{s}-shot")
        rows.append(row)
    row = ["Average"]
    ours_fs = {}
    for i, (label, s, m, is_paper) in enumerate(columns):
        rec = {"setting": "fewshot", "shots": s, "method": label, "dataset": "average",
               "metric": "accuracy", "trainer": m.trainer if m else "", "cfg": ""}
        if m is None:
            row.append(DASH)
        elif is_paper:
            row.append(cells.paper(_paper_value(paper, m.trainer, "fewshot", "Average",
                                                "accuracy", s), ours_fs.get((label, s)),
                                   {**rec, "method": f"{label} (paper)"}))
        else:
            covered = len(per_column[i])
            mark = " *" if covered < len(datasets) else ""
            if mark:
                notes.append(f"* {label} {s}-shot: average over {covered} of {len(datasets)} "
                             "datasets.")
            ours_fs[(label, s)] = _mean(per_column[i])
            row.append(cells.value(ours_fs[(label, s)], {**rec, "datasets": covered}, mark))
    rows.append(row)
    methods = [m for ms in by_shots.values() for m in ms]
    notes = [_seed_note(_unique_labels(methods), use_ci95, bool(incomplete)), _cfg_note(_unique_labels(methods))
             ] + _paper_note(paper, "fewshot", datasets) + notes
    return Table("fewshot", shots_list, header, rows, cells.records, notes, incomplete)


def _unique_labels(methods: Sequence[Method]) -> List[Method]:
    seen: Dict[str, Method] = {}
    for m in methods:
        seen.setdefault(m.label, m)
    return list(seen.values())


def transfer_table(setting: str, runs: Dict[RunKey, RunResult], shots: int,
                   use_ci95: bool = False, seeds: Optional[Sequence[int]] = None,
                   paper: Optional[PaperReference] = None) -> Table:
    """Cross-dataset (``xd``) or distribution shift (``dg``): one row per method, the source
    ImageNet, each target and the average (of the targets for xd; of source and targets for
    dg, as the paper's Table 3)."""
    methods = group_methods(runs, seeds)
    targets = dataset_order(k.dataset for k in runs if k.role == "target")
    columns = [("source", SOURCE_DATASET)] + [("target", d) for d in targets]
    header = ["Method", f"{display_name(SOURCE_DATASET)} (source)"] + \
        [display_name(d) for d in targets] + ["Average"]
    averaged = columns if setting == "dg" else columns[1:]
    cells = _Cells(use_ci95)
    rows, incomplete, notes = [], [], []
    for m in methods:
        ours_tr: Dict[str, Optional[float]] = {}
        for is_paper in (False, True):
            if is_paper and not _has_paper(paper, m.trainer, setting, "accuracy", shots,
                                           [d for _, d in columns]):
                continue
            label = f"{m.label} (paper)" if is_paper else m.label
            row, means = [label], {}
            for role, dataset in columns:
                rec = {"setting": setting, "shots": shots, "method": label, "trainer": m.trainer,
                       "cfg": "" if is_paper else m.cfgs.get(dataset, ""), "dataset": dataset,
                       "role": role, "metric": "accuracy"}
                if is_paper:
                    means[dataset] = _paper_value(paper, m.trainer, setting, dataset,
                                                  "accuracy", shots)
                    row.append(cells.paper(means[dataset], ours_tr.get(dataset), rec))
                    continue
                stat = m.stat(role, dataset)
                means[dataset] = stat.mean if stat else None
                row.append(cells.stat(stat, len(m.seeds), rec))
                incomplete += _incomplete(m, role, dataset, role)
            rec = {"setting": setting, "shots": shots, "method": label, "trainer": m.trainer,
                   "cfg": "", "dataset": "average", "metric": "accuracy"}
            if is_paper:
                row.append(cells.paper(_paper_value(paper, m.trainer, setting, "Average",
                                                    "accuracy", shots), ours_tr.get("average"), rec))
            else:
                present = [means[d] for _, d in averaged if means[d] is not None]
                mark = " *" if len(present) < len(averaged) else ""
                if mark:
                    notes.append(f"* {m.label}: average over {len(present)} of "
                                 f"{len(averaged)} datasets.")
                ours_tr = {**means, "average": _mean(present)}
                row.append(cells.value(ours_tr["average"], {**rec, "datasets": len(present)}, mark))
            rows.append(row)
    what = "source and targets" if setting == "dg" else "targets"
    notes = [_seed_note(methods, use_ci95, bool(incomplete)), f"Average: over the {what}, as the paper.",
             _cfg_note(methods)] + _paper_note(paper, setting, [d for _, d in averaged]) + notes
    return Table(setting, [shots], header, rows, cells.records, notes, incomplete)


def transfer_runs(setting: str, runs: Dict[RunKey, RunResult]) -> Dict[RunKey, RunResult]:
    """The ``xd`` or ``dg`` targets and the ImageNet source runs (``xd/train``, shared by both
    settings) of the same trainer, config and shots."""
    targets = {k: r for k, r in runs.items() if k.setting == setting and k.role == "target"}
    models = {(k.trainer, k.cfg, k.shots) for k in targets}
    sources = {replace(k, setting=setting): r for k, r in runs.items()
               if k.setting == "xd" and k.role == "source" and (k.trainer, k.cfg, k.shots) in models}
    return {**targets, **sources}


def build_tables(setting: str, runs: Dict[RunKey, RunResult], use_ci95: bool = False,
                 seeds: Optional[Sequence[int]] = None, paper: Optional[PaperReference] = None
                 ) -> List[Table]:
    """The tables of ``setting`` from every run found (one table per number of shots)."""
    chosen = (transfer_runs(setting, runs) if setting in ("xd", "dg")
              else {k: r for k, r in runs.items() if k.setting == setting})
    if setting == "fewshot":
        return [fewshot_table(chosen, use_ci95, seeds, paper)] if chosen else []
    tables = []
    for shots in sorted({k.shots for k in chosen}):
        subset = {k: r for k, r in chosen.items() if k.shots == shots}
        if setting == "base2new":
            tables.append(base2new_table(subset, shots, use_ci95, seeds, paper))
        else:
            tables.append(transfer_table(setting, subset, shots, use_ci95, seeds, paper))
    return tables


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
        raise ValueError(f"Unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    blocks = []
    for t in tables:
        title = f"## {t.title}" if fmt == "markdown" else f"{t.title}\n{'=' * len(t.title)}"
        body = tabulate(t.rows, headers=t.header, tablefmt="github" if fmt == "markdown"
                        else "simple", disable_numparse=True,
                        colalign=["left"] + ["right"] * (len(t.header) - 1))
        lines = [title, "", body, ""]
        lines += [f"- {n}" if fmt == "markdown" else n for n in t.notes]
        if t.incomplete:
            lines += ["", f"Incomplete runs ({len(t.incomplete)}, not in the means):"]
            lines += [f"- {line}" if fmt == "markdown" else f"  {line}" for line in t.incomplete]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
