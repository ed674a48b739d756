"""CoOp's few-shot step and base/new class split.

Few-shot sampling is Dassl's ``generate_fewshot_dataset`` with the global ``random`` state
seeded by ``train.py``, so a seed selects the same images as CoOp with Dassl. Selections are
cached as JSON (never unpickled; CoOp's own ``.pkl`` caches are left untouched).
"""

from __future__ import annotations

import math
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from clipfit.data.splits import (DatasetLayoutError, Row, atomic_write_json, load_or_create, make_datums,
                                 read_json_file, to_rows)
from clipfit.engine import DatasetBase, Datum

FEWSHOT_FOLDER = "split_fewshot"
MAX_VAL_SHOTS = 4  # CoOp samples min(NUM_SHOTS, 4) validation images per class
SUBSAMPLE_CHOICES = ("all", "base", "new")


def fewshot_cache_path(fewshot_dir: str, num_shots: int, seed: int) -> str:
    """Where the few-shot selection for (shots, seed) is cached: next to CoOp's ``.pkl``."""
    return os.path.join(fewshot_dir, f"shot_{num_shots}-seed_{seed}.json")


def warn_short_classes(dataset: DatasetBase, split_name: str, items: List[Datum], num_shots: int) -> None:
    """Print a warning naming the classes with fewer than ``num_shots`` images."""
    short = [
        f"{group[0].classname} ({len(group)})"
        for group in dataset.split_dataset_by_label(items).values()
        if len(group) < num_shots
    ]
    if short:
        print(
            f"WARNING: {num_shots} shots requested from the {split_name} split, but {len(short)} class(es) "
            "have fewer images; as in Dassl, all of their images are used (none repeated): "
            + ", ".join(short)
        )


def stale_rows(rows: Iterable[Row], current: List[Datum], prefix: str) -> List[str]:
    """Image paths of cached ``rows`` that are not (path, label, class name) items of ``current``."""
    known = {(item.impath, item.label, item.classname) for item in current}
    paths = ((os.path.join(prefix, p), int(y), c) for p, y, c in rows)
    return [path for path, y, c in paths if (path, y, c) not in known]


def sample_fewshot(
    dataset: DatasetBase,
    train: List[Datum],
    val: Optional[List[Datum]],
    num_shots: int,
    seed: int,
) -> Tuple[List[Datum], Optional[List[Datum]]]:
    """CoOp's few-shot step: ``num_shots`` train and ``min(num_shots, 4)`` val images per class.

    Sampling is Dassl's ``generate_fewshot_dataset`` (train first, then val), cached as JSON
    in ``dataset.split_fewshot_dir`` per (shots, seed), with paths relative to
    ``dataset.image_dir``; a cached selection is reused as is. ``val`` is None for ImageNet
    (no val split). ``num_shots < 1`` keeps every image.
    """
    if num_shots < 1:
        return train, val
    path_prefix = dataset.image_dir
    cache = fewshot_cache_path(dataset.split_fewshot_dir, num_shots, seed)
    sources = {"train": (train, num_shots)}
    if val is not None:
        sources["val"] = (val, min(num_shots, MAX_VAL_SHOTS))

    def read() -> Dict[str, List[Datum]]:
        print(f"Loading the few-shot selection from {cache}")
        data = read_json_file(cache, "Few-shot cache")
        out = {}
        for name, (items, _) in sources.items():
            if name not in data:
                raise DatasetLayoutError(
                    f"The few-shot cache {cache} has no {name} list. Delete it and run again."
                )
            stale = stale_rows(data[name], items, path_prefix)
            if stale:
                raise DatasetLayoutError(
                    f"The few-shot cache {cache} does not match the current split: "
                    f"{len(stale)} of its {name} "
                    f"images are not in the split's {name} set (e.g. {stale[0]}). It was made from another "
                    f"split file. Delete it (or the whole {FEWSHOT_FOLDER}/ folder) and run again; the same "
                    "seed then samples again from the current split."
                )
            out[name] = make_datums(data[name], path_prefix, cache)
        return out

    def create() -> Dict[str, List[Datum]]:
        out = {}
        for name, (items, shots) in sources.items():
            warn_short_classes(dataset, name, items, shots)
            out[name] = dataset.generate_fewshot_dataset(items, num_shots=shots)
        record = {
            "num_shots": num_shots,
            "seed": seed,
            **{k: to_rows(v, path_prefix) for k, v in out.items()},
        }
        try:
            atomic_write_json(record, cache)
            print(f"Saved the few-shot selection to {cache}")
        except OSError as e:
            print(
                f"WARNING: could not save the few-shot selection to {cache} ({e}); "
                "continuing without a cache."
            )
        return out

    picked = load_or_create(cache, read, create, lock_dir=dataset.dataset_dir)
    return picked["train"], picked.get("val")


def subsample_classes(*datasets: List[Datum], subsample: str = "all") -> Sequence[List[Datum]]:
    """CoOp's base/new split: labels sorted, first ceil(n/2) are base, the rest new, relabelled from 0.

    The label set comes from the first dataset (the training set, after few-shot sampling).
    """
    if subsample not in SUBSAMPLE_CHOICES:
        raise ValueError(
            f"DATASET.SUBSAMPLE_CLASSES must be one of {', '.join(SUBSAMPLE_CHOICES)}; got {subsample!r}"
        )
    if subsample == "all":
        return datasets
    labels = sorted({item.label for item in datasets[0]})
    m = math.ceil(len(labels) / 2)
    selected = labels[:m] if subsample == "base" else labels[m:]
    relabel = {y: y_new for y_new, y in enumerate(selected)}
    print(f"Keeping the {subsample} classes: {len(selected)} of {len(labels)}")
    return [
        [
            Datum(impath=item.impath, label=relabel[item.label], classname=item.classname)
            for item in data
            if item.label in relabel
        ]
        for data in datasets
    ]
