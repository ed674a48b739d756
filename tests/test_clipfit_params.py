"""Parameter selection: DESIGN.md's tuned set, Table 5's strategies, layer lists, ResNets."""
from __future__ import annotations

import pytest

from clipfit.methods.params import (Selection, freeze_all_except, image_layernorm_parameters,
                            select_parameters)
from clipfit.testing.tiny_clip import build_tiny_clip, build_vit_b16


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
