"""Checkpoints in both directions: reference-written files load here, ours keep their keys.

The reference files are written here in the layout each reference trainer saves through
Dassl's ``save_checkpoint`` (``{"state_dict", "epoch", "optimizer", "scheduler",
"val_result"}`` in ``<output>/<registered model name>/``): CoOp and KgCoOp register their
``prompt_learner`` (``ctx``, ``token_prefix``, ``token_suffix``), CLIP-Adapter its adapter
as ``clip_adapter`` (``fc.0.weight``, ``fc.2.weight``), the CLIPFit authors their whole
prompt learner as ``prompt_learner`` (``image_encoder.*``, ``text_encoder.*``).
"""
from __future__ import annotations

import os

import pytest
import torch

from clipfit import engine
from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import build_tiny_clip, save_tiny_clip
from clipfit.training.cli import build_parser, import_plugins, setup_cfg
from clipfit.training.tuned_checkpoint import CheckpointMismatchError


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("foreign")
    make_dataset("dtd", str(root / "data"), n_classes=4, per_class=4)
    return {"root": str(root / "data"), "clip": save_tiny_clip(str(root / "tiny.pt"), seed=5), "tmp": root}


def _trainer(assets, trainer, cfg_file, *opts):
    import_plugins()
    argv = ["--root", assets["root"], "--trainer", trainer, "--seed", "1", "--output-dir", str(assets["tmp"] / "out"),
            "--dataset-config-file", "configs/datasets/dtd.yaml", "--config-file", cfg_file,
            "MODEL.BACKBONE.PATH", assets["clip"], "INPUT.SIZE", "(32, 32)", "DATALOADER.NUM_WORKERS", "0",
            "OPTIM.MAX_EPOCH", "1", *opts]
    cfg = setup_cfg(build_parser().parse_args(argv))
    engine.set_random_seed(1)
    return engine.build_trainer(cfg)


def _write(folder, name, state_dict, epoch=3, file=None):
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    path = os.path.join(folder, name, file or f"model.pth.tar-{epoch}")
    # Dassl's warm-up scheduler state holds its successor scheduler object (and its optimizer)
    optim = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    scheduler = {"successor": torch.optim.lr_scheduler.CosineAnnealingLR(optim, 5), "last_epoch": epoch}
    torch.save({"state_dict": state_dict, "epoch": epoch, "optimizer": optim.state_dict(), "scheduler": scheduler,
                "val_result": None}, path)
    return path


COOP = ("CoOp", "configs/trainers/CoOp/vit_b16_ctxv1.yaml")
KGCOOP = ("KgCoOp", "configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml")
ADAPTER = ("CLIP_Adapter", "configs/trainers/CLIP_Adapter/vit_b16.yaml")


@pytest.mark.parametrize("trainer, cfg_file", [COOP, KGCOOP])
def test_coop_and_kgcoop_checkpoints_load_and_ours_keep_their_keys(assets, tmp_path, trainer, cfg_file):
    t = _trainer(assets, trainer, cfg_file)
    ctx = torch.randn(t.model.prompt_learner.ctx.shape)
    _write(str(tmp_path), "prompt_learner", {"ctx": ctx, "token_prefix": torch.zeros(4, 1, 64),
                                              "token_suffix": torch.zeros(4, 72, 64)})
    t.load_model(str(tmp_path), epoch=3)
    assert torch.equal(t.model.prompt_learner.ctx.detach(), ctx)
    t.save_model(0, str(tmp_path / "ours"))  # ours: CoOp's key, so interpret_prompt.py reads ["ctx"]
    saved = torch.load(str(tmp_path / "ours" / "prompt_learner" / "model.pth.tar-1"), weights_only=True)
    assert set(saved["state_dict"]) == {"ctx"} and torch.equal(saved["state_dict"]["ctx"], ctx)
    t2 = _trainer(assets, trainer, cfg_file)
    t2.load_model(str(tmp_path / "ours"), epoch=1)  # and we read ours back
    assert torch.equal(t2.model.prompt_learner.ctx.detach(), ctx)
    t3 = _trainer(assets, trainer, cfg_file, "MODEL.INIT_WEIGHTS",  # as CoOp's build_model does
                  str(tmp_path / "prompt_learner" / "model.pth.tar-3"))
    assert torch.equal(t3.model.prompt_learner.ctx.detach(), ctx)


def test_clip_adapter_checkpoint_loads_and_ours_keeps_its_keys(assets, tmp_path):
    t = _trainer(assets, *ADAPTER)
    fc = t.model.adapter.fc
    theirs = {"fc.0.weight": torch.randn(fc[0].weight.shape), "fc.2.weight": torch.randn(fc[2].weight.shape)}
    _write(str(tmp_path), "clip_adapter", theirs)
    t.load_model(str(tmp_path), epoch=3)
    assert torch.equal(fc[0].weight.detach(), theirs["fc.0.weight"]) and torch.equal(fc[2].weight.detach(), theirs["fc.2.weight"])
    t.save_model(0, str(tmp_path / "ours"))
    saved = torch.load(str(tmp_path / "ours" / "clip_adapter" / "model.pth.tar-1"), weights_only=True)
    assert set(saved["state_dict"]) == set(theirs)


def test_authors_whole_model_checkpoint_gives_its_tuned_tensors(assets, tmp_path):
    t = _trainer(assets, "ClipFit", "configs/trainers/ClipFit/vit_b16_ep10_ctxv1.yaml")
    whole = build_tiny_clip(seed=9)  # their prompt learner: CLIP's encoders under their names
    state = {f"image_encoder.{k}": v for k, v in whole.visual.state_dict().items()}
    state.update({f"text_encoder.transformer.{k}": v for k, v in whole.transformer.state_dict().items()})
    state.update({"text_encoder.positional_embedding": whole.positional_embedding.detach(),
                  "text_encoder.text_projection": whole.text_projection.detach()})
    _write(str(tmp_path), "prompt_learner", state, file="model-best.pth.tar")
    t.load_model(str(tmp_path))  # --eval-only --model-dir without --load-epoch: the best model
    tuned = t.model.learned_parameters()
    assert any("c_proj.bias" in n for n in tuned) and any(n.startswith("visual.ln") for n in tuned)
    wanted = whole.state_dict()
    assert all(torch.equal(p.detach(), wanted[n]) for n, p in tuned.items())
    frozen = {n: p for n, p in t.model.clip.named_parameters() if n not in tuned}
    assert not torch.equal(frozen["visual.conv1.weight"], wanted["visual.conv1.weight"])  # frozen ones untouched


def test_foreign_checkpoint_of_another_model_is_refused_with_its_keys(assets, tmp_path):
    t = _trainer(assets, *COOP)
    _write(str(tmp_path), "prompt_learner", {"ctx": torch.zeros(7, 3)})
    with pytest.raises(CheckpointMismatchError, match=r"ctx has shape \(7, 3\)"):
        t.load_model(str(tmp_path), epoch=3)
    _write(str(tmp_path), "prompt_learner", {"fc.0.weight": torch.zeros(2)})
    with pytest.raises(CheckpointMismatchError, match="(?s)not a checkpoint of this toolkit.*no tensor for prompt_learner.ctx.*Its keys begin: fc.0.weight"):
        t.load_model(str(tmp_path), epoch=3)
