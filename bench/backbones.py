"""Benchmark (not a test) and tables of docs/backbones.md: CLIPFit across backbones.

``--table support`` (seconds): which trainer runs on which open_clip family, from building
each trainer's method on a tiny random model of the family
(:func:`clipfit.testing.tiny_open_clip.support`; tests/test_open_clip.py trains every "works"
entry and checks every "refused" one through train.py).

``--table bench`` (minutes on a CPU): per backbone, random weights at the real shapes, OpenAI's
ViT-B/16 as the baseline: the parameters CLIPFit tunes (its default selection), the CPU time
of one CLIPFit training step (forward, backward, SGD; batch B at the model's input size, K
classes; median of N steps after one warm-up) as a ratio to OpenAI's ViT-B/16 measured in the
same run, and the size of a checkpoint (the learned tensors as the trainer saves them).
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
from typing import List

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
    return f"_Written by `{command}` on {day}, {platform.machine()} with {os.cpu_count()} CPUs, torch {torch.__version__}._"


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


def step_seconds(model: CLIPFitModel, images: torch.Tensor, labels: torch.Tensor, steps: int) -> float:
    """Median wall time of one CLIPFit training step (after one warm-up step)."""
    optim = torch.optim.SGD(model.learned_parameters().values(), lr=1e-3, momentum=0.9)
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        loss, _ = model.loss(images, labels)
        optim.zero_grad()
        loss.backward()
        optim.step()
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def checkpoint_bytes(model: CLIPFitModel) -> int:
    buffer = io.BytesIO()
    torch.save({"state_dict": tuned_checkpoint.learned_state(model.learned_parameters())}, buffer)
    return buffer.tell()


def bench_table(batch: int, classes: int, steps: int) -> str:
    rows: List[list] = []
    base = None
    names = class_names(classes)
    for name in BACKBONES:
        torch.manual_seed(0)
        clip_model = build(name)
        size = backbone(clip_model).input_size
        model = CLIPFitModel(clip_model, names)
        images = torch.randn(batch, 3, size, size)
        labels = torch.arange(batch) % classes
        seconds = step_seconds(model, images, labels, steps)
        base = base or seconds
        counts = model.selection.counts()
        rows.append([name, f"{size} px", f"{counts['text']:,}", f"{counts['image']:,}", f"{model.selection.total:,}",
                     f"{seconds:.2f} s", f"{seconds / base:.2f}", f"{checkpoint_bytes(model) / 1024:.0f} KiB"])
        print(rows[-1], flush=True)
        del model, clip_model
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
            f"\n\nBatch {args.batch_size}, {args.classes} classes, median of {args.steps} steps after one warm-up, "
            f"{torch.get_num_threads()} threads.")
    print(body)
    write_section(args.table, body + "\n\n" + stamp(command))


if __name__ == "__main__":
    main()
