"""Running sweep jobs: locally in worker processes, or as a SLURM job array.

Local workers are forked from a ``multiprocessing`` forkserver that imported torch, the clip
package and clipfit once (:func:`worker_context`); each job runs its runs in-process
(:func:`clipfit.experiments.run.execute`), one job per worker process: a crash or kill -9
ends that job only. On GPUs each worker is pinned to one device (``CUDA_VISIBLE_DEVICES`` set
in the worker before CUDA initialises); on CPUs the cores are divided between the workers.
The run folders' own lock (:func:`clipfit.training.run_folder.acquire`) keeps two sweeps (or a
sweep and a leftover job of a killed one) from running the same run at once.
"""
from __future__ import annotations

import datetime
import multiprocessing
import os
import os.path as osp
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

from clipfit import REPO_ROOT
from clipfit.experiments.jobs import Job, display_path, job_progress, sweep_dir
from clipfit.experiments.results import read_run
from clipfit.fileio import write_text

BUSY_EXIT = 75  # a run folder of the job is locked by another process (EX_TEMPFAIL)
PRELOAD = ["torch", "clipfit.methods.openai_clip", "clipfit.training.cli", "clipfit.experiments.run",
           "clipfit.engine"]  # imported once, in the forkserver


def worker_context() -> multiprocessing.context.BaseContext:
    """The forkserver context whose server imported :data:`PRELOAD` (and this checkout's
    ``trainers/`` and ``datasets/`` through them) once."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_job(job: Job, gpu: Optional[str], threads: int, overwrite: bool,
            train: Optional[Callable] = None) -> None:
    """A worker's body: the job's runs in order, in this process, output appended to its log.
    Exit status: 0 done, 2 a run refused or failed (the log says why), :data:`BUSY_EXIT` a run
    folder locked by another process; SIGTERM stops the run as Ctrl-C does (resumable)."""
    os.setsid()  # Ctrl-C in the terminal reaches the sweep, which stops the workers itself
    signal.signal(signal.SIGTERM, _interrupt)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu  # before anything initialises CUDA here
    if threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    from clipfit.experiments.run import Busy, ScriptError, execute

    os.makedirs(osp.dirname(job.log), exist_ok=True)
    out = os.open(job.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(out, f"\n### {datetime.datetime.now():%Y-%m-%d %H:%M:%S} pid {os.getpid()}: {job.shell}\n"
             .encode())
    os.dup2(out, 1)
    os.dup2(out, 2)
    sys.stdout.reconfigure(line_buffering=True)
    holder = f"pid {os.getpid()}: sweep job {job.name} ({job.shell})"
    try:
        for spec in job.specs:
            execute(spec, overwrite, holder, train)
    except Busy as err:
        print(f"ERROR: {err}", file=sys.stderr, flush=True)
        sys.exit(BUSY_EXIT)
    except ScriptError as err:
        print(f"ERROR: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


def _fmt_duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


class LocalRunner:
    """Runs jobs in parallel, one per slot (a GPU id, or None for an unpinned slot)."""

    def __init__(self, jobs: Sequence[Job], slots: Sequence[Optional[str]], threads: int = 0,
                 status_every: float = 30.0, poll: float = 1.0, overwrite: bool = False,
                 train: Optional[Callable] = None):
        self.pending = list(jobs)
        self.slots = list(slots)
        self.threads = threads
        self.overwrite = overwrite
        self.train = train  # what runs train.py's argv in a worker (default: train.py's main)
        self.ctx = worker_context()
        self.status_every = status_every
        self.poll = poll
        self.running: Dict[int, tuple] = {}  # slot index -> (job, process, start time)
        self.ok: List[Job] = []
        self.failed: List[tuple] = []  # (job, reason)
        self.busy: List[Job] = []
        self.durations: List[float] = []
        self.total = len(self.pending)

    def _start(self, slot: int, job: Job) -> None:
        gpu = self.slots[slot]
        proc = self.ctx.Process(target=run_job, name=job.name,
                                args=(job, gpu, self.threads, self.overwrite, self.train))
        proc.start()
        self.running[slot] = (job, proc, time.time())
        where = f" on GPU {gpu}" if gpu is not None else ""
        print(f"[start] {job.name}{where} (log: {display_path(job.log)})", flush=True)

    def _finish(self, slot: int, rc: int) -> None:
        job, _, started = self.running.pop(slot)
        took = time.time() - started
        if rc == BUSY_EXIT:
            self.busy.append(job)
            print(f"[busy]  {job.name}: running in another process, left alone", flush=True)
        elif rc == 0 and all(read_run(d).finished for d in job.run_dirs):
            self.ok.append(job)
            self.durations.append(took)
            print(f"[done]  {job.name} in {_fmt_duration(took)}", flush=True)
        else:
            reason = (f"killed by {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}") if rc \
                else "exited 0 without final results"
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
        """Stop the running jobs as Ctrl-C would (their runs resume when the sweep reruns)."""
        for job, proc, _ in self.running.values():
            if proc.is_alive():
                proc.terminate()
        deadline = time.time() + 10
        for job, proc, _ in self.running.values():
            proc.join(timeout=max(0.1, deadline - time.time()))
            if proc.is_alive():
                proc.kill()
                proc.join()

    def run(self) -> None:
        last_status = 0.0
        while self.pending or self.running:
            for slot in range(len(self.slots)):
                if slot not in self.running and self.pending:
                    self._start(slot, self.pending.pop(0))
            time.sleep(self.poll)
            for slot, (job, proc, _) in list(self.running.items()):
                if proc.exitcode is not None:
                    self._finish(slot, proc.exitcode)
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
    """One slot per visible GPU (those in CUDA_VISIBLE_DEVICES, else every GPU torch sees;
    CUDA in this process does not reach the workers, which come from the forkserver), else
    ``jobs`` unpinned slots."""
    if "CUDA_VISIBLE_DEVICES" in env:
        visible = [g.strip() for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    else:
        import torch

        visible = [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return visible if visible else [None] * max(1, jobs)


def threads_per_job(slots: Sequence[Optional[str]], jobs: int, env: Dict[str, str]) -> int:
    """On CPUs with 2 or more jobs at a time, each gets CPUs // jobs threads (at least 1; 0:
    leave torch's default, also when OMP_NUM_THREADS is set)."""
    running = min(len(slots), jobs)
    if slots[0] is not None or running < 2 or env.get("OMP_NUM_THREADS"):
        return 0
    from clipfit.training.cli import cpu_count  # train.py's rule for the CPUs it may use

    return max(1, cpu_count() // running)


def slurm_script(jobs: Sequence[Job], setting: str, env: Dict[str, str], jobs_file: str,
                 max_parallel: int) -> str:
    """An sbatch script running ``jobs`` as an array, one job per task."""
    base = sweep_dir(setting, env)
    limit = f"%{max_parallel}" if max_parallel else ""
    exports = "".join(f"export {k}={shlex.quote(env[k])}\n" for k in
                      ("TRAINER", "CFG", "SHOTS", "DATA", "OUT", "PYTHON", "CKPT_FREQ") if env.get(k))
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
    write_text(jobs_file, "".join(j.shell + "\n" for j in jobs))
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
