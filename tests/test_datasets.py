"""The 15 CoOp dataset loaders on fabricated layouts: counts, class names, labels, base/new, few-shot.

Expected few-shot images are computed independently: the documented random-call sequence
(seed, then per class in order of first appearance ``random.sample`` of the train split,
then of the val split with min(shots, 4)) is replayed with ``random`` itself.
"""

import json
import math
import os
import random

import pytest

import datasets  # noqa: F401  (registers the loaders)
from _helpers import build, replay_fewshot, rows
from clipfit.training.config import get_cfg
from clipfit.testing.fake_datasets import make_dataset, registry_name, supported_datasets
from clipfit.toyworld.downstream import DATASETS as TOY_DATASETS

N_CLASSES = 5  # odd, so that base (ceil(n/2)) and new differ in size
IMAGENET5 = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead shark"]
CLASSNAMES = {  # the fabricated layouts' first five classes, as CoOp names them
    "dtd": ["banded", "blotchy", "braided", "bubbly", "bumpy"],
    "caltech101": ["face", "leopard", "motorbike", "accordion", "airplane"],  # sorted folders, renamed
    "eurosat": [
        "Annual Crop Land",
        "Forest",
        "Herbaceous Vegetation Land",
        "Highway or Road",
        "Industrial Buildings",
    ],
    "food101": ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare"],
    "oxford_pets": ["abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle"],
    "stanford_cars": [
        "2000 AM General Hummer SUV",
        "2012 Acura RL Sedan",
        "2012 Acura TL Sedan",
        "2008 Acura TL Type-S",
        "2012 Acura TSX Sedan",
    ],
    "oxford_flowers": [
        "pink primrose",
        "hard-leaved pocket orchid",
        "canterbury bells",
        "sweet pea",
        "english marigold",
    ],
    "fgvc_aircraft": ["707-320", "Cessna 172", "727-200", "F-16A/B", "737-300"],
    "sun397": ["abbey", "airplane_cabin", "outdoor apartment_building", "badlands", "shop bakery"],
    "ucf101": ["Apply_Eye_Makeup", "Apply_Lipstick", "Archery", "Baby_Crawling", "Balance_Beam"],
    "imagenet": IMAGENET5,
    "imagenet_sketch": IMAGENET5,
    "imagenetv2": IMAGENET5,
    "imagenet_a": IMAGENET5[1::2],
    "imagenet_r": IMAGENET5[1::2],
}
SPLIT_FILE_DATASETS = [
    "dtd",
    "caltech101",
    "eurosat",
    "food101",
    "oxford_pets",
    "stanford_cars",
    "oxford_flowers",
    "sun397",
    "ucf101",
]
VARIANTS = ["imagenet_sketch", "imagenetv2", "imagenet_a", "imagenet_r"]
PER_CLASS = 30  # 15 train, 6 val, 9 test per class: 5 shots sample train, 4 sample val
SHOTS = 5


def expected_source(folder, name):
    """(train, val, test) rows read straight from the fabricated files, in file/listing order."""
    if name in SPLIT_FILE_DATASETS:
        with open(
            os.path.join(folder, next(f for f in os.listdir(folder) if f.startswith("split_zhou_")))
        ) as f:
            split = json.load(f)
        prefix = {
            "dtd": "images",
            "caltech101": "101_ObjectCategories",
            "eurosat": "2750",
            "food101": "images",
            "oxford_pets": "images",
            "stanford_cars": "",
            "oxford_flowers": "jpg",
            "sun397": "SUN397",
            "ucf101": "UCF-101-midframes",
        }[name]
        return [
            [
                (os.path.join(folder, prefix, p) if prefix else os.path.join(folder, p), y, c)
                for p, y, c in split[k]
            ]
            for k in ("train", "val", "test")
        ]
    if name == "fgvc_aircraft":
        with open(os.path.join(folder, "variants.txt")) as f:
            variants = f.read().splitlines()
        out = []
        for part in ("train", "val", "test"):
            with open(os.path.join(folder, f"images_variant_{part}.txt")) as f:
                pairs = [line.split(" ", 1) for line in f.read().splitlines()]
            out.append([(os.path.join(folder, "images", i + ".jpg"), variants.index(v), v) for i, v in pairs])
        return out
    if name == "imagenet":

        def listing(split):
            base = os.path.join(folder, "images", split)
            return [
                (os.path.join(base, w, im), y, IMAGENET5[y])
                for y, w in enumerate(sorted(os.listdir(base)))
                for im in os.listdir(os.path.join(base, w))
            ]

        return listing("train"), listing("val"), listing("val")
    raise AssertionError(name)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("coop_datasets")
    for name in supported_datasets():
        make_dataset(name, str(root), n_classes=N_CLASSES, per_class=PER_CLASS)
    return root


def test_every_coop_dataset_can_be_fabricated_and_has_a_config():
    assert sorted(CLASSNAMES) == supported_datasets()
    config_dir = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "datasets")
    custom = {"image_folder", "csv_dataset"}  # your own data (tests/test_datasets_custom.py)
    custom |= set(TOY_DATASETS)  # drawn, not fabricated (tests/test_toyworld.py)
    assert sorted(f[:-5] for f in os.listdir(config_dir) if f[:-5] not in custom) == supported_datasets()
    for name in supported_datasets():
        cfg = get_cfg()
        cfg.merge_from_file(os.path.join(config_dir, name + ".yaml"))
        assert cfg.DATASET.NAME == registry_name(name)


@pytest.mark.parametrize("name", [n for n in CLASSNAMES if n not in VARIANTS])
def test_full_dataset_matches_the_files_and_coop_class_names(data_root, name):
    ds = build(data_root, name)
    folder = ds.dataset_dir
    train, val, test = expected_source(folder, name)
    assert rows(ds.train_x) == train
    assert rows(ds.val) == val
    assert rows(ds.test) == test
    assert ds.classnames == CLASSNAMES[name]
    assert ds.num_classes == len(CLASSNAMES[name])
    for item in ds.train_x + ds.val + ds.test:
        assert ds.lab2cname[item.label] == item.classname


@pytest.mark.parametrize("name", [n for n in CLASSNAMES if n not in VARIANTS])
def test_fewshot_images_for_seeds_1_2_3_follow_the_replayed_random_calls(data_root, name):
    full = build(data_root, name)
    for seed in (1, 2, 3):
        ds = build(data_root, name, shots=SHOTS, seed=seed)
        random.seed(seed)
        assert rows(ds.train_x) == replay_fewshot(rows(full.train_x), SHOTS)
        if name == "imagenet":  # no val split: the test set serves as val, untouched
            assert rows(ds.val) == rows(full.test)
        else:
            assert rows(ds.val) == replay_fewshot(rows(full.val), 4)
        assert rows(ds.test) == rows(full.test)
        cache = os.path.join(ds.dataset_dir, "split_fewshot", f"shot_{SHOTS}-seed_{seed}.json")
        assert os.path.isfile(cache)
        # a second run reads the cache: same images, and no random call is made
        again = build(data_root, name, shots=SHOTS, seed=seed)
        assert random.random() == random.Random(seed).random()
        assert rows(again.train_x) == rows(ds.train_x) and rows(again.val) == rows(ds.val)
    assert rows(build(data_root, name, shots=SHOTS, seed=2).train_x) != rows(
        build(data_root, name, shots=SHOTS, seed=1).train_x
    )


@pytest.mark.parametrize("name", [n for n in CLASSNAMES if n not in VARIANTS])
def test_base_and_new_classes_split_the_sorted_labels_and_relabel_from_zero(data_root, name):
    fewshot = build(data_root, name, shots=2, seed=1)
    n = fewshot.num_classes
    m = math.ceil(n / 2)
    for subsample, kept in (("base", range(m)), ("new", range(m, n))):
        ds = build(data_root, name, shots=2, seed=1, subsample=subsample)
        assert ds.classnames == [fewshot.classnames[y] for y in kept]
        relabel = {y: i for i, y in enumerate(kept)}
        for part, source in ((ds.train_x, fewshot.train_x), (ds.val, fewshot.val), (ds.test, fewshot.test)):
            assert rows(part) == [(p, relabel[y], c) for p, y, c in rows(source) if y in relabel]


def test_imagenet_variants_share_imagenets_label_space(data_root):
    imagenet = build(data_root, "imagenet", shots=2, seed=1)
    assert imagenet.val is imagenet.test
    with open(os.path.join(imagenet.dataset_dir, "split_fewshot", "shot_2-seed_1.json")) as f:
        assert "val" not in json.load(f)
    for name in VARIANTS:
        ds = build(data_root, name, shots=2, seed=1)  # NUM_SHOTS does not apply to test-only sets
        assert ds.val is None and ds.train_x is ds.test
        assert ds.classnames == CLASSNAMES[name]
        assert len(ds.test) == len(CLASSNAMES[name]) * PER_CLASS
        for local, global_label in enumerate(ds.imagenet_labels):
            assert ds.classnames[local] == imagenet.classnames[global_label]
    assert build(data_root, "imagenet_a").imagenet_labels == [1, 3]
    assert build(data_root, "imagenetv2").imagenet_labels == list(range(N_CLASSES))


def test_test_only_variants_list_every_image_in_their_class_folders(data_root):
    v2 = build(data_root, "imagenetv2")
    folder = os.path.join(v2.dataset_dir, "imagenetv2-matched-frequency-format-val")
    assert rows(v2.test) == [
        (os.path.join(folder, str(y), im), y, IMAGENET5[y])
        for y in range(N_CLASSES)
        for im in os.listdir(os.path.join(folder, str(y)))
    ]
    r = build(data_root, "imagenet_r")
    assert all("README" not in x.impath for x in r.test)
    assert {x.impath.split(os.sep)[-2] for x in r.test} == {"n01443537", "n01491361"}


def test_dataset_manager_builds_loaders_for_training_and_for_a_test_only_variant(data_root):
    from clipfit.engine import DataManager

    for name, shots in (("dtd", 2), ("imagenet_a", 0)):
        cfg = get_cfg()
        cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.DATASET.NUM_SHOTS = str(data_root), registry_name(name), shots
        cfg.INPUT.SIZE = (8, 8)
        cfg.DATALOADER.NUM_WORKERS = 0
        cfg.VERBOSE = False
        dm = DataManager(cfg)
        batch = next(iter(dm.test_loader))
        assert batch["img"].shape[-2:] == (8, 8)
        assert dm.num_classes == len(CLASSNAMES[name])


def test_coop_helper_names_stay_available_for_coop_style_loaders():
    from clipfit.data import fewshot, splits
    from datasets.dtd import DescribableTextures
    from datasets.imagenet import ImageNet, read_classnames
    from datasets.oxford_pets import OxfordPets

    assert OxfordPets.read_split is splits.read_split
    assert OxfordPets.save_split is splits.save_split
    assert OxfordPets.split_trainval is splits.split_trainval
    assert OxfordPets.subsample_classes is fewshot.subsample_classes
    assert DescribableTextures.read_and_split_data is splits.split_class_folders
    assert ImageNet.read_classnames is read_classnames


def test_every_loader_points_to_an_existing_datasets_md_section():
    from clipfit.engine import DATASET_REGISTRY

    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "DATASETS.md")) as f:
        headings = {line.lstrip("#").strip() for line in f if line.startswith("## ")}
    for name in supported_datasets() + ["ImageFolder", "CSVDataset"]:
        loader = DATASET_REGISTRY.get(registry_name(name) if name in supported_datasets() else name)
        assert loader.doc_section in headings, loader.__name__
        assert loader.layout.strip(), loader.__name__
