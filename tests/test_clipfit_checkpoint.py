"""Small checkpoints: what they hold, and the refusals with their messages."""
from __future__ import annotations

import pytest
import torch

from clipfit.training import tuned_checkpoint as ck
from clipfit.methods.clip_loader import architecture
from clipfit.methods.clipfit import CLIPFitModel
from clipfit.testing.tiny_clip import build_tiny_clip


class Arbitrary:
    """Any Python object: weights_only loading must refuse it."""


def _meta(model: CLIPFitModel, backbone: str = "ViT-B/16"):
    return ck.make_meta(backbone, architecture(model.clip), model.learned_parameters(), model.checkpoint_settings())


def _save(path, model, meta):
    torch.save({"state_dict": ck.learned_state(model.learned_parameters()), "epoch": 3, "meta": meta}, path)
    return str(path)


def test_round_trip_restores_exactly_the_learned_tensors(tmp_path):
    src = CLIPFitModel(build_tiny_clip(seed=1), ["a", "b"])
    with torch.no_grad():
        for p in src.learned_parameters().values():
            p.add_(0.1)
    path = _save(tmp_path / "m", src, _meta(src))
    dst = CLIPFitModel(build_tiny_clip(seed=1), ["a", "b"])
    ckpt = ck.read(path)
    ck.check_compatible(ckpt, _meta(dst), path)
    ck.restore(dst.learned_parameters(), ckpt["state_dict"])
    for (name, a), b in zip(src.clip.state_dict().items(), dst.clip.state_dict().values()):
        assert torch.equal(a, b), name


def test_mismatches_are_listed(tmp_path):
    src = CLIPFitModel(build_tiny_clip(seed=1), ["a", "b"])
    path = _save(tmp_path / "m", src, _meta(src, backbone="ViT-B/32"))
    from clipfit.methods.clipfit import CLIPFitSettings

    other = CLIPFitModel(build_tiny_clip(seed=1, text_width=128), ["a", "b"], settings=CLIPFitSettings(text_layers=[1]))
    with pytest.raises(ck.CheckpointMismatchError) as err:
        ck.check_compatible(ck.read(path), _meta(other), path)
    msg = str(err.value)
    assert "MODEL.BACKBONE.NAME: checkpoint ViT-B/32, current ViT-B/16" in msg
    assert "architecture text_width: checkpoint 64, current 128" in msg
    assert "TRAINER.CLIPFIT.TEXT_LAYERS: checkpoint [], current [1]" in msg
    assert "tensors the current model does not learn: transformer.resblocks.0.mlp.c_proj.bias" in msg
    assert "shapes differ" in msg


def test_foreign_files_are_refused_with_a_reason(tmp_path):
    whole = tmp_path / "authors.pth.tar"  # a whole-model state dict, as the authors' code saves
    torch.save({"state_dict": build_tiny_clip().state_dict(), "epoch": 1}, whole)
    with pytest.raises(ck.CheckpointMismatchError, match="not a checkpoint of this toolkit"):
        ck.read(str(whole))
    pickled = tmp_path / "pickled"
    torch.save({"obj": Arbitrary()}, pickled)
    with pytest.raises(ck.CheckpointMismatchError, match="weights_only=True"):
        ck.read(str(pickled))
    (tmp_path / "model.pth.tar-5").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="model.pth.tar-5.*--load-epoch"):
        ck.read(str(tmp_path / "model.pth.tar-10"))
