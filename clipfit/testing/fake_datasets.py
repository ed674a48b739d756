"""Fabricate the on-disk layout of each CoOp dataset with a few tiny images per class.

``make_dataset("dtd", root, n_classes=4, per_class=10)`` writes ``<root>/dtd/`` exactly as
DATASETS.md lays it out: class folders of 8x8 JPEGs, CoOp's split file (unless
``with_split=False``, so that the loader must create it) and the annotation files
(``.mat``, ``.txt``, ``.json``) the loader reads. Class names are real ones (the first
``n_classes`` of each dataset), so renaming rules are exercised. Only a private
``random.Random(seed)`` is used: the global random state, which selects few-shot images,
is left alone.

Per class, ``per_class`` images are split 50/20/30 into train/val/test (the written
split file), and the test part is the dataset's official test list where it has one.
ImageNet gets ``per_class`` train and ``max(1, per_class // 2)`` val images per class;
ImageNet-A and -R hold every other class of the ImageNet list (their labels differ from
ImageNet's, as in the real 200-class subsets).
"""

from __future__ import annotations

import os
import random
import re
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import numpy as np
from PIL import Image
from scipy.io import savemat

from clipfit.fileio import write_json

Row = Tuple[str, int, str]
T = TypeVar("T")

# The first classes of each dataset, with their real names.
# fmt: off
DTD = ["banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked", "crosshatched",
       "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy", "grid", "grooved"]
CALTECH = ["accordion", "airplanes", "Faces", "Leopards", "Motorbikes", "anchor", "ant", "barrel", "bass",
           "beaver", "binocular", "bonsai", "brain", "brontosaurus"]
CALTECH_IGNORED = ["BACKGROUND_Google", "Faces_easy"]
EUROSAT = [("AnnualCrop", "Annual Crop Land"), ("Forest", "Forest"),  # (folder, name in CoOp's split)
           ("HerbaceousVegetation", "Herbaceous Vegetation Land"), ("Highway", "Highway or Road"),
           ("Industrial", "Industrial Buildings"), ("Pasture", "Pasture Land"),
           ("PermanentCrop", "Permanent Crop Land"), ("Residential", "Residential Buildings"),
           ("River", "River"), ("SeaLake", "Sea or Lake")]
FOOD = ["apple_pie", "baby_back_ribs", "baklava", "beef_carpaccio", "beef_tartare", "beet_salad",
        "beignets", "bibimbap", "bread_pudding", "breakfast_burrito"]
PETS = [("Abyssinian", 1), ("american_bulldog", 2), ("american_pit_bull_terrier", 2), ("basset_hound", 2),
        ("beagle", 2), ("Bengal", 1), ("Birman", 1), ("Bombay", 1), ("boxer", 2), ("British_Shorthair", 1)]
CARS = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012", "Acura TL Type-S 2008",
        "Acura TSX Sedan 2012", "Acura Integra Type R 2001", "Acura ZDX Hatchback 2012",
        "Aston Martin V8 Vantage Convertible 2012"]
FLOWERS = ["pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea", "english marigold",
           "tiger lily", "moon orchid", "bird of paradise", "monkshood", "globe thistle"]
AIRCRAFT = ["707-320", "Cessna 172", "727-200", "F-16A/B", "737-300", "Falcon 2000", "DC-10", "Tu-134"]
SUN = ["a/abbey", "a/airplane_cabin", "a/apartment_building/outdoor", "b/badlands", "b/bakery/shop",
       "c/castle", "c/church/indoor", "d/dam", "f/forest/broadleaf", "k/kitchen"]
UCF = ["ApplyEyeMakeup", "ApplyLipstick", "Archery", "BabyCrawling", "BalanceBeam", "BandMarching",
       "BaseballPitch", "Basketball", "YoYo", "PlayingDaf"]
IMAGENET = [("n01440764", "tench"), ("n01443537", "goldfish"), ("n01484850", "great white shark"),
            ("n01491361", "tiger shark"), ("n01494475", "hammerhead shark"), ("n01496331", "electric ray"),
            ("n01498041", "stingray"), ("n01514668", "rooster"), ("n01514859", "hen"), ("n01518878", "ostrich")]
# fmt: on

DEFAULT_CLASSES = 4
IMAGENET_DEFAULT_CLASSES = 6


class _Maker:
    """Writes one dataset: tiny images, split rows and text files, with a private RNG."""

    def __init__(self, folder: str, seed: int, image_size: int):
        self.folder = folder
        self.rng = random.Random(seed)
        self.image_size = image_size
        self.count = 0

    def image(self, relpath: str) -> str:
        """Write a tiny JPEG (colour from the private RNG) at ``relpath``; return ``relpath``."""
        path = os.path.join(self.folder, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        colour = tuple(self.rng.randrange(256) for _ in range(3))
        Image.new("RGB", (self.image_size, self.image_size), colour).save(path, format="JPEG")
        self.count += 1
        return relpath

    def text(self, relpath: str, lines: Sequence[str], newline: str = "\n") -> None:
        path = os.path.join(self.folder, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", newline="") as f:
            f.write("".join(line + newline for line in lines))

    def json(self, relpath: str, obj: object) -> None:
        write_json(os.path.join(self.folder, relpath), obj, indent=4)

    def parts(self, items: List[str]) -> Tuple[List[str], List[str], List[str]]:
        """Shuffle one class's images (private RNG) and cut 50/20/30 into train/val/test."""
        items = list(items)
        self.rng.shuffle(items)
        n_val = max(1, len(items) // 5)
        n_test = max(1, (len(items) * 3) // 10)
        n_train = len(items) - n_val - n_test
        if n_train < 1:
            raise ValueError(f"per_class must be at least 3, got {len(items)}")
        return items[:n_train], items[n_train : n_train + n_val], items[n_train + n_val :]

    def split_file(self, name: str, train: List[Row], val: List[Row], test: List[Row]) -> None:
        """CoOp's ``split_zhou_<name>.json``."""
        self.json(f"split_zhou_{name}.json", {"train": train, "val": val, "test": test})


def _extend_parts(targets: Sequence[List[T]], parts: Sequence[List[str]], make: Callable[[str], T]) -> None:
    """Append ``make(x)`` for each item ``x`` of the train, val and test ``parts`` to the matching target."""
    for target, chosen in zip(targets, parts):
        target.extend(make(x) for x in chosen)


def _pick(names: Sequence, n_classes: Optional[int], default: int, synth: Callable[[int], object]) -> List:
    n = default if n_classes is None else n_classes
    if n < 2:
        raise ValueError(f"n_classes must be at least 2, got {n}")
    return [names[i] if i < len(names) else synth(i) for i in range(n)]


def _class_folders(
    m: _Maker,
    image_folder: str,
    names: Dict[str, str],
    per_class: int,
    split_name: Optional[str],
    extra: Sequence[str] = (),
) -> None:
    """``<image_folder>/<folder>/<folder>_<i>.jpg`` per class folder (labelled in sorted order, named
    by ``names``) and per ``extra`` folder (not a class); CoOp's split file unless ``split_name`` is None.
    """
    labels = {folder: i for i, folder in enumerate(sorted(names))}
    rows: Tuple[List[Row], List[Row], List[Row]] = ([], [], [])
    for folder in list(names) + list(extra):
        paths = [m.image(f"{image_folder}/{folder}/{folder}_{i + 1:04d}.jpg") for i in range(per_class)]
        if folder not in labels:
            continue
        label, name = labels[folder], names[folder]
        _extend_parts(rows, m.parts(paths), lambda p: (os.path.relpath(p, image_folder), label, name))
    if split_name:
        m.split_file(split_name, *rows)


def _dtd(m: _Maker, n: Optional[int], per_class: int, with_split: bool) -> None:
    names = {c: c for c in _pick(DTD, n, DEFAULT_CLASSES, lambda i: f"texture{i:02d}")}
    _class_folders(m, "images", names, per_class, "DescribableTextures" if with_split else None)
    for sub in ("imdb", "labels"):
        os.makedirs(os.path.join(m.folder, sub))


def _caltech101(m: _Maker, n: Optional[int], per_class: int, with_split: bool) -> None:
    renamed = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}
    names = {c: renamed.get(c, c) for c in _pick(CALTECH, n, 6, lambda i: f"object{i:03d}")}
    _class_folders(
        m,
        "101_ObjectCategories",
        names,
        per_class,
        "Caltech101" if with_split else None,
        extra=CALTECH_IGNORED,
    )


def _eurosat(m: _Maker, n: Optional[int], per_class: int, with_split: bool) -> None:
    if n is not None and n > len(EUROSAT):
        raise ValueError(f"EuroSAT has {len(EUROSAT)} classes, asked for {n}")
    names = dict(_pick(EUROSAT, n, DEFAULT_CLASSES, str))
    _class_folders(m, "2750", names, per_class, "EuroSAT" if with_split else None)


def _food101(m: _Maker, n: Optional[int], per_class: int, with_split: bool) -> None:
    names = {c: c for c in _pick(FOOD, n, DEFAULT_CLASSES, lambda i: f"dish_{i:03d}")}
    _class_folders(m, "images", names, per_class, "Food101" if with_split else None)
    m.text("meta/classes.txt", sorted(names))


def _oxford_pets(m: _Maker, n: Optional[int], per_class: int, with_split: bool) -> None:
    breeds = _pick(PETS, n, DEFAULT_CLASSES, lambda i: (f"breed{i:02d}", 2))
    trainval, test, rows = [], [], ([], [], [])
    species_count: Dict[int, int] = {}
    for label, (breed, species) in enumerate(breeds):
        species_count[species] = species_count.get(species, 0) + 1
        names = [f"{breed}_{i + 1}" for i in range(per_class)]
        for name in names:
            m.image(f"images/{name}.jpg")
        parts = m.parts(names)
        line = lambda name: f"{name} {label + 1} {species} {species_count[species]}"  # noqa: E731
        trainval.extend(line(x) for x in sorted(parts[0] + parts[1]))
        test.extend(line(x) for x in sorted(parts[2]))
        _extend_parts(rows, parts, lambda x: (f"{x}.jpg", label, breed.lower()))
    m.text("annotations/trainval.txt", trainval)
    m.text("annotations/test.txt", test)
    if with_split:
        m.split_file("OxfordPets", *rows)


def _stanford_cars(m: _Maker, n: Optional[int], per_class: int, with_split: bool) -> None:
    names = _pick(CARS, n, DEFAULT_CLASSES, lambda i: f"Make Model{i:03d} Sedan 20{i % 20:02d}")
    train_pool, test_pool = [], []  # (label, split part) per image
    for label in range(len(names)):
        train, val, test = m.parts(list(range(per_class)))
        train_pool += [(label, "train")] * len(train) + [(label, "val")] * len(val)
        test_pool += [(label, "test")] * len(test)
    # images are numbered across classes in a shuffled order, as in the real annotations
    pool = {"cars_train": train_pool, "cars_test": test_pool}
    rows: Dict[str, List[Row]] = {"train": [], "val": [], "test": []}
    dtype = [
        ("bbox_x1", "O"),
        ("bbox_y1", "O"),
        ("bbox_x2", "O"),
        ("bbox_y2", "O"),
        ("class", "O"),
        ("fname", "O"),
    ]
    for folder, entries in pool.items():
        m.rng.shuffle(entries)
        annos = np.zeros((1, len(entries)), dtype=dtype)
        for i, (label, part) in enumerate(entries):
            fname = f"{i + 1:05d}.jpg"
            m.image(f"{folder}/{fname}")
            box = np.array([[1]], dtype=np.uint8)
            annos[0, i] = (box, box, box, box, np.array([[label + 1]], dtype=np.uint8), fname)
            words = names[label].split(" ")
            rows[part].append((f"{folder}/{fname}", label, " ".join([words[-1]] + words[:-1])))
        target = "devkit/cars_train_annos.mat" if folder == "cars_train" else "cars_test_annos_withlabels.mat"
        os.makedirs(os.path.dirname(os.path.join(m.folder, target)), exist_ok=True)
        savemat(os.path.join(m.folder, target), {"annotations": annos})
    meta = np.empty((1, len(names)), dtype=object)
    for i, name in enumerate(names):
        meta[0, i] = name
    savemat(os.path.join(m.folder, "devkit/cars_meta.mat"), {"class_names": meta})
    if with_split:
        m.split_file("StanfordCars", rows["train"], rows["val"], rows["test"])


def _oxford_flowers(m: _Maker, n: Optional[int], per_class: int, with_split: bool) -> None:
    names = _pick(FLOWERS, n, DEFAULT_CLASSES, lambda i: f"flower {i:03d}")
    labels = [y for y in range(1, len(names) + 1) for _ in range(per_class)]
    m.rng.shuffle(labels)  # images of one class are scattered, as in imagelabels.mat
    by_label: Dict[int, List[str]] = {}
    for i, y in enumerate(labels):
        by_label.setdefault(y, []).append(m.image(f"jpg/image_{i + 1:05d}.jpg"))
    savemat(os.path.join(m.folder, "imagelabels.mat"), {"labels": np.array([labels], dtype=np.uint8)})
    m.json("cat_to_name.json", {str(y): name for y, name in enumerate(names, start=1)})
    if with_split:
        rows = ([], [], [])
        for y in sorted(by_label):
            _extend_parts(rows, m.parts(by_label[y]), lambda p: (os.path.relpath(p, "jpg"), y - 1, names[y - 1]))
        m.split_file("OxfordFlowers", *rows)


def _fgvc_aircraft(m: _Maker, n: Optional[int], per_class: int, with_split: bool) -> None:
    variants = _pick(AIRCRAFT, n, DEFAULT_CLASSES, lambda i: f"Model {i:03d}")
    lists: Tuple[List[str], List[str], List[str]] = ([], [], [])
    ids = m.rng.sample(range(1000000, 9999999), len(variants) * per_class)
    for y, variant in enumerate(variants):
        mine = [str(ids.pop()) for _ in range(per_class)]
        for imid in mine:
            m.image(f"images/{imid}.jpg")
        _extend_parts(lists, m.parts(mine), lambda imid: f"{imid} {variant}")
    m.text("variants.txt", variants)
    for part, lines in zip(("train", "val", "test"), lists):
        m.text(f"images_variant_{part}.txt", sorted(lines))


def _sun397(m: _Maker, n: Optional[int], per_class: int, with_split: bool) -> None:
    categories = _pick(SUN, n, DEFAULT_CLASSES, lambda i: f"z/zone_{i:03d}")
    trainval, test, rows = [], [], ([], [], [])
    for y, cat in enumerate(categories):
        paths = [m.image(f"SUN397/{cat}/sun_{m.rng.getrandbits(48):012x}.jpg") for _ in range(per_class)]
        parts = m.parts([os.path.relpath(p, "SUN397") for p in paths])
        trainval.extend("/" + p for p in parts[0] + parts[1])
        test.extend("/" + p for p in parts[2])
        name = " ".join(cat.split("/")[1:][::-1])
        _extend_parts(rows, parts, lambda p: (p, y, name))
    m.text("ClassName.txt", ["/" + c for c in categories])
    m.text("Training_01.txt", trainval)
    m.text("Testing_01.txt", test)
    if with_split:
        m.split_file("SUN397", *rows)


def _ucf101(m: _Maker, n: Optional[int], per_class: int, with_split: bool) -> None:
    actions = _pick(UCF, n, DEFAULT_CLASSES, lambda i: f"ActionNumber{i:03d}")
    train_lines, test_lines, rows = [], [], ([], [], [])
    for y, action in enumerate(actions):
        renamed = "_".join(re.findall("[A-Z][^A-Z]*", action))
        videos = [f"v_{action}_g{i // 2 + 1:02d}_c{i % 2 + 1:02d}" for i in range(per_class)]
        for v in videos:
            m.image(f"UCF-101-midframes/{renamed}/{v}.jpg")
        parts = m.parts(videos)
        train_lines.extend(f"{action}/{v}.avi {y + 1}" for v in sorted(parts[0] + parts[1]))
        test_lines.extend(f"{action}/{v}.avi" for v in sorted(parts[2]))
        _extend_parts(rows, parts, lambda v: (f"{renamed}/{v}.jpg", y, renamed))
    # the official lists have Windows line ends
    m.text("ucfTrainTestlist/classInd.txt", [f"{y + 1} {a}" for y, a in enumerate(actions)], newline="\r\n")
    m.text("ucfTrainTestlist/trainlist01.txt", train_lines, newline="\r\n")
    m.text("ucfTrainTestlist/testlist01.txt", test_lines, newline="\r\n")
    if with_split:
        m.split_file("UCF101", *rows)


def _imagenet_classes(n: Optional[int]) -> List[Tuple[str, str]]:
    return _pick(IMAGENET, n, IMAGENET_DEFAULT_CLASSES, lambda i: (f"n{2000000 + i:08d}", f"object {i}"))


def _classnames_txt(m: _Maker, classes: List[Tuple[str, str]]) -> None:
    m.text("classnames.txt", [f"{wnid} {name}" for wnid, name in classes])


def _imagenet(m: _Maker, n: Optional[int], per_class: int, with_split: bool) -> None:
    classes = _imagenet_classes(n)
    for wnid, _ in classes:
        for i in range(per_class):
            m.image(f"images/train/{wnid}/{wnid}_{m.rng.getrandbits(24)}_{i}.JPEG")
        for _ in range(max(1, per_class // 2)):
            m.image(f"images/val/{wnid}/ILSVRC2012_val_{m.count:08d}.JPEG")
    _classnames_txt(m, classes)


def _variant(image_folder: str, subset: bool, name: Callable[[int, str, int], str]) -> Callable:
    def make(m: _Maker, n: Optional[int], per_class: int, with_split: bool) -> None:
        classes = _imagenet_classes(n)
        for label, (wnid, _) in enumerate(classes):
            if subset and label % 2 == 0:  # ImageNet-A/-R keep every other class
                continue
            for i in range(per_class):
                m.image(f"{image_folder}/{name(label, wnid, i)}")
        if subset:
            m.text(f"{image_folder}/README.txt", ["a tiny fabricated copy"])
        _classnames_txt(m, classes)

    return make


MAKERS: Dict[str, Tuple[str, str, Callable]] = {  # config name -> (registry name, folder, maker)
    "caltech101": ("Caltech101", "caltech-101", _caltech101),
    "dtd": ("DescribableTextures", "dtd", _dtd),
    "eurosat": ("EuroSAT", "eurosat", _eurosat),
    "fgvc_aircraft": ("FGVCAircraft", "fgvc_aircraft", _fgvc_aircraft),
    "food101": ("Food101", "food-101", _food101),
    "imagenet": ("ImageNet", "imagenet", _imagenet),
    "imagenet_a": (
        "ImageNetA",
        "imagenet-adversarial",
        _variant("imagenet-a", True, lambda y, w, i: f"{w}/{i:06d}.jpg"),
    ),
    "imagenet_r": (
        "ImageNetR",
        "imagenet-rendition",
        _variant("imagenet-r", True, lambda y, w, i: f"{w}/art_{i}.jpg"),
    ),
    "imagenet_sketch": (
        "ImageNetSketch",
        "imagenet-sketch",
        _variant("images", False, lambda y, w, i: f"{w}/sketch_{i}.JPEG"),
    ),
    "imagenetv2": (
        "ImageNetV2",
        "imagenetv2",
        _variant("imagenetv2-matched-frequency-format-val", False, lambda y, w, i: f"{y}/{i:040x}.jpeg"),
    ),
    "oxford_flowers": ("OxfordFlowers", "oxford_flowers", _oxford_flowers),
    "oxford_pets": ("OxfordPets", "oxford_pets", _oxford_pets),
    "stanford_cars": ("StanfordCars", "stanford_cars", _stanford_cars),
    "sun397": ("SUN397", "sun397", _sun397),
    "ucf101": ("UCF101", "ucf101", _ucf101),
}


def supported_datasets() -> List[str]:
    """Names ``make_dataset`` accepts: CoOp's config names (``configs/datasets/<name>.yaml``)."""
    return sorted(MAKERS)


def registry_name(name: str) -> str:
    """The ``DATASET.NAME`` of a config name, e.g. ``"dtd"`` -> ``"DescribableTextures"``."""
    return MAKERS[_config_name(name)][0]


def _config_name(name: str) -> str:
    if name in MAKERS:
        return name
    for key, (registry, _, _) in MAKERS.items():
        if registry == name:
            return key
    raise ValueError(f"Unknown dataset {name!r}; supported: {', '.join(supported_datasets())}")


def make_dataset(
    name: str,
    root: str,
    n_classes: Optional[int] = None,
    per_class: int = 10,
    with_split: bool = True,
    seed: int = 0,
    image_size: int = 8,
) -> str:
    """Fabricate dataset ``name`` (config or registry name) under ``root``; return its folder.

    ``n_classes`` defaults to 4 (6 for Caltech101 and the ImageNet family); ``with_split``
    writes CoOp's ``split_zhou_*.json`` where the dataset has one. The folder must not exist.
    """
    key = _config_name(name)
    _, folder_name, maker = MAKERS[key]
    folder = os.path.join(root, folder_name)
    if os.path.exists(folder):
        raise FileExistsError(f"{folder} already exists; make_dataset needs a fresh folder")
    os.makedirs(folder)
    maker(_Maker(folder, seed, image_size), n_classes, per_class, with_split)
    return folder
