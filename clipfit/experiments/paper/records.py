"""What the paper runner remembers between commands, under ``<out>/paper``: one record per task
(its last attempt: state, error line, whether it was a user error, attempts), and the SLURM
submissions (array job id -> its tasks file), so that ``status`` can ask ``squeue`` about them.

A task's record is tied to its runs (:func:`task_key`): after an option is fixed the task is
another task, and its old failure no longer holds it back.
"""
from __future__ import annotations

import datetime
import glob
import hashlib
import json
import os
import os.path as osp
import re
from typing import Dict, Optional

from clipfit.experiments.paper.plan import Task, spec_to_dict
from clipfit.fileio import FileContentError, read_json, write_json, write_text

RECORD_FORMAT = "clipfit-paper-task/1"
STARTED, FINISHED, FAILED = "started", "finished", "failed"
JOB_SUFFIX = ".job"
_ERROR = re.compile(r"^(ERROR:|(\w+\.)*\w*(Error|Exception)\b)")


def task_key(task: Task) -> str:
    """A digest of the task's runs (what they are, not where their log is)."""
    text = json.dumps([spec_to_dict(s) for s in task.specs], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _path(paper_dir: str, task: Task) -> str:
    return osp.join(paper_dir, "tasks", f"{task.name}.json")


def read_record(paper_dir: str, task: Task) -> Optional[dict]:
    """The task's record when it is one of ours and about these runs (else None)."""
    path = _path(paper_dir, task)
    if not osp.isfile(path):
        return None
    try:
        record = read_json(path, "Paper task record")
    except (OSError, FileContentError):
        return None  # damaged: as if the task had no history
    ok = isinstance(record, dict) and record.get("format") == RECORD_FORMAT and record.get("key") == task_key(task)
    return record if ok else None


def start(paper_dir: str, task: Task, job: str) -> int:
    """Record an attempt starting now; returns its number (1 for a first attempt)."""
    previous = read_record(paper_dir, task) or {}
    attempt = int(previous.get("attempts", 0)) + 1
    _write(paper_dir, task, {"state": STARTED, "attempts": attempt, "job": job, "error": "",
                             "user_error": False})
    return attempt


def finish(paper_dir: str, task: Task, state: str, error: str = "", user_error: bool = False) -> None:
    """Record how the attempt ended (finished or failed, with its error line)."""
    record = read_record(paper_dir, task) or {"attempts": 1, "job": ""}
    _write(paper_dir, task, {**record, "state": state, "error": error, "user_error": user_error})


def _write(paper_dir: str, task: Task, fields: dict) -> None:
    write_json(_path(paper_dir, task), {
        **fields, "format": RECORD_FORMAT, "task": task.name, "key": task_key(task),
        "updated": datetime.datetime.now().isoformat(timespec="seconds")}, indent=1)


def error_line(log: str, offset: int = 0) -> str:
    """The last ``ERROR: ...`` line, else exception line, of ``log`` after byte ``offset``."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line.strip() for line in lines if _ERROR.match(line.strip())]
    marked = [line for line in errors if line.startswith("ERROR:")]
    return (marked or errors or [""])[-1]


# ---------------------------------------------------------------- SLURM submissions

def slurm_dir(paper_dir: str) -> str:
    return osp.join(paper_dir, "slurm")


def record_submission(tasks_file: str, job_id: str) -> None:
    """Remember that array job ``job_id`` runs the tasks of ``tasks_file``."""
    write_text(tasks_file[:-len(".json")] + JOB_SUFFIX, f"{job_id}\n")


def submissions(paper_dir: str) -> Dict[str, str]:
    """Array job id -> its tasks file, for every submission made from ``paper_dir``."""
    found = {}
    for job_file in glob.glob(osp.join(slurm_dir(paper_dir), f"*{JOB_SUFFIX}")):
        try:
            with open(job_file) as f:
                job = f.read().strip()
        except OSError:
            continue
        tasks_file = job_file[:-len(JOB_SUFFIX)] + ".json"
        if job.isdigit() and osp.isfile(tasks_file):
            found[job] = tasks_file
    return found


def log_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0

