"""Turning fetched files into the folders the loaders read, one step per file.

Every step builds its result in a hidden ``.<name>.extract.tmp`` folder inside the dataset
folder and renames finished entries into place, so an interrupted step leaves no partial
folder under a name a loader reads; a rerun removes the temporary folder and redoes the step.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
from typing import Callable, Dict, List

from clipfit.fileio import atomic_path
from clipfit.data.prepare.archives import (
    check_safe,
    extract,
    extract_member,
    list_members,
    reading,
    tar_member,
    top_entries,
    under,
)
from clipfit.data.prepare.download import DamagedFile, ManualStep, PrepareError, check_free
from clipfit.data.prepare.sources import IMAGENET_FILES, Source

TMP_SUFFIX = ".extract.tmp"
FLAT_VAL, SORTING_VAL = "val.flat", "val.sorting"  # names under images/ while a flat val set is sorted
WNID_LINE = re.compile(r"^n\d{8} \S")
VAL_IMAGE = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG$")
Step = Callable[[str, Source, str, bool, Dict[str, str]], None]


def is_done(folder: str, src: Source) -> bool:
    """Whether everything ``src`` provides is in the dataset folder (a flat ImageNet val set is not done)."""
    if src.step in ("imagenet_val", "imagenet_devkit") and flat_validation(folder):
        return False
    return all(os.path.lexists(os.path.join(folder, p)) for p in src.provides)


def needs_file(folder: str, src: Source) -> bool:
    """Whether the step of ``src`` needs its file (a flat val set already extracted needs only the devkit)."""
    return not is_done(folder, src) and not (src.step == "imagenet_val" and flat_validation(folder))


def fresh_temp(parent: str, name: str) -> str:
    """An empty hidden work folder ``parent/.<name>.extract.tmp`` (a leftover one is removed)."""
    path = os.path.join(parent, f".{name}{TMP_SUFFIX}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def remove_leftovers(folder: str) -> None:
    """Remove the work folders of steps killed before they could clean up (in ``folder`` and ``images/``)."""
    for parent in (folder, os.path.join(folder, "images")):
        if os.path.isdir(parent):
            for name in os.listdir(parent):
                if name.startswith(".") and name.endswith(TMP_SUFFIX):
                    shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def check_plain_file(path: str, name: str) -> None:
    """A JSON file must parse to an object and ``classnames.txt`` hold ``<wnid> <name>`` lines: a web page
    saved in their place (Google Drive's quota or warning pages) is caught here, not by the loader."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise DamagedFile(f"{path} should be text ({name}) but is not ({e}).") from e
    if name.endswith(".json"):
        try:
            ok = isinstance(json.loads(text), dict)
        except json.JSONDecodeError:
            ok = False
        if not ok:
            raise DamagedFile(
                f"{path} is not the JSON object {name} should be (starts with {text[:60]!r}); Google Drive "
                "answers a web page when a file's download quota is exceeded: try again later or use --mirror."
            )
    if name == "classnames.txt":
        bad = [line for line in text.splitlines() if line.strip() and not WNID_LINE.match(line)]
        if bad or not text.strip():
            raise DamagedFile(f"{path} should hold '<wnid> <class name>' lines; found {(bad or [''])[0][:60]!r}.")


def place_file(folder: str, src: Source, path: str, ours: bool, files: Dict[str, str]) -> None:
    """Move a downloaded file into place, or copy one that lies elsewhere (atomically either way)."""
    if src.name.endswith((".json", ".txt")):
        check_plain_file(path, src.name)
    dest = os.path.join(folder, src.provides[0])
    if ours:
        os.replace(path, dest)
        return
    with atomic_path(dest) as tmp:
        shutil.copyfile(path, tmp)


def choose_prefix(src: Source, members, path: str) -> str:
    """The first candidate prefix under which the archive holds every entry ``src`` provides."""
    renames = dict(src.rename)
    for prefix in src.prefixes:
        tops = {renames.get(t, t) for t in top_entries(members, prefix)}
        if all(p.split("/")[0] in tops for p in src.provides):
            return prefix
    raise PrepareError(
        f"{path} is not the archive expected: {', '.join(src.provides)} should lie below "
        f"{' or '.join(repr(p) for p in src.prefixes)}, but its top entries are "
        f"{', '.join(top_entries(members, '')[:10]) or 'none'}. Delete it and run again."
    )


def extract_archive(folder: str, src: Source, path: str, ours: bool, files: Dict[str, str]) -> None:
    """Extract the part of the archive below its prefix and move each top entry into ``folder``.

    Entries already present are kept (a rerun after an interruption completes the rest).
    """
    members = list_members(path)
    check_safe(path, members)
    prefix = choose_prefix(src, members, path)
    check_free(folder, sum(m.size for m in under(members, prefix)), f"extracting {os.path.basename(path)}")
    tmp = fresh_temp(folder, src.name)
    try:
        extract(path, members, prefix, tmp)
        base = os.path.join(tmp, prefix)
        renames = dict(src.rename)
        provided = {p.split("/")[0] for p in src.provides}
        # what the loaders read goes in last
        for child in sorted(os.listdir(base), key=lambda c: renames.get(c, c) in provided):
            target = os.path.join(folder, renames.get(child, child))
            if not os.path.lexists(target):
                os.rename(os.path.join(base, child), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def imagenet_train(folder: str, src: Source, path: str, ours: bool, files: Dict[str, str]) -> None:
    """``ILSVRC2012_img_train.tar`` (one ``<wnid>.tar`` per class) into ``images/train/<wnid>/``."""
    members = list_members(path)
    check_safe(path, members)
    inner = [m for m in members if m.kind == "file" and m.path.endswith(".tar")]
    if not inner:
        raise PrepareError(f"{path} holds no <wnid>.tar class archives: not ILSVRC2012_img_train.tar.")
    images = os.path.join(folder, "images")
    os.makedirs(images, exist_ok=True)
    check_free(folder, sum(m.size for m in inner), f"extracting {os.path.basename(path)}")
    tmp = fresh_temp(images, "train")
    try:
        with reading(path), tarfile.open(path, "r:*") as outer:
            for m in inner:
                wnid = os.path.basename(m.path)[: -len(".tar")]
                with tarfile.open(fileobj=outer.extractfile(m.name), mode="r:*") as tf:
                    inner_members = tf.getmembers()
                    check_safe(f"{path}:{m.name}", [tar_member(x) for x in inner_members])
                    for x in inner_members:
                        extract_member(tf, x, os.path.join(tmp, wnid))
        os.rename(tmp, os.path.join(images, "train"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def flat_validation(folder: str) -> bool:
    """Whether ``images/val`` holds ILSVRC's flat validation images (or is being sorted) instead of class folders."""
    images = os.path.join(folder, "images")
    if os.path.isdir(os.path.join(images, FLAT_VAL)):
        return True
    val = os.path.join(images, "val")
    return os.path.isdir(val) and any(VAL_IMAGE.match(n) for n in os.listdir(val))


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
            raise PrepareError(f"Unexpected file {name} in the validation archive (no devkit label).")
        wnid = labels[int(match.group(1)) - 1]
        os.makedirs(os.path.join(target, wnid), exist_ok=True)
        os.rename(os.path.join(flat, name), os.path.join(target, wnid, name))


def imagenet_val(folder: str, src: Source, path: str, ours: bool, files: Dict[str, str]) -> None:
    """``ILSVRC2012_img_val.tar`` (flat) into ``images/val/<wnid>/`` with the devkit's labels."""
    devkit = files.get(IMAGENET_FILES[2])
    if devkit is None:
        raise ManualStep(f"sorting the validation images needs {IMAGENET_FILES[2]}")
    labels = devkit_labels(devkit)
    members = list_members(path)
    check_safe(path, members)
    images = os.path.join(folder, "images")
    os.makedirs(images, exist_ok=True)
    check_free(folder, sum(m.size for m in members), f"extracting {os.path.basename(path)}")
    tmp = fresh_temp(images, "val")
    try:
        extract(path, members, "", os.path.join(tmp, "flat"))
        sort_validation(os.path.join(tmp, "flat"), os.path.join(tmp, "sorted"), labels)
        os.rename(os.path.join(tmp, "sorted"), os.path.join(images, "val"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def imagenet_devkit(folder: str, src: Source, path: str, ours: bool, files: Dict[str, str]) -> None:
    """Sort a flat ``images/val`` extracted earlier into class folders; otherwise the devkit is only
    read by :func:`imagenet_val`.

    The flat folder is first renamed ``images/val.flat`` (so no loader takes it for the val set), sorted
    into ``images/val.sorting`` and renamed ``images/val``; a rerun continues an interrupted sort.
    """
    if not flat_validation(folder):
        return
    images = os.path.join(folder, "images")
    val, flat, target = (os.path.join(images, n) for n in ("val", FLAT_VAL, SORTING_VAL))
    labels = devkit_labels(path)
    if not os.path.isdir(flat):
        os.rename(val, flat)
    sort_validation(flat, target, labels)
    os.rename(target, val)
    os.rmdir(flat)


STEPS: Dict[str, Step] = {
    "file": place_file,
    "extract": extract_archive,
    "imagenet_train": imagenet_train,
    "imagenet_val": imagenet_val,
    "imagenet_devkit": imagenet_devkit,
}
