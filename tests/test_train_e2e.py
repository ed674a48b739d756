"""``python train.py`` end to end as a CoOp user types it, and its errors on bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from clipfit import engine
from clipfit.methods.clip_loader import CLIPWeightsNotFoundError
from clipfit.training.config import ConfigKeyError
from clipfit.training.cli import build_parser, import_plugins, setup_cfg
from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import save_tiny_clip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    make_dataset("dtd", str(root / "data"), n_classes=4, per_class=10)
    return {"root": str(root / "data"), "clip": save_tiny_clip(str(root / "tiny.pt"))}


def _argv(assets, out, *extra):
    return ["--root", assets["root"], "--seed", "1", "--trainer", "ZeroshotCLIP",
            "--dataset-config-file", "configs/datasets/dtd.yaml",
            "--config-file", "configs/trainers/ZeroshotCLIP/vit_b16.yaml",
            "--output-dir", str(out), *extra,
            "MODEL.BACKBONE.PATH", assets["clip"], "INPUT.SIZE", "(32, 32)",
            "DATALOADER.NUM_WORKERS", "0"]


def test_zeroshot_eval_only_and_no_train_through_train_py(assets, tmp_path):
    outs = {}
    for flag in ("--eval-only", "--no-train"):
        out = tmp_path / flag.strip("-")
        proc = subprocess.run([sys.executable, "train.py", *_argv(assets, out, flag)], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        log = (out / "log.txt").read_text()
        for line in ("=> result", "* total: 12", "* accuracy:", "* error:", "* macro_f1:"):
            assert line in log
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["trainer"] == "ZeroshotCLIP" and metrics["total"] == 12
        assert f"* accuracy: {metrics['accuracy']:.1f}%" in log
        assert (out / "config.yaml").is_file()
        outs[flag] = metrics["accuracy"]
    assert outs["--eval-only"] == outs["--no-train"]


def _cfg(assets, tmp_path, *opts):
    import_plugins()
    return setup_cfg(build_parser().parse_args(_argv(assets, tmp_path / "x") + list(opts)))


def test_missing_dataset_folder_names_expected_path(assets, tmp_path):
    cfg = _cfg(assets, tmp_path)
    cfg.defrost()
    cfg.DATASET.ROOT = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as e:
        engine.build_dataset(cfg)
    assert os.path.join(str(tmp_path / "nowhere"), "dtd") in str(e.value)
    assert "DATASETS.md" in str(e.value)


def test_unknown_names_and_keys(assets, tmp_path):
    cfg = _cfg(assets, tmp_path)
    cfg.defrost()
    cfg.TRAINER.NAME = "ClipFitt"
    with pytest.raises(KeyError, match="Known names:.*CLIPFit.*CoOp.*ZeroshotCLIP"):
        engine.build_trainer(cfg)
    cfg.DATASET.NAME = "Describable"
    with pytest.raises(KeyError, match="DescribableTextures"):
        engine.build_dataset(cfg)
    with pytest.raises(ConfigKeyError, match="TRAINER.CLIPFIT.BETA"):
        _cfg(assets, tmp_path, "TRAINER.CLIPFIT.BETTA", "2.0")


def test_missing_weights_offline_message(assets, tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPFIT_CLIP_CACHE", str(tmp_path / "empty-cache"))
    cfg = _cfg(assets, tmp_path, "MODEL.BACKBONE.PATH", "")
    from clipfit.methods.clip_loader import load_clip
    monkeypatch.setattr("urllib.request.urlopen", _no_network)
    with pytest.raises(CLIPWeightsNotFoundError) as e:
        load_clip(cfg)
    msg = str(e.value)
    assert str(tmp_path / "empty-cache") in msg and "MODEL.BACKBONE.PATH" in msg and "https://" in msg


def _no_network(*args, **kwargs):
    raise OSError("network is unreachable")
