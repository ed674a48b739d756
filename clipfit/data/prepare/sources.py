"""Where every dataset file comes from and where it goes: the registry ``prepare`` works from.

The addresses are those of CoOp's DATASETS.md (KaiyangZhou/CoOp, commit ff61507, 8 Oct 2022),
or of the page it links where it names a page rather than a file. None of them could be
reached from the machines this project is built on; the sizes are approximate.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

GDRIVE = "gdrive:"  # url prefix of a Google Drive file id
CHECKSUMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "checksums.json")
IMAGENET_LOGIN = "https://image-net.org/download-images.php"


@dataclass(frozen=True)
class Source:
    """One file to fetch.

    ``step`` says what to do with it: ``"file"`` places it at ``provides[0]``; ``"extract"``
    extracts the members under the first of ``prefixes`` that holds every provided entry and
    moves each top entry below that prefix into the dataset folder (renamed by ``rename``);
    other steps are the ImageNet ones of :mod:`clipfit.data.prepare.layout`.
    ``provides`` are the paths (relative to the dataset folder) whose presence means done.
    """

    name: str  # the file name, also its name in a mirror
    url: str  # https://..., or gdrive:<file id>
    size: int  # approximate bytes (for --dry-run; the disk check uses the real sizes)
    provides: Tuple[str, ...]
    step: str = "extract"
    prefixes: Tuple[str, ...] = ("",)
    rename: Tuple[Tuple[str, str], ...] = ()
    manual: bool = False  # behind a licence or login: never downloaded from its official site
    shared: Tuple[str, ...] = ()  # the same file elsewhere under DATA, used before downloading


@dataclass(frozen=True)
class DatasetSpec:
    key: str  # config name (configs/datasets/<key>.yaml)
    registry: str  # DATASET.NAME
    folder: str  # the loader's dataset_dir
    section: str  # DATASETS.md section
    sources: Tuple[Source, ...]
    note: str = ""

    @property
    def manual(self) -> bool:
        return any(s.manual for s in self.sources)


def _split(registry: str, file_id: str, size: int = 2_000_000) -> Source:
    name = f"split_zhou_{registry}.json"
    return Source(name, GDRIVE + file_id, size, (name,), step="file")


def _classnames() -> Source:
    return Source(
        "classnames.txt",
        GDRIVE + "1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF",
        21_000,
        ("classnames.txt",),
        step="file",
        shared=("imagenet/classnames.txt",),
    )


def _archive(name: str, url: str, size: int, *provides: str, **kw) -> Source:
    return Source(name, url, size, tuple(provides), **kw)


VGG = "https://www.robots.ox.ac.uk/~vgg/data"
CARS = "http://ai.stanford.edu/~jkrause/car196"
BERKELEY = "https://people.eecs.berkeley.edu/~hendrycks"
IMAGENET_FILES = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"

SPECS: Tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "imagenet",
        "ImageNet",
        "imagenet",
        "ImageNet",
        (
            _classnames(),
            _archive(
                IMAGENET_FILES[0], IMAGENET_LOGIN, 147_897_477_120, "images/train", step="imagenet_train", manual=True
            ),
            _archive(IMAGENET_FILES[1], IMAGENET_LOGIN, 6_744_924_160, "images/val", step="imagenet_val", manual=True),
            # its validation labels sort the val images into class folders; nothing of it is kept
            _archive(IMAGENET_FILES[2], IMAGENET_LOGIN, 2_568_145, "images/val", step="imagenet_devkit", manual=True),
        ),
        note="needs a login at image-net.org",
    ),
    DatasetSpec(
        "caltech101",
        "Caltech101",
        "caltech-101",
        "Caltech101",
        (
            _archive(
                "101_ObjectCategories.tar.gz",
                "http://www.vision.caltech.edu/Image_Datasets/Caltech101/101_ObjectCategories.tar.gz",
                131_740_031,
                "101_ObjectCategories",
            ),
            _split("Caltech101", "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"),
        ),
    ),
    DatasetSpec(
        "oxford_pets",
        "OxfordPets",
        "oxford_pets",
        "OxfordPets",
        (
            _archive("images.tar.gz", f"{VGG}/pets/data/images.tar.gz", 791_918_971, "images"),
            _archive("annotations.tar.gz", f"{VGG}/pets/data/annotations.tar.gz", 19_173_078, "annotations"),
            _split("OxfordPets", "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"),
        ),
    ),
    DatasetSpec(
        "stanford_cars",
        "StanfordCars",
        "stanford_cars",
        "StanfordCars",
        (
            _archive("cars_train.tgz", f"{CARS}/cars_train.tgz", 979_269_282, "cars_train"),
            _archive("cars_test.tgz", f"{CARS}/cars_test.tgz", 977_350_468, "cars_test"),
            _archive("car_devkit.tgz", "https://ai.stanford.edu/~jkrause/cars/car_devkit.tgz", 330_960, "devkit"),
            Source(
                "cars_test_annos_withlabels.mat",
                f"{CARS}/cars_test_annos_withlabels.mat",
                185_758,
                ("cars_test_annos_withlabels.mat",),
                step="file",
            ),
            _split("StanfordCars", "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"),
        ),
        note="the Stanford page has been offline for years: use --mirror with a copy of these files",
    ),
    DatasetSpec(
        "oxford_flowers",
        "OxfordFlowers",
        "oxford_flowers",
        "Flowers102",
        (
            _archive("102flowers.tgz", f"{VGG}/flowers/102/102flowers.tgz", 344_862_509, "jpg"),
            Source("imagelabels.mat", f"{VGG}/flowers/102/imagelabels.mat", 502, ("imagelabels.mat",), step="file"),
            Source(
                "cat_to_name.json",
                GDRIVE + "1AkcxCXeK_RCGCEC_GvmWxjcjaNhu-at0",
                2_218,
                ("cat_to_name.json",),
                step="file",
            ),
            _split("OxfordFlowers", "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"),
        ),
    ),
    DatasetSpec(
        "food101",
        "Food101",
        "food-101",
        "Food101",
        (
            # the archive linked from the page CoOp names (data.vision.ee.ethz.ch/cvl/datasets_extra/food-101/)
            _archive(
                "food-101.tar.gz",
                "http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
                4_996_278_331,
                "images",
                "meta",
                prefixes=("food-101/",),
            ),
            _split("Food101", "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl", 8_000_000),
        ),
    ),
    DatasetSpec(
        "fgvc_aircraft",
        "FGVCAircraft",
        "fgvc_aircraft",
        "FGVCAircraft",
        (
            _archive(
                "fgvc-aircraft-2013b.tar.gz",
                f"{VGG}/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
                2_753_340_328,
                "images",
                "variants.txt",
                "images_variant_train.txt",
                "images_variant_val.txt",
                "images_variant_test.txt",
                prefixes=("fgvc-aircraft-2013b/data/",),
            ),
        ),
    ),
    DatasetSpec(
        "sun397",
        "SUN397",
        "sun397",
        "SUN397",
        (
            _archive(
                "SUN397.tar.gz", "http://vision.princeton.edu/projects/2010/SUN/SUN397.tar.gz", 37_000_000_000, "SUN397"
            ),
            _archive(
                "Partitions.zip",
                "https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip",
                1_200_000,
                "ClassName.txt",
                "Training_01.txt",
                "Testing_01.txt",
                prefixes=("", "Partitions/"),  # flat or in one folder: not checked online
            ),
            _split("SUN397", "1y2RD81BYuiyvebdN-JymPfyWYcd8_MUq", 4_000_000),
        ),
    ),
    DatasetSpec(
        "dtd",
        "DescribableTextures",
        "dtd",
        "DTD",
        (
            _archive(
                "dtd-r1.0.1.tar.gz",
                f"{VGG}/dtd/download/dtd-r1.0.1.tar.gz",
                625_239_812,
                "images",
                "imdb",
                "labels",
                prefixes=("dtd/",),
            ),
            _split("DescribableTextures", "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"),
        ),
    ),
    DatasetSpec(
        "eurosat",
        "EuroSAT",
        "eurosat",
        "EuroSAT",
        (
            # the later release (Zenodo) names the folder EuroSAT_RGB/: renamed to CoOp's 2750/
            _archive(
                "EuroSAT.zip",
                "http://madm.dfki.de/files/sentinel/EuroSAT.zip",
                94_280_567,
                "2750",
                rename=(("EuroSAT_RGB", "2750"),),
            ),
            _split("EuroSAT", "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"),
        ),
    ),
    DatasetSpec(
        "ucf101",
        "UCF101",
        "ucf101",
        "UCF101",
        (
            _archive(
                "UCF-101-midframes.zip", GDRIVE + "10Jqome3vtUA2keJkNanAiFpgbyC9Hc2O", 200_000_000, "UCF-101-midframes"
            ),
            _split("UCF101", "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"),
        ),
    ),
    DatasetSpec(
        "imagenetv2",
        "ImageNetV2",
        "imagenetv2",
        "ImageNetV2",
        (
            _archive(
                "imagenetv2-matched-frequency.tar.gz",
                "https://s3-us-west-2.amazonaws.com/imagenetv2public/imagenetv2-matched-frequency.tar.gz",
                1_260_000_000,
                "imagenetv2-matched-frequency-format-val",
            ),
            _classnames(),
        ),
    ),
    DatasetSpec(
        "imagenet_sketch",
        "ImageNetSketch",
        "imagenet-sketch",
        "ImageNet-Sketch",
        (
            # the Google Drive file of github.com/HaohanWang/ImageNet-Sketch (the page CoOp names)
            _archive(
                "ImageNet-Sketch.zip",
                GDRIVE + "1Mj0i5HBthqH1p_yeXzsg22gZduvgoNeA",
                7_800_000_000,  # "zip file is 7.8 GB" (the repository's README)
                "images",
                rename=(("sketch", "images"),),
            ),
            _classnames(),
        ),
    ),
    DatasetSpec(
        "imagenet_a",
        "ImageNetA",
        "imagenet-adversarial",
        "ImageNet-A",
        (
            # linked from github.com/hendrycks/natural-adv-examples (the page CoOp names)
            _archive("imagenet-a.tar", f"{BERKELEY}/imagenet-a.tar", 687_000_000, "imagenet-a"),
            _classnames(),
        ),
    ),
    DatasetSpec(
        "imagenet_r",
        "ImageNetR",
        "imagenet-rendition",
        "ImageNet-R",
        (
            # linked from github.com/hendrycks/imagenet-r (the page CoOp names)
            _archive("imagenet-r.tar", f"{BERKELEY}/imagenet-r.tar", 2_100_000_000, "imagenet-r"),
            _classnames(),
        ),
    ),
)

BY_KEY: Dict[str, DatasetSpec] = {s.key: s for s in SPECS}


def find_spec(name: str) -> DatasetSpec:
    """A dataset by config name (``dtd``), registry name (``DescribableTextures``) or folder (``food-101``)."""
    for spec in SPECS:
        if name in (spec.key, spec.registry, spec.folder):
            return spec
    raise SystemExit(f"Unknown dataset {name!r}; use one of: {', '.join(BY_KEY)} (or all).")


def downloadable() -> Tuple[DatasetSpec, ...]:
    """What ``all`` means: every dataset that needs no licence or login."""
    return tuple(s for s in SPECS if not s.manual)


def load_checksums(extra: Optional[str] = None) -> Dict[str, str]:
    """SHA-256 per file name: the project's ``checksums.json``, updated by the JSON file ``extra``."""
    table: Dict[str, str] = {}
    for path in (CHECKSUMS, extra):
        if not path:
            continue
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"Cannot read the checksum file {path}: {e}. It must map file names to SHA-256.")
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise SystemExit(f"{path} must be a JSON object of file name -> SHA-256 hex string.")
        table.update({k: v.lower() for k, v in data.items() if not k.startswith("_")})
    return table
