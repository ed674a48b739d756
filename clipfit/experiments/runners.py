"""Running sweep jobs: locally (one per GPU or N at a time), or as a SLURM job array.

A lock file per job keeps two sweeps (or a sweep and a leftover job of a killed one) from
running the same job at once.
"""
from __future__ import annotations

import datetime
import os
import os.path as osp
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from clipfit import REPO_ROOT
from clipfit.experiments.jobs import Job, display_path, job_progress, sweep_dir, task_command
from clipfit.experiments.warm_python import FOLDER_ENV, WRAPPER, WarmPython, jobs_python
from clipfit.fileio import write_text
from clipfit.training.run_folder import is_locked

BUSY_EXIT = 75  # a job's lock is held by another process (EX_TEMPFAIL)


def run_task(lock: str, log: str, command: Sequence[str]) -> None:
    """Take ``lock`` (exit BUSY_EXIT when held), send output to ``log``, exec ``command``.

    The lock is an open file description that the command and its children inherit, so it
    stays held while any of them runs, even if the sweep that started them is killed.
    """
    import fcntl

    os.makedirs(osp.dirname(lock), exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"{lock} is held: this job is running in another process.", file=sys.stderr)
        sys.exit(BUSY_EXIT)
    os.set_inheritable(fd, True)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {datetime.datetime.now():%Y-%m-%d %H:%M:%S}\n".encode())
    os.makedirs(osp.dirname(log), exist_ok=True)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(out, f"\n### {datetime.datetime.now():%Y-%m-%d %H:%M:%S} {shlex.join(command)}\n"
             .encode())
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.chdir(REPO_ROOT)
    os.execvp(command[0], list(command))


def _fmt_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


class LocalRunner:
    """Runs jobs in parallel, one per slot (a GPU id, or None for an unpinned slot)."""

    def __init__(self, jobs: Sequence[Job], slots: Sequence[Optional[str]], env: Dict[str, str],
                 status_every: float = 30.0, poll: float = 1.0):
        self.pending = list(jobs)
        self.slots = list(slots)
        self.env = env
        self.status_every = status_every
        self.poll = poll
        self.running: Dict[int, tuple] = {}  # slot index -> (job, process, start time)
        self.ok: List[Job] = []
        self.failed: List[tuple] = []  # (job, reason)
        self.busy: List[Job] = []
        self.durations: List[float] = []
        self.total = len(self.pending)

    def _start(self, slot: int, job: Job) -> None:
        env = dict(self.env)
        gpu = self.slots[slot]
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        proc = subprocess.Popen(task_command(job), cwd=REPO_ROOT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.running[slot] = (job, proc, time.time())
        where = f" on GPU {gpu}" if gpu is not None else ""
        print(f"[start] {job.name}{where} (log: {display_path(job.log)})", flush=True)

    def _finish(self, slot: int, rc: int) -> None:
        job, _, started = self.running.pop(slot)
        took = time.time() - started
        if rc == BUSY_EXIT:
            self.busy.append(job)
            print(f"[busy]  {job.name}: running in another process, left alone", flush=True)
        elif rc == 0 and job.status() == "done":
            self.ok.append(job)
            self.durations.append(took)
            print(f"[done]  {job.name} in {_fmt_duration(took)}", flush=True)
        else:
            reason = f"exit {rc}" if rc else "exited 0 without final results"
            self.failed.append((job, reason))
            print(f"[FAIL]  {job.name} ({reason}) after {_fmt_duration(took)}; "
                  f"log: {display_path(job.log)}", flush=True)
            for line in failure_excerpt(job.log):
                print(f"        | {line}", flush=True)

    def status_line(self) -> str:
        done = len(self.ok) + len(self.failed) + len(self.busy)
        left = len(self.pending)
        line = (f"[sweep {datetime.datetime.now():%H:%M:%S}] {done}/{self.total} done "
                f"({len(self.failed)} failed), {len(self.running)} running, {left} left")
        if self.durations and (left or self.running):
            avg = sum(self.durations) / len(self.durations)
            eta = avg * (left + len(self.running) / 2) / max(1, len(self.slots))
            line += f", ETA ~{_fmt_duration(eta)}"
        details = [f"{job.name}: {job_progress(job) or 'starting'}"
                   for job, _, _ in self.running.values()]
        return line + "".join(f"\n    {d}" for d in details)

    def stop(self) -> None:
        """Terminate the running jobs' process groups (they resume when the sweep reruns)."""
        for job, proc, _ in self.running.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.time() + 10
        for job, proc, _ in self.running.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def run(self) -> None:
        last_status = 0.0
        while self.pending or self.running:
            for slot in range(len(self.slots)):
                if slot not in self.running and self.pending:
                    self._start(slot, self.pending.pop(0))
            time.sleep(self.poll)
            for slot, (job, proc, _) in list(self.running.items()):
                rc = proc.poll()
                if rc is not None:
                    self._finish(slot, rc)
            if time.time() - last_status >= self.status_every and (self.running or self.pending):
                print(self.status_line(), flush=True)
                last_status = time.time()


_ERROR_LINE = re.compile(r"^(ERROR\b|(\w+\.)*\w*(Error|Exception|Interrupt)\b)")


def failure_excerpt(path: str, n: int = 5) -> List[str]:
    """The last ``n`` lines of a failed job's log, led by the line that says what failed (an
    ``ERROR:`` line or an exception) when it lies further up."""
    try:
        with open(path, errors="replace") as f:
            lines = [ln.rstrip() for ln in f.readlines()]
    except OSError:
        return []
    tail = lines[-n:]
    errors = [i for i, ln in enumerate(lines) if _ERROR_LINE.match(ln)]
    if errors and errors[-1] < len(lines) - n:
        return [lines[errors[-1]], "..."] + tail
    return tail


def slots_from_env(env: Dict[str, str], jobs: int) -> List[Optional[str]]:
    """One slot per GPU in CUDA_VISIBLE_DEVICES, else ``jobs`` unpinned slots."""
    visible = [g.strip() for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return visible if visible else [None] * max(1, jobs)


def share_cpus(env: Dict[str, str], slots: Sequence[Optional[str]], jobs: int) -> str:
    """On CPUs, ``jobs`` jobs at a time get ``OMP_NUM_THREADS`` = CPUs // jobs each (at least
    1; unless it is set), so that their torch threads do not oversubscribe the cores. The note
    says so ("" when nothing was set)."""
    running = min(len(slots), jobs)
    if slots[0] is not None or running < 2 or env.get("OMP_NUM_THREADS"):
        return ""
    from clipfit.training.cli import cpu_count  # train.py's rule for the CPUs it may use

    env["OMP_NUM_THREADS"] = str(max(1, cpu_count() // running))
    return f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} each ({cpu_count()} CPUs)"


def start_warm_python(env: Dict[str, str], log: str) -> Tuple[Optional[WarmPython], str]:
    """A warm python for the jobs (``PYTHON`` in ``env`` becomes its wrapper), or None; and a
    note on what the jobs' python commands run in."""
    folder, given = env.get(FOLDER_ENV), env.get("PYTHON", "")
    if folder and given == osp.join(folder, WRAPPER):
        return None, "python commands fork from the warm python in PYTHON"
    python = jobs_python(env, REPO_ROOT)  # the scripts run in the repository root
    if python is None:
        return None, f"no interpreter {given or 'python'} found"
    if os.sep in given and not osp.samefile(python, sys.executable):
        return None, (f"PYTHON={given} is not the interpreter running the sweep ({sys.executable}): "
                      "each python command starts it afresh (no warm python)")
    os.makedirs(osp.dirname(log), exist_ok=True)
    warm = WarmPython(python, env, log)
    env["PYTHON"] = warm.wrapper
    return warm, (f"python commands fork from a warm python with torch imported (log: "
                  f"{display_path(log)}; --no-warm: fresh interpreters)")


def slurm_script(jobs: Sequence[Job], setting: str, env: Dict[str, str], jobs_file: str,
                 max_parallel: int) -> str:
    """An sbatch script running ``jobs`` as an array, one job per task."""
    base = sweep_dir(setting, env)
    limit = f"%{max_parallel}" if max_parallel else ""
    exports = "".join(f"export {k}={shlex.quote(env[k])}\n" for k in
                      ("TRAINER", "CFG", "SHOTS", "DATA", "OUT", "PYTHON") if env.get(k))
    return (
        "#!/bin/bash\n"
        f"#SBATCH --job-name=clipfit-{setting}\n"
        f"#SBATCH --array=0-{len(jobs) - 1}{limit}\n"
        "#SBATCH --gres=gpu:1\n"
        f"#SBATCH --output={osp.join(base, 'logs', 'slurm-%A_%a.out')}\n"
        "# Generated by clipfit.experiments.sweep; each task runs one line of the jobs file.\n"
        "set -euo pipefail\n"
        f"cd {shlex.quote(REPO_ROOT)}\n"
        f"{exports}"
        f"line=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" {shlex.quote(jobs_file)})\n"
        "echo \"task $SLURM_ARRAY_TASK_ID: $line\"\n"
        "eval \"$line\"\n"
    )


def submit_slurm(jobs: Sequence[Job], setting: str, env: Dict[str, str], sbatch_args: str,
                 max_parallel: int, dry_run: bool) -> int:
    """Write the jobs file and sbatch script; submit them unless ``dry_run``."""
    base = osp.join(sweep_dir(setting, env), "slurm")
    os.makedirs(base, exist_ok=True)
    os.makedirs(osp.join(sweep_dir(setting, env), "logs"), exist_ok=True)  # sbatch --output
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    jobs_file = osp.join(base, f"jobs-{stamp}.txt")
    script = osp.join(base, f"array-{stamp}.sbatch")
    write_text(jobs_file, "".join(shlex.join(task_command(j)) + "\n" for j in jobs))
    write_text(script, slurm_script(jobs, setting, env, jobs_file, max_parallel))
    command = ["sbatch", *shlex.split(sbatch_args), script]
    print(f"SLURM array of {len(jobs)} jobs: {display_path(script)} (jobs: {display_path(jobs_file)})")
    for i, job in enumerate(jobs):
        print(f"  task {i}: {job.name} (log: {display_path(job.log)})")
    if dry_run:
        print(f"Dry run: not submitted. Submit with: {shlex.join(command)}")
        return 0
    if shutil.which("sbatch") is None:
        print("sbatch not found: run on a SLURM login node, or without --slurm to run here.",
              file=sys.stderr)
        return 2
    proc = subprocess.run(command, cwd=REPO_ROOT)
    return proc.returncode
