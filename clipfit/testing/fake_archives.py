"""Pack a fabricated dataset into the archives its official sources ship, in their real layout.

``make_archives("dtd", out)`` fabricates DTD with :func:`make_dataset` and writes
``dtd-r1.0.1.tar.gz`` (members ``dtd/images/...``, ``dtd/imdb/``, ``dtd/labels/``) and
``split_zhou_DescribableTextures.json`` into ``out``, under the file names a mirror holds.
It also writes the other copies the maintained addresses serve (:data:`COPIES`): Caltech's
``caltech-101.zip`` around ``101_ObjectCategories.tar.gz``, and EuroSAT's later release
``EuroSAT_RGB.zip``, whose folder is ``EuroSAT_RGB/`` rather than ``2750/``.
The layouts below are written from the archives' documented structure, independently of
``clipfit.data.prepare.sources``, so a test of ``prepare`` checks one against the other.
ImageNet gets ILSVRC 2012's three archives: a tar of per-class tars, a flat validation tar,
and a devkit whose ``meta.mat`` and ground-truth file label the validation images.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy.io import savemat

from clipfit.testing.fake_datasets import make_dataset

PLAIN = None  # the file itself, copied from the fabricated dataset folder
Layout = Optional[Sequence[Tuple[str, str]]]  # (member path in the archive, path in the dataset folder)


def _split(name: str) -> Dict[str, Layout]:
    return {f"split_zhou_{name}.json": PLAIN}


CLASSNAMES: Dict[str, Layout] = {"classnames.txt": PLAIN}
FGVC = "fgvc-aircraft-2013b/data/"
FGVC_FILES = ("images", "variants.txt", "images_variant_train.txt", "images_variant_val.txt", "images_variant_test.txt")

ARCHIVES: Dict[str, Dict[str, Layout]] = {
    "caltech101": {
        "101_ObjectCategories.tar.gz": [("101_ObjectCategories", "101_ObjectCategories")],
        **_split("Caltech101"),
    },
    "oxford_pets": {
        "images.tar.gz": [("images", "images")],
        "annotations.tar.gz": [("annotations", "annotations")],
        **_split("OxfordPets"),
    },
    "stanford_cars": {
        "cars_train.tgz": [("cars_train", "cars_train")],
        "cars_test.tgz": [("cars_test", "cars_test")],
        "car_devkit.tgz": [("devkit", "devkit")],
        "cars_test_annos_withlabels.mat": PLAIN,
        **_split("StanfordCars"),
    },
    "oxford_flowers": {
        "102flowers.tgz": [("jpg", "jpg")],
        "imagelabels.mat": PLAIN,
        "cat_to_name.json": PLAIN,
        **_split("OxfordFlowers"),
    },
    "food101": {"food-101.tar.gz": [("food-101/images", "images"), ("food-101/meta", "meta")], **_split("Food101")},
    "fgvc_aircraft": {"fgvc-aircraft-2013b.tar.gz": [(FGVC + f, f) for f in FGVC_FILES]},
    "sun397": {
        "SUN397.tar.gz": [("SUN397", "SUN397")],
        "Partitions.zip": [(f, f) for f in ("ClassName.txt", "Training_01.txt", "Testing_01.txt")],
        **_split("SUN397"),
    },
    "dtd": {
        "dtd-r1.0.1.tar.gz": [("dtd/images", "images"), ("dtd/imdb", "imdb"), ("dtd/labels", "labels")],
        **_split("DescribableTextures"),
    },
    "eurosat": {"EuroSAT.zip": [("2750", "2750")], **_split("EuroSAT")},
    "ucf101": {"UCF-101-midframes.zip": [("UCF-101-midframes", "UCF-101-midframes")], **_split("UCF101")},
    "imagenetv2": {
        "imagenetv2-matched-frequency.tar.gz": [
            ("imagenetv2-matched-frequency-format-val", "imagenetv2-matched-frequency-format-val")
        ],
        **CLASSNAMES,
    },
    "imagenet_sketch": {"ImageNet-Sketch.zip": [("sketch", "images")], **CLASSNAMES},
    "imagenet_a": {"imagenet-a.tar": [("imagenet-a", "imagenet-a")], **CLASSNAMES},
    "imagenet_r": {"imagenet-r.tar": [("imagenet-r", "imagenet-r")], **CLASSNAMES},
}
COPIES: Dict[str, Dict[str, str]] = {  # dataset -> {copy: the file it is made from}
    "caltech101": {"caltech-101.zip": "101_ObjectCategories.tar.gz"},  # the tarball in caltech-101/
    "eurosat": {"EuroSAT_RGB.zip": "EuroSAT.zip"},  # 2750/ renamed EuroSAT_RGB/
}
CALTECH_ZIP_EXTRAS = ("caltech-101/Annotations.tar", "caltech-101/show_annotation.m")  # also in the real zip
EXTRAS = {  # files of the real archives that the loaders do not read, to be carried along or dropped
    "food-101.tar.gz": ("food-101/README.txt", "food-101/license_agreement.txt"),
    "fgvc-aircraft-2013b.tar.gz": ("fgvc-aircraft-2013b/README.html", FGVC + "families.txt"),
}


def _walk(folder: str, inside: str) -> List[Tuple[str, str]]:
    """(file or folder path on disk, member path) for ``folder`` and everything below it."""
    entries = [(folder, inside)]
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            entries += _walk(os.path.join(folder, name), f"{inside}/{name}")
    return entries


def write_archive(path: str, entries: Sequence[Tuple[str, bytes]]) -> str:
    """A tar (``.tar``), gzipped tar (``.tar.gz``/``.tgz``) or zip with ``entries`` (name, data);
    a name ending in ``/`` is a folder."""
    if path.endswith(".zip"):
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in entries:
                zf.writestr(name, data)
        return path
    with tarfile.open(path, "w:gz" if path.endswith(("gz", ".tgz")) else "w") as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name.rstrip("/"))
            info.mtime = 1_600_000_000
            if name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def pack(folder: str, layout: Sequence[Tuple[str, str]], extras: Sequence[str] = ()) -> List[Tuple[str, bytes]]:
    entries = []
    for member, relpath in layout:
        for disk, name in _walk(os.path.join(folder, relpath), member):
            entries.append((name + "/", b"") if os.path.isdir(disk) else (name, _read(disk)))
    return entries + [(name, b"not read by the loaders\n") for name in extras]


def make_archives(key: str, out: str, expected_root: str, **make_kwargs) -> Tuple[str, Dict[str, str]]:
    """Fabricate dataset ``key`` (config name) under ``expected_root`` and write its official
    files into ``out``.

    Returns the fabricated dataset folder (what ``prepare`` should rebuild) and the written
    files by name. ``make_kwargs`` go to :func:`make_dataset`.
    """
    os.makedirs(out, exist_ok=True)
    folder = make_dataset(key, expected_root, **make_kwargs)
    if key == "imagenet":
        return folder, _imagenet_archives(folder, out)
    written = {}
    for name, layout in ARCHIVES[key].items():
        path = os.path.join(out, name)
        if layout is PLAIN:
            with open(path, "wb") as f:
                f.write(_read(os.path.join(folder, name)))
        else:
            write_archive(path, pack(folder, layout, EXTRAS.get(name, ())))
        written[name] = path
    for name, made_from in COPIES.get(key, {}).items():
        written[name] = _copy(key, written[made_from], os.path.join(out, name))
    return folder, written


def _copy(key: str, source: str, path: str) -> str:
    """The copy of archive ``source`` that another address serves (see :data:`COPIES`)."""
    if key == "caltech101":
        inner = [("caltech-101/101_ObjectCategories.tar.gz", _read(source))]
        return write_archive(path, inner + [(name, b"not read\n") for name in CALTECH_ZIP_EXTRAS])
    with zipfile.ZipFile(source) as zf:
        entries = [(n.replace("2750/", "EuroSAT_RGB/", 1), zf.read(n)) for n in zf.namelist()]
    return write_archive(path, entries)


def _imagenet_archives(folder: str, out: str) -> Dict[str, str]:
    """ILSVRC 2012's train tar of ``<wnid>.tar`` files, its flat val tar and its devkit."""
    train_dir, val_dir = os.path.join(folder, "images", "train"), os.path.join(folder, "images", "val")
    wnids = sorted(os.listdir(train_dir))
    inner = []
    for wnid in wnids:
        names = sorted(os.listdir(os.path.join(train_dir, wnid)))
        images = [(name, _read(os.path.join(train_dir, wnid, name))) for name in names]
        tar_path = os.path.join(out, f"{wnid}.tar")
        inner.append((f"{wnid}.tar", _read(write_archive(tar_path, images))))
        os.remove(tar_path)
    files = {"ILSVRC2012_img_train.tar": write_archive(os.path.join(out, "ILSVRC2012_img_train.tar"), inner)}
    # validation images renumbered 1..N in a shuffled class order, labelled by ILSVRC2012_ID (1-based)
    val = [(wnid, name) for wnid in wnids for name in sorted(os.listdir(os.path.join(val_dir, wnid)))]
    order = np.random.RandomState(0).permutation(len(val))
    flat, truth = [], []
    for i, j in enumerate(order, start=1):
        wnid, name = val[j]
        flat.append((f"ILSVRC2012_val_{i:08d}.JPEG", _read(os.path.join(val_dir, wnid, name))))
        truth.append(str(wnids.index(wnid) + 1))
    files["ILSVRC2012_img_val.tar"] = write_archive(os.path.join(out, "ILSVRC2012_img_val.tar"), flat)
    synsets = np.zeros((len(wnids) + 1, 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    for i, wnid in enumerate(wnids, start=1):
        synsets[i - 1, 0] = (i, wnid, 0)
    synsets[len(wnids), 0] = (len(wnids) + 1, "n00001740", 1)  # a non-leaf synset, as in the real file
    buf = io.BytesIO()
    savemat(buf, {"synsets": synsets})
    devkit = [
        ("ILSVRC2012_devkit_t12/data/meta.mat", buf.getvalue()),
        ("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", ("\n".join(truth) + "\n").encode()),
    ]
    files["ILSVRC2012_devkit_t12.tar.gz"] = write_archive(os.path.join(out, "ILSVRC2012_devkit_t12.tar.gz"), devkit)
    with open(os.path.join(out, "classnames.txt"), "wb") as f:
        f.write(_read(os.path.join(folder, "classnames.txt")))
    files["classnames.txt"] = os.path.join(out, "classnames.txt")
    return files
