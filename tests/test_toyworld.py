"""The toy world: the shipped CLIP has learned something, CLIPFit learns more, the datasets load.

The learning test fine-tunes CLIPFit on the base classes of ``toy_shapes`` in memory (no
trainer) and requires base accuracy to rise at least MARGIN points over zero-shot. The same
run with the method broken (nothing tuned, the loss's sign flipped, the image LayerNorms
frozen) must stay below it: the margin separates a working method from a broken one.
"""
from __future__ import annotations

import math
import os
import shutil

import pytest
import torch

import datasets  # noqa: F401  (registers the toy loaders)
from _helpers import build_from_cfg
from clipfit.methods.clip_loader import load_clip
from clipfit.methods.clipfit import CLIPFitModel, CLIPFitSettings
from clipfit.toyworld import weights
from clipfit.toyworld.downstream import DATASETS, class_makers, make_dataset, sample
from clipfit.toyworld.pretrain import ZERO_SHOT_TEMPLATE, to_tensor, zero_shot_accuracy
from clipfit.toyworld.world import UNSEEN_PAIRS
from clipfit.training.config import get_cfg

SHOTS, TEST_PER_CLASS, EPOCHS, BATCH, LR = 16, 20, 6, 32, 0.05
MARGIN = 10.0  # points of base accuracy over zero-shot. Measured (16 base classes, 320 test images):
# CLIPFit 23.4 -> 41.6; broken: nothing tuned 23.4 -> 23.4, wrong sign -> 6.2, frozen LayerNorms -> 28.4


def _tensors(items):
    return to_tensor([im for im, _, _ in items]), torch.tensor([y for _, y, _ in items])


@pytest.fixture(scope="module")
def base_task():
    """toy_shapes' 16 base classes: SHOTS training images and TEST_PER_CLASS test images each."""
    names = list(class_makers("toy_shapes", seed=1))
    base = names[: math.ceil(len(names) / 2)]
    train = _tensors(sample("toy_shapes", SHOTS, image_seed=1, classes=base))
    test = _tensors(sample("toy_shapes", TEST_PER_CLASS, image_seed=2, classes=base))
    return base, train, test


@torch.no_grad()
def _accuracy(model: CLIPFitModel, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return 100.0 * (model(images).argmax(1) == labels).float().mean().item()


def _finetune(base_task, breakage: str = "") -> tuple:
    """(zero-shot, fine-tuned) base accuracy of CLIPFit, optionally broken on purpose."""
    classes, (x, y), (x_test, y_test) = base_task
    settings = CLIPFitSettings(image_params="none" if breakage == "frozen_layernorms" else "layernorm")
    torch.manual_seed(0)
    model = CLIPFitModel(load_clip(weights.TOY_NAME), classes, ZERO_SHOT_TEMPLATE, settings)
    before = _accuracy(model, x_test, y_test)
    params = list(model.learned_parameters().values())
    optim = torch.optim.SGD(params, lr=LR, momentum=0.9)
    sign = -1.0 if breakage == "wrong_sign" else 1.0
    for _ in range(EPOCHS):
        model.train()
        for idx in torch.randperm(len(y)).split(BATCH):
            loss, _ = model.loss(x[idx], y[idx])
            optim.zero_grad()
            (sign * loss).backward()
            if breakage != "nothing_tuned":
                optim.step()
    return before, _accuracy(model, x_test, y_test)


def test_clipfit_raises_base_accuracy_well_above_zero_shot(base_task):
    before, after = _finetune(base_task)
    assert after >= before + MARGIN, f"CLIPFit: {before:.1f}% -> {after:.1f}%, less than {MARGIN} points"


@pytest.mark.parametrize("breakage", ["nothing_tuned", "wrong_sign", "frozen_layernorms"])
def test_a_broken_method_misses_the_margin(base_task, breakage):
    before, after = _finetune(base_task, breakage)
    assert after < before + MARGIN, f"{breakage}: {before:.1f}% -> {after:.1f}% reached the margin"


def test_zero_shot_on_never_seen_pairs_is_above_three_times_chance():
    model = load_clip(weights.TOY_NAME)
    accuracy = zero_shot_accuracy(model, list(UNSEEN_PAIRS), per_class=10)
    assert accuracy > 3 * 100.0 / len(UNSEEN_PAIRS), accuracy


def test_shipped_weights_load_as_a_normal_fp32_clip_and_match_their_hash():
    assert weights.sha256_of(weights.SHIPPED_FILE) == weights.SHIPPED_SHA256
    model = load_clip(weights.TOY_NAME)
    assert type(model).__module__ == "clip.model" and type(model).__name__ == "CLIP"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.visual.input_resolution == 32 and model.context_length == 77
    assert model.token_embedding.weight.shape[0] == 49408


def test_a_damaged_weights_file_is_a_clear_error(tmp_path, monkeypatch):
    damaged = tmp_path / "toy_clip.pt.xz"
    shutil.copy(weights.SHIPPED_FILE, damaged)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(weights, "SHIPPED_FILE", str(damaged))
    with pytest.raises(weights.ToyWeightsError, match="damaged.*SHA-256"):
        load_clip(weights.TOY_NAME)
    with pytest.raises(weights.ToyWeightsError, match="not a packed toy CLIP"):  # no hash to compare
        weights.unpack(str(damaged))


@pytest.mark.parametrize("folder", list(DATASETS))
def test_make_data_layout_loads_through_the_loaders(tmp_path, folder):
    per_class = {"train": 3, "val": 1, "test": 2}
    path = make_dataset(folder, str(tmp_path), seed=5, per_class=per_class)
    assert make_dataset(folder, str(tmp_path), seed=5, per_class=per_class) == path  # kept as is
    with pytest.raises(FileExistsError, match="seed 6"):
        make_dataset(folder, str(tmp_path), seed=6, per_class=per_class)
    names = list(class_makers(folder, seed=5))
    n_base = math.ceil(len(names) / 2)
    cfg = get_cfg()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg.merge_from_file(os.path.join(repo, "configs", "datasets", f"{folder}.yaml"))
    assert cfg.DATASET.NAME == DATASETS[folder].name
    cfg.DATASET.ROOT = str(tmp_path)
    ds = build_from_cfg(cfg, shots=2, seed=1, subsample="base")
    assert ds.classnames == names[:n_base]
    assert len(ds.train_x) == 2 * n_base and len(ds.test) == per_class["test"] * n_base
    assert {x.label for x in ds.test} == set(range(n_base))
    new = build_from_cfg(cfg, shots=2, seed=1, subsample="new")
    assert new.classnames == names[n_base:]


def test_make_data_command_refuses_a_folder_drawn_otherwise_with_a_clear_error(tmp_path, capsys):
    from clipfit.toyworld.__main__ import main

    stale = tmp_path / "toy_shapes"
    stale.mkdir()
    (stale / "toyworld.json").write_text('{"format": 0, "seed": 1}')
    assert main(["make-data", "--root", str(tmp_path), "--datasets", "toy_shapes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"ERROR: {stale} exists but was not drawn by this version") and "delete it" in err[-1]
    assert os.listdir(stale) == ["toyworld.json"]  # nothing drawn over it
