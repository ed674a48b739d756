"""Getting each file: an earlier download, a local folder, a mirror, or its official address.

HTTP downloads go to ``<name>.part`` and resume with a ``Range`` request after a cut
connection (within a run, and in the next run); Google Drive files go through ``gdown``.
Every file is checked against the SHA-256 recorded for it before it is used.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from clipfit.data.prepare.sources import CHECKSUMS, GDRIVE, DatasetSpec, Source
from clipfit.errors import UserError

MIRROR_ENV = "CLIPFIT_DATA_MIRROR"
DOWNLOADS = ".download"  # inside each dataset folder
CHUNK = 1 << 20
GDRIVE_PAGE = "https://drive.google.com/uc?id="
GDOWN_HINT = "pip install gdown (or pip install 'clipfit[prepare]')"
FATAL_HTTP = (401, 403, 404, 410)  # retrying cannot help


class PrepareError(UserError):
    """A step failed; the message says what to do."""


class ManualStep(PrepareError):
    """A file that must be fetched by hand (licence or login)."""


class DamagedFile(PrepareError):
    """A fetched file that is not what it should be (truncated archive, a web page instead of JSON, ...)."""


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def check_free(folder: str, needed: int, what: str) -> None:
    """Raise when the filesystem of ``folder`` has less than ``needed`` bytes free."""
    probe = folder
    while not os.path.isdir(probe):
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise PrepareError(
            f"Not enough disk space for {what} in {folder}: {human(needed)} ({needed:,} bytes) needed, "
            f"{human(free)} free. Free some space (or link the dataset folder to a larger disk) and run again."
        )


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


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
            log(f"  connection lost at {got:,} bytes ({last}); resuming (retry {attempt + 1} of {retries})")
            time.sleep(backoff * min(2**attempt, 30))
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
    checksums: Dict[str, str] = field(default_factory=dict)
    retries: int = 3
    backoff: float = 1.0
    log: Callable = print
    unrecorded: Dict[str, str] = field(default_factory=dict)  # file name -> SHA-256 computed, none recorded

    def download_dir(self, spec: DatasetSpec) -> str:
        return os.path.join(self.root, spec.folder, DOWNLOADS)

    def local_candidates(self, spec: DatasetSpec, src: Source) -> List[str]:
        """Paths where the file may already be, in the order they are tried."""
        paths = [os.path.join(self.download_dir(spec), src.name)]
        folder = self.from_archives or (self.mirror if self.mirror and not is_url(self.mirror) else None)
        if folder:  # flat, by dataset folder, or a data root filled by --download-only
            paths += [os.path.join(folder, *sub, src.name) for sub in ((), (spec.folder,), (spec.folder, DOWNLOADS))]
        paths += [os.path.join(self.root, p) for p in src.shared]
        return paths

    def mirror_url(self, src: Source) -> str:
        return f"{self.mirror.rstrip('/')}/{src.name}"

    def origin(self, spec: DatasetSpec, src: Source) -> str:
        """Where the file would come from, without touching the network (for --dry-run)."""
        for path in self.local_candidates(spec, src):
            if os.path.isfile(path):
                return path
        if self.from_archives:
            return f"(missing from {self.from_archives})"
        if self.mirror:
            return self.mirror_url(src) if is_url(self.mirror) else f"(missing from {self.mirror})"
        if src.manual:
            return f"(by hand: {src.url})"
        if src.url.startswith(GDRIVE):
            return GDRIVE_PAGE + src.url[len(GDRIVE) :]
        return src.url

    def check_gdown(self, spec: DatasetSpec, sources: List[Source]) -> None:
        """Fail before any download when a file must come from Google Drive and gdown is missing."""
        drive = [s.name for s in sources if self.origin(spec, s).startswith(GDRIVE_PAGE)]
        if drive:
            require_gdown(drive)

    def obtain(self, spec: DatasetSpec, src: Source) -> Tuple[str, bool]:
        """A checked local copy of ``src`` and whether it lies in the dataset's download folder.

        Tried in order: an earlier download, ``--from-archives`` (nothing else then), a mirror
        folder, a copy elsewhere under DATA, a mirror URL, the official address.
        """
        for path in self.local_candidates(spec, src):
            if os.path.isfile(path):
                ours = os.path.dirname(path) == self.download_dir(spec)
                self.verify(path, src, ours)
                return path, ours
        if self.from_archives:
            raise self.missing(spec, src, f"{src.name} is not in {self.from_archives}")
        if self.mirror and not is_url(self.mirror):
            raise self.missing(spec, src, f"{src.name} is not in the mirror folder {self.mirror}")
        dest = os.path.join(self.download_dir(spec), src.name)
        if self.mirror:
            url = self.mirror_url(src)
            self.log(f"  downloading {url}")
            try:
                http_download(url, dest, self.retries, backoff=self.backoff, log=self.log)
            except PrepareError as e:
                raise self.missing(spec, src, str(e)) if src.manual else e
        elif src.manual:
            raise self.missing(spec, src, f"{src.name} needs a login")
        elif src.url.startswith(GDRIVE):
            self.log(f"  downloading {src.name} from Google Drive ({src.url[len(GDRIVE):]})")
            gdrive_download(src.url[len(GDRIVE):], dest)
        else:
            self.log(f"  downloading {src.url}")
            http_download(src.url, dest, self.retries, backoff=self.backoff, log=self.log)
        self.verify(dest, src, ours=True)
        return dest, True

    def record_hint(self) -> str:
        """How to record the hashes computed without a recorded one (empty when there are none)."""
        if not self.unrecorded:
            return ""
        entries = ",\n".join(f'  "{name}": "{digest}"' for name, digest in sorted(self.unrecorded.items()))
        return (
            f"No SHA-256 was recorded for {len(self.unrecorded)} file(s). Check them against their source if you "
            f"can, then record them by adding these entries to {CHECKSUMS} (or to a JSON file passed with "
            f"--checksums):\n{entries}"
        )

    def missing(self, spec: DatasetSpec, src: Source, why: str) -> PrepareError:
        return ManualStep(why) if src.manual else PrepareError(why + ".")

    def verify(self, path: str, src: Source, ours: bool) -> None:
        """Compare the SHA-256 of ``path`` with the recorded one; print it when none is recorded."""
        self.log(f"  checking {path}")
        digest = sha256(path)
        expected = self.checksums.get(src.name)
        if expected is None:
            self.log(f"  SHA-256 {digest} (none recorded for {src.name})")
            self.unrecorded[src.name] = digest
        elif digest != expected:
            if ours:
                os.remove(path)
            fate = "It was deleted; run again to download it again" if ours else "Replace it"
            raise PrepareError(
                f"wrong checksum: {path} has SHA-256 {digest}, but {expected} is recorded for {src.name}: "
                "the file is damaged "
                f"or not the expected one. {fate} (or, if the file changed upstream, record its new hash)."
            )
