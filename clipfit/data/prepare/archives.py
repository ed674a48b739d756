"""Reading tar and zip archives safely: list, refuse unsafe members, extract below one folder.

An archive is refused as a whole, with every offending member named, when a member has an
absolute path or a ``..`` component, is a link pointing outside the archive's tree or through
another link, is written through a link, or is a device or pipe. Extraction only ever writes
into the folder it is given (tarfile's ``data`` filter, where Python has it, checks again).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Set

from clipfit.data.prepare.errors import DamagedFile, PrepareError, check_free

TMP_SUFFIX = ".extract.tmp"  # hidden work folders: .<name>.extract.tmp
MAX_NAMED = 10  # unsafe members named one by one before the rest are counted


@dataclass(frozen=True)
class Member:
    name: str  # as stored in the archive
    size: int
    kind: str  # file, dir, symlink, hardlink or special
    target: str = ""  # a link's target

    @property
    def path(self) -> str:
        """The normalised relative path (``./a//b/`` -> ``a/b``)."""
        path = posixpath.normpath(self.name.replace("\\", "/")).lstrip("/")
        return "" if path == "." else path


class UnsafeArchive(PrepareError):
    """An archive with members that would be written outside the extraction folder."""


class BrokenArchive(DamagedFile):
    """An archive that cannot be read to its end (truncated or damaged)."""


@contextlib.contextmanager
def reading(path: str) -> Iterator[None]:
    """Turn the errors of reading archive ``path`` into :class:`BrokenArchive` or :class:`UnsafeArchive`."""
    try:
        yield
    except getattr(tarfile, "FilterError", ()) as e:  # tarfile's own check, on links through links
        raise UnsafeArchive(
            f"Refusing {path}: member {e.tarinfo.name!r} would be written outside the dataset folder ({e}). "
            f"Nothing was kept. Delete {path} and get the archive again from the official source."
        ) from e
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise BrokenArchive(f"{path} is damaged or truncated ({type(e).__name__}: {e}).") from e
    except OSError as e:
        if e.errno is not None:  # a real I/O error (disk full, permissions), not bad compressed data
            raise
        raise BrokenArchive(f"{path} is damaged or truncated ({type(e).__name__}: {e}).") from e


def is_zip(path: str) -> bool:
    return zipfile.is_zipfile(path)


def list_members(path: str) -> List[Member]:
    """Every member of the tar (any compression) or zip archive ``path``."""
    with reading(path):
        if is_zip(path):
            with zipfile.ZipFile(path) as zf:
                return [_zip_member(zf, info) for info in zf.infolist()]
        with tarfile.open(path, "r:*") as tf:
            return [tar_member(m) for m in tf.getmembers()]


def tar_member(m: tarfile.TarInfo) -> Member:
    if m.issym():
        return Member(m.name, 0, "symlink", m.linkname)
    if m.islnk():
        return Member(m.name, 0, "hardlink", m.linkname)
    if m.isdir():
        return Member(m.name, 0, "dir")
    return Member(m.name, m.size, "file" if m.isfile() else "special")


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Member:
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return Member(info.filename, 0, "symlink", zf.read(info).decode("utf-8", "replace"))
    return Member(info.filename, 0 if info.is_dir() else info.file_size, "dir" if info.is_dir() else "file")


def _absolute(name: str) -> bool:
    return name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) is not None


def _climbs(name: str) -> bool:
    return ".." in re.split(r"[/\\]", name)


def _through_link(parts: Sequence[str], links: Set[str]) -> bool:
    """Whether the path ``parts`` passes through (below) one of the ``links``."""
    return any("/".join(parts[:i]) in links for i in range(1, len(parts)))


def unsafe_reason(m: Member, links: Set[str] = frozenset()) -> Optional[str]:
    """Why ``m`` may not be extracted, or None; ``links`` are the paths of the archive's link members."""
    if _absolute(m.name):
        return "absolute path"
    if _climbs(m.name):
        return "path with '..'"
    if m.kind == "special":
        return "device or pipe"
    if _through_link(m.path.split("/"), links):
        return "written through a link"
    if m.kind in ("symlink", "hardlink"):
        if _absolute(m.target):
            return f"link to the absolute path {m.target}"
        base = posixpath.dirname(m.path) if m.kind == "symlink" else ""  # hard links start at the top
        walked = [p for p in base.split("/") if p]
        for part in m.target.replace("\\", "/").split("/"):
            if part == "..":
                if not walked:
                    return f"link to {m.target}, outside the archive"
                walked.pop()
            elif part not in ("", "."):
                walked.append(part)
                if _through_link(walked + ["x"], links - {m.path}):
                    return f"link to {m.target}, through another link"
    return None


def check_safe(path: str, members: Sequence[Member]) -> None:
    """Raise :class:`UnsafeArchive` naming every unsafe member of ``path``."""
    links = {m.path for m in members if m.kind in ("symlink", "hardlink")}
    bad = [(m.name, r) for m in members for r in [unsafe_reason(m, links)] if r]
    if bad:
        named = "; ".join(f"{name!r} ({why})" for name, why in bad[:MAX_NAMED])
        more = f"; and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else ""
        raise UnsafeArchive(
            f"Refusing {path}: {len(bad)} member(s) would be written outside the dataset folder: {named}{more}. "
            f"Nothing was extracted. Delete {path} and get the archive again from the official source."
        )


def top_entries(members: Sequence[Member], prefix: str) -> List[str]:
    """The first path components below ``prefix`` (``""`` or ending with ``/``), sorted."""
    tops = {m.path[len(prefix) :].split("/")[0] for m in members if m.path.startswith(prefix)}
    return sorted(t for t in tops if t)


def under(members: Sequence[Member], prefix: str) -> Iterator[Member]:
    return (m for m in members if m.path.startswith(prefix) and m.path != prefix.rstrip("/"))


def extract(path: str, members: Sequence[Member], prefix: str, dest: str) -> None:
    """Extract the (already checked) members below ``prefix`` of archive ``path`` into ``dest``."""
    wanted = {m.name for m in under(members, prefix)}
    with reading(path):
        if is_zip(path):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.filename in wanted:
                        zf.extract(info, dest)
            return
        with tarfile.open(path, "r|*") as tf:  # one pass, in archive order
            for m in tf:
                if m.name in wanted:
                    extract_member(tf, m, dest)


def extract_member(tf: tarfile.TarFile, member: tarfile.TarInfo, dest: str) -> None:
    """``tf.extract`` with tarfile's ``data`` filter where this Python has it (3.11.4 and later)."""
    if hasattr(tarfile, "data_filter"):
        tf.extract(member, dest, filter="data")
    else:
        tf.extract(member, dest)


def extract_file(path: str, member: str, dest: str) -> None:
    """Write the regular file ``member`` of archive ``path`` to ``dest`` (through ``dest.part``)."""
    members = list_members(path)
    check_safe(path, members)
    found = [m for m in members if m.path == member and m.kind == "file"]
    if not found:
        raise DamagedFile(
            f"{path} does not hold {member}; its top entries are {', '.join(top_entries(members, '')[:10]) or 'none'}. "
            "It is laid out otherwise than sources.json says: delete it and get the file from a mirror (--mirror)."
        )
    check_free(os.path.dirname(dest), found[0].size, f"taking {member} out of {os.path.basename(path)}")
    part = dest + ".part"
    try:
        with reading(path), open(part, "wb") as out:
            if is_zip(path):
                with zipfile.ZipFile(path) as zf, zf.open(found[0].name) as f:
                    shutil.copyfileobj(f, out)
            else:
                with tarfile.open(path, "r:*") as tf:
                    shutil.copyfileobj(tf.extractfile(found[0].name), out)
        os.replace(part, dest)
    finally:
        if os.path.exists(part):
            os.remove(part)


def fresh_temp(parent: str, name: str) -> str:
    """An empty hidden work folder ``parent/.<name>.extract.tmp`` (a leftover one is removed)."""
    path = os.path.join(parent, f".{name}{TMP_SUFFIX}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path
