"""The project's file rules: atomic writes, leftovers of interrupted writes, and reads of text and
JSON whose errors name the file and the fix.

Every file the project writes (checkpoints, configs, metrics, splits, caches, plots, CSVs)
goes through :func:`atomic_path`, so an interrupted run never leaves a partial file behind:
the data goes to a hidden ``.<name>.<pid>.tmp`` next to the target, renamed onto it when
complete. A process killed during a write leaves that temporary file; the next write of the
same file removes it (when its process is gone and it is older than a minute), and :func:`leftover_temps` finds the rest
(``python -m clipfit.data doctor --clean``). A full disk is reported as such, with the folder,
the space needed and the space free.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import time
from typing import Any, Iterator, List, Optional

from clipfit.errors import UserError

TEMP_FILE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.tmp$")
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
LEFTOVER_AGE_S = 60  # a temporary file younger than this is never taken for a leftover


class FileContentError(UserError, ValueError):
    """A file that exists but cannot be used as it is (binary, malformed, wrong content)."""

    def __str__(self) -> str:
        return self.args[0]


class DiskFullError(UserError, OSError):
    """A write that failed because the disk (or the quota) is full."""

    def __str__(self) -> str:
        return str(self.strerror)


def temp_path(path: str, pid: Optional[int] = None) -> str:
    """The hidden temporary file that :func:`atomic_path` writes for ``path``."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{os.getpid() if pid is None else pid}.tmp")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def is_leftover(path: str) -> bool:
    """Whether ``path`` is the temporary file of a write whose process is gone.

    A file changed in the last :data:`LEFTOVER_AGE_S` seconds is kept: on a folder shared between
    machines, its pid may belong to a writer on another machine.
    """
    match = TEMP_FILE.match(os.path.basename(path))
    if not match or pid_alive(int(match.group("pid"))):
        return False
    try:
        return time.time() - os.path.getmtime(path) > LEFTOVER_AGE_S
    except OSError:
        return False


def leftover_temps(folder: str, recursive: bool = True) -> List[str]:
    """Paths of the temporary files of interrupted writes under ``folder`` (sorted)."""
    found = []
    for root, dirs, files in os.walk(folder):
        found.extend(p for p in (os.path.join(root, f) for f in files) if is_leftover(p))
        if not recursive:
            break
    return sorted(found)


def remove_leftovers_of(path: str) -> None:
    """Remove the temporary files that killed writers of ``path`` left beside it."""
    folder, name = os.path.split(os.path.abspath(path))
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder):
            match = TEMP_FILE.match(entry)
            if match and match.group("name") == name and is_leftover(os.path.join(folder, entry)):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, entry))


def is_disk_full(err: BaseException) -> bool:
    """An error of a write that ran out of space (torch.save's ``unexpected pos`` included)."""
    if isinstance(err, OSError) and err.errno in DISK_FULL_ERRNOS:
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("unexpected pos" in text or "file write failed" in text)


def disk_full_error(path: str, err: BaseException, needed: Optional[int]) -> DiskFullError:
    """A :class:`DiskFullError` naming the folder, the space needed and the space free."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free = f"{shutil.disk_usage(folder).free:,} bytes are free there"
    except OSError:
        free = "the free space there could not be read"
    size = f"{needed:,} bytes" if needed else "more space than is free"
    return DiskFullError(
        errno.ENOSPC,
        f"The disk is full: writing {path} needs {size} in {folder}, and {free} ({err}). "
        "Free some space there (or choose another output folder) and run again; the old file, if any, "
        "is unchanged.",
    )


@contextlib.contextmanager
def atomic_path(path: str, size: Optional[int] = None) -> Iterator[str]:
    """Yield a hidden temporary path next to ``path``; on success rename it onto ``path``,
    on any error remove it. Parent folders are created, and leftovers of killed writers of
    ``path`` removed. A full disk raises :class:`DiskFullError` (``size``: bytes to write,
    when known)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    remove_leftovers_of(path)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as err:
        written = os.path.getsize(tmp) if os.path.exists(tmp) else 0
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if is_disk_full(err):
            raise disk_full_error(path, err, size or written or None) from err
        raise


def write_bytes(path: str, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically (flushed to disk first); returns ``path``."""
    with atomic_path(path, size=len(data)) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return path


def write_text(path: str, text: str) -> str:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj: Any, **dump_kwargs: Any) -> str:
    """Write ``obj`` as JSON atomically (flushed to disk first); returns ``path``."""
    return write_text(path, json.dumps(obj, **dump_kwargs))


def read_text(path: str, what: str = "File", fix: str = "restore it or delete it") -> str:
    """The text of ``path``; a binary or undecodable file raises :class:`FileContentError`
    naming ``what``, the path and ``fix``."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileContentError(
            f"{what} {path} holds binary data, not text (byte {e.start} cannot be read as UTF-8): it is "
            f"damaged. Fix: {fix}."
        ) from e
    if "\x00" in text:
        raise FileContentError(f"{what} {path} holds NUL bytes, not text: it is damaged. Fix: {fix}.")
    return text


def read_json(path: str, what: str = "JSON file", fix: str = "restore it or delete it",
              kind: type = dict) -> Any:
    """Load a JSON file holding a ``kind``; damaged content raises :class:`FileContentError`
    naming ``what``, the path and ``fix``."""
    text = read_text(path, what, fix)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise FileContentError(
            f"{what} {path} is not valid JSON ({e}); it may be truncated or edited by hand. Fix: {fix}."
        ) from e
    if not isinstance(obj, kind):
        raise FileContentError(
            f"{what} {path} should hold a JSON {kind.__name__}, found {type(obj).__name__}. Fix: {fix}."
        )
    return obj
