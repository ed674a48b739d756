"""``python -m clipfit.analysis`` on a short CLIPFit run (tiny CLIP, fabricated DTD).

Numbers are checked against computations made here straight from the saved tensors:
the checkpoint file and the pre-trained CLIP file, both read with ``torch.load``.
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

import pytest
import torch

from clipfit.training import tuned_checkpoint as ckpt_io
from clipfit.analysis.__main__ import main
from clipfit.methods.clip_loader import architecture, load_clip
from clipfit.training.config import get_cfg, merge_from_file
from clipfit.engine import save_checkpoint
from clipfit.methods.params import select_parameters
from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import save_tiny_clip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BLOCKS = 3  # text and image blocks of the tiny CLIP


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-epoch CLIPFit run with a checkpoint per epoch and gradient statistics on."""
    root = tmp_path_factory.mktemp("analysis")
    data = str(root / "data")
    make_dataset("dtd", data, n_classes=4, per_class=10)
    clip_path = save_tiny_clip(str(root / "tiny.pt"), text_layers=BLOCKS, layers=BLOCKS)
    out = root / "run"
    cmd = [sys.executable, "train.py", "--root", data, "--seed", "1", "--trainer", "CLIPFit",
           "--dataset-config-file", "configs/datasets/dtd.yaml",
           "--config-file", "configs/trainers/CLIPFit/vit_b16.yaml", "--output-dir", str(out),
           "MODEL.BACKBONE.PATH", clip_path, "INPUT.SIZE", "(32, 32)", "OPTIM.MAX_EPOCH", "2",
           "OPTIM.LR", "0.05", "OPTIM.WARMUP_EPOCH", "0", "DATASET.NUM_SHOTS", "4",
           "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.NUM_WORKERS", "0", "TRAIN.CHECKPOINT_FREQ", "1",
           "TRAINER.CLIPFIT.PREC", "fp32", "TRAINER.CLIPFIT.LOG_GRAD_STATS", "True"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return {"root": root, "dir": out, "clip": clip_path, "ckpt": out / "clipfit" / "model.pth.tar-2"}


def _cli(capsys, *argv):
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC and os.path.getsize(path) > 10_000


def _expected_changes(ckpt_path, clip_path):
    tuned = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    pre = torch.load(clip_path, map_location="cpu", weights_only=True)
    return {n: float(((pre[n].double() - t.double()) ** 2).sum()) for n, t in tuned.items()}


def test_changes_csv_equals_independent_computation(run, capsys):
    rc, out, err = _cli(capsys, "changes", run["dir"])
    assert rc == 0, err
    analysis = run["dir"] / "analysis"
    assert _is_png(analysis / "changes.png")
    rows = _read_csv(analysis / "changes.csv")
    expected = _expected_changes(run["ckpt"], run["clip"])  # latest checkpoint: epoch 2
    assert {r["tensor"] for r in rows} == set(expected)
    assert len(expected) == BLOCKS + 2 * (2 * BLOCKS + 2)  # text biases; image LN gains and biases
    for r in rows:
        assert float(r["sq_change"]) == pytest.approx(expected[r["tensor"]], rel=1e-9, abs=1e-15)
    assert all(v > 0 for v in expected.values())  # training moved every tuned tensor
    # layer positions: text blocks in order, LayerNorms ln_pre, 0.ln_1, 0.ln_2, ..., ln_post
    gains = sorted((int(r["position"]), r["label"]) for r in rows if r["series"] == "image LayerNorm gain")
    assert [label for _, label in gains] == ["ln_pre", "0.ln_1", "0.ln_2", "1.ln_1", "1.ln_2", "2.ln_1",
                                             "2.ln_2", "ln_post"]
    text = sorted((int(r["position"]), r["tensor"]) for r in rows if r["encoder"] == "text")
    assert [t for _, t in text] == [f"transformer.resblocks.{i}.mlp.c_proj.bias" for i in range(BLOCKS)]


def test_changes_of_several_runs_on_one_figure(run, capsys, tmp_path):
    ckpts = [run["dir"] / "clipfit" / f"model.pth.tar-{e}" for e in (1, 2)]
    rc, out, err = _cli(capsys, "changes", *ckpts, "--labels", "epoch 1", "epoch 2", "--out", tmp_path)
    assert rc == 0, err
    assert _is_png(tmp_path / "changes.png")
    rows = _read_csv(tmp_path / "changes.csv")
    for label, ckpt in zip(("epoch 1", "epoch 2"), ckpts):
        expected = _expected_changes(ckpt, run["clip"])
        got = {r["tensor"]: float(r["sq_change"]) for r in rows if r["run"] == label}
        assert got.keys() == expected.keys()
        assert all(got[n] == pytest.approx(expected[n], rel=1e-9, abs=1e-15) for n in got)
    # several runs need an explicit output folder; labels must match the runs
    assert _cli(capsys, "changes", *ckpts)[0] == 2
    rc, _, err = _cli(capsys, "changes", *ckpts, "--labels", "only one", "--out", tmp_path)
    assert rc == 2 and "one per run" in err


def _other_backbone_run(run, tmp_path):
    """A run folder whose checkpoint comes from a wider CLIP (same config.yaml as ``run``)."""
    wide = load_clip("ViT-B/16", save_tiny_clip(str(tmp_path / "wide.pt"), width=128, text_layers=BLOCKS,
                                                layers=BLOCKS))
    params = select_parameters(wide).named_parameters()
    settings = torch.load(run["ckpt"], weights_only=True)["meta"]["settings"]
    state = {"state_dict": ckpt_io.learned_state(params), "epoch": 1,
             "meta": ckpt_io.make_meta("ViT-B/16", architecture(wide), params, settings)}
    other = tmp_path / "other_run"
    save_checkpoint(state, str(other / "clipfit"))
    shutil.copy(run["dir"] / "config.yaml", other / "config.yaml")
    return other


def test_checkpoint_of_another_backbone_is_a_clear_error(run, capsys, tmp_path):
    other = _other_backbone_run(run, tmp_path)
    for command in ("changes", "importance", "tsne"):
        rc, out, err = _cli(capsys, command, other, "--out", tmp_path / command)
        assert rc == 2, command
        assert "was not trained from the CLIP loaded from" in err
        assert "vision_width: checkpoint 128, current 64" in err
        assert "--clip" in err
        assert not (tmp_path / command).exists()
    # and the other way round: the right checkpoint against the wrong pre-trained weights
    rc, out, err = _cli(capsys, "changes", run["dir"], "--clip", tmp_path / "wide.pt", "--out", tmp_path / "x")
    assert rc == 2 and "vision_width: checkpoint 64, current 128" in err


def test_not_a_run_is_a_clear_error(capsys, tmp_path):
    rc, _, err = _cli(capsys, "changes", tmp_path)
    assert rc == 2 and "No checkpoint under" in err
    rc, _, err = _cli(capsys, "grads", tmp_path)
    assert rc == 2 and "TRAINER.CLIPFIT.LOG_GRAD_STATS True" in err


def test_tsne_writes_side_by_side_png(run, capsys, tmp_path):
    rc, out, err = _cli(capsys, "tsne", run["dir"], "--split", "test", "--out", tmp_path)
    assert rc == 0, err
    assert _is_png(tmp_path / "tsne_test.png")
    rows = _read_csv(tmp_path / "tsne_test.csv")
    assert len(rows) == 12  # 4 classes x 3 test images of the fabricated DTD
    assert {r["classname"] for r in rows} == {"banded", "blotchy", "braided", "bubbly"}
    zero_shot = [(float(r["zeroshot_x"]), float(r["zeroshot_y"])) for r in rows]
    tuned = [(float(r["tuned_x"]), float(r["tuned_y"])) for r in rows]
    assert zero_shot != tuned  # the tuned LayerNorms changed the image features
    rc, out, err = _cli(capsys, "tsne", run["dir"], "--split", "train", "--max-images", "6", "--out", tmp_path)
    assert rc == 0, err
    assert len(_read_csv(tmp_path / "tsne_train.csv")) == 6


def test_importance_ranks_blocks_and_writes_loadable_configs(run, capsys, tmp_path):
    base = os.path.join(ROOT, "configs", "trainers", "CLIPFit", "vit_b16.yaml")
    rc, out, err = _cli(capsys, "importance", run["dir"], "--k", "1", "2", "--base-config", base,
                        "--config-dir", tmp_path / "cfgs", "--out", tmp_path)
    assert rc == 0, err
    expected = _expected_changes(run["ckpt"], run["clip"])
    block_change = {
        enc: [sum(v for n, v in expected.items() if n.startswith(f"{prefix}{i}.")) for i in range(BLOCKS)]
        for enc, prefix in (("text", "transformer.resblocks."), ("image", "visual.transformer.resblocks."))
    }
    ranking = _read_csv(tmp_path / "importance.csv")
    for enc, changes in block_change.items():
        ranked = sorted(range(BLOCKS), key=lambda i: -changes[i])
        rows = sorted((r for r in ranking if r["encoder"] == enc and r["rank"]), key=lambda r: int(r["rank"]))
        assert [int(r["block"]) for r in rows] == ranked
        assert [float(r["sq_change"]) for r in rows] == pytest.approx([changes[i] for i in ranked], rel=1e-9)
    outside = {r["tensors"] for r in ranking if not r["rank"]}
    assert outside == {"visual.ln_pre.weight;visual.ln_pre.bias", "visual.ln_post.weight;visual.ln_post.bias"}
    assert "IMAGE_LAYERS cannot select them" in out

    variants = {v["name"]: v for v in _read_csv(tmp_path / "variants.csv")}
    assert set(variants) == {f"vit_b16_{e}_{w}{k}" for e in ("text", "image") for w in ("top", "bottom")
                             for k in (1, 2)}
    top2 = sorted(sorted(range(BLOCKS), key=lambda i: -block_change["image"][i])[:2])
    v = variants["vit_b16_image_top2"]
    assert v["opts"] == f'TRAINER.CLIPFIT.IMAGE_LAYERS "{top2}"'
    # the written config loads like any trainer config and selects exactly those blocks
    cfg = get_cfg()
    merge_from_file(cfg, v["config"])
    assert list(cfg.TRAINER.CLIPFIT.IMAGE_LAYERS) == top2 and list(cfg.TRAINER.CLIPFIT.TEXT_LAYERS) == []
    assert cfg.OPTIM.LR == 0.002 and cfg.TRAINER.CLIPFIT.BETA == 8.0  # the rest of the base config
    model = load_clip("ViT-B/16", run["clip"])
    image = select_parameters(model, image_layers=list(cfg.TRAINER.CLIPFIT.IMAGE_LAYERS)).groups["image"]
    assert {n.split(".")[3] for n in image} == {str(b) for b in top2} and "visual.ln_pre.weight" not in image
    # a second ranking that would change a written config is refused without --force
    with open(v["config"], "a") as f:
        f.write("# edited\n")
    rc, _, err = _cli(capsys, "importance", run["dir"], "--base-config", base, "--config-dir", tmp_path / "cfgs",
                      "--k", "2", "--out", tmp_path)
    assert rc == 2 and "--force" in err


def test_grads_of_the_training_run(run, capsys):
    rc, out, err = _cli(capsys, "grads", run["dir"])
    assert rc == 0, err
    analysis = run["dir"] / "analysis"
    assert _is_png(analysis / "grads.png")
    stats = torch.load(run["dir"] / "grad_stats.pt", weights_only=True)
    assert stats["iterations"].tolist() == list(range(8))  # 2 epochs x 4 batches
    assert set(stats["names"]) == set(_expected_changes(run["ckpt"], run["clip"]))
    assert (stats["change"][0] == 0).all() and (stats["change"][-1] > 0).all()  # before the 1st / 8th update
    assert torch.isfinite(stats["grad_sq"]).all() and (stats["grad_sq"].sum(0) > 0).all()
