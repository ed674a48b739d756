"""Split creation when CoOp's split file is missing, few-shot caches, and bad input.

Created splits are checked against CoOp's documented procedure replayed with ``random``:
seed, then per class shuffle and cut (50/20/30 of a class folder, or 20% of trainval as val),
then the few-shot sampling on the same random state.
"""

import json
import multiprocessing
import os
import pickle
import random

import pytest
from scipy.io import loadmat

import datasets  # noqa: F401  (registers the loaders)
from _helpers import build, replay_fewshot
from clipfit.data import splits as split_files
from clipfit import fileio
from clipfit.data.splits import DatasetLayoutError
from clipfit.fileio import FileContentError
from clipfit.testing.fake_datasets import make_dataset, registry_name

FOLDER_DATASETS = {  # name -> (image folder, ignored class folders, class names after renaming)
    "dtd": ("images", (), ["banded", "blotchy", "braided", "bubbly"]),
    "caltech101": (
        "101_ObjectCategories",
        ("BACKGROUND_Google", "Faces_easy"),
        ["face", "leopard", "motorbike", "accordion", "airplane", "anchor"],
    ),
    "eurosat": ("2750", (), ["Annual Crop Land", "Forest", "Herbaceous Vegetation Land", "Highway or Road"]),
    "food101": ("images", (), ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio"]),
}


def rows(items):
    return [(x.impath, x.label) for x in items]


def cut(paths, label, p_trn=0.5, p_val=0.2):
    random.shuffle(paths)
    n_trn, n_val = round(len(paths) * p_trn), round(len(paths) * p_val)
    return (
        [(p, label) for p in paths[:n_trn]],
        [(p, label) for p in paths[n_trn : n_trn + n_val]],
        [(p, label) for p in paths[n_trn + n_val :]],
    )


def combine(parts):
    return tuple(sum((p[i] for p in parts), []) for i in range(3))


def no_temp_files(folder):
    return not [f for _, _, files in os.walk(folder) for f in files if f.endswith(".tmp")]


@pytest.mark.parametrize("name", sorted(FOLDER_DATASETS))
def test_missing_split_of_a_class_folder_dataset_is_created_and_saved_like_coop(tmp_path, name):
    folder = make_dataset(name, str(tmp_path), with_split=False)
    image_folder, ignored, classnames = FOLDER_DATASETS[name]
    image_dir = os.path.join(folder, image_folder)
    ds = build(tmp_path, name, shots=2, seed=1)

    random.seed(1)
    classes = sorted(c for c in os.listdir(image_dir) if c not in ignored)
    train, val, test = combine(
        [
            cut([os.path.join(image_dir, c, f) for f in os.listdir(os.path.join(image_dir, c))], y)
            for y, c in enumerate(classes)
        ]
    )
    assert rows(ds.test) == test
    assert rows(ds.train_x) == replay_fewshot(train, 2)
    assert rows(ds.val) == replay_fewshot(val, 2)
    assert ds.classnames == classnames

    split_file = os.path.join(folder, f"split_zhou_{registry_name(name)}.json")
    with open(split_file) as f:
        saved = json.load(f)
    assert [(os.path.join(image_dir, p), y) for p, y, _ in saved["train"]] == train
    assert saved["test"][0][2] == classnames[saved["test"][0][1]]

    # the next seed reads the saved split (no new shuffle) and samples from it
    ds2 = build(tmp_path, name, shots=2, seed=2)
    random.seed(2)
    assert rows(ds2.train_x) == replay_fewshot(train, 2) and rows(ds2.test) == test


def test_missing_flowers_split_is_created_per_label_in_order_of_first_appearance(tmp_path):
    folder = make_dataset("oxford_flowers", str(tmp_path), with_split=False)
    ds = build(tmp_path, "oxford_flowers")
    labels = loadmat(os.path.join(folder, "imagelabels.mat"))["labels"][0]
    groups = {}
    for i, y in enumerate(labels):
        groups.setdefault(int(y), []).append(os.path.join(folder, "jpg", f"image_{i + 1:05d}.jpg"))
    random.seed(1)
    expected = combine([cut(paths, y - 1) for y, paths in groups.items()])
    assert (rows(ds.train_x), rows(ds.val), rows(ds.test)) == expected
    assert ds.classnames == ["pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea"]


def test_missing_pets_split_holds_out_a_fifth_of_trainval_per_breed(tmp_path):
    folder = make_dataset("oxford_pets", str(tmp_path), with_split=False)
    ds = build(tmp_path, "oxford_pets", shots=2, seed=3)

    def listed(filename):
        with open(os.path.join(folder, "annotations", filename)) as f:
            return [
                (os.path.join(folder, "images", line.split()[0] + ".jpg"), int(line.split()[1]) - 1)
                for line in f
            ]

    trainval = listed("trainval.txt")
    random.seed(3)
    train, val = [], []
    for y in dict.fromkeys(label for _, label in trainval):
        idxs = [i for i, (_, label) in enumerate(trainval) if label == y]
        n_val = round(len(idxs) * 0.2)
        random.shuffle(idxs)
        val += [trainval[i] for i in idxs[:n_val]]
        train += [trainval[i] for i in idxs[n_val:]]
    assert rows(ds.test) == listed("test.txt")
    assert rows(ds.train_x) == replay_fewshot(train, 2)
    assert rows(ds.val) == replay_fewshot(val, 2)


@pytest.mark.parametrize("name", ["stanford_cars", "sun397", "ucf101"])
def test_missing_split_from_official_lists_keeps_their_test_set_and_cuts_trainval(tmp_path, name):
    with_file = build(os.path.dirname(make_dataset(name, str(tmp_path / "a"))), name)
    folder = make_dataset(name, str(tmp_path / "b"), with_split=False)
    created = build(tmp_path / "b", name)
    assert os.path.isfile(os.path.join(folder, f"split_zhou_{registry_name(name)}.json"))

    def relative(items, root):
        return sorted((os.path.relpath(x.impath, root), x.label, x.classname) for x in items)

    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert relative(created.test, b) == relative(with_file.test, a)
    assert relative(created.train_x + created.val, b) == relative(with_file.train_x + with_file.val, a)
    assert created.classnames == with_file.classnames
    per_class = {}
    for x in created.train_x + created.val:
        per_class.setdefault(x.label, [0, 0])[x in created.val] += 1
    assert all(n_val == round((n_trn + n_val) * 0.2) for n_trn, n_val in per_class.values())


# ---------------------------------------------------------------------------- bad input


def test_missing_dataset_folder_names_the_path_the_tree_and_the_docs(tmp_path):
    with pytest.raises(DatasetLayoutError) as err:
        build(tmp_path, "dtd")
    msg = str(err.value)
    assert os.path.join(str(tmp_path), "dtd") in msg
    assert "images/" in msg and "split_zhou_DescribableTextures.json" in msg
    assert 'DATASETS.md, section "DTD"' in msg


def test_missing_image_folder_is_named(tmp_path):
    os.makedirs(tmp_path / "oxford_pets" / "annotations")
    with pytest.raises(DatasetLayoutError, match=r"image folder .*oxford_pets/images not found"):
        build(tmp_path, "oxford_pets")


def test_missing_split_and_annotations_name_each_file_and_where_it_goes(tmp_path):
    folder = make_dataset("oxford_pets", str(tmp_path), with_split=False)
    os.remove(os.path.join(folder, "annotations", "trainval.txt"))
    with pytest.raises(DatasetLayoutError) as err:
        build(tmp_path, "oxford_pets")
    msg = str(err.value)
    assert os.path.join(folder, "annotations", "trainval.txt") in msg
    assert os.path.join(folder, "split_zhou_OxfordPets.json") in msg
    assert "test.txt" not in msg.split("Expected layout")[0]  # only the missing file is named


@pytest.mark.parametrize(
    "name, filename, hint",
    [
        ("fgvc_aircraft", "variants.txt", "FGVCAircraft"),
        ("imagenet_a", "classnames.txt", "copy it from imagenet/classnames.txt"),
        ("imagenet", "classnames.txt", "ImageNet"),
    ],
)
def test_missing_annotation_file_is_named(tmp_path, name, filename, hint):
    folder = make_dataset(name, str(tmp_path))
    os.remove(os.path.join(folder, filename))
    with pytest.raises(DatasetLayoutError) as err:
        build(tmp_path, name)
    assert os.path.join(folder, filename) in str(err.value) and hint in str(err.value)


def test_split_file_listing_missing_images_names_the_file_and_the_images(tmp_path):
    folder = make_dataset("dtd", str(tmp_path))
    os.remove(os.path.join(folder, "images", "banded", "banded_0001.jpg"))
    with pytest.raises(DatasetLayoutError) as err:
        build(tmp_path, "dtd")
    assert "split_zhou_DescribableTextures.json" in str(err.value) and "banded_0001.jpg" in str(err.value)


def test_damaged_split_file_says_so(tmp_path):
    folder = make_dataset("dtd", str(tmp_path))
    with open(os.path.join(folder, "split_zhou_DescribableTextures.json"), "w") as f:
        f.write('{"train": [')
    with pytest.raises(FileContentError, match="split_zhou_DescribableTextures.json is not valid JSON.*Fix: download"):
        build(tmp_path, "dtd")


def test_unknown_subsample_value_is_rejected(tmp_path):
    make_dataset("dtd", str(tmp_path))
    with pytest.raises(ValueError, match="SUBSAMPLE_CLASSES must be one of all, base, new"):
        build(tmp_path, "dtd", subsample="novel")


def test_more_shots_than_a_class_has_keeps_all_its_images_and_warns(tmp_path, capsys):
    folder = make_dataset("dtd", str(tmp_path), per_class=10)  # 5 train, 2 val images per class
    with open(os.path.join(folder, "split_zhou_DescribableTextures.json")) as f:
        split = json.load(f)
    split["train"] = [r for r in split["train"] if r[2] != "banded"] + [
        r for r in split["train"] if r[2] == "banded"
    ][:3]
    with open(os.path.join(folder, "split_zhou_DescribableTextures.json"), "w") as f:
        json.dump(split, f)
    ds = build(tmp_path, "dtd", shots=4)
    out = capsys.readouterr().out
    train_warning = next(line for line in out.splitlines() if "from the train split" in line)
    assert "banded (3)" in train_warning and "blotchy" not in train_warning
    assert "from the val split" in out and "blotchy (2)" in out
    counts = {c: sum(x.classname == c for x in ds.train_x) for c in ds.classnames}
    assert counts == {"banded": 3, "blotchy": 4, "braided": 4, "bubbly": 4}
    assert len(ds.val) == 8  # every val image: 2 per class


def test_stale_fewshot_cache_is_made_again_with_a_note(tmp_path, capsys):
    folder = make_dataset("dtd", str(tmp_path))
    ds = build(tmp_path, "dtd", shots=2, seed=1)
    cache = os.path.join(folder, "split_fewshot", "shot_2-seed_1.json")
    with open(cache) as f:
        original = json.load(f)
    data = json.loads(json.dumps(original))
    data["train"][0][0] = os.path.relpath(ds.test[0].impath, os.path.join(folder, "images"))
    with open(cache, "w") as f:
        json.dump(data, f)
    capsys.readouterr()
    again = build(tmp_path, "dtd", shots=2, seed=1)
    assert "not in the split's train set" in capsys.readouterr().out
    assert [x.impath for x in again.train_x] == [x.impath for x in ds.train_x]
    with open(cache) as f:
        assert json.load(f) == original


def test_coops_pickle_caches_are_never_unpickled_nor_touched(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a dataset file was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    planted = {}
    for name, relpath in (("dtd", "split_fewshot/shot_2-seed_1.pkl"), ("imagenet", "preprocessed.pkl")):
        path = os.path.join(make_dataset(name, str(tmp_path)), relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"not a pickle")
        planted[path] = name
    for path, name in planted.items():
        ds = build(tmp_path, name, shots=2, seed=1)
        assert len(ds.train_x) == 2 * ds.num_classes
        with open(path, "rb") as f:
            assert f.read() == b"not a pickle"


def test_a_failed_cache_write_leaves_no_file_and_the_run_continues(tmp_path, monkeypatch, capsys):
    folder = make_dataset("dtd", str(tmp_path))

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", disk_full)
    ds = build(tmp_path, "dtd", shots=2, seed=1)
    assert len(ds.train_x) == 8
    assert "could not save the few-shot selection" in capsys.readouterr().out
    fewshot_dir = os.path.join(folder, "split_fewshot")
    assert not os.path.exists(os.path.join(fewshot_dir, "shot_2-seed_1.json"))
    assert no_temp_files(folder)

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build(tmp_path, "dtd", shots=2, seed=2)
    assert os.listdir(fewshot_dir) == [] and no_temp_files(folder)


def test_an_unwritable_new_split_is_an_error_not_a_silent_per_run_split(tmp_path, monkeypatch):
    make_dataset("dtd", str(tmp_path), with_split=False)

    def read_only(obj, path):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(split_files, "atomic_write_json", read_only)
    with pytest.raises(DatasetLayoutError, match="could not write the new split"):
        build(tmp_path, "dtd")


def _build_in_child(args):
    root, seed = args
    ds = build(root, "dtd", shots=2, seed=seed)
    return [[(x.impath, x.label) for x in part] for part in (ds.train_x, ds.val, ds.test)]


def test_three_seeds_started_at_once_share_one_split_and_write_whole_caches(tmp_path):
    folder = make_dataset("dtd", str(tmp_path), with_split=False)
    with multiprocessing.get_context("fork").Pool(3) as pool:
        results = pool.map(_build_in_child, [(str(tmp_path), s) for s in (1, 2, 3)])
    with open(os.path.join(folder, "split_zhou_DescribableTextures.json")) as f:
        split = json.load(f)
    image_dir = os.path.join(folder, "images")
    on_disk = {k: {(os.path.join(image_dir, p), y) for p, y, _ in split[k]} for k in ("train", "val", "test")}
    for seed, (train, val, test) in zip((1, 2, 3), results):
        assert set(train) <= on_disk["train"] and set(val) <= on_disk["val"] and set(test) == on_disk["test"]
        with open(os.path.join(folder, "split_fewshot", f"shot_2-seed_{seed}.json")) as f:
            cached = json.load(f)
        assert [(os.path.join(image_dir, p), y) for p, y, _ in cached["train"]] == train
    assert no_temp_files(folder)
