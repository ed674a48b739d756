"""The Dassl engine path: CLIPFit trained and reloaded by ``train.py`` on real Dassl.pytorch.

Runs when ``import dassl`` works and is skipped otherwise (Dassl is on no package index this
project can reach; see README, "Tests and benchmarks", for how to run it). The same run on the
built-in engine must give the same tuned tensors and accuracy.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import TINY_IMAGE_SIZE, save_tiny_clip

pytest.importorskip("dassl", reason="Dassl.pytorch is not importable (see README: Tests and benchmarks)")

ROOT = Path(__file__).resolve().parents[1]


def _train_py(engine: str, data: str, clip: str, out: Path, *flags: str) -> str:
    argv = [sys.executable, "train.py", "--root", data, "--trainer", "CLIPFit", "--seed", "1",
            "--output-dir", str(out), "--dataset-config-file", "configs/datasets/dtd.yaml",
            "--config-file", "configs/trainers/CLIPFit/vit_b16.yaml", *flags,
            "MODEL.BACKBONE.PATH", clip, "INPUT.SIZE", f"({TINY_IMAGE_SIZE}, {TINY_IMAGE_SIZE})",
            "INPUT.TRANSFORMS", '["normalize"]', "OPTIM.MAX_EPOCH", "2", "OPTIM.LR", "0.05",
            "OPTIM.WARMUP_EPOCH", "0", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
            "DATASET.NUM_SHOTS", "5", "TRAIN.PRINT_FREQ", "1", "TRAINER.CLIPFIT.PREC", "fp32"]
    env = {**os.environ, "CLIPFIT_ENGINE": engine, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _losses(log: str) -> list:
    """Each progress line's position and running losses (times left out)."""
    return re.findall(r"^(epoch \[\d+/\d+\] batch \[\d+/\d+\]).*?(loss .*) lr ", log, flags=re.M)


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_clipfit_on_real_dassl_trains_reloads_and_matches_the_builtin_engine(tmp_path):
    data = str(tmp_path / "data")
    make_dataset("dtd", data, n_classes=4, per_class=10)
    clip = save_tiny_clip(str(tmp_path / "tiny_clip.pt"))
    on_dassl = _train_py("dassl", data, clip, tmp_path / "dassl")
    assert "dassl engine" in on_dassl and "Finish training" in on_dassl  # the run header
    ckpt = tmp_path / "dassl" / "clipfit" / "model.pth.tar-2"
    assert (tmp_path / "dassl" / "clipfit" / "checkpoint").read_text().strip() == "model.pth.tar-2"

    on_builtin = _train_py("builtin", data, clip, tmp_path / "builtin")
    assert "builtin engine" in on_builtin
    assert len(_losses(on_dassl)) == 10 and _losses(on_dassl) == _losses(on_builtin)  # same batches, same steps
    ours = torch.load(ckpt, weights_only=True)["state_dict"]
    builtin = torch.load(tmp_path / "builtin" / "clipfit" / "model.pth.tar-2", weights_only=True)["state_dict"]
    assert set(ours) == set(builtin) and all(torch.equal(ours[n], builtin[n]) for n in ours)
    assert _metrics(tmp_path / "dassl")["correct"] == _metrics(tmp_path / "builtin")["correct"]

    evaluated = _train_py("dassl", data, clip, tmp_path / "eval",
                          "--eval-only", "--model-dir", str(tmp_path / "dassl"), "--load-epoch", "2")
    assert f"Load {ckpt} to clipfit (epoch=2" in evaluated
    assert _metrics(tmp_path / "eval")["accuracy"] == _metrics(tmp_path / "dassl")["accuracy"]
