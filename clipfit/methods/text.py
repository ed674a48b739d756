"""The one text path every trainer uses: tokenise prompts, encode them, normalise.

CLIP's text transformer is causal and reads its feature at the end-of-text (EOT)
token, so positions after the last EOT of a batch of prompts never influence the
result. :func:`encode_embeddings` therefore runs only the first ``max(eot) + 1``
positions (with the matching corner of the causal mask): the features equal those of
the full 77-token pass, at a fraction of the cost. It takes token embeddings, so
prompt learners (CoOp) can feed their learned context vectors; :func:`encode_tokens`
is the plain path from token ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn

from clipfit.methods.openai_clip import CLIP, clip_api
from clipfit.methods.templates import class_prompts
from clipfit.errors import UserError


@dataclass
class TokenizedPrompts:
    """Token ids cut after the last EOT of the batch, and each prompt's EOT position."""

    tokens: torch.Tensor  # [K, L] long, L = max(eot) + 1 <= context length
    eot: torch.Tensor  # [K] long

    def to(self, device: torch.device) -> "TokenizedPrompts":
        return TokenizedPrompts(self.tokens.to(device), self.eot.to(device))

    def __len__(self) -> int:
        return self.tokens.shape[0]


class PromptTooLongError(UserError, RuntimeError):
    """A prompt with more tokens than the text encoder's context."""

    def __str__(self) -> str:
        return self.args[0]


def token_count(prompt: str) -> int:
    """Tokens of ``prompt`` in CLIP's tokenizer, start and end tokens included."""
    return len(clip_api._tokenizer.encode(prompt)) + 2


def tokenize(prompts: Sequence[str], context_length: int = 77) -> TokenizedPrompts:
    """Tokenise with CLIP's tokenizer; the EOT token has the largest id in each row.

    A prompt longer than ``context_length`` tokens raises :class:`PromptTooLongError`."""
    try:
        full = clip_api.tokenize(list(prompts), context_length=context_length).long()
    except RuntimeError as err:  # clip's message names neither the token count nor the context
        for prompt in prompts:
            n = token_count(prompt)
            if n > context_length:
                raise PromptTooLongError(
                    f"The prompt {prompt!r} has {n} tokens; CLIP's text encoder takes at most {context_length}"
                ) from err
        raise
    eot = full.argmax(dim=-1)
    return TokenizedPrompts(full[:, : int(eot.max()) + 1].contiguous(), eot)


def tokenize_classes(template: str, classnames: Sequence[str], context_length: int = 77) -> TokenizedPrompts:
    """Tokenised class prompts (``template`` filled with each class name); a class whose prompt is
    too long raises :class:`PromptTooLongError` naming the class, the template and the count."""
    prompts = class_prompts(template, classnames)
    try:
        return tokenize(prompts, context_length)
    except PromptTooLongError as err:
        name, prompt = next((c, p) for c, p in zip(classnames, prompts) if token_count(p) > context_length)
        raise PromptTooLongError(
            f"The class name {name!r} is too long for CLIP's text encoder: with the template {template!r} "
            f"its prompt has {token_count(prompt)} tokens, more than the {context_length} the encoder takes. "
            "Shorten the class name (in the dataset's class-name file or split) or the template."
        ) from err


def causal_mask(length: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """CLIP's additive causal mask for ``length`` positions (-inf above the diagonal)."""
    return torch.full((length, length), float("-inf"), dtype=dtype, device=device).triu_(1)


BlockHook = Callable[[int, torch.Tensor], torch.Tensor]


def encode_embeddings(model: nn.Module, embeddings: torch.Tensor, eot: torch.Tensor,
                      before_block: Optional[BlockHook] = None) -> torch.Tensor:
    """Text features (not normalised) of prompt embeddings ``[K, L, width]`` through the text tower
    of ``model`` (any backbone, :mod:`clipfit.methods.backbone`); arguments as
    :func:`openai_encode_embeddings`."""
    from clipfit.methods.backbone import backbone  # backbone builds on this module

    return backbone(model).text.encode_embeddings(embeddings, eot, before_block)


def openai_encode_embeddings(model: CLIP, embeddings: torch.Tensor, eot: torch.Tensor,
                             before_block: Optional[BlockHook] = None) -> torch.Tensor:
    """Text features (not normalised) of prompt embeddings ``[K, L, width]`` on OpenAI's CLIP.

    ``L`` may be shorter than the context length as long as every EOT position is
    below it; ``eot`` holds each row's EOT position. Same arithmetic as
    ``CLIP.encode_text`` on the first ``L`` positions. ``before_block(i, x)``, if given,
    may replace the hidden states ``x`` (``[L, K, width]``) entering block ``i`` (deep prompts).
    """
    dtype = model.dtype
    length = embeddings.shape[1]
    x = embeddings.type(dtype) + model.positional_embedding[:length].type(dtype)
    x = x.permute(1, 0, 2)  # NLD -> LND
    mask = causal_mask(length, x.dtype, x.device)
    for i, block in enumerate(model.transformer.resblocks):
        if before_block is not None:
            x = before_block(i, x)
        h = block.ln_1(x)
        x = x + block.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        x = x + block.mlp(block.ln_2(x))
    x = model.ln_final(x.permute(1, 0, 2)).type(dtype)
    return x[torch.arange(x.shape[0], device=x.device), eot] @ model.text_projection


def encode_tokens(model: nn.Module, prompts: TokenizedPrompts) -> torch.Tensor:
    """Text features (not normalised) of prompts tokenised by the model's own tokenizer."""
    from clipfit.methods.backbone import backbone

    text = backbone(model).text
    return text.encode_embeddings(text.token_embedding(prompts.tokens), prompts.eot)


def normalize(features: torch.Tensor) -> torch.Tensor:
    """Features scaled to unit L2 norm along the last dimension."""
    return features / features.norm(dim=-1, keepdim=True)


def class_text_features(model: nn.Module, template: str, classnames: Sequence[str]) -> torch.Tensor:
    """Normalised text features ``[K, embed_dim]`` of the class prompts (no gradient)."""
    from clipfit.methods.backbone import backbone

    text = backbone(model).text
    prompts = text.tokenize_classes(template, classnames).to(text.positional_embedding.device)
    with torch.no_grad():
        return normalize(encode_tokens(model, prompts))
