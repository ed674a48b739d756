"""Turning fetched files into the folders the loaders read, one step per file (ImageNet's in ``imagenet``).

Every step builds its result in a hidden ``.<name>.extract.tmp`` folder inside the dataset
folder and renames finished entries into place, so an interrupted step leaves no partial
folder under a name a loader reads; a rerun removes the temporary folder and redoes the step.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from typing import Callable, Dict, Optional

from clipfit.data.prepare import imagenet
from clipfit.data.prepare.archives import (
    TMP_SUFFIX,
    check_safe,
    extract,
    fresh_temp,
    list_members,
    top_entries,
    under,
)
from clipfit.data.prepare.errors import DamagedFile, PrepareError, check_free
from clipfit.data.prepare.sources import Source
from clipfit.fileio import atomic_path

WNID_LINE = re.compile(r"^n\d{8} \S")
Step = Callable[[str, Source, Optional[str], bool, Dict[str, str]], None]  # (folder, source, file or None, ...)


def is_done(folder: str, src: Source) -> bool:
    """Whether everything ``src`` provides is in the dataset folder (and not waiting to be reorganised)."""
    if imagenet.in_place(folder, src.step):
        return False
    return all(os.path.lexists(os.path.join(folder, p)) for p in src.provides)


def needs_file(folder: str, src: Source) -> bool:
    """Whether the step of ``src`` needs its file (not when ImageNet's files were extracted by hand)."""
    return not is_done(folder, src) and not (imagenet.in_place(folder, src.step) and src.step != "imagenet_devkit")


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


STEPS: Dict[str, Step] = {
    "file": place_file,
    "extract": extract_archive,
    "imagenet_train": imagenet.imagenet_train,
    "imagenet_val": imagenet.imagenet_val,
    "imagenet_devkit": imagenet.imagenet_devkit,
}
