"""A JSON cache of class-folder listings, kept in the dataset folder (CoOp's
``preprocessed.pkl`` for ImageNet, without pickle).

Listing ImageNet means 2,000 folders and 1.28M image files: minutes on a network file
system, for every run. :func:`cached_listing` stores each folder's file names with the
folder's modification time (``st_mtime_ns``), which changes whenever an entry is added,
removed or renamed in it. A later run stats only the folders; when every stamp matches,
the names come from the cache and the files need no checking one by one. Any mismatch,
or a cache that is missing, unreadable or malformed, relists everything and rewrites the
cache atomically (:func:`clipfit.fileio.write_json`). A dataset folder that is read-only
just goes uncached.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

from clipfit.engine import listdir_nohidden
from clipfit.fileio import write_json

FORMAT = "clipfit-folder-listing-1"
CACHE_FILE = "clipfit_listing.json"


def _stamp(folder: str) -> int:
    return os.stat(folder).st_mtime_ns


def _read(cache_file: str) -> Optional[Dict[str, dict]]:
    """The cached folders, or ``None`` when the file is missing or not a valid cache."""
    try:
        with open(cache_file) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    folders = data.get("folders") if isinstance(data, dict) and data.get("format") == FORMAT else None
    if not isinstance(folders, dict):
        return None
    for entry in folders.values():
        ok = isinstance(entry, dict) and isinstance(entry.get("mtime_ns"), int) and isinstance(entry.get("files"), list)
        if not ok or not all(isinstance(n, str) for n in entry["files"]):
            return None
    return folders


def cached_listing(root: str, folders: Sequence[str], cache_file: str) -> Tuple[Dict[str, List[str]], bool]:
    """The non-hidden entries of each ``root/<folder>`` (``os.listdir`` order, as CoOp lists
    them) and whether they came from ``cache_file`` unchanged."""
    stamps = {f: _stamp(os.path.join(root, f)) for f in folders}
    cached = _read(cache_file)
    if cached is not None and all(f in cached and cached[f]["mtime_ns"] == stamps[f] for f in folders):
        return {f: cached[f]["files"] for f in folders}, True
    listing = {f: listdir_nohidden(os.path.join(root, f)) for f in folders}
    # a folder changed while it was listed gets a stamp that will not match next time
    record = {f: {"mtime_ns": stamps[f], "files": listing[f]} for f in folders}
    try:
        write_json(cache_file, {"format": FORMAT, "folders": record})
    except OSError as err:
        print(f"Note: cannot write the listing cache {cache_file} ({err}); the folders are listed on every run")
    return listing, False
