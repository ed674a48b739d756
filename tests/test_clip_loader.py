"""CLIP loading: JIT archives, state dicts, the download cache, and the missing-weights message."""
from __future__ import annotations

import hashlib
import urllib.error

import pytest
import torch

import clipfit.methods.clip_loader as loader
from clipfit.testing.tiny_clip import make_tiny_clip, save_tiny_clip
from clipfit.training.config import get_cfg


@pytest.fixture()
def isolated_cache(tmp_path, monkeypatch):
    """An empty download cache, downloads disabled."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(loader.CACHE_ENV, str(cache))
    monkeypatch.setenv(loader.OFFLINE_ENV, "1")
    return cache


def _assert_same_weights(model, state_dict):
    got = model.state_dict()
    for k, v in state_dict.items():
        assert torch.equal(got[k], v.float()), k


@pytest.mark.parametrize("arch", ["vit", "rn"])
@pytest.mark.parametrize("fmt", ["jit", "state_dict"])
def test_loads_jit_archive_and_state_dict_in_fp32(tmp_path, isolated_cache, arch, fmt):
    sd = make_tiny_clip(arch, seed=3)
    path = save_tiny_clip(str(tmp_path / f"tiny.{fmt}"), fmt, state_dict=sd)
    cfg = get_cfg()
    cfg.MODEL.BACKBONE.PATH = path
    model = loader.load_clip(cfg)
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    _assert_same_weights(model, sd)
    assert loader.architecture(model)["image_encoder"] == ("ViT" if arch == "vit" else "ResNet")


def test_half_precision_archive_is_returned_in_fp32(tmp_path, isolated_cache):
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in make_tiny_clip().items()}
    path = save_tiny_clip(str(tmp_path / "half.pt"), "state_dict", state_dict=sd)
    model = loader.load_clip("ViT-B/16", path)
    assert model.visual.conv1.weight.dtype == torch.float32
    _assert_same_weights(model, sd)


def test_uses_the_cache_file_named_after_the_url(tmp_path, isolated_cache, monkeypatch):
    path = save_tiny_clip(str(tmp_path / "tiny.pt"))
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    monkeypatch.setitem(loader.clip_api._MODELS, "ViT-B/16", f"https://example.invalid/{digest}/ViT-B-16.pt")
    isolated_cache.mkdir()
    (isolated_cache / "ViT-B-16.pt").write_bytes(open(path, "rb").read())
    assert loader.resolve_weights("ViT-B/16") == str(isolated_cache / "ViT-B-16.pt")
    assert loader.load_clip("ViT-B/16").visual.input_resolution == 32


def test_missing_weights_message_names_path_url_and_key(isolated_cache):
    with pytest.raises(loader.CLIPWeightsNotFoundError) as err:
        loader.load_clip("ViT-B/16")
    msg = str(err.value)
    assert str(isolated_cache / "ViT-B-16.pt") in msg
    assert loader.clip_api._MODELS["ViT-B/16"] in msg
    assert "MODEL.BACKBONE.PATH" in msg and loader.CACHE_ENV in msg and loader.OFFLINE_ENV in msg


def test_failed_download_is_reported_with_the_same_message(isolated_cache, monkeypatch):
    monkeypatch.delenv(loader.OFFLINE_ENV)

    def offline(url, root):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(loader.clip_api, "_download", offline)
    with pytest.raises(loader.CLIPWeightsNotFoundError) as err:
        loader.load_clip("RN50")
    msg = str(err.value)
    assert "download failed" in msg and "Name or service not known" in msg
    assert str(isolated_cache / "RN50.pt") in msg and loader.clip_api._MODELS["RN50"] in msg


def test_corrupt_cache_file_is_named(isolated_cache):
    isolated_cache.mkdir()
    (isolated_cache / "ViT-B-16.pt").write_bytes(b"partial")
    with pytest.raises(loader.CLIPWeightsNotFoundError, match="checksum does not match"):
        loader.resolve_weights("ViT-B/16")


def test_bad_path_unknown_name_and_foreign_file(tmp_path, isolated_cache):
    with pytest.raises(loader.CLIPWeightsNotFoundError, match="MODEL.BACKBONE.PATH"):
        loader.load_clip("ViT-B/16", str(tmp_path / "nope.pt"))
    with pytest.raises(ValueError, match="ViT-B/16"):  # lists the known names
        loader.load_clip("ViT-B/17")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(RuntimeError, match="OpenAI key names"):
        loader.load_clip("ViT-B/16", str(foreign))
