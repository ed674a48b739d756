"""Getting each file: an earlier download, a local folder, its addresses in order, or a mirror.

HTTP downloads go to ``<name>.part`` and resume with a ``Range`` request after a cut
connection (within a run, and in the next run); Google Drive files go through ``gdown``.
Every file with a published or recorded checksum is checked against it before it is used.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from clipfit.data.prepare.archives import extract_file
from clipfit.data.prepare.errors import ManualStep, PrepareError, check_free
from clipfit.data.prepare.sources import (
    CHECKSUM_NAME,
    FILES,
    GDRIVE,
    SOURCES_JSON,
    Address,
    Checksum,
    DatasetSpec,
    Source,
)

MIRROR_ENV = "CLIPFIT_DATA_MIRROR"
DOWNLOADS = ".download"  # inside each dataset folder
CHUNK = 1 << 20
GDRIVE_PAGE = "https://drive.google.com/uc?id="
GDOWN_HINT = "pip install gdown (or pip install 'clipfit[prepare]')"
FATAL_HTTP = (401, 403, 404, 410)  # retrying cannot help


def digests(path: str, algorithms: Sequence[str]) -> Dict[str, str]:
    """The hex digest of ``path`` for each of ``algorithms`` (md5, sha256), in one pass."""
    hashes = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            for h in hashes.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hashes.items()}


def describe(checksums: Sequence[Checksum]) -> str:
    """The expected checksum(s) of a file, for --dry-run."""
    return "; ".join(c.describe() for c in checksums) or "no published checksum"


def display(url: str) -> str:
    """An address as a person can open it."""
    return GDRIVE_PAGE + url[len(GDRIVE) :] if url.startswith(GDRIVE) else url


def is_url(location: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", location) is not None


def http_download(
    url: str, dest: str, retries: int = 3, timeout: float = 60.0, backoff: float = 1.0, log: Callable = print
) -> None:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming it with HTTP ``Range`` requests."""
    part = dest + ".part"
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    last: Exception = PrepareError("no attempt")
    for attempt in range(retries + 1):
        have = os.path.getsize(part) if os.path.exists(part) else 0
        headers = {"User-Agent": "clipfit-prepare"}
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                resumed = have > 0 and resp.status == 206 and _range_start(resp) == have
                if resp.status == 206 and not resumed:  # not the range asked for: start again
                    os.remove(part)
                    last = PrepareError(f"unexpected Content-Range {resp.headers.get('Content-Range')}")
                    continue
                length = resp.headers.get("Content-Length")
                total = (have if resumed else 0) + int(length) if length is not None else None
                if total is not None:
                    check_free(os.path.dirname(dest), total - (have if resumed else 0), os.path.basename(dest))
                if have and not resumed:
                    log(f"  the server ignored the resume request; downloading {os.path.basename(dest)} again")
                with open(part, "ab" if resumed else "wb") as f, progress(dest, total, f.tell()) as bar:
                    for block in iter(lambda: resp.read(CHUNK), b""):
                        f.write(block)
                        bar.update(len(block))
            size = os.path.getsize(part)
            if total is not None and size != total:
                raise http.client.IncompleteRead(b"", total - size)
            os.replace(part, dest)
            return
        except urllib.error.HTTPError as e:
            if e.code == 416 and have and _range_total(e) == have:  # the part was already complete
                os.replace(part, dest)
                return
            if e.code in FATAL_HTTP:
                raise PrepareError(f"{url} answered HTTP {e.code} ({e.reason}).") from e
            last = e
        except (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError) as e:
            last = e
        got = os.path.getsize(part) if os.path.exists(part) else 0
        if attempt < retries:
            lost = f"connection lost at {got:,} bytes ({last}); resuming" if got else f"no answer ({last}); trying again"
            log(f"  {lost} (retry {attempt + 1} of {retries})")
            time.sleep(backoff * min(2**attempt, 30))
    if not got:
        if os.path.exists(part):
            os.remove(part)
        raise PrepareError(f"Could not download {url}: {last}.")
    raise PrepareError(
        f"Could not download {url}: {last}. What arrived ({got:,} bytes) is kept in {part}; "
        "run the same command again to resume from there."
    )


def progress(dest: str, total: Optional[int], start: int) -> tqdm:
    """A byte counter on a terminal (silent in logs and tests)."""
    return tqdm(
        total=total,
        initial=start,
        unit="B",
        unit_scale=True,
        desc=f"  {os.path.basename(dest)}",
        disable=not sys.stderr.isatty(),
    )


def _range_start(resp) -> Optional[int]:
    m = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
    return int(m.group(1)) if m else None


def _range_total(err: urllib.error.HTTPError) -> Optional[int]:
    m = re.match(r"bytes \*/(\d+)", (err.headers or {}).get("Content-Range", ""))
    return int(m.group(1)) if m else None


def require_gdown(names: Sequence[str]):
    """The ``gdown`` module, or an error naming it and the Google Drive files ``names`` that need it."""
    try:
        import gdown
    except ImportError:
        raise PrepareError(
            f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} on Google Drive, which needs the optional "
            f"package gdown: {GDOWN_HINT}. Or take the files from a mirror with --mirror."
        ) from None
    return gdown


def gdrive_download(file_id: str, dest: str) -> None:
    """A Google Drive file through ``gdown`` (optional dependency), resuming its partial file."""
    gdown = require_gdown([os.path.basename(dest)])
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    part = dest + ".part"
    out = gdown.download(GDRIVE_PAGE + file_id, part, quiet=False, resume=True)
    if not out or not os.path.isfile(part):
        raise PrepareError(
            f"gdown could not download Google Drive file {file_id} ({os.path.basename(dest)}); Google Drive "
            "limits downloads of popular files: try again later, or use --mirror."
        )
    os.replace(part, dest)


@dataclass
class Fetcher:
    """Finds or downloads the files of a dataset; see :meth:`obtain` for the order of places tried."""

    root: str
    mirror: Optional[str] = None
    from_archives: Optional[str] = None
    checksums: Dict[str, List[Checksum]] = field(default_factory=dict)
    retries: int = 3
    backoff: float = 1.0
    log: Callable = print
    unrecorded: Dict[str, str] = field(default_factory=dict)  # file name -> SHA-256 computed, none recorded

    def download_dir(self, spec: DatasetSpec) -> str:
        return os.path.join(self.root, spec.folder, DOWNLOADS)

    def local_candidates(self, spec: DatasetSpec, src: Source) -> List[Tuple[str, str]]:
        """(path, file name) where the file or a copy of it may already be, in the order they are tried."""
        names = [src.name] + [n for n in src.names if n != src.name]
        paths = [(os.path.join(self.download_dir(spec), n), n) for n in names]
        folder = self.from_archives or (self.mirror if self.mirror and not is_url(self.mirror) else None)
        if folder:  # flat, by dataset folder, or a data root filled by --download-only
            subs = ((), (spec.folder,), (spec.folder, DOWNLOADS))
            paths += [(os.path.join(folder, *sub, n), n) for n in names for sub in subs]
        paths += [(os.path.join(self.root, p), src.name) for p in src.shared]
        return paths

    def found(self, spec: DatasetSpec, src: Source) -> Optional[Tuple[str, str]]:
        """The first local copy (path, file name), or None."""
        return next(((p, n) for p, n in self.local_candidates(spec, src) if os.path.isfile(p)), None)

    def addresses(self, src: Source) -> List[Tuple[str, Address]]:
        """(file name, address) to download from, in order: each copy's addresses, then a mirror URL.

        A file behind a login has none but the mirror's."""
        tried = [] if src.manual else [(n, a) for n in src.names for a in FILES[n].addresses]
        if self.mirror and is_url(self.mirror):
            source = f"mirror (--mirror or ${MIRROR_ENV})"
            tried += [(n, Address(f"{self.mirror.rstrip('/')}/{n}", source)) for n in src.names]
        return tried

    def check_gdown(self, spec: DatasetSpec, sources: List[Source]) -> None:
        """Fail before any download when a file can only come from Google Drive and gdown is missing."""
        drive = [
            s.name
            for s in sources
            if self.found(spec, s) is None
            and not self.from_archives
            and self.addresses(s)
            and all(a.url.startswith(GDRIVE) for _, a in self.addresses(s))
        ]
        if drive:
            require_gdown(drive)

    def obtain(self, spec: DatasetSpec, src: Source) -> Tuple[str, bool]:
        """A checked local copy of ``src`` and whether it lies in the dataset's download folder.

        Tried in order: an earlier download, ``--from-archives`` (nothing else then), a mirror
        folder, a copy elsewhere under DATA, then each address of each copy (the maintained
        one first, then CoOp's), then a mirror URL. A file that fails its checksum stops
        everything; a copy that holds the file (a zip around a tarball) is opened after its check.
        """
        local = self.found(spec, src)
        if local is not None:
            path, name = local
            ours = os.path.dirname(path) == self.download_dir(spec)
            self.verify(path, name, ours, origin=path)
            return self.unwrap(spec, src, path, name, ours)
        if self.from_archives:
            raise self.missing(src, f"{' or '.join(src.names)} is not in {self.from_archives}")
        failures = []
        if self.mirror and not is_url(self.mirror):
            failures.append(f"the mirror folder {self.mirror}")
        for name, address in self.addresses(src):
            dest = os.path.join(self.download_dir(spec), name)
            self.log(f"  downloading {display(address.url)}")
            try:
                if address.url.startswith(GDRIVE):
                    gdrive_download(address.url[len(GDRIVE) :], dest)
                else:
                    http_download(address.url, dest, self.retries, backoff=self.backoff, log=self.log)
            except PrepareError as e:
                self.log(f"  failed: {e}")
                failures.append(display(address.url))
                continue
            self.verify(dest, name, ours=True, origin=display(address.url))
            return self.unwrap(spec, src, dest, name, True)
        if src.manual:
            raise self.missing(src, f"{src.name} needs a login")
        raise PrepareError(
            f"Could not get {src.name} from {', '.join(failures)} (see above). Put a copy of "
            f"{' or '.join(src.names)} in a folder or on a server and pass it with --mirror "
            f"(see DATASETS.md, section \"{spec.section}\")."
        )

    def unwrap(self, spec: DatasetSpec, src: Source, path: str, name: str, ours: bool) -> Tuple[str, bool]:
        """The file ``src`` itself: taken out of the copy ``name`` when that copy holds it (the copy,
        when downloaded, is then deleted), else the copy as it is."""
        member = dict(FILES[name].holds).get(src.name) if name != src.name else None
        if member is None:
            return path, ours
        dest = os.path.join(self.download_dir(spec), src.name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        self.log(f"  taking {member} out of {name}")
        extract_file(path, member, dest)
        if ours:
            os.remove(path)
        return dest, True

    def record_hint(self) -> str:
        """How to record the hashes computed without a recorded one (empty when there are none)."""
        if not self.unrecorded:
            return ""
        entries = ",\n".join(f'  "{name}": "{digest}"' for name, digest in sorted(self.unrecorded.items()))
        return (
            f"No checksum is published or recorded for {len(self.unrecorded)} file(s). Check them against their "
            f"source if you can, then record them in {SOURCES_JSON} (as sha256, with a checksum_source), or in a "
            f"JSON file passed with --checksums:\n{{\n{entries}\n}}"
        )

    def missing(self, src: Source, why: str) -> PrepareError:
        return ManualStep(why) if src.manual else PrepareError(why + ".")

    def verify(self, path: str, name: str, ours: bool, origin: str) -> None:
        """Compare ``path`` (file ``name``, from ``origin``) with each checksum expected of it; print its
        SHA-256 when none is. A mismatch deletes a downloaded file and raises."""
        expected = self.checksums.get(name, [])
        self.log(f"  checking {path}")
        actual = digests(path, sorted({c.algorithm for c in expected} | ({"sha256"} if not expected else set())))
        if not expected:
            self.log(f"  SHA-256 {actual['sha256']} (no checksum published or recorded for {name})")
            self.unrecorded[name] = actual["sha256"]
            return
        for checksum in expected:
            if actual[checksum.algorithm] != checksum.value:
                if ours:
                    os.remove(path)
                fate = "It was deleted, and nothing was extracted" if ours else "Nothing was extracted; replace it"
                raise PrepareError(
                    f"wrong checksum for {name} (from {origin}): {CHECKSUM_NAME[checksum.algorithm]} "
                    f"{actual[checksum.algorithm]}, expected {checksum.value} ({checksum.kind}: {checksum.source}). "
                    f"The file is damaged or not the expected one. {fate}; run again to download it again "
                    "(if the file changed upstream, check it and record its new checksum)."
                )
            self.log(f"  {CHECKSUM_NAME[checksum.algorithm]} ok ({checksum.kind}: {checksum.source})")
