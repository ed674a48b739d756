"""Where the paper stands: each task and each table cell finished, running (with its epoch),
queued, failed (with the log's error line) or left, read from the run folders and the task
records, plus ``squeue`` (and ``sacct`` where accounting works) when SLURM is there.

:func:`todo` decides what ``run`` starts: everything not finished, running or queued, except a
task that failed from a user error (a bad option, a missing dataset: it would fail again the
same way until the option is changed, which makes it another task) or failed ``max_attempts``
times.
"""
from __future__ import annotations

import json
import os.path as osp
import shutil
import subprocess
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Dict, List, Sequence, Tuple

from tabulate import tabulate

from clipfit.experiments import paper
from clipfit.experiments.jobs import display_path
from clipfit.experiments.paper import records
from clipfit.experiments.paper.plan import Task, absolute, read_tasks
from clipfit.experiments.protocol import SOURCE_DATASET, default_config
from clipfit.experiments.results import last_progress
from clipfit.experiments.run import OTHER_SETTINGS, spec_state
from clipfit.fileio import FileContentError
from clipfit.training.run_folder import FINISHED, INTERRUPTED, RUNNING, last_checkpoint_epoch
from clipfit.training.run_spec import RunSpec

QUEUED, FAILED, LEFT = "queued", "failed", "left"
STATES = (FINISHED, RUNNING, QUEUED, FAILED, LEFT)
SLURM_FAILURES = ("FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


@dataclass
class TaskState:
    """One task's state, what it is doing or why it failed, and its attempts."""

    task: str
    state: str
    detail: str = ""
    user_error: bool = False
    attempts: int = 0
    log: str = ""
    finished_runs: Tuple[str, ...] = ()  # folders of its runs that finished with their identity


def table_label(setting: str, shots: int) -> str:
    """The paper's table of ``setting`` at ``shots`` ("Table 1 (base2new, 16 shots)")."""
    for stem in paper.TABLES:
        table = paper.load_table(stem)
        if table["setting"] == setting and shots in table["shots"] and table["datasets"] != ["Average"]:
            return f"{table['source']['table']} ({setting}, {shots} shots)"
    return f"{setting}, {shots} shots (no table in the paper)"


def cells_of(spec: RunSpec, settings: Sequence[str]) -> List[Tuple[str, str, str]]:
    """The (table, trainer, dataset) cells a run fills: an ImageNet source model fills the
    ImageNet cell of the selected transfer tables it is the source of."""
    if spec.setting == "xd" and spec.part == "train":
        return [(table_label(s, spec.shots), spec.trainer, spec.dataset) for s in source_of(spec, settings)]
    return [(table_label(spec.setting, spec.shots), spec.trainer, spec.dataset)]


def source_of(spec: RunSpec, settings: Sequence[str]) -> List[str]:
    """The selected transfer settings (xd, dg) whose protocol config trains ``spec`` (an ImageNet
    source run): CLIPFit's differ (beta 8 and 2), most baselines share one."""
    return [s for s in ("xd", "dg") if s in settings
            and default_config(spec.trainer, s, SOURCE_DATASET, spec.shots) == spec.cfg]


# ---------------------------------------------------------------- SLURM

def _slurm_tasks(paper_dir: str) -> Dict[Tuple[str, int], str]:
    """(array job id, index) -> task name, for the submissions made from ``paper_dir``."""
    names = {}
    for job, tasks_file in records.submissions(paper_dir).items():
        try:
            tasks = read_tasks(tasks_file)
        except (OSError, FileContentError):
            continue
        names.update({(job, i): t.name for i, t in enumerate(tasks)})
    return names


def queue(paper_dir: str) -> Dict[str, Tuple[str, str]]:
    """Task name -> (SLURM state, reason) of this campaign's array tasks in ``squeue``."""
    names = _slurm_tasks(paper_dir)
    if not names or shutil.which("squeue") is None:
        return {}
    proc = subprocess.run(["squeue", "-h", "-r", "-o", "%F|%K|%T|%r"], capture_output=True, text=True, timeout=60)
    found = {}
    for line in proc.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == 4 and parts[1].isdigit() and (parts[0], int(parts[1])) in names:
            found[names[(parts[0], int(parts[1]))]] = (parts[2], parts[3])
    return found


def accounting(paper_dir: str) -> Dict[str, str]:
    """Task name -> SLURM's final state of its last array task, where ``sacct`` works ({} where
    accounting is disabled, as on many small clusters)."""
    names = _slurm_tasks(paper_dir)
    if not names or shutil.which("sacct") is None:
        return {}
    jobs = ",".join(sorted({job for job, _ in names}))
    try:
        proc = subprocess.run(["sacct", "-n", "-P", "-X", "-j", jobs, "-o", "JobID,State"], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return {}
    found = {}
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        job_id, _, state = line.partition("|")
        job, _, index = job_id.partition("_")
        if index.isdigit() and (job, int(index)) in names:
            found[names[(job, int(index))]] = state.split()[0] if state else ""
    return found


# ---------------------------------------------------------------- states

def task_state(task: Task, paper_dir: str, queued: Dict[str, Tuple[str, str]], accounted: Dict[str, str]
               ) -> TaskState:
    """The state of one task (see the module docstring)."""
    record = records.read_record(paper_dir, task) or {}
    attempts = int(record.get("attempts", 0))
    runs = [(spec, spec_state(spec)) for spec in task.specs]
    done = tuple(spec.folder for spec, run in runs if run.finished)

    def state(kind: str, detail: str = "", user_error: bool = False) -> TaskState:
        return TaskState(task.name, kind, detail, user_error, attempts, task.log, done)

    if all(r.finished for _, r in runs):
        return state(FINISHED)
    for spec, run in runs:
        if run.status == RUNNING:
            folder = absolute(spec.folder)
            progress = last_progress(osp.join(folder, "log.txt"))
            return state(RUNNING, f"{spec.what}" + (f": {progress}" if progress else ""))
    slurm_state, reason = queued.get(task.name, ("", ""))
    if slurm_state in ("RUNNING", "COMPLETING", "CONFIGURING"):
        return state(RUNNING, f"SLURM {slurm_state.lower()}, no run started yet")
    if slurm_state:
        return state(QUEUED, f"SLURM {slurm_state.lower()}" + (f" ({reason})" if reason and reason != "None" else ""))
    other = [(spec, run) for spec, run in runs if run.status == OTHER_SETTINGS]
    if other:
        spec, run = other[0]
        return state(FAILED, f"{spec.folder} holds a finished run with other settings: {run.reason}", True)
    if record.get("state") == records.FAILED:
        return state(FAILED, record.get("error") or "failed (see the log)", bool(record.get("user_error")))
    if accounted.get(task.name) in SLURM_FAILURES:
        return state(FAILED, f"SLURM: {accounted[task.name]}")
    epochs = [last_checkpoint_epoch(absolute(s.folder)) for s, r in runs if r.status == INTERRUPTED]
    epochs = [e for e in epochs if e is not None]
    return state(LEFT, f"resumes from epoch {max(epochs)}" if epochs else "")


def task_states(tasks: Sequence[Task], paper_dir: str) -> Dict[str, TaskState]:
    queued, accounted = queue(paper_dir), accounting(paper_dir)
    return {t.name: task_state(t, paper_dir, queued, accounted) for t in tasks}


def todo(tasks: Sequence[Task], states: Dict[str, TaskState], max_attempts: int) -> Tuple[List[Task], List[TaskState]]:
    """The tasks to start now, and the failed ones held back (user errors, too many attempts)."""
    start, held = [], []
    for task in tasks:
        st = states[task.name]
        if st.state in (FINISHED, RUNNING, QUEUED):
            continue
        if st.state == FAILED and (st.user_error or st.attempts >= max_attempts):
            held.append(st)
            continue
        start.append(task)
    return start, held


# ---------------------------------------------------------------- the report of it

def cell_counts(tasks: Sequence[Task], states: Dict[str, TaskState], settings: Sequence[str]
                ) -> Dict[str, Dict[Tuple[str, str], Counter]]:
    """table -> (trainer, dataset) -> how many runs are in each state (a finished run counts as
    finished whatever its task is doing)."""
    tables: Dict[str, Dict[Tuple[str, str], Counter]] = defaultdict(lambda: defaultdict(Counter))
    for task in tasks:
        for spec in task.specs:
            st = states[task.name]
            run_state = FINISHED if spec.folder in st.finished_runs else st.state
            for table, trainer, dataset in cells_of(spec, settings):
                tables[table][(trainer, dataset)][run_state] += 1
    return tables


def render(tasks: Sequence[Task], states: Dict[str, TaskState], settings: Sequence[str]) -> str:
    """Per table: a line of totals and one row per cell; then the running, queued and failed tasks."""
    lines = []
    for table, cells in cell_counts(tasks, states, settings).items():
        total = sum((c for c in cells.values()), Counter())
        lines.append(f"{table}: {sum(total.values())} runs: " + ", ".join(f"{total[s]} {s}" for s in STATES))
        rows = [[trainer, dataset] + [c[s] or "" for s in STATES] for (trainer, dataset), c in cells.items()]
        lines += ["  " + line for line in tabulate(rows, headers=["trainer", "dataset", *STATES],
                                                    tablefmt="simple").splitlines()]
        lines.append("")
    for kind in (RUNNING, QUEUED, FAILED):
        listed = [st for st in states.values() if st.state == kind]
        if not listed:
            continue
        lines.append(f"{kind.capitalize()} tasks ({len(listed)}):")
        for st in listed:
            note = f" [attempt {st.attempts}]" if st.attempts > 1 else ""
            lines.append(f"  {st.task}{note}: {st.detail}")
            if kind == FAILED:
                hold = ("a user error: not started again until it is fixed (another option is another task)"
                        if st.user_error else "started again by 'run' (up to --max-attempts)")
                lines.append(f"      log: {display_path(st.log)}; {hold}")
    left = sum(1 for st in states.values() if st.state == LEFT)
    lines.append(f"{len(states)} tasks: " + ", ".join(
        f"{sum(1 for st in states.values() if st.state == s)} {s}" for s in STATES) + (
        "; 'run' (or 'status --resubmit') starts what is left and failed" if left else ""))
    return "\n".join(lines) + "\n"


def as_json(states: Dict[str, TaskState]) -> str:
    return json.dumps({name: asdict(st) for name, st in states.items()}, indent=1)

