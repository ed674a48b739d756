"""MaPLe (Khattak et al., CVPR 2023): deep prompts in both encoders, the image ones projected from the text ones.

Text side: the first ``N_CTX`` tokens after SOS are learned (``ctx``, initialised from the
first ``N_CTX`` tokens of ``CTX_INIT`` while the rest of the phrase stays fixed text, as
in MaPLe's code), and before each block ``i = 1 .. PROMPT_DEPTH - 1`` those positions are
replaced by ``compound_prompts_text[i-1]``. Image side: ``proj(ctx)`` is appended after the
patch tokens, and before block ``i`` the last ``N_CTX`` tokens are replaced by
``compound_prompt_projections[i-1](compound_prompts_text[i-1])`` (text width -> image width).
Every projection starts from one copy of the same random layer, as in its code. ViT-B/16,
N_CTX 2, depth 9: 1,024 + 393,984 + 8 x (1,024 + 393,984) = 3,555,072 learned values.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from yacs.config import CfgNode

from clipfit.methods.addon import AddOnClassifier
from clipfit.methods.backbone import backbone
from clipfit.methods.options import MaPLeSettings, PromptSettings, from_node
from clipfit.methods.prompt_learner import PromptLearner
from clipfit.methods.text import encode_embeddings, normalize, tokenize
from clipfit.errors import ConfigValueError

CFG_PREFIX = "TRAINER.MAPLE."
MAX_INIT_TOKENS = 4  # MaPLe initialises from CTX_INIT only when N_CTX <= 4


class MaPLePromptLearner(PromptLearner):
    """Text context, deep text prompts and their projections to the image encoder."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], n_ctx: int = MaPLeSettings.n_ctx,
                 ctx_init: str = MaPLeSettings.ctx_init, depth: int = MaPLeSettings.depth):
        bb = backbone(clip_model)
        refused = bb.image.prompt_support()
        if refused:
            raise ConfigValueError(f"MaPLe's deep prompts are not defined on this backbone's image encoder: "
                                   f"{refused} (MODEL.BACKBONE.NAME).")
        n_text = len(bb.text.blocks)
        if not (isinstance(depth, int) and 1 <= depth <= n_text):
            raise ConfigValueError(f"{CFG_PREFIX}PROMPT_DEPTH is {depth!r}; use an integer from 1 (shallow) to the "
                             f"{n_text} text layers.")
        settings = PromptSettings(n_ctx=n_ctx, ctx_init=ctx_init, key_prefix=CFG_PREFIX)
        super().__init__(clip_model, classnames, settings)  # draws a random context first, as MaPLe
        text_width, vis_width = bb.text.width, bb.image.width
        device = bb.text.token_embedding.weight.device
        self.depth = depth
        self.proj = nn.Linear(text_width, vis_width).to(device)
        self.compound_prompts_text = nn.ParameterList(
            [nn.Parameter(torch.empty(self.n_ctx, text_width, device=device)) for _ in range(depth - 1)])
        for p in self.compound_prompts_text:
            nn.init.normal_(p, std=0.02)
        layer = nn.Linear(text_width, vis_width).to(device)
        self.compound_prompt_projections = nn.ModuleList([copy.deepcopy(layer) for _ in range(depth - 1)])

    @staticmethod
    def make_context(embedding: nn.Embedding, s: PromptSettings, n_cls: int, context_length: int
                     ) -> Tuple[torch.Tensor, str]:
        """The first ``N_CTX`` tokens of ``CTX_INIT`` (the whole phrase stays in the prompt), or
        random N(0, 0.02) with ``N_CTX`` X's when there is no phrase or ``N_CTX`` > 4."""
        phrase = s.ctx_init.replace("_", " ").strip()
        if not phrase or s.n_ctx > MAX_INIT_TOKENS:
            return PromptLearner.make_context(embedding, PromptSettings(s.n_ctx, "", key_prefix=s.key_prefix),
                                              n_cls, context_length)
        if s.n_ctx < 1:
            raise ConfigValueError(f"{s.key_prefix}N_CTX is {s.n_ctx}; use at least 1 context vector.")
        with torch.no_grad():
            tokens = embedding(tokenize([phrase], context_length).tokens.to(embedding.weight.device))
        return tokens[0, 1:1 + s.n_ctx].clone(), phrase

    def deep_prompts(self) -> Tuple[torch.Tensor, List[torch.Tensor], List[torch.Tensor]]:
        """``(image shallow prompt, deep text prompts, deep image prompts)``."""
        image_deep = [proj(p) for proj, p in zip(self.compound_prompt_projections, self.compound_prompts_text)]
        return self.proj(self.ctx), list(self.compound_prompts_text), image_deep


def replace_prompts(deep: Sequence[torch.Tensor], start: Optional[int]):
    """A block hook putting ``deep[i-1]`` (``[n, width]``) at positions ``start .. start+n`` of the
    hidden states ``[L, B, width]`` entering block ``i >= 1`` (``start`` None: the last ``n``)."""
    def hook(i: int, x: torch.Tensor) -> torch.Tensor:
        if i < 1 or i > len(deep):
            return x
        p = deep[i - 1].to(x.dtype).unsqueeze(1).expand(-1, x.shape[1], -1)
        if start is None:
            return torch.cat([x[: x.shape[0] - p.shape[0]], p])
        return torch.cat([x[:start], p, x[start + p.shape[0]:]])
    return hook


def encode_image_prompted(visual: nn.Module, images: torch.Tensor, shallow: torch.Tensor,
                          deep: Sequence[torch.Tensor], batch_first: bool = False) -> torch.Tensor:
    """CLIP's ViT forward with ``shallow`` (``[n, width]``) appended after the patch tokens and
    the last ``n`` tokens replaced by ``deep[i-1]`` before block ``i >= 1`` (``batch_first``: the
    blocks take ``[B, L, width]``, as open_clip's)."""
    dtype = visual.conv1.weight.dtype
    x = visual.conv1(images.type(dtype))
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = torch.cat([x, shallow.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
    x = visual.ln_pre(x).permute(1, 0, 2)
    hook = replace_prompts(deep, None)
    for i, block in enumerate(visual.transformer.resblocks):
        x = hook(i, x)
        x = block(x.transpose(0, 1)).transpose(0, 1) if batch_first else block(x)
    x = visual.ln_post(x.permute(1, 0, 2)[:, 0, :])
    return x @ visual.proj if visual.proj is not None else x


class MaPLeModel(AddOnClassifier):
    """Frozen CLIP with MaPLe's coupled prompts."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], n_ctx: int = MaPLeSettings.n_ctx,
                 ctx_init: str = MaPLeSettings.ctx_init, depth: int = MaPLeSettings.depth,
                 update_image_ln: bool = False):
        super().__init__(clip_model, update_image_ln)
        self.prompt_learner = MaPLePromptLearner(clip_model, classnames, n_ctx, ctx_init, depth)

    @classmethod
    def from_cfg(cls, clip_model: nn.Module, classnames: Sequence[str], cfg: CfgNode) -> "MaPLeModel":
        return cls(clip_model, classnames, **from_node(MaPLeSettings, cfg.TRAINER.MAPLE),
                   update_image_ln=bool(cfg.TRAINER.UPDATE_IMAGE_LN))

    def class_text_features(self) -> torch.Tensor:
        pl = self.prompt_learner
        deep_text = list(pl.compound_prompts_text)
        return normalize(encode_embeddings(self.clip, pl(), pl.eot, replace_prompts(deep_text, 1)))

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Prompted image features (not normalised), with gradient to the prompts."""
        shallow, _, deep_image = self.prompt_learner.deep_prompts()
        return encode_image_prompted(self.clip.visual, images, shallow, deep_image, backbone(self.clip).image.batch_first)

    def checkpoint_settings(self) -> Dict[str, Any]:
        pl = self.prompt_learner
        return {**super().checkpoint_settings(), CFG_PREFIX + "N_CTX": pl.n_ctx, CFG_PREFIX + "PROMPT_DEPTH": pl.depth}

    def method_lines(self) -> List[str]:
        pl = self.prompt_learner
        return ["MaPLe design: Multi-modal Prompt Learning"] + pl.describe()[1:] + [
            f"Prompt depth: {pl.depth} ({CFG_PREFIX}PROMPT_DEPTH), projections {pl.proj.in_features} -> "
            f"{pl.proj.out_features}",
        ]
