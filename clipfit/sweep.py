"""Sweep runner: every dataset x seed of a setting, in parallel or as a SLURM job array.

``bash scripts/sweep.sh SETTING [options] [-- yacs opts]`` (or ``python -m clipfit.sweep``).
A job is one dataset and seed (base2new: train then test; fewshot: one number of shots; xd:
one seed's ImageNet training and its 10 targets; dg: one seed's source model and 4 targets).
The experiment scripts define where each run writes: the sweep asks them (``DRY_RUN=1``)
and skips a job whose run folders all hold final results. A job that was interrupted runs
again, and the scripts resume its runs from their last checkpoint.

Jobs run one per GPU listed in ``CUDA_VISIBLE_DEVICES``, else ``--jobs N`` at a time, or as
a SLURM job array (``--slurm``). A lock file per job keeps two sweeps (or a sweep and a
leftover job of a killed one) from running the same job at once. The environment contract of
the scripts (TRAINER, CFG, SHOTS, DATA, OUT, PYTHON) passes through unchanged.
"""
from __future__ import annotations

import argparse
import datetime
import os
import os.path as osp
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from .atomic import write_text
from .protocol import FEWSHOT_SHOTS, SEEDS, SETTINGS, SOURCE_DATASET, setting_datasets
from .results import FINISHED, last_progress, run_status

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
BUSY_EXIT = 75  # a job's lock is held by another process (EX_TEMPFAIL)
HEADER_PREFIX = "==> "  # the scripts' announcement lines


@dataclass
class Job:
    """One unit of a sweep: shell commands run in order, and the run folders they fill."""

    name: str
    commands: List[List[str]]
    run_dirs: List[str] = field(default_factory=list)
    log: str = ""
    lock: str = ""

    @property
    def shell(self) -> str:
        return " && ".join(shlex.join(c) for c in self.commands)

    def status(self) -> str:
        """done (every run finished), partial (some) or todo (none)."""
        finished = [run_status(d) == FINISHED for d in self.run_dirs]
        if finished and all(finished):
            return "done"
        return "partial" if any(finished) else "todo"


def _script(name: str, *args) -> List[str]:
    return ["bash", osp.join("scripts", name), *map(str, args)]


def plan(setting: str, seeds: Sequence[int], datasets: Optional[Sequence[str]] = None,
         shots: Sequence[int] = FEWSHOT_SHOTS, opts: Sequence[str] = ()) -> List[Job]:
    """The jobs of ``setting`` (seed-major, so a killed sweep leaves whole seeds done)."""
    chosen = list(datasets) if datasets else list(setting_datasets(setting))
    jobs: List[Job] = []
    for seed in seeds:
        if setting == "base2new":
            jobs += [Job(f"{d}-seed{seed}", [_script("base2new_train.sh", d, seed, *opts),
                                             _script("base2new_test.sh", d, seed, *opts)])
                     for d in chosen]
        elif setting == "fewshot":
            jobs += [Job(f"{d}-{k}shot-seed{seed}", [_script("fewshot.sh", d, seed, k, *opts)])
                     for k in shots for d in chosen]
        elif setting == "xd":
            jobs.append(Job(f"{SOURCE_DATASET}-seed{seed}",
                            [_script("xd_train.sh", seed, *opts)]
                            + [_script("xd_test.sh", d, seed, *opts) for d in chosen]))
        elif setting == "dg":
            jobs.append(Job(f"{SOURCE_DATASET}-seed{seed}", [_script("dg_test.sh", seed, *opts)]))
        else:
            raise ValueError(f"Unknown setting '{setting}'; choose one of {', '.join(SETTINGS)}")
    return jobs


def sweep_dir(setting: str, env: Dict[str, str]) -> str:
    """Where a sweep keeps job logs, locks and SLURM files: ``$OUT/sweeps/<setting>/<tag>``."""
    out = env.get("OUT") or "output"
    tag = env.get("TRAINER") or "CLIPFit"
    if env.get("CFG"):
        tag += f"_{env['CFG']}"
    if env.get("SHOTS", "16") != "16" and setting != "fewshot":
        tag += f"_shots{env['SHOTS']}"
    return osp.join(out if osp.isabs(out) else osp.join(REPO_ROOT, out), "sweeps", setting, tag)


def resolve(jobs: Sequence[Job], setting: str, env: Dict[str, str]) -> None:
    """Fill each job's run folders (asking its scripts with ``DRY_RUN=1``), log and lock."""
    base = sweep_dir(setting, env)
    dry_env = {**env, "DRY_RUN": "1"}
    for job in jobs:
        job.run_dirs = []
        for command in job.commands:
            proc = subprocess.run(command, cwd=REPO_ROOT, env=dry_env, capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{shlex.join(command)} failed in DRY_RUN mode:\n"
                                   f"{proc.stderr.strip() or proc.stdout.strip()}")
            job.run_dirs += [p if osp.isabs(p) else osp.join(REPO_ROOT, p)
                             for p in proc.stdout.split() if p]
        job.log = osp.join(base, "logs", f"{job.name}.log")
        job.lock = osp.join(base, "locks", f"{job.name}.lock")


def _rel(path: str) -> str:
    rel = osp.relpath(path, REPO_ROOT)
    return path if rel.startswith("..") else rel


def task_command(job: Job) -> List[str]:
    """The command that runs ``job`` under its lock, appending to its log."""
    return [sys.executable, "-m", "clipfit.sweep", "task", "--lock", job.lock, "--log", job.log,
            "--", "bash", "-c", job.shell]


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


def is_locked(lock: str) -> bool:
    """Whether another process holds ``lock`` now."""
    import fcntl

    if not osp.exists(lock):
        return False
    with open(lock) as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def job_progress(job: Job) -> str:
    """What a running job does now: its last script announcement and training progress."""
    try:
        with open(job.log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    step = next((ln[len(HEADER_PREFIX):] for ln in reversed(lines)
                 if ln.startswith(HEADER_PREFIX)), "")
    progress = last_progress(job.log)
    last_header = max((i for i, ln in enumerate(lines) if ln.startswith(HEADER_PREFIX)),
                      default=-1)
    has_progress_after = any(ln.startswith("epoch [") for ln in lines[last_header + 1:])
    step = step.replace(REPO_ROOT + os.sep, "")
    return step + (f" [{progress}]" if progress and has_progress_after else "")


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
        print(f"[start] {job.name}{where} (log: {_rel(job.log)})", flush=True)

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
                  f"log: {_rel(job.log)}", flush=True)
            for line in _tail(job.log, 5):
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


def _tail(path: str, n: int) -> List[str]:
    try:
        with open(path, errors="replace") as f:
            return [ln.rstrip() for ln in f.readlines()[-n:]]
    except OSError:
        return []


def slots_from_env(env: Dict[str, str], jobs: int) -> List[Optional[str]]:
    """One slot per GPU in CUDA_VISIBLE_DEVICES, else ``jobs`` unpinned slots."""
    visible = [g.strip() for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return visible if visible else [None] * max(1, jobs)


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
        "# Generated by clipfit.sweep; each task runs one line of the jobs file.\n"
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
    print(f"SLURM array of {len(jobs)} jobs: {_rel(script)} (jobs: {_rel(jobs_file)})")
    for i, job in enumerate(jobs):
        print(f"  task {i}: {job.name} (log: {_rel(job.log)})")
    if dry_run:
        print(f"Dry run: not submitted. Submit with: {shlex.join(command)}")
        return 0
    if shutil.which("sbatch") is None:
        print("sbatch not found: run on a SLURM login node, or without --slurm to run here.",
              file=sys.stderr)
        return 2
    proc = subprocess.run(command, cwd=REPO_ROOT)
    return proc.returncode


def summarize(setting: str, env: Dict[str, str], skipped: Sequence[Job],
              runner: Optional[LocalRunner], interrupted: bool) -> None:
    """What ran, what was skipped, what failed and where its log is; what to run next."""
    print("=" * 60)
    trainer = env.get("TRAINER") or "CLIPFit"
    counts = [f"{len(skipped)} skipped (already finished)"]
    if runner is not None:
        counts += [f"{len(runner.ok)} ran ok", f"{len(runner.failed)} failed"]
        not_run = len(runner.pending) + len(runner.running)
        counts += [f"{len(runner.busy)} busy in another process"] if runner.busy else []
        counts += [f"{not_run} not run"] if not_run else []
    print(f"Sweep {setting} (TRAINER={trainer}): {', '.join(counts)}")
    if runner is not None:
        for job, reason in runner.failed:
            print(f"  FAILED {job.name} ({reason}): {_rel(job.log)}")
        for job in runner.busy:
            print(f"  BUSY   {job.name} (lock {_rel(job.lock)} held by another process)")
    if interrupted:
        print("Interrupted: run the same command again to resume (finished runs are skipped, "
              "unfinished ones resume from their last checkpoint).")
    out = env.get("OUT") or "output"
    root = osp.join(out, setting) if setting in ("base2new", "fewshot") else out
    print(f"Results: python parse_test_res.py --{setting} {root}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/sweep.sh", description=__doc__.split("\n\n")[0],
        epilog="Environment: TRAINER (CLIPFit), CFG, SHOTS, DATA, OUT, PYTHON as for the "
               "scripts; CUDA_VISIBLE_DEVICES=0,1,2,3 runs one job per GPU. Everything after "
               "'--' is passed to every script as yacs opts.")
    parser.add_argument("setting", choices=SETTINGS,
                        help="base2new, fewshot, xd (cross-dataset) or dg (distribution shift)")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                        help="default: 1 2 3")
    parser.add_argument("--datasets", nargs="+",
                        help="default: the setting's 11 datasets (xd: the 10 targets; "
                             "dg: ignored, dg_test.sh tests its 4 targets)")
    parser.add_argument("--shots", type=int, nargs="+", default=list(FEWSHOT_SHOTS),
                        help="fewshot only (default: 1 2 4 8 16)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="parallel jobs when CUDA_VISIBLE_DEVICES is not set")
    parser.add_argument("--dry-run", action="store_true", help="list the jobs, run nothing")
    parser.add_argument("--slurm", action="store_true", help="submit a SLURM job array")
    parser.add_argument("--sbatch-args", default="",
                        help="extra sbatch options, given with '=': "
                             "--sbatch-args='--partition=gpu --time=12:00:00'")
    parser.add_argument("--max-parallel", type=int, default=0,
                        help="SLURM: at most this many array tasks at once (0: no limit)")
    parser.add_argument("--status-every", type=float, default=30.0,
                        help="seconds between progress summaries")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["task"]:
        task = argparse.ArgumentParser(prog="clipfit.sweep task")
        task.add_argument("--lock", required=True)
        task.add_argument("--log", required=True)
        task.add_argument("command", nargs=argparse.REMAINDER)
        args = task.parse_args(argv[1:])
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        run_task(args.lock, args.log, command)
        return 0
    opts: List[str] = []
    if "--" in argv:
        opts = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    args = build_parser().parse_args(argv)
    env = dict(os.environ)
    jobs = plan(args.setting, args.seeds, args.datasets, args.shots, opts)
    resolve(jobs, args.setting, env)

    states = {job.name: job.status() for job in jobs}
    skipped = [j for j in jobs if states[j.name] == "done"]
    todo = [j for j in jobs if states[j.name] != "done"]
    print(f"Sweep {args.setting} (TRAINER={env.get('TRAINER') or 'CLIPFit'}): {len(jobs)} jobs, "
          f"{len(skipped)} already finished (skipped), {len(todo)} to run")
    for job in skipped:
        print(f"  skip {job.name}: finished")
    for job in todo:
        note = " (partly done: resumes)" if states[job.name] == "partial" else ""
        note += " (running in another process)" if is_locked(job.lock) else ""
        print(f"  run  {job.name}{note}: {job.shell}")
    if args.slurm:
        return submit_slurm(todo, args.setting, env, args.sbatch_args, args.max_parallel,
                            args.dry_run) if todo else 0
    if args.dry_run or not todo:
        summarize(args.setting, env, skipped, None, False)
        return 0

    slots = slots_from_env(env, args.jobs)
    where = (f"one per GPU ({', '.join(s for s in slots if s)})" if slots[0] is not None
             else f"{len(slots)} at a time (CUDA_VISIBLE_DEVICES not set: no GPU pinning)")
    print(f"Running {len(todo)} jobs {where}")
    runner = LocalRunner(todo, slots, env, args.status_every)
    interrupted = False

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        runner.run()
    except KeyboardInterrupt:
        interrupted = True
        print("\nStopping the running jobs ...", flush=True)
        runner.stop()
    summarize(args.setting, env, skipped, runner, interrupted)
    if interrupted:
        return 130
    return 1 if runner.failed else 0


if __name__ == "__main__":
    sys.exit(main())
