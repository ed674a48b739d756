"""Sweep runner: every dataset x seed of a setting, in parallel or as a SLURM job array.

``bash scripts/sweep.sh SETTING [options] [-- yacs opts]`` (or ``python -m clipfit.experiments.sweep``).
A job is one dataset and seed (base2new: train then test; fewshot: one number of shots; xd:
one seed's ImageNet training and its 10 targets; dg: one seed's source model and 4 targets),
that is the runs (:class:`~clipfit.training.run_spec.RunSpec`) its scripts make. A job whose
runs all hold final results with the same identity is skipped. Before it launches anything (and
in ``--dry-run``) the sweep checks the dataset folders and the weights file the jobs need, and
lists what is missing with the DATASETS.md section that explains it. A job that was
interrupted runs again, and its runs resume from their last checkpoint.

Jobs run in worker processes forked from a forkserver that imported torch once
(:mod:`clipfit.experiments.runners`): one per GPU listed in ``CUDA_VISIBLE_DEVICES``, pinned
to it, else ``--jobs N`` at a time (on CPUs with torch threads = CPUs // N each), or as a
SLURM job array (``--slurm``) through the paper runner's backend
(:mod:`clipfit.experiments.paper.runner`): each array task runs one job's runs from a checked
JSON tasks file, checkpoints on SLURM's warning signal and requeues itself. The run folders' lock keeps two
sweeps (or a sweep and a leftover job of a killed one) from running the same run at once. The
environment contract of the scripts (TRAINER, CFG, SHOTS, DATA, OUT, ...) passes through.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import re
import signal
import sys
from multiprocessing import forkserver
from typing import Callable, Dict, List, Optional, Sequence

from clipfit.experiments.jobs import Job, display_path, job_datasets, missing_inputs, plan, sweep_dir
from clipfit.experiments.paper.plan import Task
from clipfit.experiments.paper.runner import add_slurm_arguments, slurm_options, submit_slurm
from clipfit.experiments.protocol import FEWSHOT_SHOTS, SEEDS, SETTINGS
from clipfit.errors import UserError
from clipfit.experiments.run import check_names
from clipfit.experiments.runners import LocalRunner, slots_from_env, threads_per_job, worker_context


def summarize(setting: str, env: Dict[str, str], skipped: Sequence[Job],
              runner: Optional[LocalRunner], interrupted: bool, who: str) -> None:
    """What ran, what was skipped, what failed and where its log is; what to run next."""
    print("=" * 60)
    counts = [f"{len(skipped)} skipped (already finished)"]
    if runner is not None:
        counts += [f"{len(runner.ok)} ran ok", f"{len(runner.failed)} failed"]
        not_run = len(runner.pending) + len(runner.running)
        counts += [f"{len(runner.busy)} busy in another process"] if runner.busy else []
        counts += [f"{not_run} not run"] if not_run else []
    print(f"Sweep {setting} ({who}): {', '.join(counts)}")
    if runner is not None:
        for job, reason in runner.failed:
            print(f"  FAILED {job.name} ({reason}): {display_path(job.log)}")
        for job in runner.busy:
            print(f"  BUSY   {job.name} (a run folder is locked by another process; log: "
                  f"{display_path(job.log)})")
    if interrupted:
        print("Interrupted: run the same command again to resume (finished runs are skipped, "
              "unfinished ones resume from their last checkpoint).")
    out = env.get("OUT") or "output"
    root = osp.join(out, setting) if setting in ("base2new", "fewshot") else out
    print(f"Results: python parse_test_res.py --{setting} {root}")


def submit_array(jobs: Sequence[Job], args: argparse.Namespace, env: Dict[str, str]) -> int:
    """The jobs as a SLURM array of the paper runner's backend, one job per array task; its tasks
    file, script and records under the sweep's folder (``--dry-run``: written, not submitted)."""
    print(f"SLURM array of {len(jobs)} jobs:")
    for i, job in enumerate(jobs):
        print(f"  task {i}: {job.name} (log: {display_path(job.log)})")
    tasks = [Task(re.sub(r"[^\w.+-]+", "-", job.name), list(job.specs), job.log) for job in jobs]
    options = slurm_options(args, job_name=f"clipfit-sweep-{args.setting}")
    return submit_slurm(tasks, sweep_dir(args.setting, env), options, args.dry_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/sweep.sh", description=__doc__.split("\n\n")[0],
        epilog="Environment: TRAINER (CLIPFit), CFG, SHOTS, DATA, OUT, CKPT_FREQ, OVERWRITE as for "
               "the scripts; CUDA_VISIBLE_DEVICES=0,1,2,3 runs one job per GPU. Everything after "
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
    slurm = parser.add_argument_group("SLURM (the paper runner's backend: docs/paper-on-a-cluster.md)")
    add_slurm_arguments(slurm)
    parser.add_argument("--methods", nargs="+", metavar="TRAINER[:CFG]",
                        help="several trainers (and configs) in one sweep, their jobs sharing the "
                             "workers (default: $TRAINER and $CFG)")
    parser.add_argument("--status-every", type=float, default=30.0,
                        help="seconds between progress summaries")
    return parser


def main(argv: Optional[Sequence[str]] = None, train: Optional[Callable[..., None]] = None) -> int:
    """The sweep; ``train`` (a module-level function, for the workers) replaces train.py's
    main in the workers' runs (tests give a fake trainer)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    opts: List[str] = []
    if "--" in argv:
        opts = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    args = build_parser().parse_args(argv)
    env = dict(os.environ)
    if not (args.dry_run or args.slurm):
        worker_context()  # the forkserver imports torch while this process plans
        forkserver.ensure_running()
    methods = [tuple(m.split(":", 1)) if ":" in m else (m, "") for m in args.methods or []]
    who = ", ".join(f"TRAINER={t}" + (f" CFG={c}" if c else "") for t, c in methods) or \
        f"TRAINER={env.get('TRAINER') or 'CLIPFit'}"
    try:
        jobs = []
        for trainer, cfg in methods or [(None, None)]:
            method_env = env if trainer is None else {**env, "TRAINER": trainer, "CFG": cfg}
            planned = plan(args.setting, args.seeds, args.datasets, args.shots, opts, method_env)
            for job in planned if trainer is not None else []:
                job.name = f"{trainer}{'/' + cfg if cfg else ''}:{job.name}"
                job.env = {"TRAINER": trainer, "CFG": cfg}
            jobs += planned
        for spec in {(s.config_file, s.dataset): s for j in jobs for s in j.specs}.values():
            check_names(spec)  # before anything runs: TRAINER, CFG, dataset names (did you mean)
    except UserError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2

    states = {job.name: job.status() for job in jobs}
    skipped = [j for j in jobs if states[j.name] == "done"]
    todo = [j for j in jobs if states[j.name] != "done"]
    print(f"Sweep {args.setting} ({who}): {len(jobs)} jobs, "
          f"{len(skipped)} already finished (skipped), {len(todo)} to run")
    for job in skipped:
        print(f"  skip {job.name}: finished")
    missing = missing_inputs(todo, env, opts) if todo else {}
    for job in todo:
        note = " (partly done: resumes)" if states[job.name] == "partial" else ""
        note += " (running in another process)" if job.holder() else ""
        lacks = [d for d in job_datasets(job) if d in missing] + (["weights"] if "weights" in missing else [])
        note += f" (cannot start: no {', '.join(lacks)})" if lacks else ""
        print(f"  run  {job.name}{note}: {job.shell}")
    if missing:
        print(f"Missing ({len(missing)}): the jobs that need these cannot start")
        for what in missing.values():
            print(f"  {what}")
        present = [d for d in dict.fromkeys(d for j in todo for d in job_datasets(j)) if d not in missing]
        if present and "weights" not in missing:
            print(f"To run only what is there: --datasets {' '.join(present)}")
    if missing and not args.dry_run:
        print("Nothing launched: prepare what is missing above, or leave those datasets out.",
              file=sys.stderr)
        return 2
    if args.slurm and env.get("OVERWRITE") == "1":
        print("OVERWRITE=1 is not passed to SLURM array tasks: a task requeued after preemption would delete "
              "its own checkpoint. Delete the run folders to redo them, or run without --slurm.", file=sys.stderr)
        return 2
    if args.slurm:
        return submit_array(todo, args, env) if todo else 0
    if args.dry_run or not todo:
        summarize(args.setting, env, skipped, None, False, who)
        return 0

    slots = slots_from_env(env, args.jobs)
    where = (f"one per GPU ({', '.join(s for s in slots if s)})" if slots[0] is not None
             else f"{len(slots)} at a time (CUDA_VISIBLE_DEVICES not set: no GPU pinning)")
    threads = threads_per_job(slots, len(todo), env)
    print(f"Running {len(todo)} jobs {where}" + (f"; {threads} torch threads each" if threads else "")
          + "; in workers forked from one python that imported torch", flush=True)
    runner = LocalRunner(todo, slots, threads, args.status_every, overwrite=env.get("OVERWRITE") == "1",
                         train=train)
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
    summarize(args.setting, env, skipped, runner, interrupted, who)
    if interrupted:
        return 130
    return 1 if runner.failed else 0


if __name__ == "__main__":
    sys.exit(main())
