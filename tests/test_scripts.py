"""The experiment scripts with the real train.py on fabricated DTD and a tiny random CLIP:
base-to-new train and test, the table of parse_test_res.py, skipping, resuming, defaults and
errors. Scripts are called from a folder outside the repository, as users may."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clipfit.experiments.results import harmonic_mean, read_run
from clipfit.experiments.run import ScriptEnv, script_specs, spec_state
from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import TINY_IMAGE_SIZE, save_tiny_clip

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("fixtures")
    make_dataset("dtd", str(root / "data"), n_classes=6, per_class=10)
    return root / "data", save_tiny_clip(str(root / "tiny_clip.pt"))


def tiny_opts(tiny_clip, epochs=2):
    return ["MODEL.BACKBONE.PATH", str(tiny_clip), "INPUT.SIZE", f"({TINY_IMAGE_SIZE}, {TINY_IMAGE_SIZE})",
            "OPTIM.MAX_EPOCH", str(epochs), "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TRAINER.CLIPFIT.PREC", "fp32",
            "TRAINER.COOP.PREC", "fp32"]


def script_env(data, out, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TRAINER", "CFG", "SHOTS")}
    return {**env, "DATA": str(data), "OUT": str(out), "PYTHON": sys.executable,
            "CLIPFIT_ENGINE": "builtin", **extra}


def script(name, *args, env, cwd, check=0):
    proc = subprocess.run(["bash", str(SCRIPTS / name), *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    if check is not None:
        assert proc.returncode == check, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def run_dir(out, part, trainer="CLIPFit", cfg="vit_b16", seed=1):
    return Path(out) / "base2new" / part / "dtd" / "shots_16" / trainer / cfg / f"seed{seed}"


TESTED_WEIGHTS = "tested_weights.pt"
SPY = """
import os, runpy, sys
import torch
from clipfit.training.base_trainer import CLIPTrainer
original = CLIPTrainer.test
def test(self, split=None):  # keep the learned tensors the real train.py tests with
    learned = {n: p.detach().cpu() for n, p in self.model.learned_parameters().items()}
    torch.save(learned, os.path.join(self.cfg.OUTPUT_DIR, "%s"))
    return original(self, split)
CLIPTrainer.test = test
sys.argv = ["run"] + sys.argv[1:]
runpy.run_module("clipfit.experiments.run", run_name="__main__", alter_sys=True)
""" % TESTED_WEIGHTS


def spy_on_tested_weights(env, folder: Path):
    """``env`` with ``PYTHON`` running the real script runner (and train.py in it), saving the
    tensors each test evaluates with."""
    (folder / "spy.py").write_text(SPY)
    wrapper = folder / "python"
    wrapper.write_text(f'#!/bin/bash\nif [ "$1 $2" = "-m clipfit.experiments.run" ]; then shift 2; exec '
                       f'{sys.executable} {folder / "spy.py"} "$@"; fi\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return {**env, "PYTHON": str(wrapper)}


def test_base2new_train_test_parse_and_skip(fixtures, tmp_path):
    data, tiny_clip = fixtures
    env = script_env(data, "out", CKPT_FREQ="1")  # OUT relative: to the caller's folder
    out = tmp_path / "out"
    opts = tiny_opts(tiny_clip)
    proc = script("base2new_train.sh", "dtd", 1, *opts, env=env, cwd=tmp_path)
    assert "==> finished base2new train" in proc.stdout
    proc = script("base2new_test.sh", "dtd", 1, env=spy_on_tested_weights(env, tmp_path),
                  cwd=tmp_path)  # no options repeated
    assert "==> finished base2new test" in proc.stdout
    assert re.search(r"Settings taken over from the trained run .*INPUT.SIZE \[32, 32\], "
                     r"MODEL.BACKBONE.PATH '.*tiny_clip.pt', TRAINER.CLIPFIT.PREC 'fp32'", proc.stdout)
    # a zero-shot trainer is evaluated only: its test needs no trained model
    proc = script("base2new_test.sh", "dtd", 1, *opts, env={**env, "TRAINER": "ZeroshotCLIP"},
                  cwd=tmp_path)
    assert "eval_only: True" in (run_dir(out, "test_new", "ZeroshotCLIP") / "log.txt").read_text()

    train = run_dir(out, "train_base")
    test = run_dir(out, "test_new")
    assert {p.name for p in (train / "clipfit").iterdir()} >= {"model.pth.tar-1",
                                                               "model.pth.tar-2", "checkpoint"}
    # the new-class test evaluated the trained tensors of epoch 2, not the pre-trained ones
    trained = torch.load(train / "clipfit" / "model.pth.tar-2", weights_only=True)["state_dict"]
    tested = torch.load(test / TESTED_WEIGHTS, weights_only=True)
    pretrained = torch.load(tiny_clip, weights_only=True)
    assert set(tested) == set(trained)
    for name, tensor in tested.items():
        assert torch.equal(tensor, trained[name]) and not torch.equal(tensor, pretrained[name]), name
    assert json.loads((test / "metrics.json").read_text())["epoch"] == 2
    assert "SUBSAMPLE_CLASSES: new" in (test / "config.yaml").read_text()
    assert read_run(str(train)).finished and read_run(str(test)).finished
    # what the sweep sees: both runs finished with the identity their specs give now
    where = ScriptEnv(data=str(data), out=str(out))
    assert spec_state(script_specs("base2new_train", ["dtd", "1", *opts], where)[0]).finished
    assert spec_state(script_specs("base2new_test", ["dtd", "1"], where)[0]).finished
    assert spec_state(script_specs("base2new_test", ["dtd", "1", "TRAINER.CLIPFIT.BETA", "1.0"], where)[0]
                      ).status == "other-settings"

    before = (train / "log.txt").stat().st_mtime
    proc = script("base2new_train.sh", "dtd", 1, *opts, env=env, cwd=tmp_path)
    assert "==> skip base2new train CLIPFit/vit_b16 dtd seed 1: finished" in proc.stdout
    assert (train / "log.txt").stat().st_mtime == before and not list(train.glob("log.txt-*"))
    # a changed setting does not return the old result: refused, with the two ways out
    proc = script("base2new_train.sh", "dtd", 1, *opts, "OPTIM.LR", "0.01", env=env, cwd=tmp_path,
                  check=2)
    assert "OPTIM.LR: 0.002 (recorded) -> 0.01 (now)" in proc.stderr and "OVERWRITE=1" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1].startswith("Either write to another folder")
    assert (train / "log.txt").stat().st_mtime == before and (train / "metrics.json").is_file()

    table = subprocess.run([sys.executable, "parse_test_res.py", "--base2new", str(out),
                            "--format", "markdown"], cwd=REPO, capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    header = next(ln for ln in table.stdout.splitlines() if ln.startswith("| Dataset"))
    assert "ZeroshotCLIP New" in header and "CLIPFit HM" in header
    row = next(ln for ln in table.stdout.splitlines() if ln.startswith("| DTD"))
    base, new, hm = (float(c.split()[0]) for c in row.strip("|").split("|")[-3:])
    assert hm == pytest.approx(harmonic_mean(base, new), abs=0.011)
    assert base == pytest.approx(read_run(str(train)).accuracy, abs=0.005)
    assert new == pytest.approx(read_run(str(test)).accuracy, abs=0.005)

    coop = subprocess.run([sys.executable, "parse_test_res.py", str(train.parent)], cwd=REPO,
                          capture_output=True, text=True)  # CoOp's interface on our folders
    assert re.search(r"\* accuracy: \d+\.\d\d% \+- 0\.00%", coop.stdout), coop.stdout


def test_a_killed_training_restarts_from_its_checkpoint(fixtures, tmp_path):
    data, tiny_clip = fixtures
    env = script_env(data, tmp_path / "out", CKPT_FREQ="1")
    # 12 epochs: still training when interrupted, on a busy machine too
    opts = tiny_opts(tiny_clip, epochs=12) + ["DATALOADER.TRAIN_X.BATCH_SIZE", "2"]
    train = run_dir(tmp_path / "out", "train_base")
    proc = subprocess.Popen(["bash", str(SCRIPTS / "base2new_train.sh"), "dtd", "1", *opts],
                            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not (train / "clipfit" / "model.pth.tar-2").exists():
            assert proc.poll() is None and time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        assert read_run(str(train)).status == "running"
        second = script("base2new_train.sh", "dtd", 1, *opts, env=env, cwd=tmp_path, check=2)
        assert f"is being written by another process (pid {proc.pid}: bash " in second.stderr
        assert "base2new_train.sh dtd 1" in second.stderr
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        stderr = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGINT  # the script stops too
    assert "Traceback" not in stderr
    stop = re.search(r"Interrupted\. Last checkpoint: (\S+) \(epoch (\d+)\); run the same command "
                     r"again to resume from it\.", stderr)
    assert stop and Path(stop.group(1)) == train / "clipfit" / f"model.pth.tar-{stop.group(2)}"
    run = read_run(str(train))
    assert run.status == "interrupted" and run.reason == f"last checkpoint: epoch {stop.group(2)}"

    result = script("base2new_train.sh", "dtd", 1, *opts, env=env, cwd=tmp_path)
    assert result.stdout.count("==> resume base2new train") == 1  # once, not by the lock step too
    log = (train / "log.txt").read_text()
    start = int(re.search(r"Previous epoch: (\d+)", log).group(1))
    assert 2 <= start < 12
    assert f"epoch [{start + 1}/12]" in log and "epoch [1/12]" not in log
    assert len(list(train.glob("log.txt-*"))) == 1  # the interrupted attempt's log, kept
    run = read_run(str(train))
    assert run.finished and run.source.endswith("metrics.json")


def dry_run(name, *args, **env):
    """The run folders a script's DRY_RUN lists (each followed by indented details)."""
    proc = subprocess.run(["bash", str(SCRIPTS / name), *map(str, args)],
                          env={**script_env("d", "o"), "DRY_RUN": "1", **env}, cwd="/",
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line and not line.startswith(" ")]


def test_paper_defaults_and_output_layout():
    assert dry_run("base2new_train.sh", "imagenet", 2) == [
        "/o/base2new/train_base/imagenet/shots_16/CLIPFit/vit_b16_ep10/seed2"]
    assert dry_run("base2new_test.sh", "food101", 1) == [
        "/o/base2new/test_new/food101/shots_16/CLIPFit/vit_b16_ep10/seed1"]
    assert dry_run("fewshot.sh", "eurosat", 1, 4) == [
        "/o/fewshot/eurosat/shots_4/CLIPFit/vit_b16_beta2/seed1"]  # beta 2
    assert dry_run("fewshot.sh", "dtd", 1, 4) == [
        "/o/fewshot/dtd/shots_4/CLIPFit/vit_b16/seed1"]  # beta 8
    assert dry_run("xd_train.sh", 3) == [
        "/o/xd/train/imagenet/shots_16/CLIPFit/vit_b16_ep10/seed3"]
    assert dry_run("xd_test.sh", "ucf101", 3) == [
        "/o/xd/test/ucf101/shots_16/CLIPFit/vit_b16_ep10/seed3"]
    dg = dry_run("dg_test.sh", 1)
    assert dg[0] == "/o/xd/train/imagenet/shots_16/CLIPFit/vit_b16_ep10_beta2/seed1"
    assert [p.split("/")[4] for p in dg[1:]] == ["imagenetv2", "imagenet_sketch", "imagenet_a",
                                                 "imagenet_r"]
    assert dry_run("dg_test.sh", 1, TRAINER="CoOp")[0] == \
        "/o/xd/train/imagenet/shots_16/CoOp/vit_b16_ep50_ctxv1/seed1"  # shared with xd
    assert dry_run("base2new_train.sh", "dtd", 1, TRAINER="KgCoOp", SHOTS="8") == [
        "/o/base2new/train_base/dtd/shots_8/KgCoOp/vit_b16_ep100_ctxv1/seed1"]
    assert dry_run("base2new_train.sh", "dtd", 1, CFG="mine") == [
        "/o/base2new/train_base/dtd/shots_16/CLIPFit/mine/seed1"]
    assert dry_run("base2new_train.sh", "toy_shapes", 1, TRAINER="KgCoOp") == [  # the toy world
        "/o/base2new/train_base/toy_shapes/shots_16/KgCoOp/toy/seed1"]


def test_baseline_defaults_are_their_own_repositories_choices():
    """CoOp: COOP.md few-shot table and scripts/cocoop/*; KgCoOp: its scripts (W 8.0 in the config)."""
    def cfg(script, *args, **env):
        return dry_run(script, *args, **env)[0].split("/")[-2]

    coop = {1: "vit_b16_ep50", 2: "vit_b16_ep100", 4: "vit_b16_ep100", 8: "vit_b16", 16: "vit_b16"}
    for shots, name in coop.items():
        assert cfg("fewshot.sh", "caltech101", 1, shots, TRAINER="CoOp") == name
        assert cfg("fewshot.sh", "imagenet", 1, shots, TRAINER="CoOp") == "vit_b16_ep50"
    assert cfg("base2new_train.sh", "dtd", 1, TRAINER="CoOp") == "vit_b16_ctxv1"
    assert cfg("base2new_train.sh", "imagenet", 1, TRAINER="CoOp") == "vit_b16_ep50_ctxv1"
    assert cfg("xd_train.sh", 1, TRAINER="CoOp") == "vit_b16_ep50_ctxv1"
    for script, args in (("base2new_train.sh", ("dtd", 1)), ("xd_train.sh", (1,)), ("fewshot.sh", ("dtd", 1, 4))):
        assert cfg(script, *args, TRAINER="KgCoOp") == "vit_b16_ep100_ctxv1"
    assert cfg("fewshot.sh", "dtd", 1, 4, TRAINER="CLIP_Adapter") == "vit_b16"


def test_errors_say_what_to_do(fixtures, tmp_path):
    data, _ = fixtures
    env = script_env(data, tmp_path / "out")
    proc = script("base2new_train.sh", "dtd", env=env, cwd=tmp_path, check=2)
    assert "usage: bash scripts/base2new_train.sh DATASET SEED" in proc.stderr
    proc = script("base2new_train.sh", "dtdd", 1, env=env, cwd=tmp_path, check=2)
    assert "no dataset config configs/datasets/dtdd.yaml" in proc.stderr and "dtd" in proc.stderr
    proc = script("base2new_train.sh", "dtd", 1, env={**env, "CFG": "nope"}, cwd=tmp_path,
                  check=2)
    assert "Set CFG to one of: " in proc.stderr and " vit_b16 vit_b16_beta2 " in proc.stderr
    proc = script("base2new_train.sh", "dtd", 1, env={**env, "TRAINER": "ClipFitt"},
                  cwd=tmp_path, check=2)
    assert "no trainer configs for TRAINER=ClipFitt (configs/trainers/ClipFitt). Did you mean " \
           "CLIPFit? Set TRAINER to one of: CLIPFit " in proc.stderr and " KgCoOp " in proc.stderr
    proc = script("base2new_test.sh", "dtd", 1, env=env, cwd=tmp_path, check=2)
    assert "is missing (folder does not exist): train it first" in proc.stderr
