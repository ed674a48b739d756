"""The sweep runner: planning from the scripts, skipping finished jobs, parallel runs, failure
reports, locks, a killed sweep started again, and SLURM arrays.

The real scripts run, with ``PYTHON`` pointing at a wrapper that answers ``train.py`` with a
fake trainer (Dassl's log lines, checkpoints, resume, metrics.json) in a fraction of a second.
"""
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clipfit.experiments.results import read_run
from clipfit.experiments.jobs import plan, resolve
from clipfit.experiments.runners import failure_excerpt, is_locked

REPO = Path(__file__).resolve().parents[1]

FAKE_TRAIN = r'''
import argparse, datetime, json, os, sys, time, zlib
p = argparse.ArgumentParser()
for flag in ("--root", "--seed", "--trainer", "--dataset-config-file", "--config-file",
             "--output-dir", "--resume", "--model-dir", "--load-epoch", "--announce"):
    p.add_argument(flag, default="")
p.add_argument("--eval-only", action="store_true")
p.add_argument("--overwrite", action="store_true")
p.add_argument("opts", nargs=argparse.REMAINDER)
a = p.parse_args()
out = a.output_dir
os.makedirs(out, exist_ok=True)
if os.environ.get("FAKE_CALLS"):  # what the caller asked for, and what it left in the run folder
    with open(os.environ["FAKE_CALLS"], "a") as calls:
        calls.write(json.dumps({"argv": sys.argv[1:], "found": sorted(os.listdir(out)),
                                "checkpoints": sorted(os.listdir(os.path.join(out, "model")))
                                if os.path.isdir(os.path.join(out, "model")) else []}) + "\n")
log_path = os.path.join(out, "log.txt")
if os.path.exists(log_path):  # Dassl never overwrites a log
    log_path += time.strftime("-%Y-%m-%d-%H-%M-%S")
log = open(log_path, "w")
def say(msg):
    print(msg, flush=True)
    log.write(msg + "\n"); log.flush()
say(f"eval_only: {a.eval_only}")
if os.environ.get("FAKE_FAIL") and os.environ["FAKE_FAIL"] in out:
    say("RuntimeError: fake failure"); sys.exit(1)
if not a.eval_only:
    epochs = int(os.environ.get("FAKE_EPOCHS", "3"))
    ckpt = os.path.join(out, "model", "checkpoint")
    start = 0
    if a.resume and os.path.exists(ckpt):
        start = int(open(ckpt).read().strip().rsplit("-", 1)[1])
        say(f"Found checkpoint at {out} (will resume training)")
        say(f"Previous epoch: {start}")
    else:
        say("No checkpoint found, train from scratch")
    for epoch in range(start, epochs):
        time.sleep(float(os.environ.get("FAKE_EPOCH_SECONDS", "0")))
        hold = os.path.join(os.environ.get("FAKE_HOLD", ""), "release-" + os.path.basename(out))
        waited = 0
        while epoch == 2 and os.environ.get("FAKE_HOLD") and not os.path.exists(hold) and waited < 2400:
            time.sleep(0.05)  # the test releases it when it has seen what it checks
            waited += 1
        say(f"epoch [{epoch + 1}/{epochs}] batch [1/1] time 0.1 (0.1) loss 1.0 (1.0) "
            f"lr 2.0000e-03 eta 0:00:{epochs - epoch - 1:02d}")
        os.makedirs(os.path.dirname(ckpt), exist_ok=True)
        open(os.path.join(out, "model", f"model.pth.tar-{epoch + 1}"), "w").close()
        open(ckpt, "w").write(f"model.pth.tar-{epoch + 1}\n")
    say("Finish training")
acc = 50 + zlib.crc32(out.encode()) % 4000 / 100
say(f"=> result\n* total: 100\n* correct: {int(acc)}\n* accuracy: {acc:.1f}%\n* error: {100 - acc:.1f}%")
json.dump({"split": "test", "accuracy": acc}, open(os.path.join(out, "metrics.json"), "w"))
say("Elapsed: 0:00:01")
'''


@pytest.fixture
def env(tmp_path):
    """The scripts' environment with a fake train.py and outputs under tmp_path."""
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    wrapper = tmp_path / "python"
    wrapper.write_text(f'#!/bin/bash\nif [ "$1" = train.py ]; then shift; exec {sys.executable} '
                       f'{fake} "$@"; fi\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    for folder in DATASET_FOLDERS:  # the sweep checks that they exist before it launches
        (tmp_path / "data" / folder).mkdir(parents=True)
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "ViT-B-16.pt").write_bytes(b"weights")
    e = {k: v for k, v in os.environ.items()
         if k not in ("TRAINER", "CFG", "SHOTS", "DATA", "OUT", "CUDA_VISIBLE_DEVICES")}
    return {**e, "PYTHON": str(wrapper), "OUT": str(tmp_path / "out"),
            "DATA": str(tmp_path / "data"), "FAKE_EPOCHS": "3",
            "CLIPFIT_CLIP_CACHE": str(tmp_path / "clip")}


DATASET_FOLDERS = ["imagenet", "caltech-101", "oxford_pets", "stanford_cars", "oxford_flowers",
                   "food-101", "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101", "imagenetv2",
                   "imagenet-sketch", "imagenet-adversarial", "imagenet-rendition"]


def sweep(env, *args, check=None, timeout=300):
    proc = subprocess.run(["bash", str(REPO / "scripts" / "sweep.sh"), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, proc.stdout + proc.stderr
    return proc


def finish(run_dir: str) -> None:
    os.makedirs(run_dir, exist_ok=True)
    Path(run_dir, "metrics.json").write_text(json.dumps({"accuracy": 70.0}))


def test_dry_run_lists_33_base2new_jobs_and_skips_finished_ones(env):
    out = sweep(env, "base2new", "--dry-run", check=0).stdout
    assert "33 jobs, 0 already finished (skipped), 33 to run" in out
    assert out.count("\n  run  ") == 33
    assert "run  imagenet-seed1: bash scripts/base2new_train.sh imagenet 1 && " \
           "bash scripts/base2new_test.sh imagenet 1" in out

    jobs = plan("base2new", [1, 2, 3])
    resolve(jobs, "base2new", env)
    assert [len(j.run_dirs) for j in jobs] == [2] * 33
    assert jobs[0].run_dirs[0] == os.path.join(
        env["OUT"], "base2new/train_base/imagenet/shots_16/CLIPFit/vit_b16_ep10/seed1")
    by_name = {j.name: j for j in jobs}
    for name in ("dtd-seed1", "eurosat-seed3"):
        for run_dir in by_name[name].run_dirs:
            finish(run_dir)
    finish(by_name["ucf101-seed2"].run_dirs[0])  # trained, not tested yet
    out = sweep(env, "base2new", "--dry-run", check=0).stdout
    assert "33 jobs, 2 already finished (skipped), 31 to run" in out
    assert "skip dtd-seed1: finished" in out and "skip eurosat-seed3: finished" in out
    assert "run  ucf101-seed2 (partly done: resumes)" in out


def test_every_setting_plans_the_papers_jobs(env):
    assert "165 jobs" in sweep(env, "fewshot", "--dry-run", check=0).stdout
    out = sweep(env, "xd", "--dry-run", check=0).stdout
    assert "3 jobs" in out and out.count("scripts/xd_test.sh") == 30
    jobs = plan("dg", [1])
    resolve(jobs, "dg", env)
    assert len(jobs[0].run_dirs) == 5  # the ImageNet source and 4 targets
    assert "/xd/train/imagenet/shots_16/CLIPFit/vit_b16_ep10_beta2/seed1" in jobs[0].run_dirs[0]


def test_parallel_run_failure_report_and_rerun(env):
    args = ("base2new", "--datasets", "dtd", "eurosat", "--seeds", "1", "2", "--jobs", "2")
    proc = sweep({**env, "FAKE_FAIL": "eurosat/shots_16/CLIPFit/vit_b16/seed2"}, *args, check=1)
    out = proc.stdout
    lines = out.splitlines()
    first_done = next(i for i, ln in enumerate(lines) if ln.startswith(("[done]", "[FAIL]")))
    assert sum(ln.startswith("[start]") for ln in lines[:first_done]) == 2  # two at a time
    assert "3 ran ok, 1 failed" in out
    log = Path(env["OUT"]) / "sweeps/base2new/CLIPFit/logs/eurosat-seed2.log"
    assert f"FAILED eurosat-seed2 (exit 1): {log}" in out
    assert "fake failure" in log.read_text() and "| " in out  # the log's tail is shown
    out = sweep(env, *args, check=0).stdout
    assert "4 jobs, 3 already finished (skipped), 1 to run" in out and "1 ran ok" in out
    assert "Results: python parse_test_res.py --base2new" in out


def test_progress_lines_show_done_running_left_and_epochs(env, tmp_path):
    """Each fake training holds at epoch 3 until the test has seen the status line it checks,
    so the lines are checked whatever the machine's load (a held job gives up after 2 min)."""
    hold = tmp_path / "hold"
    hold.mkdir()
    proc = subprocess.Popen(
        ["bash", str(REPO / "scripts" / "sweep.sh"), "base2new", "--datasets", "dtd", "--seeds",
         "1", "2", "--status-every", "0"], env={**env, "FAKE_EPOCHS": "4", "FAKE_HOLD": str(hold)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    progress = "dtd-seed{}: base2new train CLIPFit/vit_b16 dtd seed {} -> "
    expected = [("0/2 done (0 failed), 1 running, 1 left", progress.format(1, 1), "seed1"),
                ("1/2 done (0 failed), 1 running, 0 left, ETA ~", progress.format(2, 2), "seed2")]
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if (expected and len(seen) > 1 and expected[0][0] in seen[-2]
                    and expected[0][1] in line and "[epoch 2/4, eta 0:00:02]" in line):
                (hold / f"release-{expected.pop(0)[2]}").touch()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert not expected, "".join(seen)


def test_failure_excerpt_leads_with_the_line_that_says_what_failed(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("epoch [1/2]\nERROR: no dataset folder /data/dtd\n" + "".join(
        f"cleanup {i}\n" for i in range(6)))
    assert failure_excerpt(str(log)) == ["ERROR: no dataset folder /data/dtd", "..."] + [
        f"cleanup {i}" for i in range(1, 6)]
    log.write_text("a\nb\nValueError: bad value\n")
    assert failure_excerpt(str(log)) == ["a", "b", "ValueError: bad value"]


def test_missing_datasets_and_weights_are_listed_before_anything_runs(env, tmp_path):
    (tmp_path / "clip" / "ViT-B-16.pt").unlink()
    for folder in DATASET_FOLDERS:
        if folder != "dtd":
            (tmp_path / "data" / folder).rmdir()
    out = sweep(env, "base2new", "--dry-run", "--seeds", "1", check=0).stdout
    assert "run  dtd-seed1 (cannot start: no weights): " in out
    assert "run  eurosat-seed1 (cannot start: no eurosat, weights): " in out
    assert f"{tmp_path / 'data' / 'caltech-101'} not found: prepare it as DATASETS.md, section " \
           '"Caltech101"' in out
    assert f"{tmp_path / 'clip' / 'ViT-B-16.pt'} not found: download https://" in out
    assert "Missing (11)" in out  # 10 datasets and the weights
    proc = sweep(env, "base2new", "--datasets", "dtd", "eurosat", "--seeds", "1", check=2)
    assert "Nothing launched" in proc.stderr and not (Path(env["OUT"]) / "base2new").exists()
    (tmp_path / "clip" / "ViT-B-16.pt").write_bytes(b"weights")
    out = sweep(env, "base2new", "--datasets", "dtd", "eurosat", "--seeds", "1", "--dry-run",
                check=0).stdout
    assert "Missing (1)" in out and "To run only what is there: --datasets dtd" in out


def _wait_for(path: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _kill_lock_holder(lock: Path) -> None:
    if lock.exists() and lock.read_text().split():
        try:
            os.killpg(int(lock.read_text().split()[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


def _train_calls(calls: Path, run_dir: Path):
    """The fake train.py's record of each training call (not eval-only) for ``run_dir``."""
    records = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return [r for r in records if str(run_dir) in r["argv"] and "--eval-only" not in r["argv"]]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_sweep_started_again_resumes_from_checkpoints(env, how, tmp_path):
    """The job holds at epoch 3 until the test releases it, so that the orphaned job of a
    killed sweep is still running when the second sweep looks, whatever the machine's load."""
    hold = tmp_path / "hold"
    hold.mkdir()
    calls = tmp_path / "calls.jsonl"
    env = {**env, "FAKE_EPOCHS": "8", "FAKE_EPOCH_SECONDS": "0.1", "FAKE_HOLD": str(hold),
           "FAKE_CALLS": str(calls)}
    args = ["bash", str(REPO / "scripts" / "sweep.sh"), "base2new", "--datasets", "dtd",
            "--seeds", "1"]
    run_dir = Path(env["OUT"]) / "base2new/train_base/dtd/shots_16/CLIPFit/vit_b16/seed1"
    lock = Path(env["OUT"]) / "sweeps/base2new/CLIPFit/locks/dtd-seed1.lock"
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        _wait_for(run_dir / "model" / "model.pth.tar-2")
        proc.send_signal(how)
        out = proc.communicate(timeout=30)[0]
        if how == signal.SIGTERM:
            assert proc.returncode == 130 and "Interrupted: run the same command again" in out
        else:  # the job outlives the sweep and keeps its lock: a new sweep leaves it alone
            again = sweep(env, *args[2:], check=0).stdout
            assert "running in another process" in again and "1 busy in another process" in again
        (hold / "release-seed1").touch()
        if how == signal.SIGKILL:
            deadline = time.time() + 60
            while is_locked(str(lock)):  # the orphaned job finishes on its own
                assert time.time() < deadline, "the orphaned job did not finish"
                time.sleep(0.1)
        out = sweep(env, *args[2:], check=0).stdout
    finally:
        proc.kill()
        _kill_lock_holder(lock)
    assert read_run(str(run_dir)).finished
    train_calls = _train_calls(calls, run_dir)
    if how == signal.SIGKILL:  # the busy job was not started a second time, nor after it finished
        assert len(train_calls) == 1
        assert "1 already finished (skipped), 0 to run" in out
        return
    assert "1 ran ok" in out
    first, second = train_calls  # the killed attempt and the one the second sweep started
    assert second["argv"][second["argv"].index("--output-dir") + 1] == str(run_dir)
    assert second["argv"][second["argv"].index("--resume") + 1] == str(run_dir)
    assert {"checkpoint", "model.pth.tar-1", "model.pth.tar-2"} <= set(second["checkpoints"])
    assert "log.txt" not in second["found"]  # the interrupted attempt's log was moved aside ...
    old_logs = list(run_dir.glob("log.txt-*"))  # ... and kept, not overwritten
    assert len(old_logs) == 1 and "epoch [1/8]" in old_logs[0].read_text()
    tests = [json.loads(line) for line in calls.read_text().splitlines() if "--eval-only" in line]
    assert len(tests) == 1  # the new-class test ran once, after training finished


def test_task_exits_busy_when_its_lock_is_held(tmp_path):
    lock = tmp_path / "job.lock"
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        proc = subprocess.run([sys.executable, "-m", "clipfit.experiments.sweep", "task", "--lock", str(lock),
                               "--log", str(tmp_path / "job.log"), "--", "bash", "-c", "echo ran"],
                              cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 75 and "running in another process" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "clipfit.experiments.sweep", "task", "--lock", str(lock),
                           "--log", str(tmp_path / "job.log"), "--", "bash", "-c", "echo ran"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and "ran" in (tmp_path / "job.log").read_text()


def test_slurm_array_script_runs_one_job_per_task(env):
    out = sweep(env, "base2new", "--datasets", "dtd", "eurosat", "--seeds", "1", "--slurm",
                "--dry-run", "--sbatch-args=--partition=gpu", check=0).stdout
    assert "SLURM array of 2 jobs" in out and "task 1: eurosat-seed1" in out
    assert "Submit with: sbatch --partition=gpu" in out
    slurm = Path(env["OUT"]) / "sweeps/base2new/CLIPFit/slurm"
    script = next(slurm.glob("array-*.sbatch"))
    text = script.read_text()
    assert "#SBATCH --array=0-1\n" in text and "#SBATCH --gres=gpu:1" in text
    assert f"export OUT={env['OUT']}" in text
    assert len(next(slurm.glob("jobs-*.txt")).read_text().splitlines()) == 2
    task_env = {k: v for k, v in env.items() if k not in ("OUT", "DATA")}
    proc = subprocess.run(["bash", str(script)], env={**task_env, "SLURM_ARRAY_TASK_ID": "1"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    done = Path(env["OUT"]) / "base2new/test_new/eurosat/shots_16/CLIPFit/vit_b16/seed1"
    assert read_run(str(done)).finished
    assert not (Path(env["OUT"]) / "base2new/train_base/dtd").exists()
    out = sweep(env, "base2new", "--datasets", "dtd", "eurosat", "--seeds", "1", "--slurm",
                "--dry-run", check=0).stdout
    assert "SLURM array of 1 jobs" in out and "task 0: dtd-seed1" in out
