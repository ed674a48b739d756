"""ImageNet's steps: the ILSVRC 2012 archives (fetched by hand) into ``images/train`` and ``images/val``.

``ILSVRC2012_img_train.tar`` holds one ``<wnid>.tar`` per class; ``ILSVRC2012_img_val.tar`` holds
50,000 flat ``ILSVRC2012_val_<i>.JPEG`` images, which the devkit's ``meta.mat`` and ground-truth
file sort into class folders. Work extracted by hand is finished in place: a ``images/train``
of class tars is unpacked, a flat ``images/val`` sorted (the devkit alone is then needed).
While that happens the folder is renamed (``train.tars``, ``val.flat``), so no loader takes a
half-finished one; a rerun continues.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tarfile
from typing import IO, Dict, List, Optional

from clipfit.data.prepare.archives import (
    check_safe,
    extract,
    extract_member,
    fresh_temp,
    list_members,
    reading,
    tar_member,
)
from clipfit.data.prepare.errors import ManualStep, PrepareError, check_free
from clipfit.data.prepare.sources import IMAGENET_FILES, Source

TRAIN_TARS = "train.tars"  # images/train of class tars, renamed while they are unpacked (kept afterwards)
FLAT_VAL, SORTING_VAL = "val.flat", "val.sorting"  # names under images/ while a flat val set is sorted
CLASS_TAR = re.compile(r"^n\d{8}\.tar$")
VAL_IMAGE = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG$")


def _has(folder: str, pattern: "re.Pattern[str]") -> bool:
    return os.path.isdir(folder) and any(pattern.match(n) for n in os.listdir(folder))


def class_tars_in_place(folder: str) -> bool:
    """Whether ``images/train`` holds the per-class tars (the outer tar extracted by hand), or is being unpacked."""
    images = os.path.join(folder, "images")
    if os.path.isdir(os.path.join(images, TRAIN_TARS)) and not os.path.isdir(os.path.join(images, "train")):
        return True
    return _has(os.path.join(images, "train"), CLASS_TAR)


def flat_validation(folder: str) -> bool:
    """Whether ``images/val`` holds the flat validation images (or is being sorted) instead of class folders."""
    images = os.path.join(folder, "images")
    return os.path.isdir(os.path.join(images, FLAT_VAL)) or _has(os.path.join(images, "val"), VAL_IMAGE)


def in_place(folder: str, step: str) -> bool:
    """Whether the ImageNet ``step`` has work extracted by hand to finish in ``folder``."""
    if step == "imagenet_train":
        return class_tars_in_place(folder)
    return step in ("imagenet_val", "imagenet_devkit") and flat_validation(folder)


def _unpack_class_tar(fileobj: IO[bytes], where: str, dest: str) -> None:
    with reading(where), tarfile.open(fileobj=fileobj, mode="r:*") as tf:
        members = tf.getmembers()
        check_safe(where, [tar_member(x) for x in members])
        for x in members:
            extract_member(tf, x, dest)


def imagenet_train(folder: str, src: Source, path: Optional[str], ours: bool, files: Dict[str, str]) -> None:
    """The class tars of ``ILSVRC2012_img_train.tar`` (``path``), or of ``images/train`` when ``path`` is
    None, into ``images/train/<wnid>/``."""
    images = os.path.join(folder, "images")
    os.makedirs(images, exist_ok=True)
    if path is None:
        tars = os.path.join(images, TRAIN_TARS)
        if not os.path.isdir(tars):
            os.rename(os.path.join(images, "train"), tars)
        names = sorted(n for n in os.listdir(tars) if CLASS_TAR.match(n))
        sizes = [os.path.getsize(os.path.join(tars, n)) for n in names]
    else:
        members = list_members(path)
        check_safe(path, members)
        inner = [m for m in members if m.kind == "file" and m.path.endswith(".tar")]
        names, sizes = [m.name for m in inner], [m.size for m in inner]
    if not names:
        raise PrepareError(f"{path or tars} holds no <wnid>.tar class archives.")
    check_free(folder, sum(sizes), "unpacking the training images")
    tmp = fresh_temp(images, "train")
    try:
        if path is None:
            for name in names:
                with open(os.path.join(tars, name), "rb") as f:
                    _unpack_class_tar(f, os.path.join(tars, name), os.path.join(tmp, name[: -len(".tar")]))
        else:
            with reading(path), tarfile.open(path, "r:*") as outer:
                for name in names:
                    wnid = os.path.basename(name)[: -len(".tar")]
                    _unpack_class_tar(outer.extractfile(name), f"{path}:{name}", os.path.join(tmp, wnid))
        os.rename(tmp, os.path.join(images, "train"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if path is None:
        print(f"  the class tars are kept in {tars}; delete that folder once you no longer need them", flush=True)


def devkit_labels(path: str) -> List[str]:
    """The wnid of each validation image (image ``i`` is entry ``i - 1``), from the ILSVRC 2012 devkit."""
    from scipy.io import loadmat

    wanted = {"meta": "data/meta.mat", "truth": "data/ILSVRC2012_validation_ground_truth.txt"}
    found: Dict[str, bytes] = {}
    with reading(path), tarfile.open(path, "r:*") as tf:
        for m in tf.getmembers():
            for key, tail in wanted.items():
                if m.isfile() and m.name.endswith(tail):
                    found[key] = tf.extractfile(m).read()
    if len(found) < 2:
        raise PrepareError(f"{path} lacks {' and '.join(wanted.values())}: not ILSVRC2012_devkit_t12.tar.gz.")
    synsets = loadmat(io.BytesIO(found["meta"]), squeeze_me=True)["synsets"]
    wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    labels = [int(line) for line in found["truth"].decode().split()]
    unknown = sorted(set(labels) - set(wnid))
    if unknown:
        raise PrepareError(f"{path}: validation labels {unknown[:5]} have no synset in meta.mat.")
    return [wnid[y] for y in labels]


def sort_validation(flat: str, target: str, labels: List[str]) -> None:
    """Move ``flat/ILSVRC2012_val_<i>.JPEG`` into ``target/<wnid>/`` by the devkit labels
    (files already in ``target`` count as sorted)."""
    names = sorted(os.listdir(flat))
    done = sum(len(os.listdir(os.path.join(target, d))) for d in os.listdir(target)) if os.path.isdir(target) else 0
    if len(names) + done != len(labels):
        raise PrepareError(
            f"The validation set holds {len(names) + done} files but the devkit labels {len(labels)} images: "
            "they do not belong together."
        )
    for name in names:
        match = VAL_IMAGE.match(name)
        if not match or not 1 <= int(match.group(1)) <= len(labels):
            raise PrepareError(f"Unexpected file {name} in the validation set (no devkit label).")
        wnid = labels[int(match.group(1)) - 1]
        os.makedirs(os.path.join(target, wnid), exist_ok=True)
        os.rename(os.path.join(flat, name), os.path.join(target, wnid, name))


def imagenet_val(folder: str, src: Source, path: Optional[str], ours: bool, files: Dict[str, str]) -> None:
    """``ILSVRC2012_img_val.tar`` (``path``), or a flat ``images/val`` when ``path`` is None, into
    ``images/val/<wnid>/`` by the devkit's labels."""
    devkit = files.get(IMAGENET_FILES[2])
    if devkit is None:
        raise ManualStep(f"sorting the validation images needs {IMAGENET_FILES[2]}")
    labels = devkit_labels(devkit)
    images = os.path.join(folder, "images")
    os.makedirs(images, exist_ok=True)
    if path is None:  # sorted by moving files: no extra space, and a rerun continues
        val, flat, target = (os.path.join(images, n) for n in ("val", FLAT_VAL, SORTING_VAL))
        if not os.path.isdir(flat):
            os.rename(val, flat)
        sort_validation(flat, target, labels)
        os.rename(target, val)
        os.rmdir(flat)
        return
    members = list_members(path)
    check_safe(path, members)
    check_free(folder, sum(m.size for m in members), f"extracting {os.path.basename(path)}")
    tmp = fresh_temp(images, "val")
    try:
        extract(path, members, "", os.path.join(tmp, "flat"))
        sort_validation(os.path.join(tmp, "flat"), os.path.join(tmp, "sorted"), labels)
        os.rename(os.path.join(tmp, "sorted"), os.path.join(images, "val"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def imagenet_devkit(folder: str, src: Source, path: Optional[str], ours: bool, files: Dict[str, str]) -> None:
    """Nothing: the devkit is read by :func:`imagenet_val`."""
