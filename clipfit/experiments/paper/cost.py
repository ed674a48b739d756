"""An estimate of the GPU time of the paper's trainings, from the paper's Table 7.

Table 7 gives each method's training time per image (ViT-B/16, the authors' GPU). A training
run sees shots x classes (base classes for base-to-new) x ``OPTIM.MAX_EPOCH`` images (its
protocol config). Evaluation, data loading and the methods Table 7 does not time are left out:
it is an estimate of the order of magnitude, not a measurement.
"""
from __future__ import annotations

import math
import os.path as osp
from collections import defaultdict
from typing import Dict, List, Sequence, Tuple

import yaml

from clipfit import REPO_ROOT
from clipfit.experiments.paper.plan import Task
from clipfit.experiments.paper.status import source_of, table_label

# Table 7 of the paper: training time per image in ms (MaPLe's is printed "2.1ds": read as ms)
MS_PER_IMAGE: Dict[str, float] = {"CoOp": 0.44, "CoCoOp": 25.59, "KgCoOp": 0.44, "MaPLe": 2.1, "CLIPFit": 0.96}
# Classes of each dataset (CoOp's splits)
CLASSES: Dict[str, int] = {
    "imagenet": 1000, "caltech101": 100, "oxford_pets": 37, "stanford_cars": 196, "oxford_flowers": 102,
    "food101": 101, "fgvc_aircraft": 100, "sun397": 397, "dtd": 47, "eurosat": 10, "ucf101": 101,
}


def estimate(tasks: Sequence[Task], settings: Sequence[str]) -> List[Tuple[str, str, int, float, float]]:
    """Per (table, trainer): training runs, images seen (millions) and GPU-hours (nan where
    Table 7 has no time for the trainer or the dataset is not one of the paper's)."""
    rows: Dict[Tuple[str, str], List[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for task in tasks:
        for spec in task.specs:
            if spec.evaluates:
                continue
            with open(osp.join(REPO_ROOT, spec.config_file)) as f:
                epochs = int(yaml.safe_load(f)["OPTIM"]["MAX_EPOCH"])
            classes = CLASSES.get(spec.dataset, math.nan)
            if spec.subsample == "base":
                classes = math.ceil(classes / 2) if classes == classes else classes
            images = spec.shots * classes * epochs
            hours = images * MS_PER_IMAGE.get(spec.trainer, math.nan) / 1000 / 3600
            settings_of = source_of(spec, settings) if spec.part == "train" and spec.setting == "xd" else [spec.setting]
            for setting in settings_of[:1]:  # a shared source counts once, under its first table
                label = table_label(setting, spec.shots).split(" (")[0]
                if setting in ("xd", "dg"):
                    label += " (ImageNet source)"
                row = rows[(label, spec.trainer)]
                row[0] += 1
                row[1] += images / 1e6
                row[2] += hours
    return [(label, trainer, int(n), images, hours) for (label, trainer), (n, images, hours) in rows.items()]


def render(rows: Sequence[Tuple[str, str, int, float, float]]) -> str:
    """The estimate as a markdown table with a total per table."""
    from tabulate import tabulate

    lines = [(label, trainer, n, f"{images:.2f}", "-" if hours != hours else f"{hours:.1f}")
             for label, trainer, n, images, hours in rows]
    totals: Dict[str, float] = defaultdict(float)
    for label, _, _, _, hours in rows:
        totals[label] += hours if hours == hours else 0.0
    lines += [(label, "all timed", "", "", f"{total:.1f}") for label, total in totals.items()]
    return tabulate(lines, headers=["table", "trainer", "trainings", "images (M)", "GPU-hours (est.)"],
                    tablefmt="github", disable_numparse=True) + "\n"
