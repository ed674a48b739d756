"""CoOp, KgCoOp and CLIP-Adapter as modules: parameter counts, prompts, losses, +UL.

End-to-end runs through the trainers are in ``test_trainer_contract.py``.
"""
import copy
import functools

import pytest
import torch
import torch.nn as nn

from clipfit.methods.clip_adapter import CLIPAdapterModel, ResidualAdapter
from clipfit.training.config import get_cfg, merge_from_file
from clipfit.methods.openai_clip import build_model, convert_weights
from clipfit.methods.coop import CoOpModel, KgCoOpModel, kg_regulariser
from clipfit.methods.losses import kd_regulariser
from clipfit.methods.prompt_learner import PromptSettings as P
from clipfit.methods.text import class_text_features, tokenize
from clipfit.testing.tiny_clip import build_vit_b16, class_names, make_tiny_clip

PHRASE = "a photo of a"
NAMES = ["cat", "sea_bird", "hard-leaved pocket orchid"]  # 1, 2 and 6 BPE tokens
VIT_B16_IMAGE_LN = 39_936  # 26 LayerNorms x (768 gains + 768 biases)


@functools.lru_cache(maxsize=1)
def _tiny_clip_template():
    return build_model(make_tiny_clip()).float().eval()


def tiny_clip():
    """A fresh copy of one tiny random CLIP (building it is slower than copying)."""
    return copy.deepcopy(_tiny_clip_template())


def n_learned(model):
    return sum(p.numel() for p in model.learned_parameters().values())


def cfg_from(config_file, *opts):
    cfg = get_cfg()
    merge_from_file(cfg, f"configs/trainers/{config_file}")
    cfg.merge_from_list(list(opts))
    return cfg


# Parameter counts (ViT-B/16, random weights on the meta device) ----------------------

@pytest.mark.parametrize("model_class, config_file, expected", [
    (CoOpModel, "CoOp/vit_b16_ctxv1.yaml", 2_048),  # paper Table 7: 4 tokens x 512
    (CoOpModel, "CoOp/vit_b16_ep50_ctxv1.yaml", 2_048),
    (CoOpModel, "CoOp/vit_b16.yaml", 8_192),  # 16 tokens x 512
    (KgCoOpModel, "KgCoOp/vit_b16_ep100_ctxv1.yaml", 2_048),  # paper Table 7
    (CLIPAdapterModel, "CLIP_Adapter/vit_b16.yaml", 131_072),  # 512x128 + 128x512, no biases
])
@pytest.mark.parametrize("ul", [False, True])
def test_vit_b16_learned_parameter_counts_from_shipped_configs(model_class, config_file, expected, ul):
    cfg = cfg_from(config_file, "TRAINER.UPDATE_IMAGE_LN", ul, "DATASET.NAME", "DescribableTextures")
    model = model_class.from_cfg(build_vit_b16("meta"), class_names(10), cfg)
    assert n_learned(model) == expected + (VIT_B16_IMAGE_LN if ul else 0)
    clip_learned = [n for n, p in model.clip.named_parameters() if p.requires_grad]
    assert len(clip_learned) == (52 if ul else 0)
    assert all(".ln_" in f".{n}" or n.startswith("visual.ln_") for n in clip_learned)


def test_class_specific_context_count():
    model = CoOpModel(build_vit_b16("meta"), class_names(10), P(n_ctx=16, csc=True))
    assert n_learned(model) == 10 * 16 * 512


# Prompt assembly ------------------------------------------------------------------------

def test_init_from_phrase_equals_hand_crafted_prompt_features():
    clip = tiny_clip()
    model = CoOpModel(clip, NAMES, P(n_ctx=16, ctx_init=PHRASE))
    assert model.prompt_learner.n_ctx == 4  # the phrase decides, as in CoOp
    with torch.no_grad():
        learned = model.class_text_features()
    torch.testing.assert_close(learned, class_text_features(clip, PHRASE + " {}.", NAMES), rtol=0, atol=1e-6)


@pytest.mark.parametrize("position, text", [
    ("end", "a photo of a {}."),
    ("front", "{} a photo of a."),
    ("middle", "a photo {} of a."),  # context split in halves around the class tokens
])
def test_class_token_position_places_the_name(position, text):
    clip = tiny_clip()
    pl = CoOpModel(clip, NAMES, P(ctx_init=PHRASE, position=position)).prompt_learner
    expected = tokenize([text.format(n.replace("_", " ")) for n in NAMES])
    with torch.no_grad():
        torch.testing.assert_close(pl(), clip.token_embedding(expected.tokens), rtol=0, atol=0)
    assert torch.equal(pl.eot, expected.eot)


def test_random_context_and_csc_shapes():
    clip = tiny_clip()
    torch.manual_seed(0)
    generic = CoOpModel(clip, NAMES, P(n_ctx=8)).prompt_learner
    assert generic.ctx.shape == (8, 64) and 0.01 < generic.ctx.std().item() < 0.03
    csc = CoOpModel(clip, NAMES, P(n_ctx=8, csc=True)).prompt_learner
    assert csc.ctx.shape == (3, 8, 64)
    csc_init = CoOpModel(clip, NAMES, P(ctx_init=PHRASE, csc=True)).prompt_learner
    assert csc_init.ctx.shape == (3, 4, 64)
    assert torch.equal(csc_init.ctx[0], csc_init.ctx[2])  # every class starts from the phrase
    with torch.no_grad():
        assert csc.forward().shape[:2] == (3, int(csc.eot.max()) + 1)  # cut after the last EOT


def test_bad_options_name_their_config_keys():
    clip = tiny_clip()
    with pytest.raises(ValueError, match="CLASS_TOKEN_POSITION"):
        CoOpModel(clip, NAMES, P(position="start"))
    with pytest.raises(ValueError, match="KG_DISTANCE"):
        KgCoOpModel(clip, NAMES, distance="l1")
    with pytest.raises(ValueError, match="TRAINER.COOP.W"):
        KgCoOpModel(clip, NAMES, weight=-1.0)
    with pytest.raises(ValueError, match="N_CTX"):
        CoOpModel(clip, ["a " * 70], P(n_ctx=16))  # context + name longer than 77 tokens
    with pytest.raises(ValueError, match="REDUCTION"):
        CLIPAdapterModel(clip, NAMES, reduction=0)
    with pytest.raises(ValueError, match="RATIO"):
        CLIPAdapterModel(clip, NAMES, ratio=1.5)


# KgCoOp's term --------------------------------------------------------------------------

def test_kg_distances_cosine_is_code_euclidean_is_twice_it():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    cos = kg_regulariser(a, b, "cosine")
    assert torch.equal(cos, kd_regulariser(a, b))
    torch.testing.assert_close(cos, 1 - torch.nn.functional.cosine_similarity(a, b).mean())
    euclid = kg_regulariser(a, b, "euclidean")
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    torch.testing.assert_close(euclid, (unit(a) - unit(b)).pow(2).sum(-1).mean())
    torch.testing.assert_close(euclid, 2 * cos)
    assert kg_regulariser(a, a, "euclidean").abs() < 1e-6 and kg_regulariser(a, a).abs() < 1e-6


def test_kgcoop_loss_is_ce_plus_weighted_term():
    clip = tiny_clip()
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    same = KgCoOpModel(clip, NAMES, PHRASE + " {}.", 8.0, prompt=P(ctx_init=PHRASE))
    _, parts = same.loss(images, labels)
    assert parts["kg"].abs() < 1e-6  # initialised from the hand-crafted prompt itself
    model = KgCoOpModel(clip, NAMES, "a photo of a {}, a type of texture.", 8.0, prompt=P(ctx_init=PHRASE))
    loss, parts = model.loss(images, labels)
    assert parts["kg"] > 1e-4
    torch.testing.assert_close(loss.detach(), parts["ce"] + 8.0 * parts["kg"])
    coop_loss, coop_parts = CoOpModel(clip, NAMES, P(ctx_init=PHRASE)).loss(images, labels)
    torch.testing.assert_close(coop_loss.detach(), parts["ce"])  # CoOp: cross-entropy only
    assert set(coop_parts) == {"logits"}


# CLIP-Adapter ---------------------------------------------------------------------------

def test_adapter_blends_bottleneck_features_with_the_input():
    adapter = ResidualAdapter(32, reduction=4, ratio=0.2)
    assert [tuple(p.shape) for p in adapter.parameters()] == [(8, 32), (32, 8)]  # no biases
    x = torch.randn(3, 32)
    w1, w2 = adapter.fc[0].weight, adapter.fc[2].weight
    manual = 0.2 * torch.relu(torch.relu(x @ w1.t()) @ w2.t()) + 0.8 * x
    torch.testing.assert_close(adapter(x), manual)


def test_adapter_with_ratio_zero_is_zero_shot_clip():
    clip = tiny_clip()
    images = torch.randn(2, 3, 32, 32)
    model = CLIPAdapterModel(clip, NAMES, template="a photo of a {}.", ratio=0.0)
    with torch.no_grad():
        zero_shot = model.logits(images, class_text_features(clip, "a photo of a {}.", NAMES))
        torch.testing.assert_close(model.logits(images), zero_shot)
        assert not torch.allclose(CLIPAdapterModel(clip, NAMES, ratio=0.2).logits(images), zero_shot)


# One SGD step changes exactly the learned tensors ----------------------------------------

@pytest.mark.parametrize("build", [
    lambda clip, ul: CoOpModel(clip, NAMES, P(n_ctx=4), update_image_ln=ul),
    lambda clip, ul: CoOpModel(clip, NAMES, P(ctx_init=PHRASE, csc=True, position="middle"), ul),
    lambda clip, ul: KgCoOpModel(clip, NAMES, "a photo of a {}, a type of pet.", prompt=P(ctx_init=PHRASE),
                                 update_image_ln=ul),
    lambda clip, ul: CLIPAdapterModel(clip, NAMES, update_image_ln=ul),
], ids=["coop", "coop-csc-middle", "kgcoop", "clip-adapter"])
@pytest.mark.parametrize("ul", [False, True], ids=["", "UL"])
def test_one_sgd_step_changes_exactly_the_learned_tensors(build, ul):
    torch.manual_seed(0)
    model = build(tiny_clip(), ul)
    learned = model.learned_parameters()
    assert all(p.requires_grad for p in learned.values())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optim = torch.optim.SGD(learned.values(), lr=0.1)
    loss, _ = model.loss(torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2]))
    loss.backward()
    optim.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    learned_ids = {id(p) for p in learned.values()}
    expected = {n for n, p in model.named_parameters() if id(p) in learned_ids}
    assert changed == expected
    assert len(expected) == len(learned)
    if ul:
        assert sum(n.startswith("clip.visual.") for n in changed) == 2 * (2 * 2 + 2)  # tiny ViT: 2 blocks


@pytest.mark.parametrize("build", [
    lambda clip: CoOpModel(clip, NAMES, P(ctx_init=PHRASE, position="front"), update_image_ln=True),
    lambda clip: KgCoOpModel(clip, NAMES, prompt=P(n_ctx=4), update_image_ln=True),
    lambda clip: CLIPAdapterModel(clip, NAMES, update_image_ln=True),
], ids=["coop", "kgcoop", "clip-adapter"])
def test_half_precision_clip_keeps_learned_tensors_in_fp32(build):
    """PREC fp16 (on a GPU) holds CLIP as ``convert_weights`` does; the learned tensors stay fp32."""
    clip = tiny_clip()
    convert_weights(clip)
    model = build(clip)
    loss, _ = model.loss(torch.randn(2, 3, 32, 32).half(), torch.tensor([0, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.learned_parameters().items():
        assert p.dtype == torch.float32, name
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_random_context_is_drawn_from_the_cpu_generator_wherever_the_model_is():
    """CoOp draws its context on the CPU before .cuda(): a model already on another device
    (here "meta") must still advance the CPU generator exactly as that CPU draw does."""
    from clipfit.methods.prompt_learner import INIT_STD, PromptSettings, _initial_context

    embedding = nn.Embedding(10, 8, device="meta")
    torch.manual_seed(5)
    ctx, _ = _initial_context(embedding, PromptSettings(n_ctx=3), n_cls=2, context_length=77)
    after_ours = torch.get_rng_state()
    torch.manual_seed(5)
    nn.init.normal_(torch.empty(3, 8), std=INIT_STD)
    assert ctx.is_meta and torch.equal(after_ours, torch.get_rng_state())
