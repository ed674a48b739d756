"""Helpers shared by the test modules: building a loader, listing its items, replaying few-shot,
and the train.py command line of the short trainer runs."""
from __future__ import annotations

import random
from typing import Dict, List, Sequence, Tuple

from clipfit.training.config import get_cfg
from clipfit.engine import build_dataset, set_random_seed
from clipfit.testing.fake_datasets import registry_name


def build_from_cfg(cfg, shots: int = 0, seed: int = 1, subsample: str = "all"):
    """Set the few-shot, base/new and seed keys of ``cfg``, seed the generators, and build its dataset."""
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    set_random_seed(seed)
    return build_dataset(cfg)


def build(root, name: str, shots: int = 0, seed: int = 1, subsample: str = "all"):
    """The loader of dataset ``name`` (a config name such as ``"dtd"``) on the data under ``root``."""
    cfg = get_cfg()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = registry_name(name)
    return build_from_cfg(cfg, shots, seed, subsample)


def rows(items) -> List[Tuple[str, int, str]]:
    """``(image path, label, class name)`` of each item."""
    return [(x.impath, x.label, x.classname) for x in items]


def replay_fewshot(items: Sequence[tuple], shots: int) -> List[tuple]:
    """Dassl's sampling replayed with ``random`` on rows: per label (first appearance), sample or keep all."""
    groups: Dict[int, List[tuple]] = {}
    for item in items:
        groups.setdefault(item[1], []).append(item)
    return [x for g in groups.values() for x in (random.sample(g, shots) if len(g) >= shots else g)]


def tiny_train_argv(assets: Dict[str, str], trainer: str, config: str, out, *opts: str,
                    flags: Sequence[str] = (), epochs: int = 2) -> List[str]:
    """``train.py`` arguments for a short run of ``trainer`` on the fabricated DTD and tiny CLIP in
    ``assets`` (``root``, ``clip``): 32 px, 4 shots, batch 4, no workers; ``opts`` come last."""
    return [
        *flags, "--root", assets["root"], "--trainer", trainer, "--seed", "1", "--output-dir", str(out),
        "--dataset-config-file", "configs/datasets/dtd.yaml", "--config-file", config,
        "MODEL.BACKBONE.PATH", assets["clip"], "INPUT.SIZE", "(32, 32)", "OPTIM.MAX_EPOCH", str(epochs),
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATASET.NUM_SHOTS", "4",
        "TRAIN.PRINT_FREQ", "100", *opts,
    ]
