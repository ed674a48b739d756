"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context shifted per image by a small meta-net.

Each image's normalised feature ``x`` goes through the meta-net
``Linear(d, d/16) -> ReLU -> Linear(d/16, width)``; its output ``pi(x)`` is added to
every context vector, ``v_m(x) = v_m + pi(x)``, so each image has its own class
prompts ``[SOS] v_1(x) ... v_M(x) CLASS . [EOT]`` and its own class features. The loss
is cross-entropy on ``exp(logit_scale) * cos``. Parameter names follow CoCoOp's code
(``prompt_learner.ctx``, ``prompt_learner.meta_net.linear1/linear2``); ViT-B/16 with 4
context tokens learns 2,048 + 16,416 + 16,896 = 35,360 values.

Cost: every image needs all K class prompts encoded. CoCoOp's code encodes them image by
image; here the prompts of several images go through the text encoder together, at most
``text_batch`` prompts per pass (``TRAINER.COCOOP.TEXT_BATCH_SIZE``). Each prompt's
feature depends only on its own tokens, so the result is the same (up to fp32 summation
order) while the number of passes drops by ``text_batch // K``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from yacs.config import CfgNode

from clipfit.methods.addon import AddOnClassifier
from clipfit.methods.backbone import backbone
from clipfit.methods.options import CoCoOpSettings, PromptSettings, from_node
from clipfit.methods.prompt_learner import PromptLearner
from clipfit.methods.text import encode_embeddings, normalize
from clipfit.errors import ConfigValueError

CFG_PREFIX = "TRAINER.COCOOP."


class CoCoOpPromptLearner(PromptLearner):
    """CoOp's generic context (class tokens at the end) plus the meta-net."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], n_ctx: int = CoCoOpSettings.n_ctx,
                 ctx_init: str = CoCoOpSettings.ctx_init):
        settings = PromptSettings(n_ctx=n_ctx, ctx_init=ctx_init, key_prefix=CFG_PREFIX)
        super().__init__(clip_model, classnames, settings)  # draws the context first, as CoCoOp
        bb = backbone(clip_model)
        vis_dim, ctx_dim = bb.image.embed_dim, bb.text.width
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, vis_dim // 16)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(vis_dim // 16, ctx_dim)),
        ])).to(bb.text.token_embedding.weight.device)

    def conditional(self, image_features: torch.Tensor) -> torch.Tensor:
        """Prompt embeddings ``[B, n_cls, L, width]`` for normalised image features ``[B, d]``."""
        dtype = self.token_prefix.dtype
        shift = self.meta_net(image_features.to(self.meta_net.linear1.weight.dtype))  # [B, width]
        ctx = (self.ctx.unsqueeze(0) + shift.unsqueeze(1)).to(dtype)  # [B, n_ctx, width]
        b, k = ctx.shape[0], self.n_cls
        return torch.cat([
            self.token_prefix.unsqueeze(0).expand(b, -1, -1, -1),
            ctx.unsqueeze(1).expand(-1, k, -1, -1),
            self.token_suffix.unsqueeze(0).expand(b, -1, -1, -1),
        ], dim=2)


class CoCoOpModel(AddOnClassifier):
    """Frozen CLIP, image-conditional prompts; no class features shared by all images."""

    encoder_methods = ("image_features", "conditional_text_features")

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], n_ctx: int = CoCoOpSettings.n_ctx,
                 ctx_init: str = CoCoOpSettings.ctx_init, text_batch: int = CoCoOpSettings.text_batch,
                 update_image_ln: bool = False):
        if not (isinstance(text_batch, int) and text_batch >= 1):
            raise ConfigValueError(f"{CFG_PREFIX}TEXT_BATCH_SIZE is {text_batch!r}; use an integer >= 1.")
        super().__init__(clip_model, update_image_ln)
        self.prompt_learner = CoCoOpPromptLearner(clip_model, classnames, n_ctx, ctx_init)
        self.text_batch = text_batch

    @classmethod
    def from_cfg(cls, clip_model: nn.Module, classnames: Sequence[str], cfg: CfgNode) -> "CoCoOpModel":
        return cls(clip_model, classnames, **from_node(CoCoOpSettings, cfg.TRAINER.COCOOP),
                   update_image_ln=bool(cfg.TRAINER.UPDATE_IMAGE_LN))

    def class_text_features(self) -> Optional[torch.Tensor]:
        """None: CoCoOp's class features depend on the image (see :meth:`logits`)."""
        return None

    def conditional_text_features(self, image_features: torch.Tensor) -> torch.Tensor:
        """Normalised class features per image ``[B, n_cls, embed_dim]`` (``image_features`` normalised)."""
        pl = self.prompt_learner
        per_pass = max(1, self.text_batch // pl.n_cls)  # images whose prompts share one pass
        chunks = []
        for part in image_features.split(per_pass):
            prompts = pl.conditional(part)
            b, k = prompts.shape[:2]
            features = encode_embeddings(self.clip, prompts.flatten(0, 1), pl.eot.repeat(b))
            chunks.append(normalize(features.float()).view(b, k, -1))
        return torch.cat(chunks)

    def logits(self, images: torch.Tensor, text_features: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``exp(logit_scale) * cos(image_i, class_k | image_i)`` (fp32); ``text_features`` is ignored."""
        image = normalize(self.image_features(images).float())
        text = self.conditional_text_features(image)
        bb = backbone(self.clip)
        logits = bb.logit_scale.float().exp() * torch.einsum("bd,bkd->bk", image, text)
        return logits if bb.logit_bias is None else logits + bb.logit_bias.float()

    def checkpoint_settings(self) -> Dict[str, Any]:
        return {**super().checkpoint_settings(), CFG_PREFIX + "N_CTX": self.prompt_learner.n_ctx}

    def method_lines(self) -> List[str]:
        mn = self.prompt_learner.meta_net
        return self.prompt_learner.describe() + [
            f"Meta-net: {mn.linear1.in_features} -> {mn.linear1.out_features} -> {mn.linear2.out_features}",
            f"Text encoder: at most {self.text_batch} prompts per pass ({CFG_PREFIX}TEXT_BATCH_SIZE)",
        ]
