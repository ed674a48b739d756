"""The whole paper in one command: ``python -m clipfit.experiments.paper run|status|report``.

    python -m clipfit.experiments.paper run [SELECTION] [--slurm ... | --jobs N] [-- KEY VALUE ...]
    python -m clipfit.experiments.paper status [SELECTION] [--resubmit BACKEND ...] [--json]
    python -m clipfit.experiments.paper report [SELECTION] [--format markdown|csv|json]
    python -m clipfit.experiments.paper estimate [SELECTION]

SELECTION: --settings, --trainers, --datasets, --seeds, --shots (each defaults to the paper's full
set), --data, --out, and trailing yacs opts after ``--``, the same for the three commands.
``run`` starts every task not finished, running or queued (rerunning does only what is missing);
without --slurm, one task per visible GPU, else --jobs N at a time on CPUs.
See docs/paper-on-a-cluster.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Sequence

from clipfit.experiments.paper.runner import add_slurm_arguments
from clipfit.experiments.protocol import SETTINGS

DEFAULT_MAX_ATTEMPTS = 3


def _selection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("selection (defaults: the paper's full set)")
    g.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    g.add_argument("--trainers", nargs="+", default=[], help="default: each table's methods in the paper")
    g.add_argument("--datasets", nargs="+", default=[], help="default: each setting's datasets")
    g.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    g.add_argument("--shots", nargs="+", type=int, default=[], help="default: few-shot 1 2 4 8 16, the others 16")
    g.add_argument("--data", default=os.environ.get("DATA") or "./data", help="dataset root (default $DATA, ./data)")
    g.add_argument("--out", default=os.environ.get("OUT") or "output", help="output root (default $OUT, output)")


def _backend_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the runs go")
    add_slurm_arguments(g)
    g.add_argument("--jobs", type=int, default=1, help="tasks at a time here when no GPU is visible")
    g.add_argument("--max-attempts", type=int, default=DEFAULT_MAX_ATTEMPTS,
                   help="a task that crashed this many times is not started again")
    g.add_argument("--dry-run", action="store_true", help="list what would start; start nothing")
    g.add_argument("--status-every", type=float, default=30.0, help="seconds between progress lines (local runs)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clipfit.experiments.paper", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start every task of the selection that is not finished, running or queued")
    _selection_args(run)
    _backend_args(run)
    run.add_argument("--resubmit", action="store_true", help="the same as run: failed and missing tasks only")
    status = sub.add_parser("status", help="per table and cell: finished, running, queued, failed, left")
    _selection_args(status)
    _backend_args(status)
    status.add_argument("--resubmit", action="store_true", help="then start the failed and missing tasks")
    status.add_argument("--json", action="store_true", help="each task's state as JSON")
    report = sub.add_parser("report", help="the paper's tables with this project's numbers and the differences")
    _selection_args(report)
    report.add_argument("--format", choices=("markdown", "csv", "json"), default="markdown")
    report.add_argument("--output", default="", help="write to this file instead of the terminal")
    estimate = sub.add_parser("estimate", help="GPU-hours of the selection's trainings, estimated from Table 7")
    _selection_args(estimate)
    task = sub.add_parser("task", help="(SLURM array tasks) run entry INDEX of a tasks file")
    task.add_argument("tasks_file")
    task.add_argument("index", type=int)
    return parser


def _selection(args: argparse.Namespace, opts: Sequence[str]):
    from clipfit.experiments.paper.plan import Selection

    return Selection(settings=tuple(args.settings), trainers=tuple(args.trainers), datasets=tuple(args.datasets),
                     seeds=tuple(args.seeds), shots=tuple(args.shots), data=args.data, out=args.out,
                     opts=tuple(opts))


def _start(args: argparse.Namespace, tasks, states, paper_dir: str, selection) -> int:
    from clipfit.experiments.jobs import Job, missing_inputs
    from clipfit.experiments.paper import runner, status

    start, held = status.todo(tasks, states, args.max_attempts)
    done = sum(1 for st in states.values() if st.state == status.FINISHED)
    busy = sum(1 for st in states.values() if st.state in (status.RUNNING, status.QUEUED))
    print(f"{len(tasks)} tasks: {done} finished, {busy} running or queued, {len(held)} failed and held back, "
          f"{len(start)} to start")
    for st in held:
        why = "a user error" if st.user_error else f"{st.attempts} attempts"
        print(f"  held back ({why}): {st.task}: {st.detail}")
    if not start:
        return 1 if held else 0
    missing = missing_inputs([Job(t.name, [], t.specs, t.log) for t in start], {"DATA": selection.data},
                             selection.opts)
    if missing:
        print(f"Missing ({len(missing)}): the tasks that need these cannot run")
        for what in missing.values():
            print(f"  {what}")
        print("Nothing started: prepare what is missing above, or leave those datasets out (--datasets).",
              file=sys.stderr)
        return 2
    if args.dry_run and not args.slurm:
        for task in start:
            print(f"  would start {task.name}")
        return 0
    if args.slurm:
        return runner.submit_slurm(start, paper_dir, runner.slurm_options(args), args.dry_run)
    return runner.run_local(start, paper_dir, args.jobs, args.status_every)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts: List[str] = []
    if "--" in argv:
        opts, argv = argv[argv.index("--") + 1:], argv[:argv.index("--")]
    args = build_parser().parse_args(argv)
    from clipfit.experiments.run import ScriptError

    if args.command == "task":
        from clipfit.experiments.paper.runner import task_main

        return task_main(args.tasks_file, args.index)
    try:
        return _command(args, opts)
    except (ScriptError, ValueError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2


def _command(args: argparse.Namespace, opts: Sequence[str]) -> int:
    from clipfit.experiments.paper import report, status
    from clipfit.experiments.paper.plan import paper_dir, plan

    if len(opts) % 2:
        raise ValueError(f"trailing opts come in KEY VALUE pairs; got {' '.join(opts)}")
    selection = _selection(args, opts)
    tasks = plan(selection)
    if not tasks:
        raise ValueError("the selection has no runs (check --settings, --trainers, --datasets, --shots)")
    if args.command == "estimate":
        from clipfit.experiments.paper import cost

        print(cost.render(cost.estimate(tasks, selection.settings)), end="")
        return 0
    if args.command == "report":
        text = report.render(report.build(tasks, selection.settings, selection.seeds), args.format)
        if args.output:
            from clipfit.fileio import write_text

            write_text(args.output, text)
            print(f"Wrote {args.output}")
        else:
            print(text, end="")
        return 0
    states = status.task_states(tasks, paper_dir(selection))
    if args.command == "status":
        print(status.as_json(states) if args.json else status.render(tasks, states, selection.settings).rstrip("\n"))
        return _start(args, tasks, states, paper_dir(selection), selection) if args.resubmit else 0
    return _start(args, tasks, states, paper_dir(selection), selection)


if __name__ == "__main__":
    sys.exit(main())
