"""Toy downstream datasets in CoOp's layout, drawn with a domain shift from pretraining.

``<root>/<folder>/images/<class>/<class>_NNNN.png`` plus ``split_zhou_<Name>.json``
(train, val, test per class) and ``toyworld.json`` (what was drawn, with which seed).
The loaders in ``datasets/toy.py`` read them like any CoOp dataset.

- ``toy_shapes`` (``ToyShapes``): 32 colour-shape classes, the 16 pairs pretraining never
  saw plus 16 seen pairs picked by the seed, under a warm colour cast (as if lit by another
  lamp), with grey clutter and stronger noise.
- ``toy_cold`` (``ToyCold``): 40 colour-shape classes (the 16 never seen plus 24 seen)
  under a cold colour cast, with clutter and noise.

Class names sort into base (first half) and new classes as in CoOp.
"""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Sequence, Tuple

from PIL import Image

from clipfit.fileio import write_json

from .world import PATTERNS, SIZES, UNSEEN_PAIRS, Style, Thing, draw, seen_pairs
from clipfit.errors import AlreadyExistsError, ConfigValueError

PER_CLASS = {"train": 20, "val": 8, "test": 30}
META_FILE = "toyworld.json"
FORMAT_VERSION = 1


@dataclass
class ToyDataset:
    """One toy dataset: its folder, CoOp-style registry name, domain and classes."""

    folder: str
    name: str
    style: Style
    classes: Callable[[random.Random], Dict[str, Callable[[random.Random], Thing]]]
    summary: str

    @property
    def split_file(self) -> str:
        return f"split_zhou_{self.name}.json"


def _colour_shape_classes(n_seen: int) -> Callable[[random.Random], Dict[str, Callable[[random.Random], Thing]]]:
    """Classes of the never-seen pairs plus ``n_seen`` seen pairs picked by the generator."""

    def classes(rng: random.Random) -> Dict[str, Callable[[random.Random], Thing]]:
        pairs = list(UNSEEN_PAIRS) + rng.sample(seen_pairs(), n_seen)
        return {
            f"{c}_{s}": (lambda r, c=c, s=s: Thing(c, s, r.choice(SIZES), r.choice(PATTERNS))) for c, s in pairs
        }

    return classes


DATASETS: Dict[str, ToyDataset] = {
    d.folder: d
    for d in (
        ToyDataset(
            "toy_shapes", "ToyShapes",
            Style("dark", noise=10.0, clutter=1, gain=(1.0, 0.78, 0.55), offset=(35, 18, 0)),
            _colour_shape_classes(16), "32 colour-shape classes under a warm light, 16 never seen in pretraining",
        ),
        ToyDataset(
            "toy_cold", "ToyCold",
            Style("dark", noise=10.0, clutter=1, gain=(0.6, 0.8, 1.0), offset=(0, 20, 45)),
            _colour_shape_classes(24), "40 colour-shape classes under a cold light, 16 never seen in pretraining",
        ),
    )
}


def _metadata(dataset: ToyDataset, seed: int, per_class: Dict[str, int], classes: List[str]) -> dict:
    return {"format": FORMAT_VERSION, "dataset": dataset.name, "seed": seed, "per_class": per_class,
            "style": asdict(dataset.style), "classes": classes}


def _spec(folder: str) -> ToyDataset:
    if folder not in DATASETS:
        raise ConfigValueError(f"unknown toy dataset {folder!r}; known: {', '.join(DATASETS)}")
    return DATASETS[folder]


def class_makers(folder: str, seed: int) -> Dict[str, Callable[[random.Random], Thing]]:
    """The classes of dataset ``folder`` drawn with ``seed`` (sorted by name, as labels are), and
    how to draw an object of each."""
    return dict(sorted(_spec(folder).classes(random.Random(f"{folder}-{seed}")).items()))


def sample(folder: str, per_class: int, image_seed: int, seed: int = 1, classes: Sequence[str] = ()
           ) -> List[Tuple[Image.Image, int, str]]:
    """``per_class`` fresh ``(image, label, class name)`` per class of ``classes`` (default: all
    classes of the dataset drawn with ``seed``), in memory; labels follow ``classes``."""
    makers = class_makers(folder, seed)
    names = list(classes) or list(makers)
    unknown = [n for n in names if n not in makers]
    if unknown:
        raise ConfigValueError(f"{folder} has no class {', '.join(unknown)}; its classes: {', '.join(makers)}")
    rng = random.Random(f"{folder}-{seed}-images-{image_seed}")
    style = _spec(folder).style
    return [(draw(makers[n](rng), style, rng=rng), label, n) for label, n in enumerate(names) for _ in range(per_class)]


def make_dataset(folder: str, root: str, seed: int = 1, per_class: Dict[str, int] = PER_CLASS) -> str:
    """Draw dataset ``folder`` (a key of :data:`DATASETS`) under ``root``; returns its path.

    ``per_class``: images per class of each split. A folder already made with the same seed
    and counts is kept as it is; one made otherwise is an error.
    """
    dataset = _spec(folder)
    classes = class_makers(folder, seed)
    rng = random.Random(f"{folder}-{seed}-images")
    meta = _metadata(dataset, seed, per_class, list(classes))
    target = os.path.join(os.path.abspath(os.path.expanduser(root)), folder)
    meta_path = os.path.join(target, META_FILE)
    if os.path.exists(target):
        try:
            with open(meta_path) as f:
                same = json.load(f) == json.loads(json.dumps(meta))
        except (OSError, ValueError):
            same = False
        if same:
            print(f"{target} already holds {dataset.name} drawn with seed {seed}: kept")
            return target
        raise AlreadyExistsError(
            f"{target} exists but was not drawn by this version with seed {seed} (see {meta_path}). "
            "Runs trained or tested on it measured other images: delete it and those runs, or "
            "choose another --root."
        )
    if set(per_class) != set(PER_CLASS) or min(per_class.values()) < 1:
        raise ConfigValueError(f"per_class must give at least one image for each of {', '.join(PER_CLASS)}: {per_class}")
    tmp = f"{target}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        split: Dict[str, list] = {part: [] for part in PER_CLASS}
        for label, (classname, make_thing) in enumerate(classes.items()):
            os.makedirs(os.path.join(tmp, "images", classname))
            index = 0
            for part, count in per_class.items():
                for _ in range(count):
                    relpath = f"{classname}/{classname}_{index:04d}.png"
                    draw(make_thing(rng), dataset.style, rng=rng).save(os.path.join(tmp, "images", relpath))
                    split[part].append([relpath, label, classname])
                    index += 1
        write_json(os.path.join(tmp, dataset.split_file), split, indent=4, separators=(",", ": "))
        write_json(meta_path.replace(target, tmp), meta, indent=1)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"Wrote {dataset.name} to {target}: {len(classes)} classes, "
          + ", ".join(f"{n} {part}" for part, n in per_class.items()) + " images per class")
    return target
