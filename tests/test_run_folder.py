"""Run folders: the lock, the states of an unfinished run, the settings record, and what
train.py and parse_test_res.py make of them; the settings train.py derives (workers, a test
run's settings taken over from its model)."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clipfit.experiments.results import read_run
from clipfit.training import run_folder as rf
from clipfit.training import run_spec as rs
from clipfit.training.cli import build_parser, setup_cfg

REPO = Path(__file__).resolve().parents[1]

HOLDER = textwrap.dedent("""
    import sys, time
    from clipfit.training.run_folder import acquire, process_line
    import os
    lock = acquire(sys.argv[1], process_line(os.getpid()))
    print("locked", flush=True)
    time.sleep(60)
""")


def _hold(folder: Path) -> subprocess.Popen:
    script = folder.parent / "holder_marker.py"
    script.write_text(HOLDER)
    proc = subprocess.Popen([sys.executable, str(script), str(folder)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_live_lock_is_refused_with_its_holder_and_a_dead_one_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    proc = _hold(folder)
    try:
        with pytest.raises(rf.RunFolderError, match=rf"being written by another process \(pid "
                                                    rf"{proc.pid}: .*holder_marker.py"):
            rf.acquire(str(folder), "me")
        assert rf.unfinished_state(str(folder))[0] == rf.RUNNING
        assert read_run(str(folder)).status == "running"
    finally:
        proc.send_signal(signal.SIGKILL)  # as a node failure would: no clean-up runs
        proc.wait()
    lock = rf.acquire(str(folder), "pid 1: me")
    assert f"pid {proc.pid}" in lock.note and "taken over" in lock.note
    assert (folder / rf.LOCK_FILE).read_text() == "pid 1: me\n"
    lock.release()
    assert (folder / rf.LOCK_FILE).read_text() == ""  # released: no note next time
    again = rf.acquire(str(folder), "pid 1: me")
    assert again.note == ""
    again.release()


def _record(folder: Path, state: str, **extra) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rf.start_record(str(folder), rf.TRAIN, {"SEED": 1}, None, "train.py")
    rf.update_record(str(folder), state=state, **extra)


def _checkpoint(folder: Path, epoch: int) -> None:
    (folder / "clipfit").mkdir(parents=True, exist_ok=True)
    (folder / "clipfit" / f"model.pth.tar-{epoch}").write_bytes(b"x")


def test_states_of_unfinished_runs_and_what_comes_next(tmp_path):
    never = tmp_path / "never"
    never.mkdir()
    (never / "log.txt").write_text("Loading dataset\n")
    assert rf.unfinished_state(str(never)) == (rf.NOT_STARTED, "training never started")
    assert rf.state_decision(str(never)).detail == "the last attempt never started training"

    crashed = tmp_path / "crashed"
    _record(crashed, rf.CRASHED, error="DTD: folder /data/dtd not found")
    state, detail = rf.unfinished_state(str(crashed))
    assert state == rf.CRASHED and detail.startswith("DTD: folder /data/dtd not found")
    assert rf.state_decision(str(crashed)).action == "retry"

    old_crash = tmp_path / "coop"  # CoOp's own code: a traceback at the end of its log
    old_crash.mkdir()
    (old_crash / "log.txt").write_text("epoch [1/5]\nTraceback (most recent call last):\n"
                                       "  File x\nRuntimeError: CUDA out of memory\n")
    assert rf.unfinished_state(str(old_crash)) == (rf.CRASHED, "RuntimeError: CUDA out of "
                                                   "memory (no checkpoint)")

    stopped = tmp_path / "stopped"
    _record(stopped, rf.RUNNING)  # killed: the record still says running, the lock is free
    _checkpoint(stopped, 5)
    assert rf.unfinished_state(str(stopped)) == (rf.INTERRUPTED, "last checkpoint: epoch 5")
    assert rf.state_decision(str(stopped)).action == "resume"

    table = subprocess.run([sys.executable, "parse_test_res.py", str(tmp_path)], cwd=REPO,
                           capture_output=True, text=True)
    assert f"{crashed}: crashed, DTD: folder /data/dtd not found" in table.stdout
    assert f"{stopped}: interrupted, last checkpoint: epoch 5" in table.stdout
    assert f"{never}: not-started, training never started" in table.stdout


def test_other_settings_are_refused_with_the_differences_and_the_ways_out(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    old = {"SEED": 1, "OPTIM.LR": 0.002, "MODEL.BACKBONE.PATH": "/a/w.pt", rs.WEIGHTS: "abc"}
    rf.start_record(str(folder), rf.TRAIN, old, None, "train.py")
    _checkpoint(folder, 3)
    same = dict(old, **{"MODEL.BACKBONE.PATH": "/b/w.pt"})  # moved, same SHA256: no difference
    assert rs.decide(str(folder), rf.TRAIN, same, False, None).action == "resume"
    with pytest.raises(rf.RunFolderError) as err:
        rs.decide(str(folder), rf.TRAIN, dict(old, SEED=2, **{"OPTIM.LR": 0.01}), False, None)
    msg = str(err.value)
    assert "holds an unfinished run with other settings" in msg
    assert "OPTIM.LR: 0.002 (recorded) -> 0.01 (now)" in msg and "SEED: 1 (recorded) -> 2" in msg
    assert "--output-dir" in msg and "--overwrite" in msg and "OVERWRITE=1" in msg
    with pytest.raises(rf.RunFolderError, match="finished run with other settings"):
        rs.decide(str(folder), rf.TRAIN, dict(old, SEED=2), False, 50.0)
    assert rs.decide(str(folder), rf.TRAIN, old, False, 50.0).action == "skip"
    with pytest.raises(rf.RunFolderError, match="holds a training run"):
        rs.decide(str(folder), rf.EVAL, old, True, None)  # --overwrite does not allow it either
    assert rs.decide(str(folder), rf.TRAIN, dict(old, SEED=2), True, 50.0).action == "start"
    rf.clear(str(folder))
    assert sorted(p.name for p in folder.iterdir()) == []


def test_settings_of_a_folder_without_record_come_from_its_config_yaml(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPFIT_ENGINE", "builtin")
    args = build_parser().parse_args(["--output-dir", str(tmp_path), "--seed", "1",
                                      "--config-file", "configs/trainers/CLIPFit/vit_b16.yaml"])
    monkeypatch.chdir(REPO)
    cfg = setup_cfg(args)
    (tmp_path / "config.yaml").write_text(cfg.dump())  # as written by an older version
    _checkpoint(tmp_path, 10)
    settings = rs.settings(cfg)
    assert settings["SEED"] == 1 and settings["OPTIM.LR"] == 0.002 and settings["TRAINER.CLIPFIT.BETA"] == 8.0
    assert rs.decide(str(tmp_path), rf.TRAIN, settings, False, None).action == "resume"
    with pytest.raises(rf.RunFolderError, match=r"TRAINER.CLIPFIT.BETA: 8.0 \(recorded\) -> 2.0"):
        rs.decide(str(tmp_path), rf.TRAIN, dict(settings, **{"TRAINER.CLIPFIT.BETA": 2.0}), False, None)


def test_weights_fingerprint_is_reused_only_for_the_same_file(tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"abc")
    first = rs.weights_fingerprint(str(path))
    assert first["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    fake = dict(first, sha256="reused")
    assert rs.weights_fingerprint(str(path), fake)["sha256"] == "reused"
    path.write_bytes(b"abcd")
    assert rs.weights_fingerprint(str(path), fake)["sha256"] != "reused"
    assert rs.weights_fingerprint(str(tmp_path / "none.pt")) is None


def test_workers_are_capped_at_the_usable_cpus_unless_set_on_the_command_line(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    base = ["--config-file", "configs/trainers/CLIPFit/vit_b16.yaml"]  # asks for 8
    notes = []
    cfg = setup_cfg(build_parser().parse_args(base), notes)
    assert cfg.DATALOADER.NUM_WORKERS == 2
    assert len(notes) == 1 and "DATALOADER.NUM_WORKERS 8 capped at 2" in notes[0]
    notes = []
    cfg = setup_cfg(build_parser().parse_args(base + ["DATALOADER.NUM_WORKERS", "8"]), notes)
    assert cfg.DATALOADER.NUM_WORKERS == 8 and notes == []


def test_evaluation_takes_over_the_trained_runs_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    trained = build_parser().parse_args([
        "--config-file", "configs/trainers/CLIPFit/vit_b16.yaml", "MODEL.BACKBONE.PATH", "/w/tiny.pt",
        "INPUT.SIZE", "(32, 32)", "TRAINER.CLIPFIT.PREC", "fp32", "TRAINER.CLIPFIT.BETA", "2.0",
        "OPTIM.LR", "0.5"])
    (tmp_path / "config.yaml").write_text(setup_cfg(trained).dump())
    notes = []
    test = build_parser().parse_args([
        "--config-file", "configs/trainers/CLIPFit/vit_b16.yaml", "--eval-only", "--model-dir",
        str(tmp_path), "TRAINER.CLIPFIT.BETA", "4.0"])
    cfg = setup_cfg(test, notes)
    assert cfg.MODEL.BACKBONE.PATH == "/w/tiny.pt" and tuple(cfg.INPUT.SIZE) == (32, 32)
    assert cfg.TRAINER.CLIPFIT.PREC == "fp32"
    assert cfg.TRAINER.CLIPFIT.BETA == 4.0  # the command line wins
    assert cfg.OPTIM.LR == 0.002  # not a setting a test takes over
    note = next(n for n in notes if n.startswith("Settings taken over"))
    assert "MODEL.BACKBONE.PATH '/w/tiny.pt'" in note and "TRAINER.CLIPFIT.PREC 'fp32'" in note
    assert "BETA" not in note
