"""Your own data without code: ``ImageFolder`` (class folders) and ``CSVDataset`` (a CSV list)."""

import csv
import json
import os
import random

import pytest

import datasets  # noqa: F401  (registers the loaders)
from _helpers import build_from_cfg, replay_fewshot, rows
from clipfit.training.config import get_cfg, merge_from_file
from clipfit.data.splits import DatasetLayoutError
from clipfit.testing.fake_datasets import make_dataset

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "datasets")


def build(config, shots=0, seed=1, subsample="all", **keys):
    cfg = get_cfg()
    merge_from_file(cfg, os.path.join(CONFIGS, config))
    for key, value in keys.items():
        cfg.DATASET[key] = value
    return build_from_cfg(cfg, shots, seed, subsample)


def replay_split(groups):
    """CoOp's DTD recipe on (label, classname, paths) groups, with the current random state."""
    train, val, test = [], [], []
    for label, name, paths in groups:
        random.shuffle(paths)
        n_trn, n_val = round(len(paths) * 0.5), round(len(paths) * 0.2)
        for part, chosen in (
            (train, paths[:n_trn]),
            (val, paths[n_trn : n_trn + n_val]),
            (test, paths[n_trn + n_val :]),
        ):
            part.extend((p, label, name) for p in chosen)
    return train, val, test


@pytest.fixture
def image_folder(tmp_path):
    """A class-folder tree (the fabricated DTD images) with a stray non-image file."""
    folder = os.path.join(
        make_dataset("dtd", str(tmp_path), n_classes=3, per_class=10, with_split=False), "images"
    )
    with open(os.path.join(folder, "banded", "notes.txt"), "w") as f:
        f.write("not an image")
    return folder


def test_image_folder_splits_like_dtd_saves_the_split_and_samples_few_shot(image_folder):
    classes = sorted(os.listdir(image_folder))
    ds = build("image_folder.yaml", shots=2, seed=1, IMAGE_DIR=image_folder)
    random.seed(1)
    train, val, test = replay_split(
        (
            y,
            c,
            [
                os.path.join(image_folder, c, f)
                for f in os.listdir(os.path.join(image_folder, c))
                if f.endswith(".jpg")
            ],
        )
        for y, c in enumerate(classes)
    )
    assert ds.classnames == ["banded", "blotchy", "braided"]
    assert rows(ds.test) == test
    assert rows(ds.train_x) == replay_fewshot(train, 2) and rows(ds.val) == replay_fewshot(val, 2)
    assert os.path.isfile(os.path.join(image_folder, "split_ImageFolder.json"))
    assert os.path.isfile(os.path.join(image_folder, "split_fewshot", "shot_2-seed_1.json"))

    # later runs read the saved split (the split_fewshot/ folder is not a class), other seeds sample from it
    ds2 = build("image_folder.yaml", shots=2, seed=2, IMAGE_DIR=image_folder)
    random.seed(2)
    assert rows(ds2.test) == test and rows(ds2.train_x) == replay_fewshot(train, 2)
    new = build("image_folder.yaml", shots=2, seed=2, subsample="new", IMAGE_DIR=image_folder)
    assert new.classnames == ["braided"] and {x.label for x in new.test} == {0}


def test_image_dir_may_be_relative_to_the_dataset_root(image_folder):
    root, name = os.path.split(image_folder)
    ds = build("image_folder.yaml", ROOT=root, IMAGE_DIR=name)
    assert ds.train_x[0].impath.startswith(image_folder)


def write_csv(path, table):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(table)
    return str(path)


def test_csv_with_a_split_column_uses_it_as_given(image_folder, tmp_path):
    table = [["path", "label", "classname", "split"]]
    expected = {"train": [], "val": [], "test": []}
    for y, c in enumerate(["banded", "blotchy", "braided"]):
        for i in range(1, 11):
            split = "train" if i <= 6 else "val" if i <= 8 else "test"
            table.append([f"{c}/{c}_{i:04d}.jpg", y, c.upper(), split])
            expected[split].append((os.path.join(image_folder, c, f"{c}_{i:04d}.jpg"), y, c.upper()))
    csv_file = write_csv(tmp_path / "list.csv", table)
    full = build("csv_dataset.yaml", CSV_FILE=csv_file, IMAGE_DIR=image_folder)
    assert (rows(full.train_x), rows(full.val), rows(full.test)) == (
        expected["train"],
        expected["val"],
        expected["test"],
    )
    assert full.classnames == ["BANDED", "BLOTCHY", "BRAIDED"]
    assert not os.path.exists(tmp_path / "split_list.json")

    ds = build("csv_dataset.yaml", shots=4, seed=3, CSV_FILE=csv_file, IMAGE_DIR=image_folder)
    random.seed(3)
    assert rows(ds.train_x) == replay_fewshot(expected["train"], 4)
    assert rows(ds.val) == replay_fewshot(expected["val"], 4)
    assert os.path.isfile(tmp_path / "split_fewshot" / "list" / "shot_4-seed_3.json")
    base = build(
        "csv_dataset.yaml", shots=4, seed=3, subsample="base", CSV_FILE=csv_file, IMAGE_DIR=image_folder
    )
    assert base.classnames == ["BANDED", "BLOTCHY"] and len(base.test) == 4


def test_csv_without_header_and_with_class_names_as_labels_gets_a_saved_split(image_folder):
    folder = os.path.dirname(image_folder)
    table, groups = [], {}
    for c in ["braided", "banded", "blotchy"]:  # not sorted: labels follow the sorted names
        for i in range(1, 11):
            table.append([f"images/{c}/{c}_{i:04d}.jpg", c])
            groups.setdefault(c, []).append(os.path.join(image_folder, c, f"{c}_{i:04d}.jpg"))
    csv_file = write_csv(os.path.join(folder, "mine.csv"), table)
    ds = build("csv_dataset.yaml", seed=5, CSV_FILE=csv_file)
    random.seed(5)
    expected = replay_split((y, c, groups[c]) for y, c in enumerate(sorted(groups)))
    assert (rows(ds.train_x), rows(ds.val), rows(ds.test)) == expected
    with open(os.path.join(folder, "split_mine.json")) as f:
        assert json.load(f)["test"][0][0].startswith("images/")

    table.pop()  # the CSV changes: the saved split no longer matches it
    write_csv(csv_file, table)
    with pytest.raises(DatasetLayoutError, match="older version of the CSV"):
        build("csv_dataset.yaml", CSV_FILE=csv_file)


@pytest.mark.parametrize(
    "table, message",
    [
        ([["a.jpg", "0"], ["b.jpg", "1"]], "has no class name"),
        ([["a.jpg", "0", "cat"], ["b.jpg", "2", "dog"]], r"must be 0\.\.1; missing \[1\]"),
        ([["a.jpg", "0", "cat"], ["b.jpg", "0", "dog"]], "two class names"),
        ([["path", "label", "split"], ["a.jpg", "cat", "training"]], "use train, val or test"),
        ([["path", "lable"], ["a.jpg", "cat"]], "must name path, label"),
    ],
)
def test_csv_mistakes_are_explained(tmp_path, table, message):
    csv_file = write_csv(tmp_path / "bad.csv", table)
    with pytest.raises(DatasetLayoutError, match=message):
        build("csv_dataset.yaml", CSV_FILE=csv_file)


@pytest.mark.parametrize(
    "config, keys, message",
    [
        ("image_folder.yaml", {}, "DATASET.IMAGE_DIR is empty"),
        ("image_folder.yaml", {"IMAGE_DIR": "/nonexistent/birds"}, "/nonexistent/birds .*not found"),
        ("csv_dataset.yaml", {}, "DATASET.CSV_FILE is empty"),
        ("csv_dataset.yaml", {"CSV_FILE": "/nonexistent/list.csv"}, "/nonexistent/list.csv .*not found"),
    ],
)
def test_missing_custom_locations_are_named(config, keys, message):
    with pytest.raises(DatasetLayoutError, match=message) as err:
        build(config, **keys)
    assert "DATASETS.md" in str(err.value)
