"""ImageNet's file listing is cached in the dataset folder as JSON and invalidated by changes."""
from __future__ import annotations

import json
import os
import shutil

import pytest

import datasets  # noqa: F401  (registers the loaders)
from clipfit.data import listing_cache
from clipfit.testing.fake_datasets import make_dataset

from _helpers import build, rows


@pytest.fixture()
def imagenet(tmp_path):
    make_dataset("imagenet", str(tmp_path), n_classes=3, per_class=4)
    return tmp_path


def _count_listings(monkeypatch):
    calls = []
    real = listing_cache.listdir_nohidden
    monkeypatch.setattr(listing_cache, "listdir_nohidden", lambda p: calls.append(p) or real(p))
    return calls


def test_second_run_reads_the_cache_and_gives_the_same_items(imagenet, monkeypatch):
    calls = _count_listings(monkeypatch)
    first = build(imagenet, "imagenet")
    assert len(calls) == 6  # 3 train + 3 val class folders
    cache = imagenet / "imagenet" / listing_cache.CACHE_FILE
    data = json.loads(cache.read_text())  # plain JSON, nothing to unpickle
    assert data["format"] == listing_cache.FORMAT and len(data["folders"]) == 6
    second = build(imagenet, "imagenet")
    assert len(calls) == 6  # no folder listed again
    assert rows(second.train_x) == rows(first.train_x) and rows(second.test) == rows(first.test)
    assert all(os.path.isfile(x.impath) for x in second.train_x)


def test_changed_folder_or_bad_cache_is_relisted(imagenet, monkeypatch):
    n_test = len(build(imagenet, "imagenet").test)
    train = imagenet / "imagenet" / "images" / "train"
    folder = sorted(train.iterdir())[0]
    image = sorted(folder.iterdir())[0]
    shutil.copy(image, folder / "added.jpg")  # changes the folder's mtime
    assert any(x.impath.endswith("added.jpg") for x in build(imagenet, "imagenet").train_x)
    os.remove(image)
    assert not any(x.impath == str(image) for x in build(imagenet, "imagenet").train_x)
    cache = imagenet / "imagenet" / listing_cache.CACHE_FILE
    for bad in ("{not json", json.dumps({"format": "other", "folders": {}}),
                json.dumps({"format": listing_cache.FORMAT, "folders": {"train/x": {"mtime_ns": 1, "files": [3]}}})):
        cache.write_text(bad)
        calls = _count_listings(monkeypatch)
        assert len(build(imagenet, "imagenet").test) == n_test and len(calls) == 6
        assert json.loads(cache.read_text())["format"] == listing_cache.FORMAT  # rewritten
        monkeypatch.undo()
