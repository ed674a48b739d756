"""The CLIPFit trainer end to end on a fabricated DTD with a tiny random CLIP (32 px)."""
from __future__ import annotations

import json
import os
import random
import shutil

import pytest
import torch
from PIL import Image

from clipfit import engine
from clipfit.methods.clip_loader import load_clip, weights_fingerprint
from clipfit.training.tuned_checkpoint import CheckpointMismatchError
from clipfit.training.base_trainer import CLIPTrainer
from clipfit.training.cli import build_parser, import_plugins, setup_cfg
from clipfit.training.config import cfg_value
from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import save_tiny_clip

EPOCHS = 6


def _colour_by_class(images_dir) -> None:
    """Repaint the fabricated images: one colour per class (plus jitter), so there is something to learn."""
    palette = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (230, 220, 40)]
    rng = random.Random(0)
    for k, folder in enumerate(sorted(os.listdir(images_dir))):
        for name in os.listdir(os.path.join(images_dir, folder)):
            colour = tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in palette[k % len(palette)])
            Image.new("RGB", (8, 8), colour).save(os.path.join(images_dir, folder, name), format="JPEG")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("clipfit_trainer")
    _colour_by_class(os.path.join(make_dataset("dtd", str(root / "data"), n_classes=4, per_class=10), "images"))
    return {
        "root": str(root / "data"),
        "vit": save_tiny_clip(str(root / "tiny_vit.pt")),
        "rn": save_tiny_clip(str(root / "tiny_rn.pt"), arch="rn"),
        "tmp": root,
    }


def _argv(assets, out, *opts, trainer="CLIPFit", flags=(), clip="vit"):
    return [
        *flags, "--root", assets["root"], "--trainer", trainer, "--seed", "1", "--output-dir", str(out),
        "--dataset-config-file", "configs/datasets/dtd.yaml",
        "--config-file", "configs/trainers/CLIPFit/vit_b16.yaml",
        "MODEL.BACKBONE.PATH", assets[clip], "INPUT.SIZE", "(32, 32)", "INPUT.TRANSFORMS", '["normalize"]',
        "OPTIM.MAX_EPOCH", str(EPOCHS), "OPTIM.LR", "0.05", "OPTIM.WARMUP_EPOCH", "0",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "DATALOADER.TEST.BATCH_SIZE", "5",
        "DATASET.NUM_SHOTS", "5", "TRAIN.PRINT_FREQ", "100", *opts,
    ]


def _trainer(argv):
    import_plugins()
    cfg = setup_cfg(build_parser().parse_args(argv))
    engine.set_random_seed(cfg.SEED)
    return engine.build_trainer(cfg)




def _train_set_loss_and_accuracy(trainer):
    losses, correct, total = [], 0, 0
    with torch.no_grad():
        for batch in trainer.train_loader_x:
            image, label = trainer.parse_batch_train(batch)
            loss, parts = trainer.model.loss(image, label)
            losses.append(loss.item())
            correct += int((parts["logits"].argmax(1) == label).sum())
            total += label.numel()
    return sum(losses) / len(losses), correct / total


def _metrics(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def trained(assets):
    out = assets["tmp"] / "run"
    trainer = _trainer(_argv(assets, out, "TRAIN.CHECKPOINT_FREQ", "1"))
    before = _train_set_loss_and_accuracy(trainer)
    trainer.train()
    after = _train_set_loss_and_accuracy(trainer)
    return {"out": str(out), "trainer": trainer, "before": before, "after": after}


def test_short_run_lowers_training_loss_and_raises_training_accuracy(trained):
    (loss0, acc0), (loss1, acc1) = trained["before"], trained["after"]
    assert loss1 < loss0 - 0.1
    assert acc1 > acc0 + 0.1


def test_checkpoint_holds_only_the_tuned_tensors_and_metadata(trained):
    path = os.path.join(trained["out"], "clipfit", f"model.pth.tar-{EPOCHS}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    tuned = trained["trainer"].model.learned_parameters()
    assert set(ckpt["state_dict"]) == set(tuned)
    assert ckpt["epoch"] == EPOCHS
    meta = ckpt["meta"]
    assert meta["backbone"] == "ViT-B/16" and meta["settings"]["TRAINER.CLIPFIT.TEXT_PARAMS"] == "proj_bias"
    assert meta["shapes"] == {n: list(p.shape) for n, p in tuned.items()}
    assert os.path.getsize(path) < 100_000  # 896 tuned scalars; no frozen CLIP weights
    with open(os.path.join(trained["out"], "clipfit", "checkpoint")) as f:
        assert f.read().strip() == f"model.pth.tar-{EPOCHS}"


def test_eval_only_from_checkpoint_reproduces_test_accuracy(trained, assets, tmp_path, run_main):
    run_main(_argv(assets, tmp_path, flags=["--eval-only", "--model-dir", trained["out"], "--load-epoch", str(EPOCHS)]))
    ours, original = _metrics(tmp_path), _metrics(trained["out"])
    assert ours["accuracy"] == original["accuracy"] and ours["correct"] == original["correct"]
    assert ours["epoch"] == original["epoch"] == EPOCHS and ours["trainer"] == "CLIPFit"
    assert ours["total"] == 12 and ours["dataset"] == "DescribableTextures"


def test_checkpoint_for_another_selection_or_backbone_is_refused(trained, assets, tmp_path):
    flags = ["--eval-only", "--model-dir", trained["out"], "--load-epoch", str(EPOCHS)]
    trainer = _trainer(_argv(assets, tmp_path / "a", "TRAINER.CLIPFIT.TEXT_PARAMS", "ffn_bias", flags=flags))
    with pytest.raises(CheckpointMismatchError) as err:
        trainer.load_model(trained["out"], epoch=EPOCHS)
    assert "TRAINER.CLIPFIT.TEXT_PARAMS: checkpoint proj_bias, current ffn_bias" in str(err.value)
    assert "mlp.c_fc.bias" in str(err.value)
    trainer = _trainer(_argv(assets, tmp_path / "b", clip="rn", flags=flags))
    with pytest.raises(CheckpointMismatchError, match="architecture image_encoder: checkpoint ViT, current ResNet"):
        trainer.load_model(trained["out"], epoch=EPOCHS)
    with pytest.raises(FileNotFoundError, match=f"model.pth.tar-{EPOCHS}"):  # lists what exists
        trainer.load_model(trained["out"], epoch=99)


def test_checkpoint_tuned_from_other_weights_is_refused_naming_both(trained, assets, tmp_path):
    ckpt = torch.load(os.path.join(trained["out"], "clipfit", f"model.pth.tar-{EPOCHS}"), weights_only=True)
    tuned_from = ckpt["meta"]["weights"]
    assert tuned_from == {"fingerprint": weights_fingerprint(load_clip("ViT-B/16", assets["vit"])),
                          "source": assets["vit"]}
    other = save_tiny_clip(str(tmp_path / "other.pt"), seed=7)  # same architecture, other values
    flags = ["--eval-only", "--model-dir", trained["out"], "--load-epoch", str(EPOCHS)]
    trainer = _trainer(_argv(assets, tmp_path / "a", "MODEL.BACKBONE.PATH", other, flags=flags))
    with pytest.raises(CheckpointMismatchError) as err:
        trainer.load_model(trained["out"], epoch=EPOCHS)
    mine = weights_fingerprint(load_clip("ViT-B/16", other))
    assert mine != tuned_from["fingerprint"]
    for part in (tuned_from["fingerprint"], assets["vit"], mine, other, "MODEL.CHECK_WEIGHTS_FINGERPRINT False"):
        assert part in str(err.value)
    trainer = _trainer(_argv(assets, tmp_path / "b", "MODEL.BACKBONE.PATH", other,
                             "MODEL.CHECK_WEIGHTS_FINGERPRINT", "False", flags=flags))
    trainer.load_model(trained["out"], epoch=EPOCHS)  # the documented override


def test_test_encodes_class_prompts_once_per_call_with_unchanged_results(trained, monkeypatch):
    trainer = trained["trainer"]
    model = trainer.model
    calls = []
    original = model.class_text_features
    monkeypatch.setattr(model, "class_text_features", lambda: calls.append(1) or original())
    accuracy = trainer.test()
    assert len(trainer.test_loader) == 3 and len(calls) == 1
    correct = total = 0
    with torch.no_grad():  # the straightforward way: class features re-encoded for every batch
        for batch in trainer.test_loader:
            image, label = trainer.parse_batch_test(batch)
            correct += int((model.logits(image).argmax(1) == label).sum())
            total += label.numel()
    assert len(calls) == 1 + 3
    assert accuracy == pytest.approx(100.0 * correct / total)


def test_resume_continues_like_the_uninterrupted_run(trained, assets, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(trained["out"], out, ignore=shutil.ignore_patterns("log.txt*", "metrics.json"))
    half = EPOCHS // 2
    for epoch in range(half + 1, EPOCHS + 1):
        os.remove(out / "clipfit" / f"model.pth.tar-{epoch}")
    (out / "clipfit" / "checkpoint").write_text(f"model.pth.tar-{half}\n")
    trainer = _trainer(_argv(assets, out, "TRAIN.CHECKPOINT_FREQ", "1"))
    trainer.train()
    assert trainer.start_epoch == half
    resumed = torch.load(out / "clipfit" / f"model.pth.tar-{EPOCHS}", weights_only=True)["state_dict"]
    full = torch.load(os.path.join(trained["out"], "clipfit", f"model.pth.tar-{EPOCHS}"), weights_only=True)
    for name, tensor in full["state_dict"].items():
        assert torch.equal(resumed[name], tensor), name
    assert _metrics(out)["accuracy"] == _metrics(trained["out"])["accuracy"]


def test_alias_resnet_note_and_fp16_fallback_on_cpu(assets, tmp_path, capsys):
    trainer = _trainer(_argv(assets, tmp_path, "TRAINER.COOP.PREC", "fp16", trainer="ClipFit", clip="rn"))
    out = capsys.readouterr().out
    assert type(trainer).__name__ == "ClipFit" and trainer.get_model_names() == ["prompt_learner"]  # the authors' folder
    assert trainer.precision == "fp32"
    assert sum("WARNING" in line for line in out.splitlines()) == 1
    assert "TRAINER.COOP.PREC fp16 needs a CUDA GPU" in out  # the authors' trainer reads this key
    assert "BatchNorm" in out and "running statistics stay frozen" in out
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())


def test_non_finite_loss_stops_with_epoch_batch_and_precision(assets, tmp_path):
    trainer = _trainer(_argv(assets, tmp_path, "OPTIM.LR", "1e30", "TRAINER.CLIPFIT.PREC", "fp32"))
    with pytest.raises(FloatingPointError) as err:
        trainer.train()
    msg = str(err.value)
    assert "epoch 1/" in msg and "batch 2/5" in msg and "TRAINER.CLIPFIT.PREC fp32" in msg
    assert "OPTIM.LR" in msg



def _on_a_gpu(monkeypatch):
    """Let fp16 and amp run on the CPU: the precision fallback of CPU-only machines is off."""
    monkeypatch.setattr(CLIPTrainer, "_resolve_precision", lambda self: cfg_value(self.cfg, self.prec_key))


def test_amp_path_keeps_the_regulariser_and_fp32_master_weights(assets, tmp_path, monkeypatch):
    _on_a_gpu(monkeypatch)
    trainer = _trainer(_argv(assets, tmp_path, "TRAINER.CLIPFIT.PREC", "amp"))  # build_model's amp branch
    assert trainer.precision == "amp" and isinstance(trainer.scaler, torch.amp.GradScaler)
    tuned = trainer.model.learned_parameters()
    assert all(p.dtype == torch.float32 for p in tuned.values())  # fp32 master weights
    start = {n: p.detach().clone() for n, p in tuned.items()}
    trainer.num_batches = len(trainer.train_loader_x)
    # the scaler starts at 2**16 and halves on each overflowing step (logits are 100 x cos):
    # four epochs of five batches are enough for the steps to be taken
    for trainer.epoch in range(4):
        for trainer.batch_idx, batch in enumerate(trainer.train_loader_x):
            summary = trainer.forward_backward(batch)
    assert trainer.scaler.get_scale() < 2.0 ** 16
    assert summary["reg"] > 0 and summary["loss"] == pytest.approx(summary["ce"] + 8.0 * summary["reg"], rel=1e-5)
    assert all(p.dtype == torch.float32 for p in tuned.values())
    assert all(not torch.equal(p, start[n]) for n, p in tuned.items())


def test_fp16_default_updates_c_proj_bias_in_fp16_and_round_trips_to_fp32_evaluation(assets, tmp_path, monkeypatch):
    _on_a_gpu(monkeypatch)
    out = tmp_path / "fp16"
    trainer = _trainer(_argv(assets, out, "OPTIM.MAX_EPOCH", "1"))  # PREC: the config's default
    assert trainer.precision == "fp16"
    tuned = trainer.model.learned_parameters()
    text = {n: p for n, p in tuned.items() if n.endswith("mlp.c_proj.bias")}
    assert len(text) == 2 and all(p.dtype == torch.float16 for p in text.values())  # as the authors train them
    assert all(p.dtype == torch.float32 for n, p in tuned.items() if n not in text)  # LayerNorms stay fp32
    start = {n: p.detach().clone() for n, p in text.items()}
    image, label = trainer.parse_batch_train(next(iter(trainer.train_loader_x)))
    with torch.no_grad():
        _, parts = trainer.model.loss(image, label)
    assert abs(parts["reg"].item()) <= 1e-7  # frozen class features made in the same precision
    trainer.train()
    for n, p in text.items():
        assert p.dtype == torch.float16 and not torch.equal(p, start[n]), n
    saved = torch.load(out / "clipfit" / "model.pth.tar-1", map_location="cpu", weights_only=True)["state_dict"]
    assert all(saved[n].dtype == torch.float16 and torch.equal(saved[n], p) for n, p in text.items())

    monkeypatch.undo()  # evaluation on the CPU in fp32, as a user without a GPU would
    flags = ["--eval-only", "--model-dir", str(out), "--load-epoch", "1"]
    evaluator = _trainer(_argv(assets, tmp_path / "eval", "TRAINER.CLIPFIT.PREC", "fp32", flags=flags))
    evaluator.load_model(str(out), epoch=1)
    loaded = evaluator.model.learned_parameters()
    assert all(p.dtype == torch.float32 for p in loaded.values())
    for n, p in loaded.items():
        assert torch.equal(p, saved[n].float()), n  # fp16 -> fp32 is exact
    assert 0.0 <= evaluator.test() <= 100.0 and _metrics(tmp_path / "eval")["epoch"] == 1
