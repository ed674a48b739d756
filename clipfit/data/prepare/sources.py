"""Where every dataset file comes from and where it goes: the registry ``prepare`` works from.

The facts about each file (its addresses in the order they are tried, where each comes from,
its checksum and its size) are data, in ``sources.json``; this module adds what ``prepare``
does with each file (the layout the loaders read). The maintained addresses are those
torchvision's dataset classes download (a test compares them with the installed torchvision);
CoOp's DATASETS.md (KaiyangZhou/CoOp, commit ff61507, 8 Oct 2022) gives the others.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from clipfit.training.config import closest_key

GDRIVE = "gdrive:"  # url prefix of a Google Drive file id
SOURCES_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sources.json")
IMAGENET_LOGIN = "https://image-net.org/download-images.php"
HEX_LENGTH = {"md5": 32, "sha256": 64}
CHECKSUM_NAME = {"md5": "MD5", "sha256": "SHA-256"}


@dataclass(frozen=True)
class Checksum:
    """An expected digest: MD5 where upstream publishes one, SHA-256 where this project records one."""

    algorithm: str  # md5 or sha256
    value: str
    source: str  # where the value comes from

    @property
    def kind(self) -> str:
        return "published" if self.algorithm == "md5" else "recorded"

    def describe(self) -> str:
        return f"{CHECKSUM_NAME[self.algorithm]} {self.value} ({self.kind}: {self.source})"


@dataclass(frozen=True)
class Address:
    url: str  # https://..., or gdrive:<file id>
    source: str  # where the address comes from


@dataclass(frozen=True)
class FileFacts:
    """What ``sources.json`` says about one file."""

    name: str
    size: int  # approximate bytes (for --dry-run; the disk check uses the real sizes)
    addresses: Tuple[Address, ...]
    checksum: Optional[Checksum] = None
    torchvision: str = ""  # the torchvision.datasets class that downloads the same file
    holds: Tuple[Tuple[str, str], ...] = ()  # (file name, member of this archive that is that file)


def _facts(name: str, entry: dict, path: str) -> FileFacts:
    """One entry of ``sources.json``, checked."""
    where = f"{path}, file {name!r}"
    try:
        addresses = tuple(Address(a["url"], a["source"]) for a in entry["addresses"])
        size = int(entry["size"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: needs size and addresses of {{url, source}} ({e!r}).") from e
    algorithms = [a for a in HEX_LENGTH if a in entry]
    if not addresses or len(algorithms) > 1:
        raise ValueError(f"{where}: needs at least one address and at most one of md5, sha256.")
    checksum = None
    if algorithms:
        algorithm = algorithms[0]
        value = str(entry[algorithm]).lower()
        if not re.fullmatch(f"[0-9a-f]{{{HEX_LENGTH[algorithm]}}}", value) or not entry.get("checksum_source"):
            raise ValueError(f"{where}: {algorithm} must be {HEX_LENGTH[algorithm]} hex digits, with checksum_source.")
        checksum = Checksum(algorithm, value, entry["checksum_source"])
    holds = tuple(sorted(entry.get("holds", {}).items()))
    return FileFacts(name, size, addresses, checksum, entry.get("torchvision", ""), holds)


def load_files(path: str = SOURCES_JSON) -> Dict[str, FileFacts]:
    """Every file of ``sources.json`` by name."""
    with open(path) as f:
        data = json.load(f)
    return {name: _facts(name, entry, path) for name, entry in data["files"].items()}


FILES: Dict[str, FileFacts] = load_files()


@dataclass(frozen=True)
class Source:
    """One file a dataset needs (its facts: ``FILES[name]``).

    ``step`` says what to do with it: ``"file"`` places it at ``provides[0]``; ``"extract"``
    extracts the members under the first of ``prefixes`` that holds every provided entry and
    moves each top entry below that prefix into the dataset folder (renamed by ``rename``);
    other steps are the ImageNet ones of :mod:`clipfit.data.prepare.layout`.
    ``provides`` are the paths (relative to the dataset folder) whose presence means done.
    ``copies`` are the files that can stand for it, in the order tried (default: itself): an
    archive that holds it (``FileFacts.holds``) or another release with the same step.
    """

    name: str  # the file name, also its name in a mirror
    provides: Tuple[str, ...]
    step: str = "extract"
    prefixes: Tuple[str, ...] = ("",)
    rename: Tuple[Tuple[str, str], ...] = ()
    manual: bool = False  # behind a licence or login: never downloaded from its official site
    shared: Tuple[str, ...] = ()  # the same file elsewhere under DATA, used before downloading
    copies: Tuple[str, ...] = ()

    @property
    def names(self) -> Tuple[str, ...]:
        """The file names that can provide this file, in the order tried."""
        return self.copies or (self.name,)

    @property
    def size(self) -> int:
        return FILES[self.name].size


@dataclass(frozen=True)
class DatasetSpec:
    key: str  # config name (configs/datasets/<key>.yaml)
    registry: str  # DATASET.NAME
    folder: str  # the loader's dataset_dir
    section: str  # DATASETS.md section
    sources: Tuple[Source, ...]
    reads: Tuple[str, ...]  # the entries the loader reads (with CoOp's split file present)
    note: str = ""

    @property
    def manual(self) -> bool:
        return any(s.manual for s in self.sources)


def _split(registry: str) -> Source:
    name = f"split_zhou_{registry}.json"
    return Source(name, (name,), step="file")


def _classnames() -> Source:
    return Source("classnames.txt", ("classnames.txt",), step="file", shared=("imagenet/classnames.txt",))


def _archive(name: str, *provides: str, **kw) -> Source:
    return Source(name, tuple(provides), **kw)


FGVC_FILES = ("images", "variants.txt", "images_variant_train.txt", "images_variant_val.txt", "images_variant_test.txt")
IMAGENET_FILES = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", "ILSVRC2012_devkit_t12.tar.gz"

SPECS: Tuple[DatasetSpec, ...] = (
    DatasetSpec(
        "imagenet",
        "ImageNet",
        "imagenet",
        "ImageNet",
        (
            _classnames(),
            _archive(IMAGENET_FILES[0], "images/train", step="imagenet_train", manual=True),
            _archive(IMAGENET_FILES[1], "images/val", step="imagenet_val", manual=True),
            # its validation labels sort the val images into class folders; nothing of it is kept
            _archive(IMAGENET_FILES[2], "images/val", step="imagenet_devkit", manual=True),
        ),
        ("images/train", "images/val", "classnames.txt"),
        note="needs a login at image-net.org",
    ),
    DatasetSpec(
        "caltech101",
        "Caltech101",
        "caltech-101",
        "Caltech101",
        (
            # data.caltech.edu's caltech-101.zip holds the tarball CoOp's address served
            _archive(
                "101_ObjectCategories.tar.gz",
                "101_ObjectCategories",
                copies=("caltech-101.zip", "101_ObjectCategories.tar.gz"),
            ),
            _split("Caltech101"),
        ),
        ("101_ObjectCategories", "split_zhou_Caltech101.json"),
    ),
    DatasetSpec(
        "oxford_pets",
        "OxfordPets",
        "oxford_pets",
        "OxfordPets",
        (_archive("images.tar.gz", "images"), _archive("annotations.tar.gz", "annotations"), _split("OxfordPets")),
        ("images", "split_zhou_OxfordPets.json"),
    ),
    DatasetSpec(
        "stanford_cars",
        "StanfordCars",
        "stanford_cars",
        "StanfordCars",
        (
            _archive("cars_train.tgz", "cars_train"),
            _archive("cars_test.tgz", "cars_test"),
            _archive("car_devkit.tgz", "devkit"),
            Source("cars_test_annos_withlabels.mat", ("cars_test_annos_withlabels.mat",), step="file"),
            _split("StanfordCars"),
        ),
        ("cars_train", "cars_test", "split_zhou_StanfordCars.json"),
        note="its page has been offline for years: use --mirror with a copy (DATASETS.md)",
    ),
    DatasetSpec(
        "oxford_flowers",
        "OxfordFlowers",
        "oxford_flowers",
        "Flowers102",
        (
            _archive("102flowers.tgz", "jpg"),
            Source("imagelabels.mat", ("imagelabels.mat",), step="file"),
            Source("cat_to_name.json", ("cat_to_name.json",), step="file"),
            _split("OxfordFlowers"),
        ),
        ("jpg", "split_zhou_OxfordFlowers.json"),
    ),
    DatasetSpec(
        "food101",
        "Food101",
        "food-101",
        "Food101",
        (_archive("food-101.tar.gz", "images", "meta", prefixes=("food-101/",)), _split("Food101")),
        ("images", "split_zhou_Food101.json"),
    ),
    DatasetSpec(
        "fgvc_aircraft",
        "FGVCAircraft",
        "fgvc_aircraft",
        "FGVCAircraft",
        (
            _archive(
                "fgvc-aircraft-2013b.tar.gz",
                *FGVC_FILES,
                prefixes=("fgvc-aircraft-2013b/data/",),
            ),
        ),
        FGVC_FILES,
    ),
    DatasetSpec(
        "sun397",
        "SUN397",
        "sun397",
        "SUN397",
        (
            _archive("SUN397.tar.gz", "SUN397"),
            _archive(
                "Partitions.zip",
                "ClassName.txt",
                "Training_01.txt",
                "Testing_01.txt",
                prefixes=("", "Partitions/"),  # flat or in one folder: not checked online
            ),
            _split("SUN397"),
        ),
        ("SUN397", "split_zhou_SUN397.json"),
    ),
    DatasetSpec(
        "dtd",
        "DescribableTextures",
        "dtd",
        "DTD",
        (_archive("dtd-r1.0.1.tar.gz", "images", "imdb", "labels", prefixes=("dtd/",)), _split("DescribableTextures")),
        ("images", "split_zhou_DescribableTextures.json"),
    ),
    DatasetSpec(
        "eurosat",
        "EuroSAT",
        "eurosat",
        "EuroSAT",
        (
            # the authors' later release (Zenodo) names the folder EuroSAT_RGB/: renamed to CoOp's 2750/
            _archive(
                "EuroSAT.zip", "2750", rename=(("EuroSAT_RGB", "2750"),), copies=("EuroSAT.zip", "EuroSAT_RGB.zip")
            ),
            _split("EuroSAT"),
        ),
        ("2750", "split_zhou_EuroSAT.json"),
    ),
    DatasetSpec(
        "ucf101",
        "UCF101",
        "ucf101",
        "UCF101",
        (_archive("UCF-101-midframes.zip", "UCF-101-midframes"), _split("UCF101")),
        ("UCF-101-midframes", "split_zhou_UCF101.json"),
    ),
    DatasetSpec(
        "imagenetv2",
        "ImageNetV2",
        "imagenetv2",
        "ImageNetV2",
        (
            _archive("imagenetv2-matched-frequency.tar.gz", "imagenetv2-matched-frequency-format-val"),
            _classnames(),
        ),
        ("imagenetv2-matched-frequency-format-val", "classnames.txt"),
    ),
    DatasetSpec(
        "imagenet_sketch",
        "ImageNetSketch",
        "imagenet-sketch",
        "ImageNet-Sketch",
        (_archive("ImageNet-Sketch.zip", "images", rename=(("sketch", "images"),)), _classnames()),
        ("images", "classnames.txt"),
    ),
    DatasetSpec(
        "imagenet_a",
        "ImageNetA",
        "imagenet-adversarial",
        "ImageNet-A",
        (_archive("imagenet-a.tar", "imagenet-a"), _classnames()),
        ("imagenet-a", "classnames.txt"),
    ),
    DatasetSpec(
        "imagenet_r",
        "ImageNetR",
        "imagenet-rendition",
        "ImageNet-R",
        (_archive("imagenet-r.tar", "imagenet-r"), _classnames()),
        ("imagenet-r", "classnames.txt"),
    ),
)

BY_KEY: Dict[str, DatasetSpec] = {s.key: s for s in SPECS}
UNKNOWN_FILES = sorted({n for spec in SPECS for src in spec.sources for n in (src.name, *src.names)} - set(FILES))
if UNKNOWN_FILES:  # a registry edited without its facts
    raise ValueError(f"{SOURCES_JSON} lacks the file(s) {', '.join(UNKNOWN_FILES)}.")


def find_spec(name: str) -> DatasetSpec:
    """A dataset by config name (``dtd``), registry name (``DescribableTextures``) or folder (``food-101``)."""
    for spec in SPECS:
        if name in (spec.key, spec.registry, spec.folder):
            return spec
    close = closest_key(name, [*BY_KEY, "all"])
    hint = f" Did you mean {close}?" if close else ""
    raise SystemExit(f"Unknown dataset {name!r}.{hint} Use one of: {', '.join(BY_KEY)} (or all).")


def downloadable() -> Tuple[DatasetSpec, ...]:
    """What ``all`` means: every dataset that needs no licence or login."""
    return tuple(s for s in SPECS if not s.manual)


def load_checksums(extra: Optional[str] = None) -> Dict[str, List[Checksum]]:
    """The digests each file must have: those of ``sources.json``, plus those of the JSON file ``extra``
    (file name -> SHA-256, or MD5 when 32 hex digits long)."""
    table = {name: [facts.checksum] for name, facts in FILES.items() if facts.checksum}
    if not extra:
        return table
    try:
        with open(extra) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"Cannot read the checksum file {extra}: {e}. It must map file names to SHA-256.")
    by_length = {length: algorithm for algorithm, length in HEX_LENGTH.items()}
    if not isinstance(data, dict) or not all(
        isinstance(v, str) and re.fullmatch("[0-9a-fA-F]+", v) and len(v) in by_length for v in data.values()
    ):
        raise SystemExit(f"{extra} must be a JSON object of file name -> SHA-256 (or MD5) hex string.")
    for name, value in data.items():
        table.setdefault(name, []).append(Checksum(by_length[len(value)], value.lower(), f"--checksums {extra}"))
    return table
