"""Damaged checkpoints, pointer files, killed writes and full disks: named, skipped or cleaned, never trusted."""
from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import pytest
import torch

from clipfit import engine, fileio
from clipfit.checkpoint_files import (DamagedCheckpointError, ForeignCheckpointError, PointerOutsideError,
                                      read_pointer)
from clipfit.data.doctor import main as doctor
from clipfit.engine.builtin.checkpoint import resume_from_checkpoint, save_checkpoint
from clipfit.fileio import DiskFullError, FileContentError, atomic_path, leftover_temps, write_json
from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import save_tiny_clip
from clipfit.training.cli import build_parser, import_plugins, setup_cfg

EPOCHS = 2
DEAD_PID = 4_999_999  # above Linux's largest pid (2**22): no process has it
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _trainer(root, clip_path, out):
    argv = [
        "--root", root, "--trainer", "CLIPFit", "--seed", "1", "--output-dir", str(out),
        "--dataset-config-file", "configs/datasets/dtd.yaml", "--config-file", "configs/trainers/CLIPFit/vit_b16.yaml",
        "MODEL.BACKBONE.PATH", clip_path, "INPUT.SIZE", "(32, 32)", "INPUT.TRANSFORMS", '["normalize"]',
        "OPTIM.MAX_EPOCH", str(EPOCHS), "OPTIM.LR", "0.05", "OPTIM.WARMUP_EPOCH", "0",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "8",
        "DATASET.NUM_SHOTS", "2", "TRAIN.PRINT_FREQ", "100", "TRAIN.CHECKPOINT_FREQ", "1",
    ]
    import_plugins()
    cfg = setup_cfg(build_parser().parse_args(argv))
    engine.set_random_seed(cfg.SEED)
    return engine.build_trainer(cfg)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished 3-epoch CLIPFit run with a checkpoint per epoch."""
    base = tmp_path_factory.mktemp("integrity_run")
    root = str(base / "data")
    make_dataset("dtd", root, n_classes=4, per_class=10)
    clip_path = save_tiny_clip(str(base / "tiny.pt"))
    out = base / "run"
    trainer = _trainer(root, clip_path, out)
    trainer.train()
    final = torch.load(out / "clipfit" / f"model.pth.tar-{EPOCHS}", weights_only=True)["state_dict"]
    return {"root": root, "clip": clip_path, "out": out, "final": final, "trainer": trainer}


def _copy(run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(run["out"], out, ignore=shutil.ignore_patterns("log.txt*", "metrics.json"))
    return out


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_tensor_bytes(path):
    """Flip bytes inside the stored tensor data (torch itself would load the changed values silently)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and not i.filename.endswith(".pkl"))
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len] ^= 0xFF  # the first byte of the tensor data
    path.write_bytes(bytes(data))


def test_resume_skips_a_truncated_last_checkpoint_and_ends_with_the_uninterrupted_weights(run, tmp_path, capsys):
    out = _copy(run, tmp_path)
    last = out / "clipfit" / f"model.pth.tar-{EPOCHS}"
    _truncate(last)
    capsys.readouterr()
    trainer = _trainer(run["root"], run["clip"], out)
    trainer.train()
    said = capsys.readouterr().out
    assert trainer.start_epoch == EPOCHS - 1
    assert f"skipping a damaged checkpoint: {last} is damaged" in said
    assert f"Resuming from {out / 'clipfit' / f'model.pth.tar-{EPOCHS - 1}'}, the newest checkpoint that loads " \
           f"(skipped: model.pth.tar-{EPOCHS})" in said
    resumed = torch.load(last, weights_only=True)["state_dict"]
    for name, tensor in run["final"].items():
        assert torch.equal(resumed[name], tensor), name


def test_resume_after_the_last_checkpoint_was_deleted_takes_the_one_before_without_load_epoch_advice(
        run, tmp_path, capsys):
    out = _copy(run, tmp_path)
    os.remove(out / "clipfit" / f"model.pth.tar-{EPOCHS}")  # the pointer still names it
    capsys.readouterr()
    assert run["trainer"].resume_model_if_exist(str(out)) == EPOCHS - 1
    said = capsys.readouterr().out
    assert f"model.pth.tar-{EPOCHS - 1}" in said and "--load-epoch" not in said
    for epoch in range(1, EPOCHS):
        os.remove(out / "clipfit" / f"model.pth.tar-{epoch}")
    with pytest.raises(DamagedCheckpointError, match=f"has a 'checkpoint' file but no model.pth.tar-N file.*"
                                                     f"delete {out / 'clipfit' / 'checkpoint'}, or choose another"):
        run["trainer"].resume_model_if_exist(str(out))


def test_a_damaged_checkpoint_is_reported_as_damaged_and_a_foreign_one_as_foreign(run, tmp_path):
    out = _copy(run, tmp_path)
    trainer = run["trainer"]
    path = out / "clipfit" / f"model.pth.tar-{EPOCHS}"
    _truncate(path)
    with pytest.raises(DamagedCheckpointError, match=f"{path} is damaged") as err:
        trainer.load_model(str(out), epoch=EPOCHS)
    assert "not written by this toolkit" not in str(err.value)
    path.write_bytes(b"\x00\x01 not a checkpoint at all")
    with pytest.raises(DamagedCheckpointError, match=f"{path} is damaged"):
        trainer.load_model(str(out), epoch=EPOCHS)
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": EPOCHS}, path)  # readable, no meta
    with pytest.raises(ForeignCheckpointError, match=f"{path} is not a checkpoint of this toolkit"):
        trainer.load_model(str(out), epoch=EPOCHS)
    with pytest.raises(ForeignCheckpointError):  # resume does not fall back past a foreign file
        trainer.resume_model_if_exist(str(out))


def test_resume_with_every_checkpoint_damaged_names_them_and_the_way_out(run, tmp_path):
    out = _copy(run, tmp_path)
    for epoch in range(1, EPOCHS + 1):
        _truncate(out / "clipfit" / f"model.pth.tar-{epoch}")
    trainer = run["trainer"]
    with pytest.raises(DamagedCheckpointError, match=r"No checkpoint in .*clipfit can be loaded \(all damaged: "
                                                     r"model.pth.tar-2, model.pth.tar-1\)"):
        trainer.resume_model_if_exist(str(out))


def test_the_checkpoint_pointer_must_name_a_file_of_its_own_folder(run, tmp_path, capsys):
    out = _copy(run, tmp_path)
    folder = out / "clipfit"
    pointer = folder / "checkpoint"
    for bad in ("../../elsewhere/model.pth.tar-1\n", "/etc/passwd\n", "..\n"):
        pointer.write_text(bad)
        with pytest.raises(PointerOutsideError, match=f"pointer file {pointer} names .* refused"):
            read_pointer(str(folder))
        with pytest.raises(PointerOutsideError):
            run["trainer"].resume_model_if_exist(str(out))
    pointer.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")  # binary: named, ignored, resume uses the newest file
    with pytest.raises(FileContentError, match=f"{pointer} holds binary data.*Fix: delete {pointer}"):
        read_pointer(str(folder))
    capsys.readouterr()
    assert run["trainer"].resume_model_if_exist(str(out)) == EPOCHS
    assert f"{pointer} holds binary data" in capsys.readouterr().out


@pytest.mark.parametrize("damage", [_truncate, _flip_tensor_bytes], ids=["truncated", "flipped"])
def test_the_builtin_engine_resume_falls_back_too(tmp_path, capsys, damage):
    model = torch.nn.Linear(3, 2)
    for epoch in (1, 2):
        with torch.no_grad():
            model.weight.fill_(epoch)
        save_checkpoint({"state_dict": model.state_dict(), "epoch": epoch}, str(tmp_path))
    damage(tmp_path / "model.pth.tar-2")
    assert resume_from_checkpoint(str(tmp_path), model) == 1
    assert torch.equal(model.weight, torch.ones(2, 3))
    said = capsys.readouterr().out
    assert f"{tmp_path / 'model.pth.tar-2'} is damaged" in said and "(skipped: model.pth.tar-2)" in said


# Interrupted writes ----------------------------------------------------------------------------
KILLED_WRITER = """
import sys, time
from clipfit.fileio import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "w") as f:
        f.write('{"half": ')
        f.flush()
        print("writing", flush=True)
        time.sleep(60)
"""


def _killed_write(path) -> str:
    """Start a writer of ``path``, kill -9 it in the middle of the write; return its temporary file."""
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], stdout=subprocess.PIPE, env=env,
                            text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    tmp = fileio.temp_path(str(path), proc.pid)
    assert os.path.exists(tmp) and not os.path.exists(path)
    assert not fileio.is_leftover(tmp)  # too young: it might be a writer on another machine
    old = time.time() - fileio.LEFTOVER_AGE_S - 1
    os.utime(tmp, (old, old))
    return tmp


def test_the_temporary_file_of_a_killed_write_is_removed_by_the_next_write_of_that_file(tmp_path):
    path = tmp_path / "metrics.json"
    tmp = _killed_write(path)
    assert leftover_temps(str(tmp_path)) == [tmp]
    alive = fileio.temp_path(str(path), os.getppid())  # a writer that is still running: left alone
    open(alive, "w").close()
    os.utime(alive, (time.time() - 3600,) * 2)
    write_json(str(path), {"accuracy": 1.0})
    assert sorted(os.listdir(tmp_path)) == sorted(["metrics.json", os.path.basename(alive)])


def test_doctor_lists_and_cleans_leftovers_in_datasets_and_run_folders(tmp_path, capsys):
    data = tmp_path / "data"
    folder = make_dataset("dtd", str(data))
    in_dataset = _killed_write(os.path.join(folder, "split_fewshot", "shot_1-seed_1.json"))
    in_run = tmp_path / "runs" / "seed1" / "clipfit" / f".model.pth.tar-15.{DEAD_PID}.tmp"
    in_run.parent.mkdir(parents=True)
    in_run.write_bytes(b"PK\x03\x04")
    os.utime(in_run, (time.time() - 3600,) * 2)
    argv = ["--root", str(data), "--dataset", "dtd", "--skip-counts", "--output-dir", str(tmp_path / "runs")]
    assert doctor(argv) == 1
    said = capsys.readouterr().out
    assert f"{in_dataset} is a partial file" in said and f"{in_run} is a partial file" in said
    doctor(argv + ["--clean"])
    said = capsys.readouterr().out
    assert f"Removed {in_dataset}" in said and f"Removed {in_run}" in said and "partial file left" in said
    assert "is a partial file" not in said
    assert not os.path.exists(in_dataset) and not in_run.exists()


# Full disk -------------------------------------------------------------------------------------
def test_a_full_disk_during_a_checkpoint_names_the_folder_and_the_space_needed(tmp_path, monkeypatch):
    state = {"state_dict": {"w": torch.arange(1000.0)}, "epoch": 1}
    save_checkpoint(dict(state), str(tmp_path))
    before = (tmp_path / "model.pth.tar-1").read_bytes()
    buffer = io.BytesIO()
    torch.save(state, buffer)

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", disk_full)
    with pytest.raises(DiskFullError) as err:
        save_checkpoint(dict(state), str(tmp_path))
    message = str(err.value)
    assert f"The disk is full: writing {tmp_path / 'model.pth.tar-1'} needs {len(buffer.getvalue()):,} bytes" in message
    assert f"in {tmp_path}" in message and "bytes are free there" in message
    assert (tmp_path / "model.pth.tar-1").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "model.pth.tar-1"]


def test_torchs_unexpected_pos_error_is_reported_as_a_full_disk(tmp_path):
    path = tmp_path / "grad_stats.pt"
    with pytest.raises(DiskFullError, match=f"The disk is full: writing {path} needs .* in {tmp_path}"):
        with atomic_path(str(path)) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"x" * 100)
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 16192 vs 16080")
    assert os.listdir(tmp_path) == []
