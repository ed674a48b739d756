"""Analysis (not a test): does bf16 move toy-world numbers beyond seed noise?

Base-to-new on a toy dataset for CLIPFit, CoOp and KgCoOp with their shipped toy configs, seeds
1 2 3, once in fp32 (the configs' precision) and once with the trainer's PREC key set to bf16 on
the command line: train on the base classes (``train.py``, which tests on Base), then
``--eval-only`` on the new classes. Per method and precision it prints the mean, min and max
over the seeds of Base and New, and whether the bf16 mean lies within the fp32 runs' seed range.

As a control it also trains each method in fp32 with its ``OPTIM.LR`` moved by bf16's unit
roundoff, ``x (1 + 2^-8)`` and ``x (1 - 2^-8)``: a perturbation of bf16's relative size that
leaves the arithmetic fp32. Where the control's mean also leaves the fp32 range, the method's
result is that sensitive to any change of this size, and a bf16 mean outside the range says
nothing about bf16 in particular. ``--no-controls`` skips them.

The table is written into the ``toy-precision`` block of ``docs/precision.md`` (``--block`` names
another, e.g. the six-seed one) with its date, machine and command.

    python bench/toy_precision.py [--dataset toy_shapes] [--seeds 1 2 3] [--jobs 2]

Datasets are drawn into ``--data`` when missing; runs go under ``--out`` (rerunning skips
finished runs whose settings, data and weights are the same; train.py refuses a folder that
holds other ones).
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import torch  # noqa: E402

from clipfit.docs_blocks import measured_line, write_block  # noqa: E402
from clipfit.experiments.results import read_run  # noqa: E402
from clipfit.training.config import get_cfg, merge_from_file  # noqa: E402
from speed_modes import machine  # noqa: E402

TRAINERS = {  # trainer -> (toy config, precision key)
    "CLIPFit": ("configs/trainers/CLIPFit/toy.yaml", "TRAINER.CLIPFIT.PREC"),
    "CoOp": ("configs/trainers/CoOp/toy.yaml", "TRAINER.COOP.PREC"),
    "KgCoOp": ("configs/trainers/KgCoOp/toy.yaml", "TRAINER.COOP.PREC"),
}
BF16_ROUNDOFF = 2.0 ** -8  # bf16's unit roundoff: 8 bits of mantissa


@dataclass(frozen=True)
class Variant:
    """One way of training a method: its folder name, table label and lr factor."""
    name: str
    label: str
    prec: str = "fp32"
    lr_factor: float = 1.0


FP32 = Variant("fp32", "fp32")
BF16 = Variant("bf16", "bf16", prec="bf16")
CONTROLS = (Variant("fp32_lr_up", "fp32, lr x (1 + 2^-8)", lr_factor=1 + BF16_ROUNDOFF),
            Variant("fp32_lr_down", "fp32, lr x (1 - 2^-8)", lr_factor=1 - BF16_ROUNDOFF))
DOCS = os.path.join(REPO, "docs", "precision.md")
DOCS_BLOCK = "toy-precision"


def _run(argv: List[str], out: str) -> float:
    """Run ``train.py argv`` into ``out``; its accuracy, read from the folder (full precision)
    whether the run trained now or was a finished run with the same settings that train.py's run
    model skipped (it refuses a folder holding other settings)."""
    env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONPATH": REPO}  # one thread per run unless set
    proc = subprocess.run([sys.executable, os.path.join(REPO, "train.py"), "--announce", "toy_precision run", *argv],
                          cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"train.py {' '.join(argv)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    run = read_run(out)
    if not run.finished:
        raise RuntimeError(f"train.py {' '.join(argv)} left no finished run in {out}: {run.reason}\n{proc.stdout[-2000:]}")
    return run.accuracy


def _config_lr(config: str) -> float:
    """The ``OPTIM.LR`` a config file gives, read by the project's config loader."""
    cfg = get_cfg()
    merge_from_file(cfg, os.path.join(REPO, config))
    return float(cfg.OPTIM.LR)


def base_to_new(args: argparse.Namespace, trainer: str, variant: Variant, seed: int) -> Tuple[float, float]:
    """(Base, New) accuracy of one seed: train on base (tested on base), evaluate on new."""
    config, key = TRAINERS[trainer]
    common = ["--root", args.data, "--trainer", trainer, "--seed", str(seed),
              "--dataset-config-file", f"configs/datasets/{args.dataset}.yaml", "--config-file", config]
    opts = ["DATASET.NUM_SHOTS", str(args.shots), key, variant.prec]
    if variant.lr_factor != 1.0:
        opts += ["OPTIM.LR", repr(_config_lr(config) * variant.lr_factor)]
    train_dir = os.path.join(args.out, args.dataset, trainer, variant.name, f"seed{seed}")
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


def _within(ours: Dict[str, float], ref: Dict[str, float]) -> Tuple[bool, str]:
    """Whether ``ours``' mean lies in ``ref``'s min-max range, and 'yes (+d)' / 'NO (+d)'."""
    inside = ref["min"] <= ours["mean"] <= ref["max"]
    return inside, f"{'yes' if inside else 'NO'} ({ours['mean'] - ref['mean']:+.1f})"


def table(results: Dict[Tuple[str, str], List[Tuple[float, float]]],
          variants: Sequence[Variant]) -> Tuple[str, bool, List[str]]:
    """Markdown rows per method and variant; True when every bf16 mean lies in the fp32 seed range;
    the cells where bf16's mean is outside and a control's mean is outside too."""
    lines = ["| method | run | Base mean (min-max) | New mean (min-max) | mean within fp32 range (difference) |",
             "|---|---|---|---|---|"]
    ok, shared = True, []
    for trainer in TRAINERS:
        fp32 = [summary([run[i] for run in results[(trainer, FP32.name)]]) for i in (0, 1)]
        outside: Dict[str, List[str]] = {"Base": [], "New": []}
        for variant in variants:
            cells = [summary([run[i] for run in results[(trainer, variant.name)]]) for i in (0, 1)]
            verdict = []
            if variant != FP32:
                for label, ours, ref in zip(("Base", "New"), cells, fp32):
                    inside, text = _within(ours, ref)
                    verdict.append(f"{label} {text}")
                    if not inside:
                        outside[label].append(variant.name)
                    if variant == BF16:
                        ok &= inside
            base, new = cells
            lines.append(f"| {trainer} | {variant.label} | {base['mean']:.1f} ({base['min']:.1f}-{base['max']:.1f}) | "
                         f"{new['mean']:.1f} ({new['min']:.1f}-{new['max']:.1f}) | {', '.join(verdict)} |")
        shared += [f"{trainer} {label}" for label, names in outside.items()
                   if BF16.name in names and len(names) > 1]
    return "\n".join(lines), ok, shared


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
    p.add_argument("--block", default=DOCS_BLOCK, help="the block of --docs that the table replaces")
    p.add_argument("--no-controls", dest="controls", action="store_false",
                   help="skip the fp32 runs with the lr moved by bf16's roundoff")
    args = p.parse_args(argv)
    subprocess.run([sys.executable, "-m", "clipfit.toyworld", "make-data", "--root", args.data,
                    "--datasets", args.dataset], cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": REPO})
    variants = (FP32, BF16, *(CONTROLS if args.controls else ()))
    jobs = [(t, v, s) for t in TRAINERS for v in variants for s in args.seeds]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = list(pool.map(lambda job: base_to_new(args, *job), jobs))
    results: Dict[Tuple[str, str], List[Tuple[float, float]]] = {}
    for (trainer, variant, _), accuracy in zip(jobs, done):
        results.setdefault((trainer, variant.name), []).append(accuracy)
    text, ok, shared = table(results, variants)
    verdict = f"bf16 mean within the fp32 seed range for every method, Base and New: {'yes' if ok else 'NO'}."
    if args.controls and not ok:
        verdict += (" Cells where an fp32 run with the lr moved by bf16's roundoff leaves the range too: "
                    f"{', '.join(shared) or 'none'}.")
    print(text)
    print(verdict)
    if args.docs:
        command = "python bench/toy_precision.py " + " ".join(shlex.quote(a) for a in argv)
        write_block(args.docs, args.block, "\n".join([
            f"Base-to-new on {args.dataset}, {args.shots} shots, seeds {' '.join(map(str, args.seeds))}, the shipped "
            "toy configs (fp32), the same with the trainer's PREC key set to bf16"
            + (", and the fp32 controls with `OPTIM.LR` times 1 +- 2^-8" if args.controls else "")
            + " (accuracy %):", "", text, "", verdict, "",
            measured_line(command.strip(), machine(torch.device("cpu"))),
        ]))
        print(f"Wrote the table to {args.docs}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
