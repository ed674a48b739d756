"""CLIPFit on a plain CLIP: the loss against independent computations, gradients, one step."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from clipfit.training.config import get_cfg
from clipfit.engine import build_optimizer
from clipfit.methods.clipfit import CLIPFitModel, CLIPFitSettings
from clipfit.methods.openai_clip import clip_api
from clipfit.testing.tiny_clip import build_tiny_clip, class_names
from clipfit.methods.text import encode_embeddings, encode_tokens, tokenize

TEMPLATE = "a photo of a {}, a type of texture."
NAMES = class_names(5)


def _batch(seed: int = 0, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % len(NAMES)


def _perturb(params, seed: int = 1, scale: float = 0.05) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params.values():
            p.add_(scale * torch.randn(p.shape, generator=g))


def _full_prompts():
    return clip_api.tokenize([TEMPLATE.format(n.replace("_", " ")) for n in NAMES])


def _truncated_clip(model: nn.Module, length: int) -> nn.Module:
    """A copy of ``model`` whose own ``encode_text`` runs on ``length`` positions."""
    m = copy.deepcopy(model)
    m.positional_embedding = nn.Parameter(m.positional_embedding[:length].detach().clone())
    for block in m.transformer.resblocks:
        block.attn_mask = block.attn_mask[:length, :length]
    return m


def _normed(x):
    return x / x.norm(dim=-1, keepdim=True)


def _independent_loss(model, frozen_model, images, labels, beta, length=77):
    """CE(exp(s) cos) + beta (1 - mean cos(w, w_clip)) with CLIP's own encode_* methods."""
    tokens = _full_prompts()[:, :length]
    run, ref = (model, frozen_model) if length == 77 else (
        _truncated_clip(model, length), _truncated_clip(frozen_model, length))
    text = _normed(run.encode_text(tokens))
    with torch.no_grad():
        old = _normed(ref.encode_text(tokens))
    logits = model.logit_scale.exp() * _normed(model.encode_image(images)) @ text.t()
    return F.cross_entropy(logits, labels) + beta * (1 - F.cosine_similarity(text, old).mean())


@pytest.mark.parametrize("arch", ["vit", "rn"])
def test_loss_equals_independent_ce_plus_8_kd_in_fp32(arch):
    clip_model = build_tiny_clip(arch, seed=2)
    frozen = copy.deepcopy(clip_model)
    model = CLIPFitModel(clip_model, NAMES, TEMPLATE)
    _perturb(model.learned_parameters())
    images, labels = _batch()
    loss, parts = model.loss(images, labels)
    assert parts["reg"] > 1e-4  # the perturbation moved the text features
    length = int(_full_prompts().argmax(-1).max()) + 1
    # CLIP's own code on the same positions: equal within 1e-6
    same_positions = _independent_loss(_truncated_clip(clip_model, 77), frozen, images, labels, 8.0, length)
    assert abs(loss.item() - same_positions.item()) <= 1e-6
    # the straightforward 77-token computation: equal up to fp32 rounding
    full = _independent_loss(clip_model, frozen, images, labels, 8.0)
    assert abs(loss.item() - full.item()) <= 1e-5 * max(1.0, abs(full.item()))


def _gradient_tolerance(reference: torch.Tensor, terms: int) -> float:
    """fp32 summation-order bound for a gradient reduced over ``terms`` products.

    Reordering a sum of K terms changes it by at most ~K * eps * sum|terms| (the
    classic gamma_K bound); each term is at most the tensor's largest entry here, so
    we allow K * eps * max|g| per entry, relative to the gradient's magnitude rather
    than to each (possibly near-zero) entry.
    """
    return terms * torch.finfo(torch.float32).eps * reference.abs().max().item()


def test_gradients_of_every_tuned_tensor_match_the_77_token_computation():
    clip_model = build_tiny_clip(seed=4)
    frozen = copy.deepcopy(clip_model)
    model = CLIPFitModel(clip_model, NAMES, TEMPLATE)
    _perturb(model.learned_parameters())
    images, labels = _batch(1)
    params = model.learned_parameters()
    ours = torch.autograd.grad(model.loss(images, labels)[0], list(params.values()))
    theirs = torch.autograd.grad(_independent_loss(clip_model, frozen, images, labels, 8.0), list(params.values()))
    # The longest reduction in the backward pass: a text bias gradient sums over
    # every class prompt and all 77 positions (5 x 77 = 385 terms): 385 eps = 4.6e-5
    # of max|g|. Measured here: at most 2.1e-6 of max|g| (1 or 2 threads), while a
    # 1% error is 1e-2 and dropping the KD term moves the text gradients by ~8e-2.
    terms = len(NAMES) * clip_model.context_length

    def close(a: torch.Tensor, b: torch.Tensor) -> bool:
        return (a - b).abs().max().item() <= _gradient_tolerance(b, terms)

    for name, a, b in zip(params, ours, theirs):
        assert close(a, b), name
        assert not close(a * 1.01, b), name  # the test still sees a 1% error
    without_kd = torch.autograd.grad(
        _independent_loss(clip_model, frozen, images, labels, 0.0), list(params.values()))
    text = [i for i, n in enumerate(params) if n.startswith("transformer.")]
    assert text and not any(close(ours[i], without_kd[i]) for i in text)  # a dropped term fails


@pytest.mark.parametrize("reg", ["kd", "mse"])
def test_regulariser_is_zero_before_the_first_step(reg):
    model = CLIPFitModel(build_tiny_clip(), NAMES, TEMPLATE, CLIPFitSettings(reg=reg))
    _, parts = model.loss(*_batch())
    assert abs(parts["reg"].item()) <= 1e-7


def test_mse_variant_equals_independent_computation():
    clip_model = build_tiny_clip(seed=5)
    original = {n: p.detach().clone() for n, p in clip_model.named_parameters()}
    model = CLIPFitModel(clip_model, NAMES, TEMPLATE, CLIPFitSettings(text_params="ffn_bias", reg="mse", beta=3.0))
    _perturb(model.learned_parameters())
    images, labels = _batch(2)
    loss, parts = model.loss(images, labels)
    text_biases = list(model.selection.groups["text"])
    assert len(text_biases) == 4  # c_fc and c_proj of 2 blocks
    mse = sum(((original[n] - clip_model.get_parameter(n)) ** 2).sum() for n in text_biases) / len(text_biases)
    text = _normed(clip_model.encode_text(_full_prompts()))
    logits = clip_model.logit_scale.exp() * _normed(clip_model.encode_image(images)) @ text.t()
    expected = F.cross_entropy(logits, labels) + 3.0 * mse
    assert abs(parts["reg"].item() - mse.item()) <= 1e-7
    assert abs(loss.item() - expected.item()) <= 1e-5
    with pytest.raises(ValueError, match="REG mse"):
        CLIPFitModel(build_tiny_clip(), NAMES, TEMPLATE, CLIPFitSettings(text_params="none", reg="mse"))


@pytest.mark.parametrize(
    "arch, text, image",
    [("vit", "proj_bias", "layernorm"), ("vit", "all_bias", "bias"), ("vit", "ffn_bias", "none"),
     ("vit", "none", "layernorm"), ("rn", "proj_bias", "layernorm")],
)
def test_one_sgd_step_changes_exactly_the_tuned_tensors(arch, text, image):
    clip_model = build_tiny_clip(arch, seed=6)
    model = CLIPFitModel(clip_model, NAMES, TEMPLATE, CLIPFitSettings(text_params=text, image_params=image))
    tuned = model.learned_parameters()
    before = {k: v.clone() for k, v in clip_model.state_dict().items()}  # parameters and BN statistics
    optim = build_optimizer(list(tuned.values()), get_cfg().OPTIM)
    model.train()
    loss, _ = model.loss(*_batch(3))
    optim.zero_grad()
    loss.backward()
    optim.step()
    changed = {k for k, v in clip_model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == set(tuned)
    assert all(p.grad is None for n, p in clip_model.named_parameters() if n not in tuned)
    assert set(optim.state) == set(tuned.values())  # no optimiser state for frozen tensors
    assert not any(m.training for m in clip_model.modules())  # BatchNorm statistics stay frozen


def test_text_encoder_truncation_equals_full_77_tokens():
    model = build_tiny_clip(seed=7)
    prompts = [TEMPLATE.format(n) for n in NAMES] + ["a much longer prompt " * 5 + "with many words."]
    full_tokens = clip_api.tokenize(prompts)
    short = tokenize(prompts)
    assert short.tokens.shape[1] == int(full_tokens.argmax(-1).max()) + 1 < 77
    with torch.no_grad():
        full = model.encode_text(full_tokens)
        assert torch.allclose(encode_tokens(model, short), full, rtol=0, atol=1e-5)
        # the embedding path (CoOp feeds learned context vectors at positions 1..4)
        g = torch.Generator().manual_seed(0)
        emb = model.token_embedding(full_tokens)
        emb[:, 1:5] = 0.02 * torch.randn(emb[:, 1:5].shape, generator=g)
        x = emb + model.positional_embedding
        x = model.ln_final(model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2))
        expected = x[torch.arange(len(prompts)), short.eot] @ model.text_projection
        got = encode_embeddings(model, emb[:, : short.tokens.shape[1]], short.eot)
        assert torch.allclose(got, expected, rtol=0, atol=1e-5)


def test_no_second_clip_and_frozen_features_are_the_initial_ones():
    clip_model = build_tiny_clip(seed=8)
    n_clip = sum(p.numel() for p in clip_model.parameters())
    model = CLIPFitModel(clip_model, NAMES, TEMPLATE)
    assert sum(p.numel() for p in model.parameters()) == n_clip
    with torch.no_grad():
        initial = _normed(clip_model.encode_text(_full_prompts()))
    assert torch.allclose(model.frozen_text_features, initial, atol=1e-6)
    _perturb(model.learned_parameters())
    assert torch.allclose(model.frozen_text_features, initial, atol=1e-6)  # a cache, not recomputed
    # with the image encoder frozen no autograd graph is built through it
    frozen_image = CLIPFitModel(build_tiny_clip(), NAMES, TEMPLATE, CLIPFitSettings(image_params="none"))
    assert not frozen_image.image_features(_batch()[0]).requires_grad
