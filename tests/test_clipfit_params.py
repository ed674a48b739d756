"""Parameter selection: DESIGN.md's tuned set, Table 5's strategies, layer lists, ResNets."""
from __future__ import annotations

import pytest

from clipfit.methods.params import (IMAGE_CHOICES, IMAGE_PRESETS, RESNET_IMAGE_PRESETS, TEXT_CHOICES,
                                    TEXT_PRESETS, Selection, freeze_all_except,
                                    image_layernorm_parameters, select_parameters)
from clipfit.methods.clipfit import CLIPFitModel, CLIPFitSettings
from clipfit.testing.tiny_clip import build_tiny_clip, build_vit_b16
from clipfit.training.config import get_cfg, merge_from_list


@pytest.fixture(scope="module")
def vit_b16():
    return build_vit_b16("meta")  # real architecture, no memory, no forward pass


def _expected_clipfit_names(text_blocks: int = 12, image_blocks: int = 12) -> set:
    text = {f"transformer.resblocks.{i}.mlp.c_proj.bias" for i in range(text_blocks)}
    image = {f"visual.{ln}.{w}" for ln in ("ln_pre", "ln_post") for w in ("weight", "bias")}
    image |= {
        f"visual.transformer.resblocks.{i}.{ln}.{w}"
        for i in range(image_blocks) for ln in ("ln_1", "ln_2") for w in ("weight", "bias")
    }
    return text | image


def test_clipfit_selection_is_designs_set_and_counts_46080(vit_b16):
    sel = select_parameters(vit_b16)
    assert set(sel.named_parameters()) == _expected_clipfit_names()
    assert sel.counts() == {"text": 6144, "image": 39936}
    assert sel.total == 46080
    assert "46,080" in "\n".join(sel.describe(vit_b16))


@pytest.mark.parametrize(
    "text, image, counts",
    [
        ("all_bias", "bias", {"text": 67584, "image": 102912}),  # (a): 0.17M in Table 5
        ("all_bias", "none", {"text": 67584, "image": 0}),  # (b): 67.6K
        ("ffn_bias", "none", {"text": 30720, "image": 0}),  # (c): 30.7K
        ("proj_bias", "none", {"text": 6144, "image": 0}),  # (d): 6.1K
        ("none", "layernorm", {"text": 0, "image": 39936}),
        ("none", "none", {"text": 0, "image": 0}),
    ],
)
def test_table5_strategies_and_ablations_count(vit_b16, text, image, counts):
    assert select_parameters(vit_b16, text, image).counts() == counts


def test_every_switch_selects_the_parameters_it_names(vit_b16):
    names = lambda **kw: set(select_parameters(vit_b16, **kw).named_parameters())  # noqa: E731
    ffn = names(text="ffn_bias", image="none")
    assert ffn == {f"transformer.resblocks.{i}.mlp.{l}.bias" for i in range(12) for l in ("c_fc", "c_proj")}
    all_text = names(text="all_bias", image="none")
    assert all(n.startswith("transformer.resblocks.") and n.endswith("bias") for n in all_text)
    assert {n.split(".", 3)[3] for n in all_text} == {
        "attn.in_proj_bias", "attn.out_proj.bias", "ln_1.bias", "ln_2.bias", "mlp.c_fc.bias", "mlp.c_proj.bias"
    }
    image_bias = names(text="none", image="bias")
    assert all(n.startswith("visual.") and n.endswith("bias") for n in image_bias)
    assert {"visual.ln_pre.bias", "visual.ln_post.bias"} <= image_bias
    every_bias = {n for n, _ in vit_b16.named_parameters() if n.startswith("visual.") and n.endswith("bias")}
    assert image_bias == every_bias
    assert names(text="none", image="layernorm") == {n for n in _expected_clipfit_names() if n.startswith("visual.")}


def test_layer_lists_pick_blocks_and_drop_outside_parameters(vit_b16):
    sel = select_parameters(vit_b16, text_layers=[0, -1], image_layers=[11])
    assert set(sel.groups["text"]) == {
        "transformer.resblocks.0.mlp.c_proj.bias", "transformer.resblocks.11.mlp.c_proj.bias"
    }
    assert set(sel.groups["image"]) == {
        f"visual.transformer.resblocks.11.{ln}.{w}" for ln in ("ln_1", "ln_2") for w in ("weight", "bias")
    }
    ends = select_parameters(vit_b16, text="none", image_layers=["pre", "post"])
    assert set(ends.groups["image"]) == {f"visual.{ln}.{w}" for ln in ("ln_pre", "ln_post") for w in ("weight", "bias")}
    assert set(select_parameters(vit_b16, text="none", image_layers=["pre"]).groups["image"]) == {
        "visual.ln_pre.weight", "visual.ln_pre.bias"}
    with pytest.raises(ValueError, match="TEXT_LAYERS lists 'pre'"):  # the text encoder has no such ends
        select_parameters(vit_b16, text_layers=["pre"])
    with pytest.raises(ValueError, match="TRAINER.CLIPFIT.IMAGE_LAYERS.*0 to 11"):
        select_parameters(vit_b16, image_layers=[12])
    with pytest.raises(ValueError, match="TEXT_PARAMS.*proj_bias"):
        select_parameters(vit_b16, text="bias")


def test_resnet_tunes_batchnorm_affine_and_says_so():
    model = build_tiny_clip("rn")
    sel = select_parameters(model)
    bn = {n for n, m in model.visual.named_modules() if type(m).__name__ == "BatchNorm2d"}
    assert set(sel.groups["image"]) == {f"visual.{m}.{w}" for m in bn for w in ("weight", "bias")}
    text = "\n".join(sel.describe(model))
    assert "BatchNorm" in text and "running statistics" in text
    blocks = select_parameters(model, text="none", image_layers=[0])  # layer1.0 only
    assert blocks.groups["image"] and all(n.startswith("visual.layer1.0.") for n in blocks.groups["image"])


def test_plus_ul_selection_and_freezing():
    model = build_tiny_clip()
    ul = image_layernorm_parameters(model)
    assert isinstance(ul, Selection) and not ul.groups["text"]
    assert set(ul.groups["image"]) == {n for n in _expected_clipfit_names(0, 2) if n.startswith("visual.")}
    freeze_all_except(model, ul.named_parameters())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(ul.groups["image"])


# Parameter selection as data: presets are patterns, PARAMS_INCLUDE / PARAMS_EXCLUDE add and remove


@pytest.mark.parametrize("arch", ["vit", "rn"])
def test_each_preset_selects_what_its_patterns_select(arch):
    model = build_tiny_clip(arch)
    image_presets = RESNET_IMAGE_PRESETS if arch == "rn" else IMAGE_PRESETS
    for text in TEXT_CHOICES:
        by_name = select_parameters(model, text, "none").named_parameters()
        by_pattern = select_parameters(model, "none", "none", include=TEXT_PRESETS[text]).named_parameters()
        assert list(by_name) == list(by_pattern), text
    for image in IMAGE_CHOICES:
        by_name = select_parameters(model, "none", image).named_parameters()
        by_pattern = select_parameters(model, "none", "none", include=image_presets[image]).named_parameters()
        assert list(by_name) == list(by_pattern), image
    assert select_parameters(model).patterns == {
        "text": ["transformer.resblocks.*.mlp.c_proj.bias"], "image": image_presets["layernorm"],
        "include": [], "exclude": []}


def test_patterns_tune_ln_final_c_fc_only_or_attention_biases(vit_b16):
    names = lambda **kw: set(select_parameters(vit_b16, **kw).named_parameters())  # noqa: E731
    assert names(text="none", image="none", include=["ln_final"]) == {"ln_final.weight", "ln_final.bias"}
    assert names(include=["ln_final"]) == _expected_clipfit_names() | {"ln_final.weight", "ln_final.bias"}
    assert names(text="none", image="none", include=["transformer.resblocks.*.mlp.c_fc.bias"]) == {
        f"transformer.resblocks.{i}.mlp.c_fc.bias" for i in range(12)}
    attention = names(text="none", image="none", include=["transformer.resblocks.*.attn.*bias"])
    assert attention == {f"transformer.resblocks.{i}.attn.{b}" for i in range(12)
                         for b in ("in_proj_bias", "out_proj.bias")}
    # a module name takes all of its parameters; excludes apply to presets and includes alike
    assert names(text="none", image="none", include=["transformer.resblocks.3.mlp.c_fc"]) == {
        "transformer.resblocks.3.mlp.c_fc.weight", "transformer.resblocks.3.mlp.c_fc.bias"}
    no_ln = names(text="all_bias", image="none", exclude=["transformer.resblocks.*.ln_[12]"])
    assert no_ln == names(text="all_bias", image="none") - {
        f"transformer.resblocks.{i}.{ln}.bias" for i in range(12) for ln in ("ln_1", "ln_2")}
    sel = select_parameters(vit_b16, image="none", include=["ln_final", "visual.ln_post"],
                            exclude=["transformer.resblocks.0.*"])
    assert "transformer.resblocks.0.mlp.c_proj.bias" not in sel.groups["text"]
    assert {"ln_final.weight", "ln_final.bias"} <= set(sel.groups["text"])
    assert set(sel.groups["image"]) == {"visual.ln_post.weight", "visual.ln_post.bias"}


def test_a_pattern_that_matches_nothing_is_an_error_listing_near_names(vit_b16):
    with pytest.raises(ValueError) as err:
        select_parameters(vit_b16, include=["transformer.resblocks.*.mlp.c_fc.bais"])
    msg = str(err.value)
    assert "TRAINER.CLIPFIT.PARAMS_INCLUDE pattern 'transformer.resblocks.*.mlp.c_fc.bais' matches no" in msg
    assert "transformer.resblocks.*.mlp.c_fc.bias" in msg.split("Near names:")[1]
    with pytest.raises(ValueError, match=r"PARAMS_EXCLUDE pattern 'ln_finl'.*Near names: ln_final"):
        select_parameters(vit_b16, exclude=["ln_finl"])
    with pytest.raises(ValueError, match="TRAINER.COOP.PARAMS_INCLUDE pattern 'visual.ln_mid'"):
        select_parameters(vit_b16, include=["visual.ln_mid"], key_prefix="TRAINER.COOP.")


def test_config_keys_reach_the_model_its_log_and_its_checkpoint_meta():
    cfg = get_cfg()
    merge_from_list(cfg, ["TRAINER.CLIPFIT.PARAMS_INCLUDE", "['ln_final']",
                          "TRAINER.CLIPFIT.PARAMS_EXCLUDE", "['visual.ln_pre']"])
    model = CLIPFitModel(build_tiny_clip(), ["a", "b"], settings=CLIPFitSettings.from_cfg(cfg.TRAINER.CLIPFIT))
    learned = set(model.learned_parameters())
    assert {"ln_final.weight", "ln_final.bias"} <= learned and "visual.ln_pre.weight" not in learned
    log = "\n".join(model.describe())
    assert "patterns text: ['transformer.resblocks.*.mlp.c_proj.bias']" in log
    assert "patterns include: ['ln_final']" in log and "patterns exclude: ['visual.ln_pre']" in log
    settings = model.checkpoint_settings()
    assert settings["patterns (expanded)"] == {
        "text": ["transformer.resblocks.*.mlp.c_proj.bias"], "image": IMAGE_PRESETS["layernorm"],
        "include": ["ln_final"], "exclude": ["visual.ln_pre"]}
    assert settings["TRAINER.CLIPFIT.PARAMS_INCLUDE"] == ["ln_final"]
    with pytest.raises(ValueError, match="CLIPFit parameter selection is empty"):
        CLIPFitModel(build_tiny_clip(), ["a", "b"], settings=CLIPFitSettings(
            text_params="none", image_params="none"))
