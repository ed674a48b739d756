"""``--deterministic``: deterministic algorithms are on while training, and two runs with the same
seed give identical training logs.

On a CPU, two seeded runs agree even without deterministic algorithms, so identical logs alone
cannot show that ``--deterministic`` did anything: the runs go through a spy that writes the
state of torch's switch into the log when training starts."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import save_tiny_clip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TIMING = re.compile(r"time \S+ \(\S+\) data \S+ \(\S+\)|eta \S+")
SPY = """
import os, runpy, sys
import torch
from clipfit.training.base_trainer import CLIPTrainer
train = CLIPTrainer.train
def spy(self):
    print(f"deterministic algorithms: {torch.are_deterministic_algorithms_enabled()}, "
          f"cuBLAS workspace: {os.environ.get('CUBLAS_WORKSPACE_CONFIG')}")
    return train(self)
CLIPTrainer.train = spy
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
"""


def _run(tmp_path, name, data, clip):
    out = tmp_path / name
    spy = tmp_path / "spy.py"
    spy.write_text(SPY)
    cmd = [sys.executable, str(spy), "--deterministic", "--root", data, "--seed", "2",
           "--trainer", "CLIPFit", "--dataset-config-file", "configs/datasets/dtd.yaml",
           "--config-file", "configs/trainers/CLIPFit/vit_b16.yaml", "--output-dir", str(out),
           "MODEL.BACKBONE.PATH", clip, "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "1",
           "OPTIM.MAX_EPOCH", "2", "DATASET.NUM_SHOTS", "4", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
           "TRAIN.PRINT_FREQ", "1", "TRAINER.CLIPFIT.PREC", "fp32"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert "deterministic algorithms: True, cuBLAS workspace: :4096:8" in log  # set_deterministic() ran
    lines = [_TIMING.sub("", l) for l in log.splitlines() if l.startswith("epoch [")]
    result = log[log.index("=> result"):].splitlines()[:6]
    return lines, result


def test_two_deterministic_runs_have_identical_logs(tmp_path):
    make_dataset("dtd", str(tmp_path / "data"), n_classes=4, per_class=10)
    clip = save_tiny_clip(str(tmp_path / "tiny.pt"))
    a, res_a = _run(tmp_path, "a", str(tmp_path / "data"), clip)
    b, res_b = _run(tmp_path, "b", str(tmp_path / "data"), clip)
    assert len(a) == 8 and all("loss" in line for line in a)  # 2 epochs x 4 batches
    assert a == b and res_a == res_b
