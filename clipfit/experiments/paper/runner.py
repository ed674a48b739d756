"""Running the paper's tasks: a task's body (one process, its runs in order, in-process), local
workers (``--jobs N`` on CPUs, one per visible GPU) and SLURM job arrays.

A SLURM array task runs ``python -m clipfit.experiments.paper task TASKS_FILE INDEX``: the runs
of entry ``INDEX`` of a JSON tasks file (no shell line is evaluated). It asks for SLURM's
warning signal before its time limit (``--signal=B:USR1@SECONDS``; ``B:`` because the python is
the batch step itself, ``exec``-ed) and runs inside :func:`clipfit.training.preemption.preemptible`:
a checkpoint per epoch, and on the signal (or SIGTERM while the job still runs, as on
preemption) it requeues itself and resumes from the last epoch's checkpoint.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import os.path as osp
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

from clipfit import REPO_ROOT
from clipfit.experiments.jobs import Job, display_path
from clipfit.experiments.paper import records
from clipfit.experiments.paper.plan import Task, read_tasks, write_tasks
from clipfit.experiments.runners import BUSY_EXIT, LocalRunner, slots_from_env, threads_per_job, worker_setup
from clipfit.fileio import write_text

USER_ERROR_EXIT = 2  # train.py's and the scripts' exit status for a user error
MAX_ARRAY = 1000  # SLURM's default MaxArraySize is 1001: indices 0-1000
JOB_NAME = "clipfit-paper"


def run_task(task: Task, paper_dir: str, job: str = "") -> int:
    """The task's runs in order, in this process, output appended to its log; its record says
    how it ended. Exit status: 0 finished, 2 a user error, 1 a crash, :data:`BUSY_EXIT` a run
    folder held by another process. Under SLURM (``job``) the runs are preemptible."""
    from clipfit.experiments.run import Busy, ScriptError, execute
    from clipfit.training import preemption

    os.makedirs(osp.dirname(task.log), exist_ok=True)
    offset = records.log_size(task.log)
    out = os.open(task.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    sys.stdout.reconfigure(line_buffering=True)
    attempt = records.start(paper_dir, task, job)
    restarts = os.environ.get("SLURM_RESTART_COUNT", "")
    where = f" SLURM job {job}" + (f" (restart {restarts})" if restarts else "") if job else ""
    print(f"\n### {datetime.datetime.now():%Y-%m-%d %H:%M:%S} pid {os.getpid()}{where}: task {task.name}, "
          f"attempt {attempt}", flush=True)
    holder = f"pid {os.getpid()}: paper task {task.name}" + (f" (SLURM job {job})" if job else "")
    guard = preemption.preemptible() if job else contextlib.nullcontext()
    try:
        with guard:
            for spec in task.specs:
                execute(spec, holder=holder)
    except Busy as err:
        print(f"ERROR: {err}", file=sys.stderr, flush=True)
        records.finish(paper_dir, task, records.STARTED)
        return BUSY_EXIT
    except ScriptError as err:
        print(f"ERROR: {err}", file=sys.stderr, flush=True)
        records.finish(paper_dir, task, records.FAILED, f"ERROR: {err}".splitlines()[0], user_error=True)
        return USER_ERROR_EXIT
    except SystemExit as err:  # train.py's user errors end with exit status 2, its message printed
        code = err.code if isinstance(err.code, int) else 1
        records.finish(paper_dir, task, records.FAILED, records.error_line(task.log, offset),
                       user_error=code == USER_ERROR_EXIT)
        return code or 1
    except Exception:
        import traceback

        traceback.print_exc()
        records.finish(paper_dir, task, records.FAILED, records.error_line(task.log, offset))
        return 1
    records.finish(paper_dir, task, records.FINISHED)
    return 0


def task_main(tasks_file: str, index: int) -> int:
    """A SLURM array task: entry ``index`` of ``tasks_file``."""
    tasks = read_tasks(tasks_file)
    if not 0 <= index < len(tasks):
        print(f"ERROR: {tasks_file} has {len(tasks)} tasks; there is no task {index}.", file=sys.stderr)
        return USER_ERROR_EXIT
    job = os.environ.get("SLURM_JOB_ID", "")
    return run_task(tasks[index], osp.dirname(osp.dirname(osp.abspath(tasks_file))), job)


# ---------------------------------------------------------------- local workers

def _task_worker(task: Task, paper_dir: str, gpu: Optional[str], threads: int) -> None:
    """A local worker's body (forked from the forkserver): pin the GPU or the threads, run."""
    worker_setup(gpu, threads)
    sys.exit(run_task(task, paper_dir))


class TaskRunner(LocalRunner):
    """The sweep's local runner (slots, status lines, failure excerpts) over paper tasks."""

    def __init__(self, tasks: Sequence[Task], paper_dir: str, slots: Sequence[Optional[str]], threads: int,
                 status_every: float):
        self.tasks = {t.name: t for t in tasks}
        self.paper_dir = paper_dir
        super().__init__([Job(t.name, [], t.specs, t.log) for t in tasks], slots, threads, status_every)

    def _worker(self, job: Job, gpu: Optional[str]) -> Tuple[Callable[..., None], tuple]:
        return _task_worker, (self.tasks[job.name], self.paper_dir, gpu, self.threads)


def run_local(tasks: Sequence[Task], paper_dir: str, jobs: int, status_every: float) -> int:
    """Run ``tasks`` here: one per GPU in ``CUDA_VISIBLE_DEVICES``, else ``jobs`` at a time."""
    env = dict(os.environ)
    slots = slots_from_env(env, jobs)
    runner = TaskRunner(tasks, paper_dir, slots, threads_per_job(slots, jobs, env), status_every)
    where = f"one per GPU ({', '.join(s for s in slots if s)})" if slots[0] is not None else f"{len(slots)} at a time"
    print(f"Running {len(tasks)} tasks {where}", flush=True)
    try:
        runner.run()
    except KeyboardInterrupt:
        print("\nStopping the running tasks (they resume when the same command runs again) ...", flush=True)
        runner.stop()
        return 130
    print(f"{len(runner.ok)} finished, {len(runner.failed)} failed, {len(runner.busy)} busy in another process")
    return 1 if runner.failed else 0


# ---------------------------------------------------------------- SLURM

@dataclass
class SlurmOptions:
    """What an array asks SLURM for."""

    partition: str = ""
    time: str = ""
    gres: str = "gpu:1"  # "none": no GPU (CPU partitions)
    cpus_per_task: int = 0
    max_parallel: int = 0
    signal_before: int = 300  # seconds before the time limit that SIGUSR1 comes
    sbatch_args: str = ""
    job_name: str = JOB_NAME


def add_slurm_arguments(group) -> None:
    """The SLURM options of ``paper run`` and ``sweep`` (an argparse group); defaults are :class:`SlurmOptions`'."""
    d = SlurmOptions()
    group.add_argument("--slurm", action="store_true", help="submit SLURM job arrays, one run or job per array task")
    group.add_argument("--partition", default=d.partition)
    group.add_argument("--time", default=d.time, help="time limit of each array task (sbatch --time)")
    group.add_argument("--gres", default=d.gres, help=f"per task (default {d.gres}; 'none' for CPU partitions)")
    group.add_argument("--cpus-per-task", type=int, default=d.cpus_per_task)
    group.add_argument("--max-parallel", type=int, default=d.max_parallel,
                       help="at most this many array tasks at once (0: no limit)")
    group.add_argument("--signal-before", type=int, default=d.signal_before,
                       help="seconds before the time limit that SLURM sends SIGUSR1 (checkpoint, requeue)")
    group.add_argument("--sbatch-args", default=d.sbatch_args,
                       help="more sbatch options, given with '=': --sbatch-args='--mem=32G --qos=long'")


def slurm_options(args, job_name: str = JOB_NAME) -> SlurmOptions:
    """The :class:`SlurmOptions` of arguments parsed with :func:`add_slurm_arguments`."""
    return SlurmOptions(args.partition, args.time, args.gres, args.cpus_per_task, args.max_parallel,
                        args.signal_before, args.sbatch_args, job_name)


def sbatch_script(tasks_file: str, n: int, paper_dir: str, options: SlurmOptions) -> str:
    """The array script: task ``i`` execs the paper's ``task`` command on entry ``i``."""
    limit = f"%{options.max_parallel}" if options.max_parallel else ""
    lines = ["#!/bin/bash", f"#SBATCH --job-name={options.job_name}", f"#SBATCH --array=0-{n - 1}{limit}",
             f"#SBATCH --output={osp.join(paper_dir, 'logs', 'slurm-%A_%a.out')}", "#SBATCH --open-mode=append",
             "#SBATCH --requeue", f"#SBATCH --signal=B:USR1@{options.signal_before}"]
    lines += [f"#SBATCH --partition={options.partition}"] if options.partition else []
    lines += [f"#SBATCH --time={options.time}"] if options.time else []
    lines += [f"#SBATCH --gres={options.gres}"] if options.gres and options.gres != "none" else []
    lines += [f"#SBATCH --cpus-per-task={options.cpus_per_task}"] if options.cpus_per_task else []
    lines += ["# Written by clipfit.experiments (paper run --slurm, sweep --slurm); each array task runs",
              "# entry $SLURM_ARRAY_TASK_ID of the tasks file.",
              f"cd {shlex.quote(REPO_ROOT)}",
              f"exec {shlex.quote(sys.executable)} -m clipfit.experiments.paper task {shlex.quote(tasks_file)} "
              '"$SLURM_ARRAY_TASK_ID"']
    return "\n".join(lines) + "\n"


def submit_slurm(tasks: Sequence[Task], paper_dir: str, options: SlurmOptions, dry_run: bool) -> int:
    """Write a tasks file and an array script per :data:`MAX_ARRAY` tasks, and submit them."""
    if not dry_run and shutil.which("sbatch") is None:
        print("ERROR: sbatch not found: run on a SLURM login node, or use --jobs N / the GPUs here.", file=sys.stderr)
        return USER_ERROR_EXIT
    folder = records.slurm_dir(paper_dir)
    os.makedirs(osp.join(paper_dir, "logs"), exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    for k, start in enumerate(range(0, len(tasks), MAX_ARRAY)):
        chunk = list(tasks[start:start + MAX_ARRAY])
        tasks_file = osp.join(folder, f"{stamp}-{k}.json")
        script = osp.join(folder, f"{stamp}-{k}.sbatch")
        write_tasks(tasks_file, chunk)
        write_text(script, sbatch_script(tasks_file, len(chunk), paper_dir, options))
        command = ["sbatch", "--parsable", *shlex.split(options.sbatch_args), script]
        if dry_run:
            print(f"Dry run: {len(chunk)} tasks in {display_path(tasks_file)}; submit with: {shlex.join(command)}")
            continue
        proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        if proc.returncode:
            print(f"ERROR: sbatch failed ({proc.stderr.strip() or f'exit {proc.returncode}'}): {shlex.join(command)}",
                  file=sys.stderr)
            return proc.returncode
        job = proc.stdout.strip().split(";")[0]
        records.record_submission(tasks_file, job)
        print(f"Submitted array job {job}: {len(chunk)} tasks ({display_path(script)})")
    return 0

