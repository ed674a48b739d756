"""``python -m clipfit.toyworld pretrain|make-data|explain|findings|table``: remake the toy CLIP, draw
the toy datasets, say what a toy base-to-new table shows and which of the paper's findings hold
(``table``: several draws side by side)."""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import fields
from typing import List, Optional

import torch

from clipfit.errors import ConfigValueError


def _pretrain(args: argparse.Namespace) -> None:
    from .pretrain import PretrainConfig, describe_run, pretrain, report, used_tokens
    from .weights import pack

    cfg = PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)})
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.time()
    model = pretrain(cfg, workers=args.workers)
    seconds = time.time() - start
    sha = pack(model.state_dict(), used_tokens(), args.out)
    print(describe_run(cfg, seconds, report(model)))
    print(f"Wrote {args.out} (SHA-256 {sha}). To ship it, copy it to clipfit/toyworld/toy_clip.pt.xz and set "
          "SHIPPED_SHA256 in clipfit/toyworld/weights.py to that hash; MODEL.BACKBONE.PATH loads it as it is.")


def _make_data(args: argparse.Namespace) -> None:
    from .downstream import DATASETS, make_dataset

    for name in args.datasets or list(DATASETS):
        make_dataset(name, args.root, seed=args.seed)


def _explain(args: argparse.Namespace) -> None:
    from .explain import base2new_means, explain

    print("\n".join(explain(base2new_means(args.root, args.dataset))))


def _findings(args: argparse.Namespace) -> None:
    from .downstream import base_new_counts
    from .explain import base2new_means
    from .findings import finding_lines

    print(f"The paper's base-to-new findings on {args.dataset} (means over the finished seeds):")
    print("\n".join(finding_lines(base2new_means(args.root, args.dataset), *base_new_counts(args.dataset))))


def _labels(roots: List[str]) -> List[str]:
    """Column names: each folder above ``base2new``, as a path from the folder they share (e.g. draw2)."""
    parents = [os.path.dirname(os.path.abspath(r)) for r in roots]
    if len(parents) == 1:
        return [os.path.basename(parents[0])]
    common = os.path.commonpath(parents)
    return [os.path.relpath(p, common) for p in parents]


def _table(args: argparse.Namespace) -> None:
    from .downstream import base_new_counts
    from .explain import base2new_means
    from .findings import finding_lines, side_by_side

    labels = args.labels or _labels(args.roots)
    if len(labels) != len(args.roots) or len(set(labels)) != len(labels):
        raise ConfigValueError(f"--labels needs one distinct label per folder ({len(args.roots)} folders), got {labels}")
    tables = {label: base2new_means(root, args.dataset) for label, root in zip(labels, args.roots)}
    counts = base_new_counts(args.dataset)
    print(f"Base-to-new on {args.dataset}, side by side (means over the finished seeds; chance "
          f"{100 / counts[0]:.2f}% on Base, {100 / counts[1]:.2f}% on New):")
    table = side_by_side(tables, *counts)
    print("\n".join(table))
    if args.docs:
        from clipfit.docs_blocks import measured_line, write_block

        command = args.measured_by or "python -m clipfit.toyworld " + " ".join(sys.argv[1:])
        write_block(args.docs, f"toy-table-{args.dataset}", "\n".join(
            table + ["", "Base / New / HM in %, means over the finished run seeds. " + measured_line(command)]))
    for label, means in tables.items():
        print(f"\nThe findings on {label}:")
        print("\n".join(finding_lines(means, *counts)))


def main(argv: Optional[List[str]] = None) -> int:
    from .pretrain import PretrainConfig

    parser = argparse.ArgumentParser(prog="python -m clipfit.toyworld", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pretrain", help="pretrain a toy CLIP and write it packed (fp16, lzma)")
    p.add_argument("--out", required=True, help="file to write (e.g. toy_clip.pt.xz)")
    for f in fields(PretrainConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(f.default), default=f.default,
                       help=f"default {f.default}")
    p.add_argument("--workers", type=int, default=1, help="0: draw images in the training process")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.set_defaults(func=_pretrain)
    d = sub.add_parser("make-data", help="draw the toy downstream datasets in CoOp's layout")
    d.add_argument("--root", required=True, help="dataset root (DATASET.ROOT); one folder per dataset")
    d.add_argument("--seed", type=int, default=1, help="seed of the classes and images drawn")
    d.add_argument("--datasets", nargs="*", help="which datasets (default: all)")
    d.set_defaults(func=_make_data)
    e = sub.add_parser("explain", help="say in two lines what a toy base-to-new table shows")
    e.add_argument("root", help="the base2new output folder ($OUT/base2new)")
    e.add_argument("--dataset", default="toy_shapes", help="which dataset's runs")
    e.set_defaults(func=_explain)
    f = sub.add_parser("findings", help="check the paper's five base-to-new findings on a toy table")
    f.add_argument("root", help="the base2new output folder ($OUT/base2new)")
    f.add_argument("--dataset", default="toy_shapes", help="which dataset's runs")
    f.set_defaults(func=_findings)
    t = sub.add_parser("table", help="several toy tables (e.g. one per data draw) side by side, with the findings")
    t.add_argument("roots", nargs="+", help="base2new output folders, one per column")
    t.add_argument("--dataset", default="toy_shapes", help="which dataset's runs")
    t.add_argument("--labels", nargs="+", help="column names (default: the folders above base2new, from the folder they share: e.g. draw2)")
    t.add_argument("--docs", help="Markdown page whose block toy-table-<dataset> gets the table")
    t.add_argument("--measured-by", help="the command named under the table in --docs (default: this one)")
    t.set_defaults(func=_table)
    args = parser.parse_args(argv)
    from clipfit.training.cli import run_user_command

    return run_user_command(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
