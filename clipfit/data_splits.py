"""CoOp-compatible dataset splits: split files, split creation, few-shot caches, base/new classes.

The loaders in ``datasets/`` only describe their on-disk layout; everything they share
lives here. Random calls (split shuffles, few-shot sampling) use the global ``random``
state seeded by ``train.py``, in the order CoOp makes them, so that a seed selects the
same images as CoOp with Dassl. Nothing here unpickles files: few-shot selections are
cached as JSON (CoOp's own ``.pkl`` caches are left untouched).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import textwrap
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar

from clipfit.atomic import write_json
from clipfit.engine import DatasetBase, Datum, listdir_nohidden

Split = Tuple[List[Datum], List[Datum], List[Datum]]
Row = Tuple[str, int, str]  # (image path relative to the split's folder, label, class name)
T = TypeVar("T")

DOCS = "DATASETS.md"
FEWSHOT_FOLDER = "split_fewshot"
MAX_VAL_SHOTS = 4  # CoOp samples min(NUM_SHOTS, 4) validation images per class
SUBSAMPLE_CHOICES = ("all", "base", "new")


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder, split file or annotation file is missing or does not match the layout."""

    def __str__(self) -> str:
        return self.args[0]


# ---------------------------------------------------------------------------- files


def atomic_write_json(obj: object, path: str) -> None:
    """Write ``obj`` as JSON (CoOp's split-file formatting) to ``path`` atomically."""
    write_json(path, obj, indent=4, separators=(",", ": "))


def read_json_file(path: str, what: str) -> dict:
    """Load a JSON object, with an error that names the file and the fix when it is damaged."""
    try:
        with open(path, "r") as f:
            obj = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetLayoutError(
            f"{what} {path} is not valid JSON ({e}). It may be a partial download: "
            "download it again, or delete it so that it is recreated."
        ) from e
    if not isinstance(obj, dict):
        raise DatasetLayoutError(f"{what} {path} should hold a JSON object, found {type(obj).__name__}.")
    return obj


def annotation_lines(path: str) -> List[str]:
    """The stripped, non-blank lines of a dataset's text annotation file, in file order."""
    with open(path, "r") as f:
        return [line.strip() for line in f if line.strip()]


@contextlib.contextmanager
def folder_lock(folder: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (no-op where the platform or filesystem has none)."""
    try:
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def load_or_create(path: str, read: Callable[[], T], create: Callable[[], T], lock_dir: str) -> T:
    """``read()`` when ``path`` exists, else ``create()`` (which writes it) while locking ``lock_dir``.

    The lock makes concurrent runs (three seeds started at once) wait for the first one's
    file instead of each creating its own, exactly as if they had run one after another.
    """
    if os.path.exists(path):
        return read()
    with folder_lock(lock_dir):
        if os.path.exists(path):
            return read()
        return create()


# ---------------------------------------------------------------------------- items


def make_datums(rows: Iterable[Row], prefix: str, source: str) -> List[Datum]:
    """Datums for ``(relative path, label, class name)`` rows; names missing images and ``source``."""
    items, missing = [], []
    for relpath, label, classname in rows:
        impath = os.path.join(prefix, relpath)
        try:
            items.append(Datum(impath=impath, label=int(label), classname=classname))
        except (AssertionError, FileNotFoundError):  # Datum checks that the image exists
            missing.append(impath)
    if missing:
        shown = "\n  ".join(missing[:5])
        raise DatasetLayoutError(
            f"{len(missing)} image(s) listed in {source} do not exist, e.g.\n  {shown}\n"
            f"The images must lie under {prefix} as the file says. Check that the dataset is "
            f"fully extracted there (see {DOCS})."
        )
    return items


def to_rows(items: Iterable[Datum], prefix: str) -> List[Row]:
    """Rows of a split file: image paths relative to ``prefix``."""
    return [(os.path.relpath(item.impath, prefix), item.label, item.classname) for item in items]


def read_split(filepath: str, path_prefix: str) -> Split:
    """Read a CoOp ``split_zhou_*.json`` file (train, val, test)."""
    print(f"Reading split from {filepath}")
    split = read_json_file(filepath, "Split file")
    missing = [k for k in ("train", "val", "test") if k not in split]
    if missing:
        raise DatasetLayoutError(
            f"Split file {filepath} has no {', '.join(missing)} list: it is not one of CoOp's "
            "split_zhou_*.json files. Download it again, or delete it so that it is recreated."
        )
    train, val, test = (make_datums(split[k], path_prefix, filepath) for k in ("train", "val", "test"))
    return train, val, test


def save_split(
    train: List[Datum], val: List[Datum], test: List[Datum], filepath: str, path_prefix: str
) -> None:
    """Write a split file in CoOp's format (paths relative to ``path_prefix``)."""
    split = {
        name: to_rows(items, path_prefix) for name, items in (("train", train), ("val", val), ("test", test))
    }
    atomic_write_json(split, filepath)
    print(f"Saved split to {filepath}")


# ---------------------------------------------------------------------------- creating splits


def split_trainval(trainval: List[Datum], p_val: float = 0.2) -> Tuple[List[Datum], List[Datum]]:
    """CoOp's train/val cut of a trainval list: per label (first appearance order), shuffle, take val."""
    print(f"Splitting trainval into {1 - p_val:.0%} train and {p_val:.0%} val")
    by_label: Dict[int, List[int]] = {}
    for idx, item in enumerate(trainval):
        by_label.setdefault(item.label, []).append(idx)
    train, val = [], []
    for label, idxs in by_label.items():
        n_val = round(len(idxs) * p_val)
        if n_val <= 0:
            raise ValueError(
                f"Class {trainval[idxs[0]].classname!r} (label {label}) has only {len(idxs)} trainval "
                f"image(s): too few to hold out {p_val:.0%} for validation (need at least 3)."
            )
        random.shuffle(idxs)
        for n, idx in enumerate(idxs):
            (val if n < n_val else train).append(trainval[idx])
    return train, val


def split_groups(
    groups: Iterable[Tuple[int, str, List[str]]], p_trn: float = 0.5, p_val: float = 0.2
) -> Split:
    """Shuffle each class's images and cut them into train/val/test, in the order the groups come.

    ``groups`` yields ``(label, class name, image paths)``; the paths are shuffled in place.
    """
    print(f"Splitting into {p_trn:.0%} train, {p_val:.0%} val, and {1 - p_trn - p_val:.0%} test")
    train, val, test = [], [], []
    for label, classname, impaths in groups:
        random.shuffle(impaths)
        n_total = len(impaths)
        n_train = round(n_total * p_trn)
        n_val = round(n_total * p_val)
        if n_train <= 0 or n_val <= 0 or n_total - n_train - n_val <= 0:
            raise ValueError(
                f"Class {classname!r} has only {n_total} image(s): too few for a "
                f"{p_trn:.0%}/{p_val:.0%}/{1 - p_trn - p_val:.0%} train/val/test split (need at least 4)."
            )
        cuts = (
            (train, impaths[:n_train]),
            (val, impaths[n_train : n_train + n_val]),
            (test, impaths[n_train + n_val :]),
        )
        for part, paths in cuts:
            part.extend(Datum(impath=p, label=label, classname=classname) for p in paths)
    return train, val, test


def list_subfolders(folder: str) -> List[str]:
    """Names of the non-hidden subfolders of ``folder``, sorted."""
    return sorted(d for d in listdir_nohidden(folder) if os.path.isdir(os.path.join(folder, d)))


def list_images(folder: str) -> List[str]:
    """Full paths of the non-hidden entries of ``folder``, in ``os.listdir`` order (as CoOp)."""
    return [os.path.join(folder, name) for name in listdir_nohidden(folder)]


def split_class_folders(
    image_dir: str,
    p_trn: float = 0.5,
    p_val: float = 0.2,
    ignored: Sequence[str] = (),
    new_cnames: Optional[Dict[str, str]] = None,
) -> Split:
    """CoOp's split of an ``<image_dir>/<class>/<image>`` tree (DTD's ``read_and_split_data``).

    Classes are the sorted folder names (minus ``ignored``), labelled from 0; ``new_cnames``
    renames some of them. Images are listed in ``os.listdir`` order, then shuffled per class.
    """
    new_cnames = new_cnames or {}
    categories = [c for c in list_subfolders(image_dir) if c not in ignored]
    if not categories:
        raise DatasetLayoutError(
            f"No class folders found in {image_dir}: expected {image_dir}/<class>/<image>."
        )
    groups = (
        (label, new_cnames.get(c, c), list_images(os.path.join(image_dir, c)))
        for label, c in enumerate(categories)
    )
    return split_groups(groups, p_trn, p_val)


# ---------------------------------------------------------------------------- few-shot


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


# ---------------------------------------------------------------------------- base / new classes


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


# ---------------------------------------------------------------------------- loader templates


class FolderDataset(DatasetBase):
    """A dataset in its own folder under ``DATASET.ROOT``, laid out as DATASETS.md describes."""

    dataset_dir = ""  # folder under DATASET.ROOT (CoOp's class attribute)
    image_folder = ""  # image folder inside it; "" for the dataset folder itself
    doc_section = ""  # the DATASETS.md section that explains the layout
    layout = ""  # the expected tree, shown when something is missing

    def locate(self, cfg) -> None:
        """Set ``dataset_dir`` and ``image_dir`` under DATASET.ROOT; fail with the tree if missing."""
        root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
        self.dataset_dir = os.path.join(root, type(self).dataset_dir)
        self.image_dir = (
            os.path.join(self.dataset_dir, self.image_folder) if self.image_folder else self.dataset_dir
        )
        if not os.path.isdir(self.dataset_dir):
            raise self.layout_error(f"dataset folder {self.dataset_dir} not found (DATASET.ROOT is {root}).")
        if not os.path.isdir(self.image_dir):
            raise self.layout_error(f"image folder {self.image_dir} not found.")

    def layout_error(self, problem: str) -> DatasetLayoutError:
        """An error stating ``problem``, the expected tree and where DATASETS.md explains it."""
        tree = textwrap.indent(self.layout.strip("\n"), "  ")
        return DatasetLayoutError(
            f"{type(self).__name__}: {problem}\nExpected layout under DATASET.ROOT:\n{tree}\n"
            f'See {DOCS}, section "{self.doc_section}", for how to prepare it.'
        )

    def require(self, *relpaths: str, purpose: str = "") -> None:
        """Fail, naming every missing file of ``relpaths`` (relative to the dataset folder)."""
        missing = [
            os.path.join(self.dataset_dir, p)
            for p in relpaths
            if not os.path.exists(os.path.join(self.dataset_dir, p))
        ]
        if missing:
            raise self.layout_error(f"missing {', '.join(missing)}{purpose}.")


class CoOpDataset(FolderDataset):
    """CoOp's recipe: read (or create and save) the split, sample few-shot, keep base/new classes.

    Subclasses set the layout attributes and implement ``create_split`` from the dataset's
    own annotations, or override ``read_data`` when the annotations are the split.
    """

    split_file = ""  # CoOp's split_zhou_<Name>.json, in the dataset folder
    split_note = f" Only CoOp's own split file gives results comparable with published numbers (see {DOCS})."

    def __init__(self, cfg):
        self.locate(cfg)
        train, val, test = self.read_data()
        train, val = sample_fewshot(self, train, val, cfg.DATASET.NUM_SHOTS, cfg.SEED)
        subsample = cfg.DATASET.SUBSAMPLE_CLASSES
        if val is None:  # ImageNet: the official val set is the test set, and serves as val too
            train, test = subsample_classes(train, test, subsample=subsample)
            val = test
        else:
            train, val, test = subsample_classes(train, val, test, subsample=subsample)
        super().__init__(train_x=train, val=val, test=test)

    def locate(self, cfg) -> None:
        """Also set ``split_path`` and ``split_fewshot_dir`` (CoOp's attribute names)."""
        super().locate(cfg)
        self.split_path = os.path.join(self.dataset_dir, self.split_file) if self.split_file else ""
        self.split_fewshot_dir = os.path.join(self.dataset_dir, FEWSHOT_FOLDER)

    def read_data(self) -> Tuple[List[Datum], Optional[List[Datum]], List[Datum]]:
        """Train, val and test from CoOp's split file; the split is created and saved when missing."""
        return load_or_create(
            self.split_path,
            lambda: read_split(self.split_path, self.image_dir),
            self._create_and_save,
            self.dataset_dir,
        )

    def create_split(self) -> Split:
        """Train, val and test from the dataset's own annotations (random calls as CoOp's)."""
        raise NotImplementedError(
            f"{type(self).__name__} cannot create a split: put {self.split_file} in {self.dataset_dir}"
        )

    def require_annotations(self, *relpaths: str) -> None:
        """Fail unless the annotation files needed to create a split exist."""
        self.require(
            *relpaths,
            purpose=f", needed to create a split because {self.split_file} is missing too. Put CoOp's "
            f"{self.split_file} at {self.split_path} (recommended: results comparable with published "
            "numbers), or add the missing annotation files",
        )

    def _create_and_save(self) -> Split:
        print(
            f"{self.split_file} not found in {self.dataset_dir}: creating a split with the current seed."
            + self.split_note
        )
        train, val, test = self.create_split()
        try:
            save_split(train, val, test, self.split_path, self.image_dir)
        except OSError as e:
            raise self.layout_error(
                f"could not write the new split to {self.split_path} ({e}); without it every run would split "
                f"differently. Make the folder writable, or put CoOp's {self.split_file} there"
            ) from e
        return train, val, test
