"""CoOp-compatible split files: reading, writing and creating ``split_zhou_*.json`` splits.

Random calls (split shuffles) use the global ``random`` state seeded by ``train.py``, in the
order CoOp makes them, so that a seed gives the same split as CoOp with Dassl.
"""

from __future__ import annotations

import contextlib
import os
import random
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar

from clipfit.engine import Datum, listdir_nohidden
from clipfit.fileio import FileContentError, read_json, read_text, write_json
from clipfit.errors import UserError

Split = Tuple[List[Datum], List[Datum], List[Datum]]
Row = Tuple[str, int, str]  # (image path relative to the split's folder, label, class name)
T = TypeVar("T")

DOCS = "DATASETS.md"
SPLIT_FIX = ("download CoOp's split file again (see DATASETS.md), or delete it so that a new split is made "
             "(then not comparable with published numbers)")


class DatasetContentError(UserError, ValueError):
    """A dataset whose files are in place but too few or inconsistent for the split asked for."""


class DatasetLayoutError(UserError, FileNotFoundError):
    """A dataset folder, split file or annotation file is missing or does not match the layout."""

    def __str__(self) -> str:
        return self.args[0]


def atomic_write_json(obj: object, path: str) -> None:
    """Write ``obj`` as JSON (CoOp's split-file formatting) to ``path`` atomically."""
    write_json(path, obj, indent=4, separators=(",", ": "))


def row_problem(row: object) -> str:
    """Why ``row`` is not a ``[relative image path, integer label, class name]`` row ("" if it is)."""
    if not isinstance(row, (list, tuple)) or len(row) != 3:
        return "a row must be [relative image path, integer label, class name]"
    path, label, classname = row
    if not isinstance(path, str) or not path:
        return "its image path is not a non-empty string"
    if isinstance(label, bool) or not isinstance(label, int) or label < 0:
        return "its label is not a non-negative integer"
    if not isinstance(classname, str) or not classname:
        return "its class name is not a non-empty string"
    norm = os.path.normpath(path)
    if os.path.isabs(path) or norm == ".." or norm.startswith(".." + os.sep) or "\x00" in path:
        return "its image path leads outside the dataset folder (absolute or with ..); it is refused"
    return ""


def checked_rows(rows: object, source: str, part: str, fix: str) -> List[Row]:
    """The rows of list ``part`` of ``source``, each checked by :func:`row_problem`; a bad one raises
    :class:`FileContentError` naming the row, the file and ``fix``."""
    if not isinstance(rows, list):
        raise FileContentError(f"The {part} entry of {source} is not a list of rows. Fix: {fix}.")
    for i, row in enumerate(rows):
        problem = row_problem(row)
        if problem:
            shown = repr(row) if len(repr(row)) < 200 else repr(row)[:200] + "..."
            raise FileContentError(f"Row {i} of the {part} list of {source} is {shown}: {problem}. Fix: {fix}.")
    return [(p, int(y), c) for p, y, c in rows]


def annotation_lines(path: str) -> List[str]:
    """The stripped, non-blank lines of a dataset's text annotation file, in file order."""
    text = read_text(path, "Annotation file", "extract it again from the dataset's archive")
    return [line.strip() for line in text.splitlines() if line.strip()]


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
    """Read a CoOp ``split_zhou_*.json`` file (train, val, test), every row and list checked."""
    print(f"Reading split from {filepath}")
    split = read_json(filepath, "Split file", SPLIT_FIX)
    parts = []
    for name in ("train", "val", "test"):
        if name not in split:
            raise FileContentError(
                f"Split file {filepath} has no {name} list: it is not one of CoOp's split_zhou_*.json "
                f"files. Fix: {SPLIT_FIX}."
            )
        rows = checked_rows(split[name], filepath, name, SPLIT_FIX)
        if not rows:
            raise FileContentError(f"The {name} list of split file {filepath} is empty. Fix: {SPLIT_FIX}.")
        parts.append(make_datums(rows, path_prefix, filepath))
    train, val, test = parts
    return train, val, test


def save_split(
    train: List[Datum], val: List[Datum], test: List[Datum], filepath: str, path_prefix: str
) -> None:
    """Write a split file in CoOp's format (paths relative to ``path_prefix``); an empty list is refused."""
    for name, items in (("train", train), ("val", val), ("test", test)):
        if not items:
            raise FileContentError(
                f"The new split for {filepath} has no {name} images, so it is not written. Check that the "
                f"dataset's images and annotations are complete (see {DOCS})."
            )
    split = {
        name: to_rows(items, path_prefix) for name, items in (("train", train), ("val", val), ("test", test))
    }
    for name, rows in split.items():
        bad = next((row for row in rows if row_problem(list(row))), None)
        if bad is not None:
            raise FileContentError(
                f"The new split for {filepath} would list {bad[0]!r} ({name}): {row_problem(list(bad))}. Every "
                f"image must lie under {path_prefix}."
            )
    atomic_write_json(split, filepath)
    print(f"Saved split to {filepath}")


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
            raise DatasetContentError(
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
            raise DatasetContentError(
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
