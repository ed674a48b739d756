"""The paper runner on a real one-node SLURM cluster (tests/slurm_cluster.py): one submission of
the toy world's base-to-new equals the same runs made here; a cancelled task resumes from its
checkpoint after ``status --resubmit``; the time-limit signal checkpoints, requeues and ends
with the numbers of an uninterrupted run; a task failing from a bad option shows its error and
is not submitted again. Marked ``slurm`` (``pytest -m "not slurm"`` leaves them out)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm
REPO = Path(__file__).resolve().parents[1]
SELECT = ["--settings", "base2new", "--datasets", "toy_shapes"]
SHORT = ["--", "OPTIM.MAX_EPOCH", "2"]  # seconds per run
LONG = ["--", "OPTIM.MAX_EPOCH", "40", "TRAIN.PRINT_FREQ", "1"]  # long enough to be interrupted


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Toy data small enough for runs of seconds."""
    from clipfit.toyworld.downstream import make_dataset

    root = tmp_path_factory.mktemp("toydata")
    make_dataset("toy_shapes", str(root), seed=1, per_class={"train": 8, "val": 1, "test": 2})
    return root


def paper(*args, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CLIPFIT_ENGINE": "builtin"}
    proc = subprocess.run([sys.executable, "-m", "clipfit.experiments.paper", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def wait_for_queue(cluster, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while cluster.jobs():
        assert time.time() < deadline, f"jobs still in the queue: {cluster.jobs()}"
        time.sleep(1)


def wait_for(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def job_ids(out: Path) -> list:
    return sorted((out / "paper" / "slurm").glob("*.job"))


def states(selection: list, opts: list) -> dict:
    """Each task's state, as ``status --json`` gives it."""
    return json.loads(paper("status", *selection, "--json", *opts).stdout)


def train_folder(out: Path, trainer: str, seed: int) -> Path:
    return out / "base2new" / "train_base" / "toy_shapes" / "shots_16" / trainer / "toy" / f"seed{seed}"


def metrics(folder: Path) -> dict:
    data = json.loads((folder / "metrics.json").read_text())
    return {k: data[k] for k in ("accuracy", "macro_f1", "correct", "epoch")}


def test_one_submission_of_base2new_equals_the_same_runs_made_here(slurm_cluster, toy, tmp_path):
    sel = [*SELECT, "--trainers", "CLIPFit", "CoOp", "--seeds", 1, 2, 3, "--data", toy]
    cluster_out, local_out = tmp_path / "cluster", tmp_path / "local"
    submitted = paper("run", *sel, "--out", cluster_out, "--slurm", "--gres", "none", "--cpus-per-task", 1, *SHORT)
    assert "Submitted array job" in submitted.stdout and "6 tasks" in submitted.stdout
    assert len(job_ids(cluster_out)) == 1  # one submission
    script = next((cluster_out / "paper" / "slurm").glob("*.sbatch")).read_text()
    assert "eval" not in script and "#SBATCH --gres" not in script and "--signal=B:USR1@" in script
    wait_for_queue(slurm_cluster)
    paper("run", *sel, "--out", local_out, "--jobs", 2, *SHORT)
    reports = [json.loads(paper("report", *sel, "--out", out, "--format", "json", *SHORT).stdout)
               for out in (cluster_out, local_out)]
    cells = reports[0][0]["cells"]
    seeds = [c for c in cells if c["expected"]]  # Base and New of each trainer (HM, Average follow)
    assert len(seeds) == 2 * 2 and all(c["complete"] and len(c["values"]) == 3 for c in seeds)
    assert all(c["paper"] is None and c["delta"] is None for c in cells)  # toy data: no paper number
    assert reports[0] == reports[1]
    again = paper("run", *sel, "--out", cluster_out, "--slurm", "--gres", "none", *SHORT)
    assert "0 to start" in again.stdout and len(job_ids(cluster_out)) == 1  # nothing left to do


@pytest.fixture(scope="module")
def uninterrupted(toy, tmp_path_factory):
    """CLIPFit base-to-new seeds 1 and 2 (40 epochs), run here without interruption."""
    out = tmp_path_factory.mktemp("uninterrupted")
    paper("run", *SELECT, "--trainers", "CLIPFit", "--seeds", 1, 2, "--data", toy, "--out", out, "--jobs", 2, *LONG)
    return out


def _submit_and_wait_for_epoch(toy, out: Path, seed: int, epoch: int = 2) -> str:
    paper("run", *SELECT, "--trainers", "CLIPFit", "--seeds", seed, "--data", toy, "--out", out, "--slurm",
          "--gres", "none", *LONG)
    folder = train_folder(out, "CLIPFit", seed) / "clipfit"
    wait_for(lambda: any(int(p.name.rsplit("-", 1)[1]) >= epoch for p in folder.glob("model.pth.tar-*")),
             f"the checkpoint of epoch {epoch}")
    return job_ids(out)[-1].read_text().strip()


def test_a_cancelled_task_is_resubmitted_and_resumes_from_its_checkpoint(slurm_cluster, toy, tmp_path, uninterrupted):
    out = tmp_path / "out"
    job = _submit_and_wait_for_epoch(toy, out, seed=1)
    slurm_cluster.run("scancel", f"{job}_0")
    wait_for_queue(slurm_cluster)
    sel = [*SELECT, "--trainers", "CLIPFit", "--seeds", 1, "--data", toy, "--out", out]
    (state,) = states(sel, LONG).values()
    assert state["state"] == "left" and state["detail"].startswith("resumes from epoch")
    paper("status", *sel, "--resubmit", "--slurm", "--gres", "none", *LONG)
    assert len(job_ids(out)) == 2
    wait_for_queue(slurm_cluster)
    folder = train_folder(out, "CLIPFit", 1)
    assert "Found checkpoint" in (folder / "log.txt").read_text()
    assert metrics(folder) == metrics(train_folder(uninterrupted, "CLIPFit", 1))


def test_the_time_limit_signal_checkpoints_requeues_and_ends_as_an_uninterrupted_run(
        slurm_cluster, toy, tmp_path, uninterrupted):
    out = tmp_path / "out"
    job = _submit_and_wait_for_epoch(toy, out, seed=2)
    task = f"{job}_0"
    slurm_cluster.run("scancel", "--signal=USR1", "--batch", task)
    wait_for(lambda: "PENDING" in slurm_cluster.run("squeue", "-h", "-r", "-o", "%T", "-j", job).stdout,
             "the task to be requeued", timeout=60)
    log = out / "paper" / "logs" / "base2new-CLIPFit-toy_shapes-16shot-seed2.log"
    # SLURM holds a requeued job back (its BeginTime) so that it does not start in the second its old
    # credential was revoked: released at once, slurmctld logged "Killing non-startable batch JobId=1:
    # Job credential revoked" and the task ended. Wait past that second, then release it.
    time.sleep(5)
    deadline = time.time() + 240
    while "(restart 1)" not in log.read_text():
        slurm_cluster.run("scontrol", "update", f"JobId={task}", "StartTime=now", check=False)
        queue = slurm_cluster.run("squeue", "-h", "-r", "-o", "%T %r %S", "-j", job, check=False).stdout
        assert time.time() < deadline, f"the requeued task did not start; squeue: {queue!r}"
        time.sleep(2)
    wait_for_queue(slurm_cluster)
    assert "Stopped by SIGUSR1: requeued job" in log.read_text()
    folder = train_folder(out, "CLIPFit", 2)
    kept = sorted(int(p.name.rsplit("-", 1)[1]) for p in (folder / "clipfit").glob("model.pth.tar-*"))
    assert kept == list(range(5, 41, 5))  # TRAIN.CHECKPOINT_FREQ 5 keeps these; the per-epoch ones went
    assert metrics(folder) == metrics(train_folder(uninterrupted, "CLIPFit", 2))
    assert len(job_ids(out)) == 1  # it requeued itself: no new submission


def test_a_bad_option_shows_its_error_and_is_not_submitted_again(slurm_cluster, toy, tmp_path):
    sel = [*SELECT, "--trainers", "CoOp", "--seeds", 1, "--data", toy, "--out", tmp_path, "--slurm", "--gres", "none"]
    bad = ["--", "OPTIM.NO_SUCH_KEY", "1"]
    paper("run", *sel, *bad)
    wait_for_queue(slurm_cluster)
    (state,) = states(sel, bad).values()
    assert state["state"] == "failed" and state["user_error"] and "OPTIM.NO_SUCH_KEY" in state["detail"]
    shown = paper("status", *sel, *bad).stdout
    assert "Failed tasks (1)" in shown and "OPTIM.NO_SUCH_KEY" in shown
    again = paper("status", *sel, "--resubmit", *bad, check=False)
    assert "held back (a user error)" in again.stdout and "0 to start" in again.stdout
    assert len(job_ids(tmp_path)) == 1


def test_the_sweeps_slurm_array_runs_through_the_same_backend(slurm_cluster, toy, tmp_path):
    """``sweep --slurm`` submits the paper runner's array (tasks file, ``task`` command), and its
    task ends with the same numbers as the paper runner's task of the same runs."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CLIPFIT_ENGINE": "builtin",
           "TRAINER": "CLIPFit", "CFG": "toy", "DATA": str(toy), "OUT": str(tmp_path / "sweep")}
    proc = subprocess.run([sys.executable, "-m", "clipfit.experiments.sweep", "base2new", "--datasets", "toy_shapes",
                           "--seeds", "1", "--slurm", "--gres", "none", "--cpus-per-task", "1", *SHORT],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "Submitted array job" in proc.stdout, proc.stdout + proc.stderr
    wait_for_queue(slurm_cluster)
    paper("run", *SELECT, "--trainers", "CLIPFit", "--seeds", 1, "--data", toy, "--out", tmp_path / "paper",
          "--jobs", 1, *SHORT)
    for part in ("train_base", "test_new"):
        swept, here = (out / "base2new" / part / "toy_shapes" / "shots_16" / "CLIPFit" / "toy" / "seed1"
                       for out in (tmp_path / "sweep", tmp_path / "paper"))
        assert metrics(swept) == metrics(here)
