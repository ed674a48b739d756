"""CoCoOp, MaPLe, ProGrad, Tip-Adapter(-F) as modules: learned sets, the methods' arithmetic, bad options.

End-to-end runs through the trainers are in ``test_trainer_contract.py``.
"""
import copy
import functools
import warnings

import pytest
import torch
import torch.nn.functional as F

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from clip.model import build_model

from clipfit.methods.cocoop import CoCoOpModel
from clipfit.methods.maple import MaPLeModel
from clipfit.methods.prograd import ProGradModel, project_gradients, soft_cross_entropy
from clipfit.methods.prompt_learner import PromptSettings as P
from clipfit.methods.text import class_text_features
from clipfit.methods.tip_adapter import TipAdapterModel, TipSettings, build_cache
from clipfit.testing.tiny_clip import build_vit_b16, class_names, make_tiny_clip
from clipfit.training.config import get_cfg, merge_from_file

NAMES = ["cat", "sea_bird", "hard-leaved pocket orchid"]


@functools.lru_cache(maxsize=1)
def _tiny():
    return build_model(make_tiny_clip()).float().eval()


def tiny_clip():
    return copy.deepcopy(_tiny())


def cfg_from(config_file, *opts):
    cfg = get_cfg()
    merge_from_file(cfg, f"configs/trainers/{config_file}")
    cfg.merge_from_list(["DATASET.NAME", "DescribableTextures", *opts])
    return cfg


def learned(model):
    return {n: p.numel() for n, p in model.learned_parameters().items()}


# Learned sets at ViT-B/16 (meta device: shapes only) -----------------------------------

def test_cocoop_learns_context_and_meta_net_35360():
    model = CoCoOpModel.from_cfg(build_vit_b16("meta"), class_names(10),
                                 cfg_from("CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml"))
    assert learned(model) == {
        "prompt_learner.ctx": 4 * 512,
        "prompt_learner.meta_net.linear1.weight": 512 * 32, "prompt_learner.meta_net.linear1.bias": 32,
        "prompt_learner.meta_net.linear2.weight": 32 * 512, "prompt_learner.meta_net.linear2.bias": 512,
    }
    assert sum(learned(model).values()) == 35_360  # paper Table 7
    assert not any(p.requires_grad for p in model.clip.parameters())


def test_maple_learns_3_55m_at_its_defaults():
    model = MaPLeModel.from_cfg(build_vit_b16("meta"), class_names(10),
                                cfg_from("MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"))
    counts = learned(model)
    assert sum(counts.values()) == 3_555_072
    assert counts["prompt_learner.ctx"] == 2 * 512 and counts["prompt_learner.proj.weight"] == 768 * 512
    assert len([n for n in counts if n.startswith("prompt_learner.compound_prompts_text.")]) == 8
    assert len([n for n in counts if n.startswith("prompt_learner.compound_prompt_projections.")]) == 16
    assert any("3,555,072" in line for line in model.describe())
    shallow = MaPLeModel.from_cfg(build_vit_b16("meta"), class_names(10),
                                  cfg_from("MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml"))
    assert sum(learned(shallow).values()) == 1024 + 393_984 + 2 * (1024 + 393_984)  # depth 3


def test_prograd_learns_16_context_tokens():
    model = ProGradModel.from_cfg(build_vit_b16("meta"), class_names(10), cfg_from("ProGrad/vit_b16.yaml"))
    assert learned(model) == {"prompt_learner.ctx": 16 * 512}


# CoCoOp -------------------------------------------------------------------------------------

def test_cocoop_batched_text_passes_give_the_per_image_logits():
    torch.manual_seed(0)
    model = CoCoOpModel(tiny_clip(), NAMES, text_batch=1000)
    torch.nn.init.normal_(model.prompt_learner.meta_net.linear2.weight, std=0.5)  # a visible shift
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        batched = model.logits(images)
        model.text_batch = 1  # one image's prompts per pass, as CoCoOp's code
        single = model.logits(images)
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-4)  # fp32 summation order
    assert (batched[0] - batched[1]).abs().max() > 1e-3  # the prompts depend on the image


# MaPLe --------------------------------------------------------------------------------------

def test_maple_depth1_prompt_is_the_hand_crafted_one():
    clip = tiny_clip()
    model = MaPLeModel(clip, NAMES, n_ctx=2, ctx_init="a photo of a", depth=1)
    with torch.no_grad():
        torch.testing.assert_close(model.class_text_features(), class_text_features(clip, "a photo of a {}.", NAMES),
                                   rtol=0, atol=1e-6)
    deep = MaPLeModel(clip, NAMES, depth=2)
    with torch.no_grad():
        assert (deep.class_text_features() - model.class_text_features()).abs().max() > 1e-4  # deep prompts act
        assert deep.logits(torch.randn(2, 3, 32, 32)).shape == (2, 3)


# ProGrad ------------------------------------------------------------------------------------

def test_prograd_projection_removes_only_the_conflicting_part():
    g, d = torch.tensor([[1.0, 1.0]]), torch.tensor([[-1.0, 0.0]])  # conflict: cos < 0
    out = project_gradients([g], [d], 1.0)[0]
    torch.testing.assert_close(out, torch.tensor([[0.0, 1.0]]))
    assert torch.dot(out.flatten(), d.flatten()) == 0
    half = project_gradients([g], [d], 0.5)[0]
    torch.testing.assert_close(half, torch.tensor([[0.5, 1.0]]))
    agree = torch.tensor([[1.0, 0.5]])
    assert torch.equal(project_gradients([g], [agree], 1.0)[0], g)  # no conflict: unchanged


def test_prograd_soft_cross_entropy_and_template_init():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    expected = (-(F.softmax(t / 2, -1)) * F.log_softmax(s / 2, -1)).sum(1).mean() * 4
    torch.testing.assert_close(soft_cross_entropy(s, t, 2.0), expected)
    clip = tiny_clip()
    model = ProGradModel(clip, NAMES, P(n_ctx=6, ctx_init="template"), "DescribableTextures")
    ctx = model.prompt_learner.ctx.detach()
    assert model.template == "a texture of {}." and torch.equal(ctx[:3], torch.zeros(3, ctx.shape[1]))
    with torch.no_grad():  # zeros, then "a texture of": the prompt spells the phrase before the name
        words = clip.token_embedding(torch.tensor([320, 16505, 539]))  # BPE ids of "a texture of"
    torch.testing.assert_close(ctx[3:], words, rtol=0, atol=0)


# Tip-Adapter --------------------------------------------------------------------------------

def _tip(clip, learn=False, **kw):
    g = torch.Generator().manual_seed(0)
    keys = F.normalize(torch.randn(6, 32, generator=g), dim=-1)
    return TipAdapterModel(clip, NAMES, ["a photo of a {}."], keys, torch.tensor([0, 0, 1, 1, 2, 2]),
                           TipSettings(**kw), learn)


def test_tip_logits_cache_and_learned_set():
    clip = tiny_clip()
    model = _tip(clip, init_alpha=2.0, init_beta=3.0)
    assert model.learned_parameters() == {} and not any(p.requires_grad for p in model.parameters())
    f = F.normalize(torch.randn(4, 32), dim=-1)
    expected = 100 * f @ model.clip_weights.t() + 2.0 * torch.exp(-3.0 * (1 - f @ model.cache_keys.t())) @ \
        F.one_hot(torch.tensor([0, 0, 1, 1, 2, 2]), 3).float()
    torch.testing.assert_close(model.tip_logits(f, 2.0, 3.0), expected)
    tuned = _tip(clip, learn=True)
    assert learned(tuned) == {"cache_keys": 6 * 32}


def test_tip_search_finds_the_best_grid_point_first():
    model = _tip(tiny_clip(), search_scale=(3.0, 2.0), search_step=(5, 4))
    f = F.normalize(torch.randn(20, 32, generator=torch.Generator().manual_seed(1)), dim=-1)
    labels = torch.randint(0, 3, (20,), generator=torch.Generator().manual_seed(2))
    beta, alpha, acc = model.search(f, labels)
    betas, alphas = model.settings.grid()
    grid = [(int((model.tip_logits(f, a, b).argmax(1) == labels).sum()), b, a) for b in betas for a in alphas]
    best = max(c for c, _, _ in grid)
    assert (beta, alpha) == next((b, a) for c, b, a in grid if c == best)  # first maximum, beta outer
    assert acc == pytest.approx(100 * best / 20) and (model.beta, model.alpha) == (beta, alpha)


def test_tip_cache_averages_views_before_normalising():
    v1, v2 = torch.randn(4, 8), torch.randn(4, 8)
    labels = torch.tensor([1, 0, 1, 0])
    views = [[(v1[:2], labels[:2]), (v1[2:], labels[2:])], [(v2[:2], labels[:2]), (v2[2:], labels[2:])]]
    keys, got = build_cache(views, lambda x: x)
    torch.testing.assert_close(keys, F.normalize((v1 + v2) / 2, dim=-1))
    assert torch.equal(got, labels)
    with pytest.raises(RuntimeError, match="orders"):
        build_cache([[(v1, labels)], [(v2, labels.flip(0))]], lambda x: x)


# Bad option values name their keys ------------------------------------------------------------

@pytest.mark.parametrize("build, key", [
    (lambda c: CoCoOpModel(c, NAMES, text_batch=0), "TRAINER.COCOOP.TEXT_BATCH_SIZE"),
    (lambda c: CoCoOpModel(c, NAMES, n_ctx=0, ctx_init=""), "TRAINER.COCOOP.N_CTX"),
    (lambda c: MaPLeModel(c, NAMES, depth=0), "TRAINER.MAPLE.PROMPT_DEPTH"),
    (lambda c: MaPLeModel(c, NAMES, depth=3), "TRAINER.MAPLE.PROMPT_DEPTH"),  # 2 text layers
    (lambda c: ProGradModel(c, NAMES, P(), lam=1.5), "TRAINER.PROGRAD.LAMBDA"),
    (lambda c: ProGradModel(c, NAMES, P(), temperature=0.0), "TRAINER.PROGRAD.T"),
    (lambda c: ProGradModel(c, NAMES, P(), update_image_ln=True), "TRAINER.UPDATE_IMAGE_LN"),
    (lambda c: ProGradModel(c, NAMES, P(n_ctx=2, ctx_init="template"), "OxfordPets"), "TRAINER.COOP.N_CTX"),
    (lambda c: _tip(c, search_scale=(0.05, 3.0)), "TRAINER.TIP_ADAPTER.SEARCH_SCALE"),
    (lambda c: _tip(c, search_step=(0, 3)), "TRAINER.TIP_ADAPTER.SEARCH_STEP"),
    (lambda c: _tip(c, augment_epoch=0), "TRAINER.TIP_ADAPTER.AUGMENT_EPOCH"),
    (lambda c: _tip(c, init_alpha=-1.0), "TRAINER.TIP_ADAPTER.INIT_ALPHA"),
])
def test_bad_options_name_their_config_keys(build, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build(tiny_clip())


# Results tables --------------------------------------------------------------------------------

def test_tables_label_tip_adapter_columns_as_the_paper_and_order_them():
    from clipfit.experiments.results import RunKey, RunResult
    from clipfit.experiments.table_parts import group_methods

    runs = {RunKey("fewshot", "test", "dtd", 16, t, "vit_b16_dtd" if t.startswith("Tip") else "c", 1):
            RunResult("p", "finished", {"accuracy": 50.0}) for t in ("CLIPFit", "TipAdapterF", "TipAdapter", "MaPLe")}
    methods = group_methods(runs)
    assert [m.label for m in methods] == ["Tip-Adapter", "Tip-Adapter-F", "MaPLe", "CLIPFit"]
    assert [m.trainer for m in methods][:2] == ["TipAdapter", "TipAdapterF"]  # paper numbers: by trainer
