"""Average test results over seeds: CoOp's ``parse_test_res.py``, plus the paper's tables.

One experiment (CoOp's interface and output): DIR holds one folder per seed,
each with ``metrics.json`` (preferred, full precision) or a Dassl ``log.txt``::

    python parse_test_res.py output/base2new/train_base/dtd/shots_16/CLIPFit/vit_b16
    python parse_test_res.py output/base2new/test_new/dtd/shots_16/CLIPFit/vit_b16 --test-log
    python parse_test_res.py DIR --multi-exp      # DIR/<experiment>/<seed>/...
    python parse_test_res.py DIR --ci95 --keyword macro_f1

Tables over every run under the scripts' output root (one column group per trainer)::

    python parse_test_res.py --base2new output/base2new     # Base, New, HM (Table 1)
    python parse_test_res.py --fewshot output/fewshot       # accuracy per shots
    python parse_test_res.py --xd output                    # cross-dataset transfer
    python parse_test_res.py --dg output                    # distribution shift
    ... --format markdown|csv|json --compare-paper --seeds 1 2 3 --trainer CLIPFit CoOp
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from collections import OrderedDict, defaultdict
from typing import Dict, List, Optional

import numpy as np

from clipfit.experiments.results import (TEST_END_SIGNAL, ci95, cell_identity, find_all_runs, left_out_line,
                                        odd_ones, read_logs, read_run, screen_runs)
from clipfit.experiments.table_parts import FORMATS, render
from clipfit.experiments.tables import PaperReference, build_tables

SETTING_FLAGS = ("base2new", "fewshot", "xd", "dg")


def _subdirs(directory: str) -> List[str]:
    return sorted(d for d in os.listdir(directory)
                  if not d.startswith(".") and osp.isdir(osp.join(directory, d)))


def parse_experiment(directory: str, keyword: str, use_ci95: bool,
                     end_signal: Optional[str]) -> Dict[str, float]:
    """Print each seed's metric and their mean ± std (or 95% CI) as CoOp does; return means."""
    print(f"Parsing files in {directory}")
    values: Dict[str, List[float]] = defaultdict(list)
    skipped = []
    runs = [read_run(osp.join(directory, sub), end_signal) for sub in _subdirs(directory)]
    odd = odd_ones({run.path: cell_identity(run.path) for run in runs if run.finished})
    for run in runs:
        if not run.finished:
            skipped.append(f"{run.path}: {run.status}, {run.reason}")
            continue
        if run.path in odd:
            skipped.append(f"{run.path}: other settings than the other seeds: {odd[run.path]}")
            continue
        if keyword not in run.metrics:  # a keyword that metrics.json lacks: try the log
            run = read_logs(run.path, end_signal)
        if keyword not in run.metrics:
            skipped.append(f"{run.path}: no '{keyword}' in {run.source}")
            continue
        print(f"file: {run.source}. {keyword}: {run.metrics[keyword]:.2f}%. ")
        values[keyword].append(run.metrics[keyword])
    for line in skipped:
        print(f"Skipped (not averaged): {line}")
    if not values:
        sys.exit(f"Nothing found in {directory}: no seed folder with a final '{keyword}' result.")
    print("===")
    print(f"Summary of directory: {directory}")
    means = OrderedDict()
    for key, vals in values.items():
        spread = ci95(vals) if use_ci95 else float(np.std(vals))
        print(f"* {key}: {np.mean(vals):.2f}% +- {spread:.2f}%")
        means[key] = float(np.mean(vals))
    print("===")
    return means


def coop_main(args: argparse.Namespace) -> None:
    """CoOp's single- and multi-experiment summaries."""
    end_signal = TEST_END_SIGNAL if args.test_log else None
    if not args.multi_exp:
        parse_experiment(args.directory, args.keyword, args.ci95, end_signal)
        return
    final: Dict[str, List[float]] = defaultdict(list)
    for sub in _subdirs(args.directory):
        for key, value in parse_experiment(osp.join(args.directory, sub), args.keyword,
                                           args.ci95, end_signal).items():
            final[key].append(value)
    print("Average performance")
    for key, vals in final.items():
        print(f"* {key}: {np.mean(vals):.2f}%")


def table_main(setting: str, root: str, args: argparse.Namespace) -> None:
    """A table of every run of ``setting`` under ``root``."""
    found = find_all_runs(root)
    if setting == "dg" and osp.basename(osp.normpath(root)) == "dg":
        xd_root = osp.join(osp.dirname(osp.abspath(root)), "xd")  # the ImageNet source models
        if osp.isdir(xd_root):
            found.update(find_all_runs(xd_root))
    runs, left_out = screen_runs(found)
    if args.trainer:
        runs = {k: r for k, r in runs.items() if k.trainer in args.trainer}
    paper = PaperReference() if args.compare_paper else None
    tables = build_tables(setting, runs, args.ci95, args.seeds, paper)
    if not tables:
        sys.exit(f"No {setting} runs under {root}. Expected the layout of scripts/ "
                 f"(see README): e.g. bash scripts/sweep.sh {setting}.")
    notes = [left_out_line(k, why) for k, why in left_out.items()
             if (k.setting == setting or (setting == "dg" and k.role == "source"))
             and (not args.trainer or k.trainer in args.trainer)]
    for table in tables:
        table.notes += notes
    sys.stdout.write(render(tables, args.format))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Average test results over seeds (CoOp's parse_test_res.py) and build the "
                    "paper's tables.", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("directory", nargs="?", help="one experiment: a folder of seed folders")
    parser.add_argument("--ci95", action="store_true", help=r"95%% confidence interval "
                        "instead of the standard deviation")
    parser.add_argument("--test-log", action="store_true",
                        help="read eval-only logs (accepted as in CoOp; the log type is also "
                             "detected)")
    parser.add_argument("--multi-exp", action="store_true",
                        help="DIR holds several experiments, each a folder of seed folders")
    parser.add_argument("--keyword", default="accuracy",
                        help="metric to read: accuracy, error, macro_f1, ...")
    for setting in SETTING_FLAGS:
        parser.add_argument(f"--{setting}", metavar="ROOT",
                            help=f"table of every {setting} run under ROOT")
    parser.add_argument("--format", choices=FORMATS, default="table", help="table output format")
    parser.add_argument("--seeds", type=int, nargs="+",
                        help="seeds every mean should have (default: all seen per trainer)")
    parser.add_argument("--trainer", nargs="+", help="only these trainers")
    parser.add_argument("--compare-paper", action="store_true",
                        help="show the paper's reported numbers beside yours")
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = [s for s in SETTING_FLAGS if getattr(args, s)]
    if args.directory and settings:
        parser.error("give either DIR (one experiment) or a table flag, not both")
    if not args.directory and not settings:
        parser.error("give DIR (one experiment) or --base2new/--fewshot/--xd/--dg ROOT")
    if args.directory:
        if not osp.isdir(args.directory):
            parser.error(f"no folder {args.directory}")
        coop_main(args)
        return
    for setting in settings:
        table_main(setting, getattr(args, setting), args)


if __name__ == "__main__":
    main()
