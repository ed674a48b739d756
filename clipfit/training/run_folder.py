"""One run folder (``train.py --output-dir``): its lock, its state, and the settings of its run.

- **Lock**: ``.clipfit.lock`` in the folder, held with ``flock`` by the process that writes
  the folder (the kernel releases it when that process dies, so a killed run leaves no live
  lock). A second writer is refused with the holder's pid and command. Every entry point
  (``train.py``, the scripts, the sweep, the paper runner) takes this one lock.
- **Record**: ``run.json``, written when a run starts: the run's identity
  (:mod:`clipfit.training.run_spec`), its kind (train or eval) and its state (running, crashed
  with the error, interrupted, finished).
- **State** of a folder without final results (:func:`unfinished_state`): running (lock
  held), crashed (with the last error line), interrupted (with the last checkpoint), or
  not started (training never began).
- **Progress**: Dassl's ``epoch [i/n] ...`` lines in ``log.txt`` (:data:`PROGRESS_LINE`).

Reading final results and aggregating them sits above this module
(:mod:`clipfit.experiments.results`).
"""
from __future__ import annotations

import datetime
import glob
import os
import os.path as osp
import re
import shutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from clipfit.checkpoint_files import saved_epochs
from clipfit.fileio import FileContentError, read_json, write_json
from clipfit.errors import UserError

LOCK_FILE = ".clipfit.lock"
RECORD_FILE = "run.json"
RECORD_FORMAT = "clipfit-run/2"  # /2: the settings are the whole identity (run_spec.identity)
OLDER_FORMATS = ("clipfit-run/1",)
TRAIN, EVAL = "train", "eval"
RUNNING, CRASHED, INTERRUPTED, NOT_STARTED = "running", "crashed", "interrupted", "not-started"
FINISHED = "finished"  # a record's state once the run wrote its final result
PROGRESS_LINE = re.compile(r"^epoch \[(\d+)/(\d+)\]")  # Dassl's progress line
WAYS_OUT = ("Either write to another folder (train.py --output-dir DIR; scripts: OUT=DIR), or "
            "start again in this one with --overwrite (scripts: OVERWRITE=1), which deletes its "
            "checkpoints and results.")


class RunFolderError(UserError):
    """A run folder that cannot be used as asked (busy, other settings, wrong kind)."""


# ---------------------------------------------------------------- lock

def lock_path(folder: str) -> str:
    return osp.join(folder, LOCK_FILE)


def _read_holder(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return " / ".join(line.strip() for line in f if line.strip())
    except OSError:
        return ""


def is_locked(path: str) -> bool:
    """Whether a process holds the ``flock`` lock on the file ``path`` now."""
    import fcntl

    if not osp.exists(path):
        return False
    with open(path) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def lock_holder(folder: str) -> Optional[str]:
    """Who holds the folder's lock now ("pid N: command"), None when nobody does."""
    path = lock_path(folder)
    return (_read_holder(path) or "another process") if is_locked(path) else None


def process_line(pid: int) -> str:
    """``pid N: <its command line>`` (from /proc where there is one)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = " ".join(f.read().replace(b"\0", b" ").decode(errors="replace").split())
    except OSError:
        command = ""
    return f"pid {pid}: {command[:300]}" if command else f"pid {pid}"


@dataclass
class FolderLock:
    """The lock on one run folder held by this process (an empty lock file is a released one)."""

    folder: str
    fd: int
    note: str = ""  # about a stale lock taken over

    def release(self) -> None:
        os.ftruncate(self.fd, 0)
        os.close(self.fd)


def acquire(folder: str, holder: str) -> FolderLock:
    """Lock ``folder`` (created when missing) for this process, described as ``holder``
    (:func:`process_line`). A lock left by a killed process is taken over with a note. Raises
    :class:`RunFolderError` naming the holder when a live process has it."""
    import fcntl

    os.makedirs(folder, exist_ok=True)
    path = lock_path(folder)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    _lock(fcntl, fd, path)
    lock = FolderLock(folder, fd)
    previous = _read_holder(path)
    if previous:
        lock.note = (f"Note: {folder} had a lock left by a process that is gone ({previous}); "
                     "taken over.")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{holder}\n".encode(), 0)
    return lock


def _lock(fcntl, fd: int, path: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunFolderError(
            f"{osp.dirname(path)} is being written by another process ({_read_holder(path) or 'unknown'}). "
            "Wait for it to finish, stop it, or use another --output-dir.") from None


# ---------------------------------------------------------------- state

def last_checkpoint_epoch(folder: str) -> Optional[int]:
    """The highest ``N`` of ``<folder>/<model name>/model.pth.tar-N``, None without one."""
    epochs = [e for d in glob.glob(osp.join(folder, "*", "")) for e in saved_epochs(d)]
    return max(epochs) if epochs else None


def read_record(folder: str, any_format: bool = False) -> Optional[dict]:
    """The folder's ``run.json``, None when absent or not one of ours (``any_format``: older
    record formats too)."""
    path = osp.join(folder, RECORD_FILE)
    if not osp.isfile(path):
        return None
    try:
        record = read_json(path, "Run record")
    except (OSError, FileContentError):  # damaged: nothing to compare with
        return None
    formats = (RECORD_FORMAT, *OLDER_FORMATS) if any_format else (RECORD_FORMAT,)
    return record if isinstance(record, dict) and record.get("format") in formats else None


def read_config_yaml(folder: str):
    """The folder's ``config.yaml`` as a yacs node, None when absent or unreadable."""
    path = osp.join(folder, "config.yaml")
    if not osp.isfile(path):
        return None
    from yacs.config import CfgNode

    try:
        with open(path) as f:
            return CfgNode.load_cfg(f)
    except Exception:  # unreadable: nothing to compare with
        return None


def update_record(folder: str, **changes) -> None:
    """Change fields of the folder's ``run.json`` (state, error, ...)."""
    record = read_record(folder)
    if record is not None:
        record.update(changes, updated=_now())
        write_json(osp.join(folder, RECORD_FILE), record, indent=1)


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def _log_lines(folder: str) -> List[str]:
    try:
        with open(osp.join(folder, "log.txt"), errors="replace") as f:
            return [line.rstrip() for line in f]
    except OSError:
        return []


def _crash_line(lines: List[str]) -> str:
    """The error line of a Python traceback at the end of a log ("" when none)."""
    if not any(line.startswith("Traceback (most recent call last)") for line in lines[-200:]):
        return ""
    return next((line for line in reversed(lines) if line.strip()), "")


def unfinished_state(folder: str, check_lock: bool = True) -> Tuple[str, str]:
    """(state, detail) of a folder without final results: running, crashed, interrupted or
    not-started (``check_lock=False``: the caller holds the lock)."""
    holder = lock_holder(folder) if check_lock else None
    if holder:
        return RUNNING, f"lock held by {holder}"
    record = read_record(folder) or {}
    epoch = last_checkpoint_epoch(folder)
    at = f"last checkpoint: epoch {epoch}" if epoch is not None else "no checkpoint"
    lines = _log_lines(folder)
    error = record.get("error") if record.get("state") == CRASHED else _crash_line(lines)
    if error:
        return CRASHED, f"{error} ({at})"
    if epoch is not None:
        return INTERRUPTED, at
    if record.get("state") == INTERRUPTED or any(PROGRESS_LINE.match(ln) for ln in lines):
        return INTERRUPTED, "stopped before its first checkpoint"
    return NOT_STARTED, "training never started"


def holds_training(folder: str) -> bool:
    """Whether ``folder`` holds (part of) a training run: checkpoints, a training record or
    training progress in its log."""
    record = read_record(folder)
    if record is not None:
        return record.get("kind") == TRAIN
    return last_checkpoint_epoch(folder) is not None or any(
        PROGRESS_LINE.match(ln) for ln in _log_lines(folder))


# ---------------------------------------------------------------- what comes next

@dataclass
class Decision:
    """What to do with a run folder: skip, start, retry (after a crash) or resume."""

    action: str
    detail: str = ""

    def line(self, what: str, folder: str) -> str:
        """The scripts' announcement: ``==> [ACTION] WHAT: detail in FOLDER``."""
        verb = "" if self.action == "start" else f"{self.action} "
        return f"==> {verb}{what}" + (f": {self.detail} in {folder}" if self.detail else f" -> {folder}")


def state_decision(folder: str) -> Decision:
    """How an unfinished run in ``folder`` goes on (its lock held by the caller): start, retry
    after a crash, or resume from its last checkpoint."""
    if not osp.isdir(folder):
        return Decision("start")
    state, detail = unfinished_state(folder, check_lock=False)
    resumable = last_checkpoint_epoch(folder) is not None
    if state == CRASHED:
        return Decision("resume" if resumable else "retry", f"the last attempt crashed: {detail}")
    if state == INTERRUPTED:
        return Decision("resume" if resumable else "retry", f"interrupted, {detail}")
    leftovers = set(os.listdir(folder)) - {LOCK_FILE}
    return Decision("start", "the last attempt never started training" if leftovers else "")


def start_record(folder: str, kind: str, settings: Dict[str, object], weights: Optional[dict],
                 command: str) -> None:
    """Write ``run.json`` for a run starting now (state running): its identity (``settings``),
    the base weights' fingerprint and the command."""
    write_json(osp.join(folder, RECORD_FILE), {
        "format": RECORD_FORMAT, "kind": kind, "state": RUNNING, "started": _now(),
        "updated": _now(), "command": command, "settings": settings, "weights": weights},
        indent=1)


def clear(folder: str) -> None:
    """Delete the results, checkpoints and record of the previous run in ``folder`` (logs are
    kept; ``log.txt`` moves aside)."""
    for name in ("metrics.json", RECORD_FILE, "config.yaml"):
        if osp.isfile(osp.join(folder, name)):
            os.remove(osp.join(folder, name))
    for model_dir in {osp.dirname(p) for p in glob.glob(osp.join(folder, "*", "model.pth.tar-*"))
                      + glob.glob(osp.join(folder, "*", "checkpoint"))}:
        shutil.rmtree(model_dir)
    if osp.isdir(osp.join(folder, "tensorboard")):
        shutil.rmtree(osp.join(folder, "tensorboard"))
    set_aside_log(folder)


def set_aside_log(folder: str) -> None:
    """Move ``log.txt`` to ``log.txt-<its time>`` (Dassl's name for older logs), so that a new
    attempt writes a complete ``log.txt``, the file CoOp's parse_test_res.py reads."""
    log = osp.join(folder, "log.txt")
    if not osp.isfile(log):
        return
    stamp = datetime.datetime.fromtimestamp(osp.getmtime(log)).strftime("%Y-%m-%d-%H-%M-%S")
    dest, i = f"{log}-{stamp}", 1
    while osp.exists(dest):
        dest, i = f"{log}-{stamp}-{i}", i + 1
    os.replace(log, dest)
