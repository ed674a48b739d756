"""Analysis (not a test): does bf16 move toy-world numbers beyond seed noise?

Base-to-new on a toy dataset for CLIPFit, CoOp and KgCoOp with their shipped toy configs, seeds
1 2 3, once in fp32 (the configs' precision) and once with the trainer's PREC key set to bf16 on
the command line: train on the base classes (``train.py``, which tests on Base), then
``--eval-only`` on the new classes. Per method and precision it prints the mean, min and max
over the seeds of Base and New, and whether the bf16 mean lies within the fp32 runs' seed range.
The table is written into the ``toy-precision`` block of ``docs/precision.md`` with its date,
machine and command.

    python bench/toy_precision.py [--dataset toy_shapes] [--seeds 1 2 3] [--jobs 2]

Datasets are drawn into ``--data`` when missing; runs go under ``--out`` (rerunning skips
finished runs whose settings, data and weights are the same; train.py refuses a folder that
holds other ones).
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from clipfit.docs_blocks import measured_line, write_block  # noqa: E402
from clipfit.experiments.results import read_run  # noqa: E402
from speed_modes import machine  # noqa: E402

TRAINERS = {  # trainer -> (toy config, precision key)
    "CLIPFit": ("configs/trainers/CLIPFit/toy.yaml", "TRAINER.CLIPFIT.PREC"),
    "CoOp": ("configs/trainers/CoOp/toy.yaml", "TRAINER.COOP.PREC"),
    "KgCoOp": ("configs/trainers/KgCoOp/toy.yaml", "TRAINER.COOP.PREC"),
}
PRECISIONS = ("fp32", "bf16")
ACCURACY = re.compile(r"^\* accuracy: ([0-9.]+)%", re.M)
DOCS = os.path.join(REPO, "docs", "precision.md")
DOCS_BLOCK = "toy-precision"


def _accuracy(log: str) -> float:
    """The last ``* accuracy: X%`` of a run's log (Dassl's result block)."""
    found = ACCURACY.findall(log)
    if not found:
        raise RuntimeError(f"no '* accuracy:' line in the run's output:\n{log[-2000:]}")
    return float(found[-1])


def _run(argv: List[str], out: str) -> float:
    """Run ``train.py argv`` into ``out``; its accuracy. A finished run with the same settings is
    skipped by train.py's run model (which refuses a folder holding other settings), and its
    accuracy read from the folder."""
    env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONPATH": REPO}  # one thread per run unless set
    proc = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--announce", "toy_precision run", *argv],
                          cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(argv)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    if ACCURACY.search(proc.stdout):
        return _accuracy(proc.stdout)
    run = read_run(out)
    if not run.finished:
        raise RuntimeError(f"train.py {' '.join(argv)} neither ran nor found a finished run:\n{proc.stdout[-2000:]}")
    return run.accuracy


def base_to_new(args: argparse.Namespace, trainer: str, prec: str, seed: int) -> Tuple[float, float]:
    """(Base, New) accuracy of one seed: train on base (tested on base), evaluate on new."""
    config, key = TRAINERS[trainer]
    common = ["--root", args.data, "--trainer", trainer, "--seed", str(seed),
              "--dataset-config-file", f"configs/datasets/{args.dataset}.yaml", "--config-file", config]
    opts = ["DATASET.NUM_SHOTS", str(args.shots), key, prec]
    train_dir = os.path.join(args.out, args.dataset, trainer, prec, f"seed{seed}")
    base = _run([*common, "--output-dir", train_dir, *opts, "DATASET.SUBSAMPLE_CLASSES", "base"], train_dir)
    epochs = _max_epoch(train_dir)
    new_dir = train_dir + "_new"
    new = _run([*common, "--output-dir", new_dir, "--eval-only", "--model-dir", train_dir, "--load-epoch", str(epochs),
                *opts, "DATASET.SUBSAMPLE_CLASSES", "new"], new_dir)
    return base, new


def _max_epoch(train_dir: str) -> int:
    """The epoch of the newest checkpoint the training run wrote (its ``checkpoint`` file)."""
    for name in sorted(os.listdir(train_dir)):
        pointer = os.path.join(train_dir, name, "checkpoint")
        if os.path.isfile(pointer):
            with open(pointer) as f:
                return int(f.read().strip().rsplit("-", 1)[1])
    raise RuntimeError(f"{train_dir} holds no checkpoint: the training run did not finish")


def summary(values: Sequence[float]) -> Dict[str, float]:
    return {"mean": statistics.mean(values), "min": min(values), "max": max(values)}


def table(results: Dict[Tuple[str, str], List[Tuple[float, float]]]) -> Tuple[str, bool]:
    """Markdown rows per method and precision; True when every bf16 mean lies in the fp32 seed range."""
    lines = ["| method | precision | Base mean (min-max) | New mean (min-max) | bf16 mean within fp32 range (bf16 - fp32) |",
             "|---|---|---|---|---|"]
    ok = True
    for trainer in TRAINERS:
        ranges = {}
        for prec in PRECISIONS:
            runs = results[(trainer, prec)]
            base, new = summary([b for b, _ in runs]), summary([n for _, n in runs])
            ranges[prec] = (base, new)
            verdict = ""
            if prec == "bf16":
                parts = []
                for label, ours, ref in (("Base", base, ranges["fp32"][0]), ("New", new, ranges["fp32"][1])):
                    inside = ref["min"] <= ours["mean"] <= ref["max"]
                    ok &= inside
                    parts.append(f"{label} {'yes' if inside else 'NO'} ({ours['mean'] - ref['mean']:+.1f})")
                verdict = ", ".join(parts)
            lines.append(f"| {trainer} | {prec} | {base['mean']:.1f} ({base['min']:.1f}-{base['max']:.1f}) | "
                         f"{new['mean']:.1f} ({new['min']:.1f}-{new['max']:.1f}) | {verdict} |")
    return "\n".join(lines), ok


def main(argv: List[str] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="toy_shapes", help="toy dataset config name")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--data", default=os.path.join(REPO, "data"), help="dataset root (drawn when missing)")
    p.add_argument("--out", default=os.path.join(REPO, "output", "toy_precision"), help="run folders")
    p.add_argument("--docs", default=DOCS, help="Markdown file whose block the table rewrites ('' : none)")
    args = p.parse_args(argv)
    subprocess.run([sys.executable, "-m", "clipfit.toyworld", "make-data", "--root", args.data,
                    "--datasets", args.dataset], cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": REPO})
    jobs = [(t, prec, s) for t in TRAINERS for prec in PRECISIONS for s in args.seeds]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = list(pool.map(lambda job: base_to_new(args, *job), jobs))
    results: Dict[Tuple[str, str], List[Tuple[float, float]]] = {}
    for (trainer, prec, _), accuracy in zip(jobs, done):
        results.setdefault((trainer, prec), []).append(accuracy)
    text, ok = table(results)
    print(text)
    print(f"bf16 within the fp32 seed range for every method, Base and New: {'yes' if ok else 'NO'}")
    if args.docs:
        command = "python bench/toy_precision.py " + " ".join(shlex.quote(a) for a in argv)
        write_block(args.docs, DOCS_BLOCK, "\n".join([
            f"Base-to-new on {args.dataset}, {args.shots} shots, seeds {' '.join(map(str, args.seeds))}, the shipped "
            "toy configs (fp32) and the same with the trainer's PREC key set to bf16 (accuracy %):", "", text, "",
            f"bf16 mean within the fp32 seed range for every method, Base and New: {'yes' if ok else 'NO'}.", "",
            measured_line(command.strip(), machine(torch.device("cpu"))),
        ]))
        print(f"Wrote the table to {args.docs}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
