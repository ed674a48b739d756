"""Benchmark (not a test): building the ImageNet dataset without and with the listing cache.

Fabricates ImageNet's layout with 1,000 classes (``--per-class`` training images each,
half as many validation images) under ``--root`` (a temporary folder by default), then
builds the 16-shot dataset twice in fresh processes: the first run lists every folder and
checks every file and writes ``clipfit_listing.json``; the second reads it.

    python bench/imagenet_listing.py [--per-class 20] [--root DIR]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = """
import sys, time
sys.path.insert(0, {repo!r})
import datasets
from clipfit.training.config import get_cfg
from clipfit.engine import build_dataset, set_random_seed
cfg = get_cfg()
cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.DATASET.NUM_SHOTS, cfg.SEED = {root!r}, "ImageNet", 16, 1
set_random_seed(1)
start = time.perf_counter()
data = build_dataset(cfg)
print(time.perf_counter() - start, len(data.train_x), len(data.test))
"""


def _timed_build(root: str) -> str:
    proc = subprocess.run([sys.executable, "-c", BUILD.format(repo=REPO, root=root)],
                          capture_output=True, text=True, check=True, cwd=REPO)
    return proc.stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--root", default="")
    args = parser.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="imagenet-bench-")
    sys.path.insert(0, REPO)
    from clipfit.testing.fake_datasets import make_dataset

    start = time.perf_counter()
    make_dataset("imagenet", root, n_classes=1000, per_class=args.per_class, image_size=4)
    files = sum(len(f) for _, _, f in os.walk(os.path.join(root, "imagenet", "images")))
    print(f"fabricated 1,000 classes, {files} images in {time.perf_counter() - start:.1f} s under {root}")
    for run in ("first (lists and checks, writes the cache)", "second (reads the cache)"):
        seconds, n_train, n_test = _timed_build(root).split()
        print(f"{run}: {float(seconds):.2f} s  ({n_train} training items after 16-shot sampling, {n_test} test)")


if __name__ == "__main__":
    main()
