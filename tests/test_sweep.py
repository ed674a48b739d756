"""The sweep runner: planning the scripts' runs, skipping finished jobs, parallel workers
forked from the forkserver, failure reports, locks, a killed sweep or worker started again,
GPU pinning and thread division, and SLURM arrays.

The workers run a fake trainer in place of train.py's main (tests/_sweep_fake.py: Dassl's log
lines, checkpoints, resume, metrics.json in a fraction of a second); one test runs the real one.
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
import torch

from clipfit.experiments.results import read_run
from clipfit.experiments.run import ScriptEnv, script_specs
from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import TINY_IMAGE_SIZE, save_tiny_clip
from clipfit.experiments.jobs import plan
from clipfit.experiments.paper.plan import read_tasks
from clipfit.experiments.runners import failure_excerpt, slots_from_env, threads_per_job
from clipfit.training.run_folder import LOCK_FILE, is_locked

REPO = Path(__file__).resolve().parents[1]

FAKE = REPO / "tests" / "_sweep_fake.py"


@pytest.fixture
def env(tmp_path):
    """The scripts' environment with outputs under tmp_path (the fake trainer: tests/_sweep_fake.py)."""
    for folder in DATASET_FOLDERS:  # the sweep checks that they exist before it launches
        (tmp_path / "data" / folder).mkdir(parents=True)
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "ViT-B-16.pt").write_bytes(b"weights")
    e = {k: v for k, v in os.environ.items()
         if k not in ("TRAINER", "CFG", "SHOTS", "DATA", "OUT", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")}
    return {**e, "OUT": str(tmp_path / "out"), "PYTHONPATH": str(REPO),
            "DATA": str(tmp_path / "data"), "FAKE_EPOCHS": "3",
            "CLIPFIT_CLIP_CACHE": str(tmp_path / "clip")}


DATASET_FOLDERS = ["imagenet", "caltech-101", "oxford_pets", "stanford_cars", "oxford_flowers",
                   "food-101", "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101", "imagenetv2",
                   "imagenet-sketch", "imagenet-adversarial", "imagenet-rendition"]


def sweep_command(*args):
    """The sweep with the fake trainer in its workers (``bash scripts/sweep.sh`` runs the real one)."""
    return [sys.executable, str(FAKE), *args]


def sweep(env, *args, check=None, timeout=300):
    proc = subprocess.run(sweep_command(*args), env=env, cwd=REPO,
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

    jobs = plan("base2new", [1, 2, 3], env=env)
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
    jobs = plan("dg", [1], env=env)
    assert len(jobs[0].run_dirs) == 5  # the ImageNet source and 4 targets
    assert "/xd/train/imagenet/shots_16/CLIPFit/vit_b16_ep10_beta2/seed1" in jobs[0].run_dirs[0]
    xd = plan("xd", [1], env=env)[0]
    assert len(xd.run_dirs) == 11 and all(s.model == xd.specs[0] for s in xd.specs[1:])


def test_a_finished_job_with_other_settings_is_not_skipped(env):
    args = ("base2new", "--datasets", "dtd", "--seeds", "1")
    assert "1 ran ok" in sweep(env, *args, check=0).stdout
    assert "1 already finished (skipped)" in sweep(env, *args, "--dry-run", check=0).stdout
    (Path(env["OUT"]) / "base2new/train_base/dtd/shots_16/CLIPFit/vit_b16/seed1/run.json").write_text(
        json.dumps({"format": "clipfit-run/2", "kind": "train", "state": "finished",
                    "settings": {"SEED": 1, "OPTIM.MAX_EPOCH": 40}}))  # as if trained with other opts
    out = sweep(env, *args, "--dry-run", check=0).stdout
    assert "0 already finished (skipped), 1 to run" in out and "run  dtd-seed1 (partly done" in out


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
    assert "    python train.py --root " in log.read_text()  # the command each run amounts to
    out = sweep(env, *args, check=0).stdout
    assert "4 jobs, 3 already finished (skipped), 1 to run" in out and "1 ran ok" in out
    assert "Results: python parse_test_res.py --base2new" in out


def test_progress_lines_show_done_running_left_and_the_run_going_on(env, tmp_path):
    """Each fake training holds at epoch 3, and each test before its result, until the test has
    seen the status line it checks, so the lines are checked whatever the machine's load."""
    hold = tmp_path / "hold"
    hold.mkdir()
    proc = subprocess.Popen(
        sweep_command("base2new", "--datasets", "dtd", "--seeds", "1", "2", "--status-every", "0"),
        env={**env, "FAKE_EPOCHS": "4", "FAKE_HOLD": str(hold)}, cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    train = "dtd-seed{}: base2new train CLIPFit/vit_b16 dtd seed {} -> "
    test = "dtd-seed{}: base2new test (new classes) CLIPFit/vit_b16 dtd seed {} -> "
    expected = [("0/2 done (0 failed), 1 running, 1 left", train.format(1, 1), "[epoch 2/4, eta 0:00:02]",
                 "release-seed1"),
                ("0/2 done (0 failed), 1 running, 1 left", test.format(1, 1), "", "release-test-seed1"),
                ("1/2 done (0 failed), 1 running, 0 left, ETA ~", train.format(2, 2), "[epoch 2/4, eta 0:00:02]",
                 "release-seed2"),
                ("1/2 done (0 failed), 1 running, 0 left, ETA ~", test.format(2, 2), "", "release-test-seed2")]
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if (expected and len(seen) > 1 and expected[0][0] in seen[-2]
                    and expected[0][1] in line and expected[0][2] in line):
                (hold / expected.pop(0)[3]).touch()
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
    proc = sweep({**env, "TRAINER": "KgCop"}, "base2new", "--datasets", "dtd", "dtdd", check=2)
    assert "no trainer configs for TRAINER=KgCop (configs/trainers/KgCop). Did you mean KgCoOp?" in proc.stderr
    proc = sweep(env, "base2new", "--datasets", "dtd", "dtdd", check=2)
    assert "no dataset config configs/datasets/dtdd.yaml. Did you mean dtd?" in proc.stderr


def _wait_for(path: Path, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.05)


def _lock_holder_pid(run_dir: Path) -> int:
    """The pid in a run folder's lock file ("pid N: ..."), 0 when none."""
    text = (run_dir / LOCK_FILE).read_text() if (run_dir / LOCK_FILE).exists() else ""
    return int(text.split()[1].rstrip(":")) if text.startswith("pid ") else 0


def _kill(pid: int) -> None:
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _calls(calls: Path, run_dir: Path, train: bool = True):
    """The fake trainer's record of each training (or evaluation) call for ``run_dir``."""
    records = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return [r for r in records if str(run_dir) in r["argv"] and ("--eval-only" not in r["argv"]) == train]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_sweep_started_again_resumes_from_checkpoints(env, how, tmp_path):
    """The job holds at epoch 3 until the test releases it, so that the orphaned worker of a
    killed sweep is still running when the second sweep looks, whatever the machine's load."""
    hold = tmp_path / "hold"
    hold.mkdir()
    calls = tmp_path / "calls.jsonl"
    env = {**env, "FAKE_EPOCHS": "8", "FAKE_EPOCH_SECONDS": "0.1", "FAKE_HOLD": str(hold),
           "FAKE_CALLS": str(calls)}
    args = ["base2new", "--datasets", "dtd", "--seeds", "1"]
    run_dir = Path(env["OUT"]) / "base2new/train_base/dtd/shots_16/CLIPFit/vit_b16/seed1"
    (hold / "release-test-seed1").touch()  # the new-class test does not wait
    proc = subprocess.Popen(sweep_command(*args), env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    worker = 0
    try:
        _wait_for(run_dir / "model" / "model.pth.tar-2")
        worker = _lock_holder_pid(run_dir)
        proc.send_signal(how)
        if how == signal.SIGTERM:
            out = proc.communicate(timeout=30)[0]
            assert proc.returncode == 130 and "Interrupted: run the same command again" in out
        else:  # the worker outlives the sweep and keeps its lock: a new sweep leaves it alone
            proc.wait(timeout=30)  # (the orphan keeps the sweep's stdout open: not read here)
            again = sweep(env, *args, check=0).stdout
            assert "running in another process" in again and "1 busy in another process" in again
        (hold / "release-seed1").touch()
        if how == signal.SIGKILL:  # the orphaned worker finishes the job on its own
            test_dir = Path(str(run_dir).replace("train_base", "test_new"))
            deadline = time.time() + 60
            while not read_run(str(test_dir)).finished or is_locked(str(test_dir / LOCK_FILE)):
                assert time.time() < deadline, "the orphaned job did not finish"
                time.sleep(0.1)
        out = sweep(env, *args, check=0).stdout
    finally:
        proc.kill()
        _kill(worker)
    assert read_run(str(run_dir)).finished
    train_calls = _calls(calls, run_dir)
    if how == signal.SIGKILL:  # the busy job was not started a second time, nor after it finished
        assert len(train_calls) == 1
        assert "1 already finished (skipped), 0 to run" in out
        return
    assert "1 ran ok" in out
    first, second = train_calls  # the stopped attempt and the one the second sweep started
    assert first["pid"] != second["pid"]
    assert second["argv"][second["argv"].index("--output-dir") + 1] == str(run_dir)
    assert second["argv"][second["argv"].index("--resume") + 1] == str(run_dir)
    assert {"checkpoint", "model.pth.tar-1", "model.pth.tar-2"} <= set(second["checkpoints"])
    assert "log.txt" not in second["found"]  # the interrupted attempt's log was moved aside ...
    old_logs = list(run_dir.glob("log.txt-*"))  # ... and kept, not overwritten
    assert len(old_logs) == 1 and "epoch [1/8]" in old_logs[0].read_text()
    tests = [json.loads(line) for line in calls.read_text().splitlines() if "--eval-only" in line]
    assert len(tests) == 1  # the new-class test ran once, after training finished


def test_a_worker_killed_fails_its_job_only_and_its_run_resumes(env, tmp_path):
    hold = tmp_path / "hold"
    hold.mkdir()
    calls = tmp_path / "calls.jsonl"
    env = {**env, "FAKE_EPOCHS": "5", "FAKE_HOLD": str(hold), "FAKE_CALLS": str(calls)}
    args = ["base2new", "--datasets", "dtd", "eurosat", "--seeds", "1", "--jobs", "2"]
    out_dir = Path(env["OUT"]) / "base2new/train_base"
    dtd, eurosat = (out_dir / d / "shots_16/CLIPFit/vit_b16/seed1" for d in ("dtd", "eurosat"))
    for name in ("release-test-seed1",):
        (hold / name).touch()
    proc = subprocess.Popen(sweep_command(*args), env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(dtd / "model" / "model.pth.tar-2")
        _wait_for(eurosat / "model" / "model.pth.tar-2")
        _kill(_lock_holder_pid(dtd))  # kill -9 of one worker, as the OOM killer would
        time.sleep(1)
        (hold / "release-seed1").touch()  # the other job goes on
        out = proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert proc.returncode == 1, out
    assert "FAILED dtd-seed1 (killed by SIGKILL)" in out and "1 ran ok, 1 failed" in out
    assert read_run(str(eurosat)).finished and not read_run(str(dtd)).finished
    assert read_run(str(dtd)).status == "interrupted"  # the kernel released its lock
    out = sweep(env, *args, check=0).stdout
    assert "1 already finished (skipped), 1 to run" in out and "1 ran ok" in out
    second = _calls(calls, dtd)[-1]
    assert "model.pth.tar-2" in second["checkpoints"] and "--resume" in second["argv"]
    assert read_run(str(dtd)).finished


def test_a_run_folder_locked_elsewhere_makes_its_job_busy(env):
    run_dir = Path(env["OUT"]) / "base2new/train_base/dtd/shots_16/CLIPFit/vit_b16/seed1"
    run_dir.mkdir(parents=True)
    with open(run_dir / LOCK_FILE, "w") as f:
        f.write("pid 1: someone else\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_EX)
        out = sweep(env, "base2new", "--datasets", "dtd", "--seeds", "1", check=0).stdout
    assert "run  dtd-seed1 (running in another process)" in out and "1 busy in another process" in out
    assert not (run_dir / "log.txt").exists()
    assert "1 ran ok" in sweep(env, "base2new", "--datasets", "dtd", "--seeds", "1", check=0).stdout


def test_workers_are_pinned_to_one_gpu_each_or_share_the_cpus(env, tmp_path, monkeypatch):
    calls = tmp_path / "calls.jsonl"
    args = ("fewshot", "--datasets", "dtd", "eurosat", "--shots", "1", "--seeds", "1", "2")
    sweep({**env, "FAKE_CALLS": str(calls), "CUDA_VISIBLE_DEVICES": "3,5"}, *args, check=0)
    records = [json.loads(line) for line in calls.read_text().splitlines()]
    assert len(records) == 4 and {r["gpus"] for r in records} == {"3", "5"}  # one device each
    assert not any(r["cuda_initialised"] for r in records) and len({r["pid"] for r in records}) == 4
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # every GPU torch sees, when not set
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert slots_from_env({}, 4) == ["0", "1"] and slots_from_env({"CUDA_VISIBLE_DEVICES": "3"}, 4) == ["3"]
    assert slots_from_env({"CUDA_VISIBLE_DEVICES": ""}, 3) == [None] * 3  # none visible: CPU workers
    monkeypatch.setattr("clipfit.training.cli.cpu_count", lambda: 8)
    assert threads_per_job([None] * 2, 10, {}) == 4
    assert threads_per_job([None] * 3, 2, {}) == 4  # two jobs to run: two workers
    assert threads_per_job([None] * 2, 10, {"OMP_NUM_THREADS": "1"}) == 0  # the user's choice
    assert threads_per_job(["0", "1"], 10, {}) == 0  # GPUs: torch's default
    calls.unlink()
    sweep({**env, "FAKE_CALLS": str(calls)}, *args[:-2], "3", "4", "--jobs", "2", check=0)
    records = [json.loads(line) for line in calls.read_text().splitlines()]
    cpus = len(os.sched_getaffinity(0))
    assert {r["threads"] for r in records} == {max(1, cpus // 2)} and {r["gpus"] for r in records} == {None}


def test_slurm_array_runs_each_job_from_a_checked_tasks_file_without_eval(env):
    out = sweep(env, "base2new", "--datasets", "dtd", "eurosat", "--seeds", "1", "--slurm", "--dry-run",
                "--gres", "none", "--partition", "cpu", "--sbatch-args=--mem=8G", check=0).stdout
    assert "SLURM array of 2 jobs" in out and "task 1: eurosat-seed1" in out
    assert "submit with: sbatch --parsable --mem=8G" in out
    base = Path(env["OUT"]) / "sweeps/base2new/CLIPFit"
    script, = (base / "slurm").glob("*.sbatch")
    text = script.read_text()
    assert "#SBATCH --array=0-1\n" in text and "#SBATCH --partition=cpu\n" in text
    assert "--gres" not in text and "eval" not in text and "#SBATCH --requeue" in text  # CPU partition: no GPU
    assert "#SBATCH --signal=B:USR1@300" in text and "#SBATCH --job-name=clipfit-sweep-base2new" in text
    tasks_file = script.with_suffix(".json")
    assert f"-m clipfit.experiments.paper task {tasks_file} \"$SLURM_ARRAY_TASK_ID\"" in text
    tasks = read_tasks(str(tasks_file))  # the format the array tasks check before they run
    assert [t.name for t in tasks] == ["dtd-seed1", "eurosat-seed1"]
    assert [s.folder for s in tasks[1].specs] == [f"{env['OUT']}/base2new/{part}/eurosat/shots_16/CLIPFit/vit_b16/seed1"
                                                  for part in ("train_base", "test_new")]
    assert tasks[1].log == str(base / "logs/eurosat-seed1.log")
    assert not list((base / "slurm").glob("*.job"))  # a dry run submits nothing
    sweep(env, "base2new", "--datasets", "dtd", "--seeds", "1", "--slurm", "--dry-run", "--max-parallel", "4",
          check=0)
    gpu, = [p for p in (base / "slurm").glob("*.sbatch") if p != script]
    assert "#SBATCH --gres=gpu:1\n" in gpu.read_text() and "#SBATCH --array=0-0%4\n" in gpu.read_text()
    out = subprocess.run([sys.executable, "-m", "clipfit.experiments.paper", "task", str(tasks_file), "2"], env=env,
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "has 2 tasks; there is no task 2" in out.stderr
    refused = sweep({**env, "OVERWRITE": "1"}, "base2new", "--datasets", "dtd", "--seeds", "1", "--slurm", check=2)
    assert "OVERWRITE=1 is not passed to SLURM array tasks" in refused.stderr  # a requeued task would restart


def test_the_real_trainer_in_a_forked_worker_gives_train_pys_numbers(tmp_path):
    """A run in a worker forked from the forkserver (torch imported once, before the fork) gives
    the same checkpoint and result as train.py started afresh with the same arguments."""
    make_dataset("dtd", str(tmp_path / "data"), n_classes=4, per_class=8)
    clip = save_tiny_clip(str(tmp_path / "tiny_clip.pt"))
    opts = ["MODEL.BACKBONE.PATH", clip, "INPUT.SIZE", f"({TINY_IMAGE_SIZE}, {TINY_IMAGE_SIZE})",
            "OPTIM.MAX_EPOCH", "2", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
            "TRAINER.CLIPFIT.PREC", "fp32"]
    env = {**{k: v for k, v in os.environ.items() if k not in ("TRAINER", "CFG", "SHOTS")},
           "DATA": str(tmp_path / "data"), "OUT": str(tmp_path / "out"), "CLIPFIT_ENGINE": "builtin",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CKPT_FREQ": "1"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "sweep.sh"), "fewshot", "--datasets", "dtd",
                           "--shots", "2", "--seeds", "1", "--", *opts], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and "1 ran ok" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    spec, = script_specs("fewshot", ["dtd", "1", "2", *opts],
                         ScriptEnv(data=env["DATA"], out=env["OUT"], ckpt_freq=1))
    argv = spec.argv()
    fresh = tmp_path / "fresh"
    argv[argv.index("--output-dir") + 1] = argv[argv.index("--resume") + 1] = str(fresh)
    proc = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    swept = Path(spec.folder)
    assert json.loads((swept / "metrics.json").read_text())["accuracy"] == \
        json.loads((fresh / "metrics.json").read_text())["accuracy"]
    a = torch.load(swept / "clipfit" / "model.pth.tar-2", weights_only=True)["state_dict"]
    b = torch.load(fresh / "clipfit" / "model.pth.tar-2", weights_only=True)["state_dict"]
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert "    python train.py --root " in (Path(env["OUT"]) / "sweeps/fewshot/CLIPFit/logs/dtd-2shot-seed1.log").read_text()


def test_several_methods_share_one_sweep(env, tmp_path):
    args = ("base2new", "--datasets", "dtd", "--seeds", "1", "--methods", "CLIPFit", "CoOp:vit_b16_ep50")
    out = sweep(env, *args, "--slurm", "--dry-run", check=0).stdout
    assert "TRAINER=CLIPFit, TRAINER=CoOp CFG=vit_b16_ep50" in out and "SLURM array of 2 jobs" in out
    tasks = read_tasks(str(next((Path(env["OUT"]) / "sweeps/base2new/CLIPFit/slurm").glob("*.json"))))
    assert [t.name for t in tasks] == ["CLIPFit-dtd-seed1", "CoOp-vit_b16_ep50-dtd-seed1"]  # names fit a file name
    assert {(s.trainer, s.cfg) for s in tasks[1].specs} == {("CoOp", "vit_b16_ep50")}  # each task runs its method
    out = sweep(env, *args, "--jobs", "2", check=0).stdout
    assert "2 ran ok" in out and "[done]  CoOp/vit_b16_ep50:dtd-seed1" in out
    for trainer, cfg in (("CLIPFit", "vit_b16"), ("CoOp", "vit_b16_ep50")):
        assert read_run(str(Path(env["OUT"]) / f"base2new/test_new/dtd/shots_16/{trainer}/{cfg}/seed1")).finished
    assert (Path(env["OUT"]) / "sweeps/base2new/CoOp_vit_b16_ep50/logs/dtd-seed1.log").exists()  # its own
