"""Dassl's checkpoint files, in one place: their names, the ``checkpoint`` pointer file, a
checked ``torch.load``, and resuming from the newest checkpoint that loads.

A model folder holds ``model.pth.tar-<epoch>`` files, ``model-best.pth.tar`` and a text file
``checkpoint`` naming the latest one. Both engines and every tool name, list and read these
files through this module.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from typing import Any, Callable, List, Optional, Tuple, TypeVar

from clipfit.fileio import FileContentError, read_text
from clipfit.errors import MissingFileError, UserError

EPOCH_PREFIX = "model.pth.tar-"
BEST_FILE = "model-best.pth.tar"
POINTER_FILE = "checkpoint"
EPOCH_FILE = re.compile(r"^model\.pth\.tar-(\d+)$")
T = TypeVar("T")


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used (damaged, foreign or made for another model)."""

    def __str__(self) -> str:
        return self.args[0]


class DamagedCheckpointError(CheckpointError):
    """A checkpoint file that cannot be read: truncated, overwritten or corrupted."""


class CheckpointMismatchError(CheckpointError):
    """A readable checkpoint made for another model, parameter selection or program."""


class ForeignCheckpointError(CheckpointMismatchError):
    """A readable checkpoint that was not written by this toolkit."""


class PointerOutsideError(FileContentError):
    """A ``checkpoint`` pointer naming a file outside its own folder."""


def checkpoint_file(epoch: Optional[int]) -> str:
    """Dassl's file name: ``model.pth.tar-<epoch>``, or the best model for ``None``."""
    return BEST_FILE if epoch is None else f"{EPOCH_PREFIX}{epoch}"


def saved_epochs(folder: str) -> List[int]:
    """Epochs of the ``model.pth.tar-<epoch>`` files in ``folder``, ascending."""
    if not os.path.isdir(folder):
        return []
    return sorted(int(m.group(1)) for m in map(EPOCH_FILE.match, os.listdir(folder)) if m)


def read_pointer(folder: str) -> str:
    """The path the ``checkpoint`` file of ``folder`` names (Dassl's resume rule).

    The pointer must hold the name of a file in ``folder`` itself; anything else (a path,
    ``..``, binary data, nothing) raises :class:`FileContentError` naming the file and the fix.
    """
    pointer = os.path.join(folder, POINTER_FILE)
    fix = (f"delete {pointer}: resume then starts from the newest {EPOCH_PREFIX}N in {folder} "
           "that loads")
    lines = read_text(pointer, "The checkpoint pointer file", fix).splitlines()
    name = lines[0].strip() if lines else ""
    if not name:
        raise FileContentError(f"The checkpoint pointer file {pointer} is empty. Fix: {fix}.")
    if name in (".", "..") or os.path.basename(name) != name or os.path.isabs(name) or "\\" in name:
        raise PointerOutsideError(
            f"The checkpoint pointer file {pointer} names {name!r}, which is not a file of its own folder "
            f"{folder}; it is refused. Fix: {fix}."
        )
    return os.path.join(folder, name)


def resume_candidates(folder: str) -> List[str]:
    """Checkpoints to resume from, in order: the one the pointer names, then the others, newest first.

    A damaged pointer is reported and skipped; one naming a file outside ``folder`` is refused.
    """
    first: List[str] = []
    if os.path.exists(os.path.join(folder, POINTER_FILE)):
        try:
            first = [read_pointer(folder)]
        except PointerOutsideError:
            raise
        except FileContentError as e:
            print(f"WARNING: {e} Ignoring it.")
    others = [os.path.join(folder, checkpoint_file(n)) for n in reversed(saved_epochs(folder))]
    return [p for p in first if os.path.isfile(p)] + [p for p in others if p not in first]


def has_checkpoint(folder: str) -> bool:
    """Whether ``folder`` holds a pointer file or a ``model.pth.tar-<epoch>`` to resume from."""
    return os.path.exists(os.path.join(folder, POINTER_FILE)) or bool(saved_epochs(folder))


def load_newest(folder: str, load: Callable[[str], T]) -> Tuple[str, T]:
    """``load`` the first of :func:`resume_candidates` that is not damaged; says which it used
    and which it skipped. Other errors (a foreign or mismatched checkpoint) are raised."""
    skipped: List[str] = []
    for path in resume_candidates(folder):
        try:
            result = load(path)
        except DamagedCheckpointError as e:
            print(f"WARNING: skipping a damaged checkpoint: {e}")
            skipped.append(os.path.basename(path))
            continue
        if skipped:
            print(f"Resuming from {path}, the newest checkpoint that loads (skipped: {', '.join(skipped)}).")
        return path, result
    if skipped:
        raise DamagedCheckpointError(
            f"No checkpoint in {folder} can be loaded (all damaged: {', '.join(skipped)}). Train from scratch: "
            "delete those files, or choose another --output-dir."
        )
    raise DamagedCheckpointError(
        f"{folder} has a '{POINTER_FILE}' file but no {EPOCH_PREFIX}N file to resume from. Train from scratch: "
        f"delete {os.path.join(folder, POINTER_FILE)}, or choose another --output-dir."
    )


def load_weights_only(path: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` after checking the file's integrity.

    A truncated or corrupted file (zip CRC checked: torch itself loads flipped bits silently)
    raises :class:`DamagedCheckpointError`; a readable file holding Python objects raises
    :class:`ForeignCheckpointError`. Both name the path.
    """
    import torch

    if not os.path.isfile(path):
        folder = os.path.dirname(path)
        found = sorted(f for f in os.listdir(folder) if f.startswith("model")) if os.path.isdir(folder) else []
        hint = f"found there: {', '.join(found)}; pass --load-epoch N for one of them" if found else (
            "check --model-dir (it holds one sub-directory per model, as written by training)")
        raise MissingFileError(f"No checkpoint at {path} ({hint}).")
    damaged = (f"{path} is damaged (truncated, overwritten or corrupted on disk), so it cannot be used: "
               "{}. Delete it; resume falls back to the newest checkpoint that loads.")
    intact = zipfile.is_zipfile(path)  # torch's format since 1.6; older files are bare pickles
    if intact:
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise DamagedCheckpointError(damaged.format(e)) from e
        if bad is not None:
            raise DamagedCheckpointError(damaged.format(f"the checksum of its part {bad} does not match"))
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # an intact archive, or a bare pickle naming a class, was written as it is: it holds Python objects
        if "Weights only load failed" in str(e) and (intact or "Unsupported global" in str(e)):
            raise ForeignCheckpointError(
                f"{path} holds Python objects, not only tensors and plain data, so it is not loaded "
                "(weights_only=True). It was not written by this toolkit (e.g. by the authors' CLIPFit "
                "code, which stores the whole model); retrain with this toolkit or load it yourself."
            ) from e
        raise DamagedCheckpointError(damaged.format(f"{type(e).__name__}: {str(e)[-300:].strip()}")) from e
    except Exception as e:  # torch raises RuntimeError, EOFError, ... for unreadable archives
        raise DamagedCheckpointError(damaged.format(f"{type(e).__name__}: {e}")) from e
