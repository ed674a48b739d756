"""Every trainer's class prompt template per dataset is its own reference code's.

The expected strings are written out here, as they appear in each reference file
(CoOp's trainers/zsclip.py, KgCoOp's trainers/kgcoop.py, CLIP-Adapter's clip_adapter.py,
the CLIPFit authors' trainers/ClipFit.py), not read from the implementation.
"""
from __future__ import annotations

import pytest
import torch

from clipfit.methods.coop import KgCoOpModel
from clipfit.methods.prompt_learner import PromptLearner, PromptSettings
from clipfit.methods.templates import class_prompts, resolve_template
from clipfit.testing.tiny_clip import build_tiny_clip
from clipfit.training.config import get_cfg

# The table shared by the CLIPFit authors' and KgCoOp's code
CLIPFIT_AND_KGCOOP = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "a photo of a {}, a type of texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}
# CoOp's zsclip.py and CLIP-Adapter's clip_adapter.py
COOP_ZSCLIP_AND_CLIP_ADAPTER = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}
EXPECTED = {
    "ZeroshotCLIP": COOP_ZSCLIP_AND_CLIP_ADAPTER,
    "CLIP_Adapter": COOP_ZSCLIP_AND_CLIP_ADAPTER,
    "KgCoOp": CLIPFIT_AND_KGCOOP,
    "CLIPFit": CLIPFIT_AND_KGCOOP,
    "ClipFit": CLIPFIT_AND_KGCOOP,
}
CASES = [(t, d, tpl) for t, table in EXPECTED.items() for d, tpl in table.items()]


def _cfg(trainer: str, dataset: str, template: str = ""):
    cfg = get_cfg()
    cfg.TRAINER.NAME, cfg.DATASET.NAME, cfg.DATASET.TEMPLATE = trainer, dataset, template
    return cfg


@pytest.mark.parametrize("trainer, dataset, expected", CASES)
def test_each_trainer_uses_its_reference_template(trainer, dataset, expected):
    assert resolve_template(_cfg(trainer, dataset)) == expected


@pytest.mark.parametrize("trainer", list(EXPECTED))
def test_dataset_template_overrides_every_trainer(trainer):
    assert resolve_template(_cfg(trainer, "DescribableTextures", "{} pattern.")) == "{} pattern."
    with pytest.raises(ValueError, match="DATASET.TEMPLATE"):
        resolve_template(_cfg(trainer, "DescribableTextures", "no braces"))


def test_kgcoop_features_come_from_its_template_and_coop_has_none():
    clip_model = build_tiny_clip(seed=3)
    names = ["banded", "dotted_lines"]
    cfg = _cfg("KgCoOp", "DescribableTextures")
    cfg.TRAINER.COOP.CTX_INIT = "a photo of a"
    model = KgCoOpModel.from_cfg(clip_model, names, cfg)
    assert model.template == "a photo of a {}, a type of texture."
    assert class_prompts(model.template, names)[1] == "a photo of a dotted lines, a type of texture."
    # CoOp's prompt: the context words, the class name, "." (no dataset template)
    learner = PromptLearner(clip_model, names, PromptSettings(n_ctx=4))
    assert learner.initial_context == "X X X X"
    import clip

    with torch.no_grad():
        expected = clip_model.token_embedding(clip.tokenize(["X X X X dotted lines."]))[0, 5:]
    assert torch.equal(learner.token_suffix[1, : expected.shape[0]], expected[: learner.token_suffix.shape[1]])
