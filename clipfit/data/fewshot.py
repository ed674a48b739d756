"""CoOp's few-shot step and base/new class split.

Few-shot sampling is Dassl's ``generate_fewshot_dataset`` with the global ``random`` state
seeded by ``train.py``, so a seed selects the same images as CoOp with Dassl. Selections are
cached as JSON (never unpickled; CoOp's own ``.pkl`` caches are left untouched).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

from clipfit.data.splits import (DOCS, DatasetLayoutError, atomic_write_json, checked_rows, folder_lock, make_datums,
                                 to_rows)
from clipfit.fileio import FileContentError, read_json
from clipfit.engine import DatasetBase, Datum
from clipfit.errors import ConfigValueError

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


def fewshot_sources(
    train: List[Datum], val: Optional[List[Datum]], num_shots: int
) -> Dict[str, Tuple[List[Datum], int]]:
    """The lists a few-shot selection samples from, with their shots per class (val: at most 4)."""
    sources = {"train": (train, num_shots)}
    if val is not None:
        sources["val"] = (val, min(num_shots, MAX_VAL_SHOTS))
    return sources


def cache_problem(data: dict, num_shots: int, seed: int, sources: Dict[str, Tuple[List[Datum], int]],
                  prefix: str, source: str) -> str:
    """Why a few-shot cache cannot be used with the current split ("" when it can).

    It must say the shots and seed its name says, and each list must hold rows of the split's
    list (paths inside the dataset folder), no duplicates, every class of the split, and per
    class as many images as the shots ask or, for a smaller class, all it has.
    """
    if data.get("num_shots") != num_shots or data.get("seed") != seed:
        return (f"it says num_shots {data.get('num_shots')}, seed {data.get('seed')}, but its name is for "
                f"{num_shots} shots, seed {seed}")
    for name, (items, shots) in sources.items():
        if name not in data:
            return f"it has no {name} list"
        try:
            rows = checked_rows(data[name], source, name, "it is made again")
        except FileContentError as e:
            return str(e).split(" Fix:")[0]
        known = {(item.impath, item.label, item.classname) for item in items}
        keys = [(os.path.join(prefix, p), y, c) for p, y, c in rows]
        stale = [k[0] for k in keys if k not in known]
        if stale:
            return (f"{len(stale)} of its {name} images are not in the split's {name} set (e.g. {stale[0]}): "
                    "it was made from another split file")
        if len(set(keys)) != len(keys):
            return f"its {name} list holds {len(keys) - len(set(keys))} duplicated row(s)"
        have, available = Counter(y for _, y, _ in keys), Counter(item.label for item in items)
        absent = sorted(set(available) - set(have))
        if absent:
            return f"its {name} list lacks {len(absent)} of the split's {len(available)} classes (labels {absent[:5]})"
        wrong = [f"label {y}: {have[y]} instead of {min(shots, n)}" for y, n in sorted(available.items())
                 if have[y] != min(shots, n)]
        if wrong:
            return f"its {name} list does not hold {shots} images per class ({', '.join(wrong[:3])})"
    return ""


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
    ``dataset.image_dir``. A cached selection is checked (:func:`cache_problem`) and reused;
    a bad one is made again, with a note. ``val`` is None for ImageNet (no val split).
    ``num_shots < 1`` keeps every image.
    """
    if num_shots < 1:
        return train, val
    path_prefix = dataset.image_dir
    cache = fewshot_cache_path(dataset.split_fewshot_dir, num_shots, seed)
    sources = fewshot_sources(train, val, num_shots)

    def read(note: bool) -> Optional[Dict[str, List[Datum]]]:
        if not os.path.exists(cache):
            return None
        try:
            data = read_json(cache, "Few-shot cache")
            problem = cache_problem(data, num_shots, seed, sources, path_prefix, cache)
        except (FileContentError, OSError) as e:
            problem = str(e).split(" Fix:")[0]
        if problem:
            if note:
                print(f"NOTE: the few-shot cache {cache} cannot be used: {problem}. "
                      f"Sampling it again from the split with seed {seed}.")
            return None
        print(f"Loading the few-shot selection from {cache}")
        return {name: make_datums(checked_rows(data[name], cache, name, ""), path_prefix, cache)
                for name in sources}

    def create() -> Dict[str, List[Datum]]:
        out = {}
        for name, (items, shots) in sources.items():
            if not items:
                raise DatasetLayoutError(
                    f"The {name} split of {type(dataset).__name__} in {dataset.dataset_dir} has no images: there "
                    f"is nothing to sample {num_shots} shots from. Check the dataset and its split file (see {DOCS})."
                )
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

    picked = read(note=True)
    if picked is None:
        with folder_lock(dataset.dataset_dir):  # concurrent runs wait for the first one's file
            picked = read(note=False) or create()
    return picked["train"], picked.get("val")


def subsample_classes(*datasets: List[Datum], subsample: str = "all") -> Sequence[List[Datum]]:
    """CoOp's base/new split: labels sorted, first ceil(n/2) are base, the rest new, relabelled from 0.

    The label set comes from the first dataset (the training set, after few-shot sampling).
    """
    if subsample not in SUBSAMPLE_CHOICES:
        raise ConfigValueError(
            f"DATASET.SUBSAMPLE_CLASSES must be one of {', '.join(SUBSAMPLE_CHOICES)}; got {subsample!r}"
        )
    if subsample == "all":
        return datasets
    labels = sorted({item.label for item in datasets[0]})
    m = math.ceil(len(labels) / 2)
    selected = labels[:m] if subsample == "base" else labels[m:]
    if not selected:
        raise ConfigValueError(
            f"DATASET.SUBSAMPLE_CLASSES {subsample} keeps no class: the training set has {len(labels)} "
            f"class(es), and the base half takes the first ceil({len(labels)}/2) = {m}. Use all (or base), "
            "or a dataset with at least 2 classes."
        )
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
