"""Benchmark (not a test), prepared for a GPU: ms per training and per test image of CLIPFit and
CoOp in each precision and compiled mode, against the paper's Table 7 (A100).

One command on a CUDA machine (ViT-B/16 with random weights, each method from its shipped
base-to-new config, K classes, the paper's training batch 32, test batches of 100):

    python bench/gpu_speed.py

Modes: ``fp32``, ``fp16`` (CLIP in half precision, as the authors train), ``amp``, ``bf16``, and
``<mode>+compile`` (``TRAIN.COMPILE``'s ``torch.compile`` of the encoders). Each mode is set up
and stepped as the trainer does it (:mod:`speed_modes`). Per mode: the first training step
(compilation included), ms per training image (median of ``--iters`` steps), ms per test image
(one ``test()`` pass: class features once, then every batch) and peak GPU memory.

``--tiny`` swaps in the tiny random CLIP (32 px) with small batches, so the whole path can be
checked on a CPU (``python bench/gpu_speed.py --tiny --device cpu``): the numbers then say
nothing about a GPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from clipfit.docs_blocks import measured_line, write_block  # noqa: E402
from clipfit.testing.tiny_clip import build_tiny_clip, build_vit_b16, class_names  # noqa: E402
from clipfit.training.config import get_cfg, merge_from_file  # noqa: E402
from methods_table import METHODS  # noqa: E402
from speed_modes import Mode, Runner, check_device, machine, median, peak_bytes  # noqa: E402

PAPER_TABLE7_MS = {"CLIPFit": 0.96, "CoOp": 0.44}  # training time per image, A100 (paper Table 7)
DEFAULT_MODES = ["fp32", "fp16", "amp", "bf16", "fp16+compile", "bf16+compile"]
TINY = {"batch_size": 4, "test_batch_size": 4, "test_images": 8, "iters": 2}


def measure(method: str, mode: Mode, args: argparse.Namespace) -> Dict[str, float]:
    """One method in one mode: first step, ms per training image, ms per test image, peak memory."""
    device = torch.device(args.device)
    config, build = METHODS[method]
    cfg = get_cfg()
    merge_from_file(cfg, f"configs/trainers/{config}")
    cfg.DATASET.NAME = "DescribableTextures"
    names = class_names(args.classes)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip = build_tiny_clip() if args.tiny else build_vit_b16("cpu")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runner = Runner(lambda c: build(c, names, cfg, 1), clip.float(), mode, device, backend=args.compile_backend)
    res = clip.visual.input_resolution
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch_size, 3, res, res, generator=gen).to(device)
    labels = torch.randint(0, args.classes, (args.batch_size,), generator=gen).to(device)
    first, steps = runner.time_training(images, labels, args.iters)
    test_batches = [torch.randn(min(args.test_batch_size, args.test_images - s), 3, res, res, generator=gen).to(device)
                    for s in range(0, args.test_images, args.test_batch_size)]
    test_s = runner.time_test(test_batches)
    return {
        "first_s": first,
        "train_ms": 1000 * median(steps) / args.batch_size,
        "test_ms": 1000 * test_s / args.test_images,
        "peak_mb": peak_bytes(device) / 2**20,
        "fell_back": bool(runner.compiler.failure),
    }


def rows(method: str, results: Dict[str, Dict[str, float]]) -> List[List[str]]:
    paper = PAPER_TABLE7_MS.get(method)
    out = []
    for mode, r in results.items():
        vs = f"{r['train_ms'] / paper:.2f}x" if paper else ""
        note = " (compile failed: eager)" if r["fell_back"] else ""
        out.append([method, mode + note, f"{r['train_ms']:.3f}", f"{paper:.2f}" if paper else "", vs,
                    f"{r['test_ms']:.3f}", f"{r['first_s']:.1f}", f"{r['peak_mb']:.0f}"])
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--methods", nargs="+", default=list(PAPER_TABLE7_MS), choices=list(METHODS))
    p.add_argument("--modes", nargs="+", default=None, help=f"default: {' '.join(DEFAULT_MODES)} (CPU: fp32 bf16)")
    p.add_argument("--classes", type=int, default=50, help="classes K (the paper averages 11 datasets)")
    p.add_argument("--batch-size", type=int, default=32, help="training batch (paper: 32)")
    p.add_argument("--test-batch-size", type=int, default=100)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--iters", type=int, default=10, help="timed training steps after the first (median)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the +compile modes")
    p.add_argument("--tiny", action="store_true", help="tiny CLIP and small batches: a dry run of the path")
    p.add_argument("--page", help="Markdown page whose '<!-- begin: gpu-speed -->' block gets the table "
                                  "(refused with --tiny or without a GPU)")
    return p


def main(argv: List[str] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    device = torch.device(args.device)
    if args.page and (args.tiny or device.type != "cuda"):
        raise SystemExit("--page writes GPU figures into the docs: run it on a CUDA device without --tiny")
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, min(getattr(args, key), value))
    names = args.modes or (DEFAULT_MODES if device.type == "cuda" else ["fp32", "bf16"])
    modes = [Mode.parse(m) for m in names]
    check_device(modes, device)
    if device.type != "cuda" and not args.tiny:
        print("WARNING: no GPU: these are CPU figures, not comparable with the paper's A100 column")
    print(f"{'tiny CLIP (dry run)' if args.tiny else 'ViT-B/16, random weights'}, K={args.classes}, train batch "
          f"{args.batch_size} (median of {args.iters} steps after the first), test {args.test_images} images in "
          f"batches of {args.test_batch_size}; {machine(device)}", flush=True)
    table: List[List[str]] = []
    for method in args.methods:
        results = {}
        for mode in modes:
            results[str(mode)] = measure(method, mode, args)
            print(f"  measured {method} {mode}", flush=True)
        table += rows(method, results)
    text = tabulate(table, tablefmt="github", headers=[
        "method", "mode", "train ms/img", "paper ms/img (A100)", "vs paper", "test ms/img", "first step s",
        "peak MiB"])
    note = "Paper: Table 7, training time per image on an A100 (mode not stated; the authors train in fp16)."
    print(f"{text}\n{note}")
    if args.page:
        command = "python bench/gpu_speed.py " + " ".join(argv)
        write_block(args.page, "gpu-speed", f"{text}\n\n{note}\n\n{measured_line(command.strip(), machine(device))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
