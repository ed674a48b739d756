"""Your own data without code: an image-folder tree (``ImageFolder``) or a CSV list (``CSVDataset``).

Both work like the CoOp datasets: a split file is created once (50/20/30 per class, as for
DTD) and saved next to the data, few-shot selections are cached per (shots, seed), and
DATASET.SUBSAMPLE_CLASSES picks base or new classes. Prompts use DATASET.TEMPLATE
(default "a photo of a {}.").
"""

import csv
import os
from typing import Dict, List, Optional, Tuple

from clipfit.data.fewshot import FEWSHOT_FOLDER
from clipfit.data.folders import CoOpDataset
from clipfit.data.splits import Split, list_images, list_subfolders, make_datums, split_groups
from clipfit.engine import DATASET_REGISTRY, Datum

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CSV_COLUMNS = ("path", "label", "classname", "split")
SPLITS = ("train", "val", "test")


def resolve(path: str, root: str) -> str:
    """``path`` made absolute; a relative one is taken under DATASET.ROOT."""
    path = os.path.expanduser(path)
    return os.path.abspath(path if os.path.isabs(path) else os.path.join(os.path.expanduser(root), path))


@DATASET_REGISTRY.register()
class ImageFolder(CoOpDataset):
    """``<DATASET.IMAGE_DIR>/<class name>/<image>``: classes are the sorted folder names."""

    split_file = "split_ImageFolder.json"
    split_note = ""
    doc_section = "Your own data: an image folder"
    layout = """
<DATASET.IMAGE_DIR>/   absolute, or relative to DATASET.ROOT
├── <class name>/      one folder per class, e.g. golden_retriever/, tabby_cat/
│   └── <image>        .jpg, .png, ... (at least 4 per class)
├── split_ImageFolder.json   written on first use
└── split_fewshot/           written on first few-shot use
"""

    def locate(self, cfg) -> None:
        if not cfg.DATASET.IMAGE_DIR:
            raise self.layout_error("DATASET.IMAGE_DIR is empty: set it to your image folder.")
        self.dataset_dir = self.image_dir = resolve(cfg.DATASET.IMAGE_DIR, cfg.DATASET.ROOT)
        if not os.path.isdir(self.image_dir):
            raise self.layout_error(f"image folder {self.image_dir} (DATASET.IMAGE_DIR) not found.")
        self.split_path = os.path.join(self.dataset_dir, self.split_file)
        self.split_fewshot_dir = os.path.join(self.dataset_dir, FEWSHOT_FOLDER)

    def create_split(self) -> Split:
        classes = [c for c in list_subfolders(self.image_dir) if c != FEWSHOT_FOLDER]
        if not classes:
            raise self.layout_error(f"no class folders in {self.image_dir}.")
        groups = (
            (
                label,
                c,
                [
                    p
                    for p in list_images(os.path.join(self.image_dir, c))
                    if p.lower().endswith(IMAGE_EXTENSIONS)
                ],
            )
            for label, c in enumerate(classes)
        )
        return split_groups(groups)


@DATASET_REGISTRY.register()
class CSVDataset(CoOpDataset):
    """Rows ``path,label[,classname]``, or a header naming ``path,label[,classname][,split]``.

    ``label`` is a class index (then ``classname`` is required) or a class name (classes are
    then labelled in sorted order). A ``split`` column (train/val/test) fixes the split;
    without it one is created and saved as ``split_<csv name>.json`` beside the CSV. Image
    paths are relative to DATASET.IMAGE_DIR when set, else to the CSV's folder.
    """

    split_note = ""
    doc_section = "Your own data: a CSV file"
    layout = """
<folder>/
├── <name>.csv         DATASET.CSV_FILE (absolute, or relative to DATASET.ROOT)
├── <images>           wherever the CSV's relative paths point (or under DATASET.IMAGE_DIR)
├── split_<name>.json  written on first use, unless the CSV has a split column
└── split_fewshot/<name>/    written on first few-shot use
"""

    def locate(self, cfg) -> None:
        if not cfg.DATASET.CSV_FILE:
            raise self.layout_error("DATASET.CSV_FILE is empty: set it to your CSV file.")
        self.csv_file = resolve(cfg.DATASET.CSV_FILE, cfg.DATASET.ROOT)
        if not os.path.isfile(self.csv_file):
            raise self.layout_error(f"CSV file {self.csv_file} (DATASET.CSV_FILE) not found.")
        self.dataset_dir = os.path.dirname(self.csv_file)
        image_dir = cfg.DATASET.IMAGE_DIR
        self.image_dir = resolve(image_dir, cfg.DATASET.ROOT) if image_dir else self.dataset_dir
        stem = os.path.splitext(os.path.basename(self.csv_file))[0]
        self.split_file = f"split_{stem}.json"
        self.split_path = os.path.join(self.dataset_dir, self.split_file)
        self.split_fewshot_dir = os.path.join(self.dataset_dir, FEWSHOT_FOLDER, stem)

    def read_data(self) -> Tuple[List[Datum], Optional[List[Datum]], List[Datum]]:
        records, has_split = self.read_records()
        if has_split:
            parts = ([r[:3] for r in records if r[3] == name] for name in SPLITS)
            train, val, test = (make_datums(part, self.image_dir, self.csv_file) for part in parts)
            return train, val, test
        train, val, test = super().read_data()
        listed = {(os.path.join(self.image_dir, path), label) for path, label, _, _ in records}
        if {(x.impath, x.label) for x in train + val + test} != listed:
            raise self.layout_error(
                f"{self.split_path} does not hold the images and labels of {self.csv_file}: "
                "it was made from an "
                "older version of the CSV. Delete it (and split_fewshot/) to split again."
            )
        return train, val, test

    def create_split(self) -> Split:
        records, _ = self.read_records()
        by_label: Dict[int, Tuple[str, List[str]]] = {}
        for path, label, classname, _ in records:
            by_label.setdefault(label, (classname, []))[1].append(os.path.join(self.image_dir, path))
        return split_groups((label, *by_label[label]) for label in sorted(by_label))

    def read_records(self) -> Tuple[List[Tuple[str, int, str, str]], bool]:
        """``(path, label, classname, split)`` per row, and whether the CSV has a split column."""
        with open(self.csv_file, "r", newline="") as f:
            table = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
        if not table:
            raise self.layout_error(f"{self.csv_file} has no rows.")
        header = [c.strip().lower() for c in table[0]]
        if header[0] == "path":
            unknown = [c for c in header if c not in CSV_COLUMNS]
            if unknown or "label" not in header:
                raise self.layout_error(
                    f"{self.csv_file}: header {table[0]} must name path, label "
                    "and optionally classname, split."
                )
            table = [dict(zip(header, (cell.strip() for cell in row))) for row in table[1:]]
        else:
            table = [dict(zip(CSV_COLUMNS[:3], (cell.strip() for cell in row))) for row in table]
        for i, row in enumerate(table):
            if not row.get("path") or not row.get("label"):
                raise self.layout_error(
                    f"{self.csv_file}, data row {i + 1}: needs at least a path and a label."
                )
        has_split = "split" in table[0]
        if has_split:
            bad = sorted({row["split"] for row in table} - set(SPLITS))
            if bad:
                raise self.layout_error(
                    f"{self.csv_file}: the split column holds {bad}; use train, val or test."
                )
        labels, names = self.label_space(table)
        return [
            (row["path"], labels[row["label"]], names[row["label"]], row.get("split", "")) for row in table
        ], has_split

    def label_space(self, table: List[Dict[str, str]]) -> Tuple[Dict[str, int], Dict[str, str]]:
        """Label and class name of each distinct value of the label column."""
        values = {row["label"] for row in table}
        if all(v.lstrip("-").isdigit() for v in values):
            missing = sorted(set(range(len(values))) - {int(v) for v in values})
            if missing:
                raise self.layout_error(
                    f"{self.csv_file}: integer labels must be 0..{len(values) - 1}; missing {missing[:5]}."
                )
            names: Dict[str, str] = {}
            for row in table:
                name = row.get("classname", "")
                if not name:
                    raise self.layout_error(
                        f"{self.csv_file}: label {row['label']} has no class name. "
                        "CLIP needs class names for its "
                        "prompts: add a classname column, or write the class name in the label column."
                    )
                if names.setdefault(row["label"], name) != name:
                    raise self.layout_error(
                        f"{self.csv_file}: label {row['label']} has two class names, "
                        f"{names[row['label']]!r} and {name!r}."
                    )
            return {v: int(v) for v in values}, names
        ordered = sorted(values)
        return {v: i for i, v in enumerate(ordered)}, {
            row["label"]: row.get("classname") or row["label"] for row in table
        }
