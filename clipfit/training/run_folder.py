"""One run folder (``train.py --output-dir``): its lock, its state, and the settings of its run.

- **Lock**: ``.clipfit.lock`` in the folder, held with ``flock`` by the process that writes
  the folder (the kernel releases it when that process dies, so a killed run leaves no live
  lock). A second writer is refused with the holder's pid and command. The scripts take the
  lock in bash and pass the open file to ``train.py`` (``CLIPFIT_LOCK_FD``).
- **Record**: ``run.json``, written when a run starts: the settings that define the run
  (:func:`run_settings`), its kind (train or eval) and its state (running, crashed with the
  error, interrupted, finished). Resuming or skipping with other settings is refused.
- **State** of a folder without final results (:func:`unfinished_state`): running (lock
  held), crashed (with the last error line), interrupted (with the last checkpoint), or
  not started (training never began).

``python -m clipfit.training.run_folder plan WHAT -- TRAIN_PY_ARGS`` tells the scripts what
to do with a run folder: skip, start, retry or resume (or refuses, exit status 2).
"""
from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import os
import os.path as osp
import re
import shutil
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from clipfit.checkpoint_files import saved_epochs
from clipfit.fileio import FileContentError, read_json, write_json
from clipfit.errors import UserError

LOCK_FILE = ".clipfit.lock"  # scripts/_common.sh names it too
RECORD_FILE = "run.json"
LOCK_FD_ENV = "CLIPFIT_LOCK_FD"
RECORD_FORMAT = "clipfit-run/1"
TRAIN, EVAL = "train", "eval"
RUNNING, CRASHED, INTERRUPTED, NOT_STARTED = "running", "crashed", "interrupted", "not-started"
FINISHED = "finished"  # a record's state once the run wrote its final result
_PROGRESS_LINE = re.compile(r"^epoch \[(\d+)/(\d+)\]")
# Keys that define a run (with every OPTIM.* and TRAINER.* key, see run_settings)
RUN_KEYS = ("DATASET.NAME", "DATASET.SUBSAMPLE_CLASSES", "DATASET.NUM_SHOTS", "DATASET.TEMPLATE",
            "SEED", "MODEL.BACKBONE.NAME", "MODEL.BACKBONE.PATH", "INPUT.SIZE",
            "DATALOADER.TRAIN_X.BATCH_SIZE")
RUN_SUBTREES = ("OPTIM", "TRAINER")
WEIGHTS = "weights sha256"
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
    """The lock on one run folder held by this process (or inherited from a script)."""

    folder: str
    fd: int
    owned: bool  # taken here (released here) rather than inherited
    note: str = ""  # about a stale lock taken over

    def release(self) -> None:
        if self.owned:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)


def acquire(folder: str, holder: str) -> FolderLock:
    """Lock ``folder`` (created when missing) for this process, described as ``holder``.

    An inherited lock (``CLIPFIT_LOCK_FD`` naming an open file of this folder's lock, held by
    the calling script) is used as it is. A lock left by a killed process is taken over with
    a note. Raises :class:`RunFolderError` naming the holder when a live process has it.
    """
    import fcntl

    os.makedirs(folder, exist_ok=True)
    path = lock_path(folder)
    inherited = os.environ.get(LOCK_FD_ENV, "")
    lock = None
    if inherited.isdigit():
        fd = int(inherited)
        try:
            same = osp.samestat(os.fstat(fd), os.stat(path))
        except OSError:
            same = False
        if same:
            _lock(fcntl, fd, path)
            lock = FolderLock(folder, fd, owned=False)
            holder = process_line(os.getppid())  # the script that opened it
    if lock is None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        _lock(fcntl, fd, path, close_on_busy=True)
        lock = FolderLock(folder, fd, owned=True)
    previous = _read_holder(path)
    if previous.split(":")[0] != holder.split(":")[0]:  # not written by this holder already
        if previous:
            lock.note = (f"Note: {folder} had a lock left by a process that is gone ({previous}); "
                         "taken over.")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{holder}\n".encode(), 0)
    return lock


def _lock(fcntl, fd: int, path: str, close_on_busy: bool = False) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if close_on_busy:
            os.close(fd)
        raise RunFolderError(
            f"{osp.dirname(path)} is being written by another process ({_read_holder(path) or 'unknown'}). "
            "Wait for it to finish, stop it, or use another --output-dir.") from None


# ---------------------------------------------------------------- state

def last_checkpoint_epoch(folder: str) -> Optional[int]:
    """The highest ``N`` of ``<folder>/<model name>/model.pth.tar-N``, None without one."""
    epochs = [e for d in glob.glob(osp.join(folder, "*", "")) for e in saved_epochs(d)]
    return max(epochs) if epochs else None


def read_record(folder: str) -> Optional[dict]:
    """The folder's ``run.json``, None when absent or not one of ours."""
    path = osp.join(folder, RECORD_FILE)
    if not osp.isfile(path):
        return None
    try:
        record = read_json(path, "Run record")
    except (OSError, FileContentError):  # damaged: nothing to compare with
        return None
    return record if isinstance(record, dict) and record.get("format") == RECORD_FORMAT else None


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
    if record.get("state") == INTERRUPTED or any(_PROGRESS_LINE.match(ln) for ln in lines):
        return INTERRUPTED, "stopped before its first checkpoint"
    return NOT_STARTED, "training never started"


def holds_training(folder: str) -> bool:
    """Whether ``folder`` holds (part of) a training run: checkpoints, a training record or
    training progress in its log."""
    record = read_record(folder)
    if record is not None:
        return record.get("kind") == TRAIN
    return last_checkpoint_epoch(folder) is not None or any(
        _PROGRESS_LINE.match(ln) for ln in _log_lines(folder))


# ---------------------------------------------------------------- settings

def weights_fingerprint(path: str, previous: Optional[dict] = None) -> Optional[dict]:
    """Size, mtime and SHA256 of a weights file (the SHA256 reused from ``previous`` when size
    and mtime match); None when there is no such file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    print_ = {"path": osp.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if previous and all(previous.get(k) == v for k, v in print_.items()) and previous.get("sha256"):
        return {**print_, "sha256": previous["sha256"]}
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return {**print_, "sha256": digest.hexdigest()}


def weights_file(cfg) -> str:
    """The weights file the loader would read for ``cfg`` without downloading ("" if none)."""
    if cfg.MODEL.BACKBONE.PATH:
        return osp.expanduser(cfg.MODEL.BACKBONE.PATH)
    try:
        from clipfit.methods.clip_loader import cached_weights_path

        return cached_weights_path(cfg.MODEL.BACKBONE.NAME)
    except ValueError:  # a backbone name the clip package does not know
        return ""


def flat_settings(node) -> Dict[str, object]:
    """A yacs config as ``{"A.B": value}``, tuples as lists (as config.yaml stores them)."""
    out: Dict[str, object] = {}
    for k, v in node.items():
        if hasattr(v, "items"):
            out.update({f"{k}.{kk}": vv for kk, vv in flat_settings(v).items()})
        else:
            out[k] = _plain(v)
    return out


def _plain(value):
    return list(map(_plain, value)) if isinstance(value, (list, tuple)) else value


def run_settings(cfg, eval_from: Optional[Tuple[str, Optional[int]]] = None) -> Dict[str, object]:
    """The settings that define a run: dataset, subsample, shots, template, seed, backbone,
    input size, batch size, every OPTIM.* (optimiser, schedule) and TRAINER.* (method) key;
    for an evaluation, the model folder and epoch it loads."""
    flat = flat_settings(cfg)
    settings = {k: flat[k] for k in RUN_KEYS if k in flat}
    settings.update({k: v for k, v in flat.items() if k.split(".")[0] in RUN_SUBTREES})
    if eval_from is not None:
        settings["model dir"] = osp.abspath(eval_from[0]) if eval_from[0] else ""
        settings["load epoch"] = eval_from[1]
    return settings


def differences(old: Dict[str, object], new: Dict[str, object]) -> List[str]:
    """``KEY: old -> new`` for every setting that differs (a moved weights file with the same
    SHA256 is no difference)."""
    same_weights = old.get(WEIGHTS) and old.get(WEIGHTS) == new.get(WEIGHTS)
    lines = []
    for key in sorted(set(old) | set(new)):
        if key == "MODEL.BACKBONE.PATH" and same_weights:
            continue
        if old.get(key, "(unset)") != new.get(key, "(unset)"):
            lines.append(f"{key}: {old.get(key, '(unset)')!r} (recorded) -> "
                         f"{new.get(key, '(unset)')!r} (now)")
    return lines


def _settings_of_config_yaml(folder: str) -> Optional[Dict[str, object]]:
    """The settings of an older folder without run.json, from its config.yaml."""
    path = osp.join(folder, "config.yaml")
    if not osp.isfile(path):
        return None
    from yacs.config import CfgNode

    try:
        with open(path) as f:
            cfg = CfgNode.load_cfg(f)
    except Exception:  # unreadable: nothing to compare with
        return None
    settings = run_settings(cfg)
    return {k: v for k, v in settings.items() if k in RUN_KEYS or k.split(".")[0] in RUN_SUBTREES}


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


def decide(folder: str, kind: str, settings: Dict[str, object], overwrite: bool,
           finished_accuracy: Optional[float]) -> Decision:
    """Check ``folder`` for a run of ``kind`` with ``settings``; raises :class:`RunFolderError`
    when it holds a different run (other settings, or a training run for an evaluation)."""
    if not osp.isdir(folder):
        return Decision("start")
    if kind == EVAL and holds_training(folder):
        raise RunFolderError(
            f"{folder} holds a training run: evaluating into it would overwrite its results. "
            "Write the evaluation to another --output-dir (and load the model with --model-dir "
            f"{folder}).")
    if overwrite:
        return Decision("start", "--overwrite: the previous run in this folder is deleted")
    if finished_accuracy is not None or last_checkpoint_epoch(folder) is not None:
        old = (read_record(folder) or {}).get("settings") or _settings_of_config_yaml(folder)
        diff = differences(old, settings) if old else []
        if diff:
            what = "a finished run" if finished_accuracy is not None else "an unfinished run"
            raise RunFolderError(
                f"{folder} holds {what} with other settings:\n  " + "\n  ".join(diff)
                + f"\n{WAYS_OUT}")
    if finished_accuracy is not None:
        return Decision("skip", f"finished (accuracy {finished_accuracy:.2f}%)")
    return state_decision(folder)


def start_record(folder: str, kind: str, settings: Dict[str, object], weights: Optional[dict],
                 command: str) -> None:
    """Write ``run.json`` for a run starting now (state running)."""
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


# ---------------------------------------------------------------- the scripts' entry point

def main(argv: Optional[List[str]] = None) -> int:
    """``lock WHAT DIR``, run by the scripts with ``CLIPFIT_LOCK_FD`` naming their open lock
    file: lock it for the script, announce how an unfinished run goes on and set its old log
    aside. A finished run is left to ``train.py --announce`` (skipped, or refused when its
    settings differ). Exit status 2 when another process holds the folder."""
    parser = argparse.ArgumentParser(prog="python -m clipfit.training.run_folder")
    sub = parser.add_subparsers(dest="command", required=True)
    lock = sub.add_parser("lock", help="lock a run folder for the calling script")
    lock.add_argument("what", help="the run's name in the announcement")
    lock.add_argument("folder")
    args = parser.parse_args(argv)
    if not os.environ.get(LOCK_FD_ENV, "").isdigit():
        parser.error(f"{LOCK_FD_ENV} must name the script's open lock file")
    from clipfit.experiments.results import read_run

    try:
        held = acquire(args.folder, "")
    except RunFolderError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    if held.note:
        print(held.note, file=sys.stderr)
    if not read_run(args.folder).finished:
        print(state_decision(args.folder).line(args.what, args.folder))
        set_aside_log(args.folder)
    return 0


if __name__ == "__main__":  # run through the package, so that callers see the same classes
    from clipfit.training import run_folder

    sys.exit(run_folder.main())
