"""Zero-shot CLIP through ``train.py``: --eval-only and --no-train, the dataset's template."""
from __future__ import annotations

import json
import os
import sys

import clip
import pytest
import torch

from clipfit.training.cli import main
from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import build_tiny_clip, save_tiny_clip


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("zsclip")
    make_dataset("dtd", str(root / "data"), n_classes=4, per_class=10)
    return {"root": str(root / "data"), "clip": save_tiny_clip(str(root / "tiny.pt"), seed=11)}


def _run(assets, out, flag, monkeypatch):
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    stdout = sys.stdout
    main([
        flag, "--root", assets["root"], "--trainer", "ZeroshotCLIP", "--output-dir", str(out),
        "--dataset-config-file", "configs/datasets/dtd.yaml",
        "--config-file", "configs/trainers/ZeroshotCLIP/vit_b16.yaml",
        "MODEL.BACKBONE.PATH", assets["clip"], "INPUT.SIZE", "(32, 32)",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "5",
    ])
    assert sys.stdout is stdout  # main stopped teeing stdout to log.txt (runs in-process follow)
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f), open(os.path.join(out, "log.txt")).read()


def test_eval_only_and_no_train_give_the_independent_zero_shot_accuracy(assets, tmp_path, monkeypatch):
    m_eval, log = _run(assets, tmp_path / "eval", "--eval-only", monkeypatch)
    m_none, _ = _run(assets, tmp_path / "none", "--no-train", monkeypatch)
    template = "{} texture."  # CoOp's trainers/zsclip.py, CUSTOM_TEMPLATES["DescribableTextures"]
    assert f"Template: {template!r}" in log and "* accuracy:" in log
    assert m_eval == {**m_none}
    assert m_eval["trainer"] == "ZeroshotCLIP" and m_eval["epoch"] == 0 and m_eval["total"] == 12

    # independent: CLIP's own encode_text/encode_image on the same test images
    from clipfit.training.config import get_cfg
    from clipfit.engine import DataManager
    from clipfit.training.cli import import_plugins

    import_plugins()
    cfg = get_cfg()
    cfg.merge_from_file("configs/datasets/dtd.yaml")
    cfg.merge_from_file("configs/trainers/ZeroshotCLIP/vit_b16.yaml")
    cfg.DATASET.ROOT, cfg.INPUT.SIZE, cfg.DATALOADER.NUM_WORKERS = assets["root"], (32, 32), 0
    dm = DataManager(cfg)
    model = build_tiny_clip(seed=11)
    tokens = clip.tokenize([template.format(c.replace("_", " ")) for c in dm.dataset.classnames])
    correct = total = 0
    with torch.no_grad():
        text = model.encode_text(tokens)
        text = text / text.norm(dim=-1, keepdim=True)
        for batch in dm.test_loader:
            image = model.encode_image(batch["img"])
            logits = (image / image.norm(dim=-1, keepdim=True)) @ text.t()
            correct += int((logits.argmax(1) == batch["label"]).sum())
            total += batch["label"].numel()
    assert m_eval["correct"] == correct and m_eval["accuracy"] == pytest.approx(100.0 * correct / total)
