"""Base classes of the dataset loaders in ``datasets/``: a folder under ``DATASET.ROOT`` and
CoOp's recipe (split file, few-shot selection, base/new classes).
"""

from __future__ import annotations

import os
import textwrap
from typing import List, Optional, Tuple

from clipfit.data.fewshot import FEWSHOT_FOLDER, sample_fewshot, subsample_classes
from clipfit.data.splits import DOCS, DatasetLayoutError, Split, load_or_create, read_split, save_split
from clipfit.engine import DatasetBase, Datum


class FolderDataset(DatasetBase):
    """A dataset in its own folder under ``DATASET.ROOT``, laid out as DATASETS.md describes."""

    dataset_dir = ""  # folder under DATASET.ROOT (CoOp's class attribute)
    image_folder = ""  # image folder inside it; "" for the dataset folder itself
    doc_section = ""  # the DATASETS.md section that explains the layout
    layout = ""  # the expected tree, shown when something is missing
    prepare_command = ""  # the one command that makes the dataset ({root}: DATASET.ROOT), if any
    root = "DATA"  # DATASET.ROOT, once located

    def locate(self, cfg) -> None:
        """Set ``dataset_dir`` and ``image_dir`` under DATASET.ROOT; fail with the tree if missing."""
        self.root = root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
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
        fix = (f"Make it with one command: {self.prepare_command.format(root=self.root)}" if self.prepare_command
               else f'See {DOCS}, section "{self.doc_section}", for how to prepare it.')
        return DatasetLayoutError(f"{type(self).__name__}: {problem}\nExpected layout under DATASET.ROOT:\n{tree}\n{fix}")

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
