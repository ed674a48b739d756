"""Results tables across runs: base-to-new (the paper's Table 1), few-shot, cross-dataset and
distribution shift, as text, markdown, CSV or JSON.

Each number is a mean over seeds with its spread (``np.std`` as CoOp's parser, or the 95%
confidence interval); a mean over fewer seeds than its method ran elsewhere is marked ``[k]``.
Missing seeds and unfinished runs are listed under the table, never averaged in silently.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Dict, List, Optional, Sequence, Tuple

from clipfit.experiments.protocol import SOURCE_DATASET, dataset_order, display_name
from clipfit.experiments.results import RunKey, RunResult, harmonic_mean
from clipfit.experiments.table_parts import (DASH, Cells, Method, Table, cfg_note, group_methods,
                                             incomplete_lines, mean_of, method_sort_key, seed_note)


class PaperReference:
    """The paper's reported numbers (``clipfit.experiments.paper``) for ``--compare-paper``."""

    def __init__(self):
        from clipfit.experiments import paper

        self._ref = paper

    def value(self, trainer: str, setting: str, dataset: str, metric: str, shots: int
              ) -> Optional[float]:
        """The paper's number, None where it reports none."""
        return self._ref.lookup(trainer, setting, dataset, metric, shots)

    def average_of(self, setting: str) -> List[str]:
        """The datasets the paper's Average row of ``setting`` covers (canonical names)."""
        table = self._ref.load_table(self._ref.settings()[setting]["tables"][0])
        return sorted(table["average"]["of"])

    def has_any(self, datasets: Sequence[str]) -> bool:
        """Whether one of ``datasets`` is one of the paper's."""
        return any(self._ref.canonical_dataset(d) for d in datasets)

    def same_average(self, setting: str, datasets: Sequence[str]) -> bool:
        """Whether an average over ``datasets`` is the paper's Average of ``setting``."""
        ours = sorted(self._ref.canonical_dataset(d) or d for d in datasets)
        return ours == self.average_of(setting)


def _paper_note(paper: Optional[PaperReference], setting: str, averaged: Sequence[str]
                ) -> List[str]:
    """What the (paper) cells show, and a warning when the paper's average covers other
    datasets than yours."""
    if paper is None or not paper.has_any(averaged):
        return []  # data the paper does not have: no (paper) columns to explain
    lines = ["(paper) columns: the paper's number and, in brackets, yours minus the paper's."]
    if paper.same_average(setting, averaged):
        return lines
    return lines + [f"(paper) Average is the paper's, over {len(paper.average_of(setting))} datasets; "
            f"yours is over {len(averaged)}, so no difference is shown for it."]


def _comparable(paper: Optional[PaperReference], setting: str, averaged: Sequence[str],
                ours: Optional[float]) -> Optional[float]:
    """``ours`` where your average covers the paper's datasets, else None (no difference shown)."""
    return ours if paper is not None and paper.same_average(setting, averaged) else None


def _paper_value(paper: Optional[PaperReference], trainer: str, setting: str, dataset: str,
                 metric: str, shots: int) -> Optional[float]:
    return paper.value(trainer, setting, dataset, metric, shots) if paper else None


def _has_paper(paper: Optional[PaperReference], trainer: str, setting: str, metric: str,
               shots: int, datasets: Sequence[str]) -> bool:
    """Whether the paper reports ``trainer`` on one of ``datasets`` (its Average alone does not
    count: on data the paper does not have, nothing is compared)."""
    return paper is not None and any(paper.value(trainer, setting, d, metric, shots) is not None
                                     for d in datasets)


def base2new_table(runs: Dict[RunKey, RunResult], shots: int, use_ci95: bool = False,
                   seeds: Optional[Sequence[int]] = None, paper: Optional[PaperReference] = None
                   ) -> Table:
    """Per dataset Base, New and HM for every method side by side, and their average."""
    methods = group_methods(runs, seeds)
    datasets = dataset_order(k.dataset for k in runs)
    cells = Cells(use_ci95)
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
                incomplete += incomplete_lines(m, "base", dataset, "base")
                incomplete += incomplete_lines(m, "new", dataset, "new")
        rows.append(row)

    row = ["Average"]
    ours = {}
    for m, is_paper in columns:
        rec = {"setting": "base2new", "shots": shots, "method": m.label, "trainer": m.trainer,
               "cfg": "", "dataset": "average"}
        if is_paper:
            rec["method"] = f"{m.label} (paper)"
            row += [cells.paper(_paper_value(paper, m.trainer, "base2new", "Average", metric, shots),
                                _comparable(paper, "base2new", datasets, ours[metric]), {**rec, "metric": metric})
                    for metric in ("base", "new", "hm")]
            continue
        avg = averages[m.label]
        base, new = mean_of(avg["base"]), mean_of(avg["new"])
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
    notes = [seed_note(methods, use_ci95, bool(incomplete)),
             "HM = 2·Base·New/(Base+New) of the mean Base and mean New; the average row "
             "averages the per-dataset means.",
             cfg_note(methods)] + _paper_note(paper, "base2new", datasets) + notes
    return Table("base2new", [shots], header, rows, cells.records, notes, incomplete)


def fewshot_table(runs: Dict[RunKey, RunResult], use_ci95: bool = False,
                  seeds: Optional[Sequence[int]] = None, paper: Optional[PaperReference] = None
                  ) -> Table:
    """Accuracy per dataset and number of shots for every method, and the average."""
    shots_list = sorted({k.shots for k in runs})
    by_shots = {s: group_methods({k: r for k, r in runs.items() if k.shots == s}, seeds)
                for s in shots_list}
    labels = sorted({m.label for ms in by_shots.values() for m in ms}, key=method_sort_key)
    datasets = dataset_order(k.dataset for k in runs)
    cells = Cells(use_ci95)
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
                    incomplete += incomplete_lines(m, "test", dataset, f"{s}-shot")
        rows.append(row)
    row = ["Average"]
    ours_fs = {}
    for i, (label, s, m, is_paper) in enumerate(columns):
        rec = {"setting": "fewshot", "shots": s, "method": label, "dataset": "average",
               "metric": "accuracy", "trainer": m.trainer if m else "", "cfg": ""}
        if m is None:
            row.append(DASH)
        elif is_paper:
            row.append(cells.paper(_paper_value(paper, m.trainer, "fewshot", "Average", "accuracy", s),
                                   _comparable(paper, "fewshot", datasets, ours_fs.get((label, s))),
                                   {**rec, "method": f"{label} (paper)"}))
        else:
            covered = len(per_column[i])
            mark = " *" if covered < len(datasets) else ""
            if mark:
                notes.append(f"* {label} {s}-shot: average over {covered} of {len(datasets)} "
                             "datasets.")
            ours_fs[(label, s)] = mean_of(per_column[i])
            row.append(cells.value(ours_fs[(label, s)], {**rec, "datasets": covered}, mark))
    rows.append(row)
    methods = [m for ms in by_shots.values() for m in ms]
    notes = [seed_note(_unique_labels(methods), use_ci95, bool(incomplete)), cfg_note(_unique_labels(methods))
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
    cells = Cells(use_ci95)
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
                incomplete += incomplete_lines(m, role, dataset, role)
            rec = {"setting": setting, "shots": shots, "method": label, "trainer": m.trainer,
                   "cfg": "", "dataset": "average", "metric": "accuracy"}
            if is_paper:
                row.append(cells.paper(_paper_value(paper, m.trainer, setting, "Average", "accuracy", shots),
                                       _comparable(paper, setting, [d for _, d in averaged], ours_tr.get("average")),
                                       rec))
            else:
                present = [means[d] for _, d in averaged if means[d] is not None]
                mark = " *" if len(present) < len(averaged) else ""
                if mark:
                    notes.append(f"* {m.label}: average over {len(present)} of "
                                 f"{len(averaged)} datasets.")
                ours_tr = {**means, "average": mean_of(present)}
                row.append(cells.value(ours_tr["average"], {**rec, "datasets": len(present)}, mark))
            rows.append(row)
    what = "source and targets" if setting == "dg" else "targets"
    notes = [seed_note(methods, use_ci95, bool(incomplete)), f"Average: over the {what}, as the paper.",
             cfg_note(methods)] + _paper_note(paper, setting, [d for _, d in averaged]) + notes
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
