"""Benchmark (not a test) and tables of docs/backbones.md: CLIPFit across backbones.

``--table support`` (seconds): which trainer runs on which open_clip family, from building
each trainer's method on a tiny random model of the family
(:func:`clipfit.testing.tiny_open_clip.support`; tests/test_open_clip.py trains every "works"
entry and checks every "refused" one through train.py).

``--table bench`` (minutes on a CPU): per backbone, random weights at the real shapes, OpenAI's
ViT-B/16 as the baseline: the parameters CLIPFit tunes (its default selection), the CPU time
of one CLIPFit training step (forward, backward, SGD; batch B at the model's input size, K
classes; median of N steps after one warm-up) as a ratio to OpenAI's ViT-B/16 steps run
alternately with them in the same run, and the size of a checkpoint (the learned tensors as the trainer saves them).
SigLIP's tokenizer needs the hub: a stand-in of the same vocabulary size and context length
gives the shapes (see :class:`clipfit.testing.tiny_open_clip.StandInTokenizer`).

Both write their table into docs/backbones.md between their markers, with date, machine and command.

    python bench/backbones.py --table support
    python bench/backbones.py --table bench [--batch-size 4] [--classes 10] [--steps 3]
"""
from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import statistics
import sys
import time
from typing import Callable, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from clipfit.methods.backbone import backbone  # noqa: E402
from clipfit.methods.clipfit import CLIPFitModel  # noqa: E402
from clipfit.testing.tiny_clip import build_vit_b16, class_names  # noqa: E402
from clipfit.testing.tiny_open_clip import METHODS, build_with_stand_in, register_tiny_configs, support  # noqa: E402
from clipfit.training import tuned_checkpoint  # noqa: E402

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "backbones.md")
FAMILIES = {  # tiny family -> what it stands for
    "vit": "open_clip ViT (LAION, DataComp, MetaCLIP, DFN)",
    "siglip": "SigLIP / SigLIP 2 (timm ViT trunk)",
    "eva02": "EVA02 (timm trunk)",
    "convnext": "ConvNeXt (timm trunk)",
}
BACKBONES = ["ViT-B/16", "open_clip:ViT-B-16", "open_clip:ViT-B-16-SigLIP", "open_clip:ViT-B-16-SigLIP2",
             "open_clip:EVA02-B-16", "open_clip:convnext_base"]


def write_section(marker: str, body: str) -> None:
    """Replace the text between ``<!-- marker -->`` and ``<!-- /marker -->`` in docs/backbones.md."""
    with open(DOC) as f:
        text = f.read()
    start, end = f"<!-- {marker} -->", f"<!-- /{marker} -->"
    if start not in text or end not in text:
        raise SystemExit(f"{DOC} lacks the markers {start} ... {end}")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(DOC, "w") as f:
        f.write(f"{head}{start}\n{body}\n{end}{tail}")


def stamp(command: str) -> str:
    day = datetime.date.today().isoformat()
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"_Written by `{command}` on {day}, {platform.machine()} with {os.cpu_count()} CPUs (load average at the "
            f"end {load}), torch {torch.__version__}._")


def support_table() -> str:
    """Markdown table family x trainer ("works" or "refused [n]") and the numbered reasons."""
    archs = register_tiny_configs()
    rows, reasons = [], []
    for family, label in FAMILIES.items():
        row = [label]
        for trainer, verdict in support(family).items():
            if verdict == "works":
                row.append("works")
                continue
            why = verdict[len("refused: "):].replace(archs[family], label.split(" (")[0])
            if why not in reasons:
                reasons.append(why)
            row.append(f"refused [{reasons.index(why) + 1}]")
        rows.append(row)
    notes = "\n".join(f"{i}. {why}" for i, why in enumerate(reasons, 1))
    return tabulate(rows, headers=["family"] + list(METHODS), tablefmt="github") + "\n\nRefused because:\n\n" + notes


def build(name: str) -> torch.nn.Module:
    if name == "ViT-B/16":
        return build_vit_b16("cpu").float()
    return build_with_stand_in(name.split(":", 1)[1])


def make_step(model: CLIPFitModel, batch: int, classes: int) -> Callable[[], float]:
    """One CLIPFit training step (forward, backward, SGD) of ``model``; returns its wall time."""
    size = backbone(model.clip).input_size
    images, labels = torch.randn(batch, 3, size, size), torch.arange(batch) % classes
    optim = torch.optim.SGD(model.learned_parameters().values(), lr=1e-3, momentum=0.9)

    def step() -> float:
        start = time.perf_counter()
        loss, _ = model.loss(images, labels)
        optim.zero_grad()
        loss.backward()
        optim.step()
        return time.perf_counter() - start
    return step


def checkpoint_bytes(model: CLIPFitModel) -> int:
    buffer = io.BytesIO()
    torch.save({"state_dict": tuned_checkpoint.learned_state(model.learned_parameters())}, buffer)
    return buffer.tell()


def bench_table(batch: int, classes: int, steps: int) -> str:
    """Each backbone's steps alternate with the baseline's, so a shared machine's load drifts into both."""
    names = class_names(classes)
    torch.manual_seed(0)
    baseline = make_step(CLIPFitModel(build(BACKBONES[0]), names), batch, classes)
    baseline()  # warm-up
    rows: List[list] = []
    for name in BACKBONES:
        torch.manual_seed(0)
        model = CLIPFitModel(build(name), names)
        step = make_step(model, batch, classes)
        step()  # warm-up
        own, base = [], []
        for _ in range(steps):
            base.append(baseline())
            own.append(step())
        seconds, ratio = statistics.median(own), statistics.median(own) / statistics.median(base)
        counts = model.selection.counts()
        rows.append([name, f"{backbone(model.clip).input_size} px", f"{counts['text']:,}", f"{counts['image']:,}",
                     f"{model.selection.total:,}", f"{seconds:.2f} s", f"{ratio:.2f}",
                     f"{checkpoint_bytes(model) / 1024:.0f} KiB"])
        print(rows[-1], flush=True)
        del model, step
    return tabulate(rows, headers=["backbone", "input", "tuned text", "tuned image", "tuned total",
                                   "CPU step", "step / OpenAI ViT-B/16", "checkpoint"], tablefmt="github")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", choices=("support", "bench"), required=True)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=3)
    args = p.parse_args(argv)
    command = "python bench/backbones.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.table == "support":
        body = support_table()
    else:
        body = bench_table(args.batch_size, args.classes, args.steps) + (
            f"\n\nBatch {args.batch_size}, {args.classes} classes, {torch.get_num_threads()} threads. CPU step: median of "
            f"{args.steps} steps after one warm-up; the ratio divides it by the median of OpenAI ViT-B/16 steps "
            "run alternately with them (a shared machine's load drifts into both).")
    print(body)
    write_section(args.table, body + "\n\n" + stamp(command))


if __name__ == "__main__":
    main()
