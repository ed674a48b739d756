"""One adapter per backbone family: what the methods need from a CLIP, whoever built it.

The methods never ask which library built the model: they ask :func:`backbone` for its
text tower (token embedding, positional embedding, blocks, final norm, projection,
tokenizer, which position is read) and its image tower (forward, normalisation layers,
blocks, MaPLe's prompted forward where it is defined), and for the logit scale and bias.

Families:

- ``openai``: OpenAI's ``clip.model.CLIP`` (ViT or ResNet), the default; its paths are the
  ones the per-batch parity with the reference code was measured on.
- open_clip models (built by :mod:`clipfit.methods.open_clip_loader`, which attaches an
  :class:`OpenCLIPSpec`): the text tower is open_clip's own transformer (on the model, or
  ``model.text`` for ``custom_text`` models); the image tower is open_clip's ViT
  (``vit``, OpenAI's attribute names), a timm ViT trunk (``timm-vit``: SigLIP, SigLIP 2,
  EVA02), a timm ConvNeXt trunk (``convnext``) or the modified ResNet (``resnet``).

A method that is not defined on a tower asks its ``*_support()`` and refuses with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

from clipfit.methods.openai_clip import CLIP, ModifiedResNet, convert_weights
from clipfit.methods.templates import class_prompts
from clipfit.methods.text import (BlockHook, PromptTooLongError, TokenizedPrompts, causal_mask,
                                  openai_encode_embeddings, token_count, tokenize,
                                  tokenize_classes)
from clipfit.errors import ConfigValueError

# CLIPFit's image "layernorm" preset per image family: every normalisation layer, gain and bias
IMAGE_NORM_PATTERNS: Dict[str, List[str]] = {
    "vit": ["visual.ln_pre", "visual.transformer.resblocks.*.ln_[12]", "visual.ln_post"],
    "timm-vit": [  # SigLIP's MAP head has a norm; EVA02 adds sub-LNs in attention and SwiGLU
        "visual.trunk.norm_pre", "visual.trunk.blocks.*.norm[12]", "visual.trunk.blocks.*.attn.norm",
        "visual.trunk.blocks.*.mlp.norm", "visual.trunk.norm", "visual.trunk.fc_norm",
        "visual.trunk.attn_pool.norm",
    ],
    "convnext": [  # stem LayerNorm2d, each downsampling norm, each block's norm, the head's norm
        "visual.trunk.stem.1", "visual.trunk.stages.*.downsample.0", "visual.trunk.stages.*.blocks.*.norm",
        "visual.trunk.head.norm",
    ],
    # BatchNorm: bn1-bn3 of the stem and of each bottleneck, and each downsampling branch's norm
    "resnet": ["visual.bn[123]", "visual.layer*.bn[123]", "visual.layer*.downsample.1"],
}
# image parameters after the blocks (IMAGE_LAYERS "post"); the rest outside the blocks are "pre"
_POST_PREFIXES = ("visual.ln_post.", "visual.attnpool.", "visual.proj", "visual.head.", "visual.trunk.norm.",
                  "visual.trunk.fc_norm.", "visual.trunk.attn_pool.", "visual.trunk.head.")


@dataclass
class OpenCLIPSpec:
    """What the loader knows about an open_clip model that its modules do not say."""

    arch: str  # open_clip's model name, e.g. "ViT-B-16"
    tag: str  # pretrained tag, "" for a local file or random weights
    quick_gelu: bool  # the activation the text (and native ViT) towers were built with
    preprocess: Dict[str, Any]  # size, mean, std, interpolation, resize_mode
    tokenizer: Callable[[List[str]], torch.Tensor]
    tokenizer_is_clip_bpe: bool  # CLIP's BPE ids (SOS, EOT the largest id), as OpenAI's tokenizer
    notes: List[str] = field(default_factory=list)


SPEC_ATTR = "clipfit_open_clip_spec"


class TextTower:
    """OpenAI's text transformer (sequence-first blocks, causal, feature at the EOT token)."""

    prefix = ""  # of its parameter names in the CLIP model

    def __init__(self, model: nn.Module):
        self.model = model
        self.module = model

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.module.token_embedding

    @property
    def positional_embedding(self) -> torch.Tensor:
        return self.module.positional_embedding

    @property
    def context_length(self) -> int:
        return int(self.module.context_length)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.module.transformer.resblocks

    @property
    def width(self) -> int:
        return int(self.token_embedding.embedding_dim)

    def prompt_support(self) -> Optional[str]:
        """None when learned prompt contexts (CoOp's layout ``[SOS] ctx CLASS . [EOT]``, CLIP's BPE
        ids) are defined on this tower; else why not."""
        return None

    def tokenize(self, prompts: Sequence[str]) -> TokenizedPrompts:
        return tokenize(prompts, self.context_length)

    def token_count(self, prompt: str) -> int:
        return token_count(prompt)

    def tokenize_classes(self, template: str, classnames: Sequence[str]) -> TokenizedPrompts:
        """Tokenised class prompts (:func:`clipfit.methods.text.tokenize_classes`)."""
        return tokenize_classes(template, classnames, self.context_length)

    def encode_embeddings(self, embeddings: torch.Tensor, eot: torch.Tensor,
                          before_block: Optional[BlockHook] = None) -> torch.Tensor:
        return openai_encode_embeddings(self.model, embeddings, eot, before_block)


class OpenCLIPTextTower(TextTower):
    """open_clip's text transformer: batch-first blocks, causal or not, read where its pooling says."""

    def __init__(self, model: nn.Module, spec: OpenCLIPSpec):
        super().__init__(model)
        self.spec = spec
        self.module = getattr(model, "text", model)
        self.prefix = "text." if self.module is not model else ""
        if self.module is model:  # CLIP: the text tower's attributes live on the model
            self.pool_type, self.eos_id, self.causal = model.text_pool_type, model.text_eos_id, model.attn_mask is not None
        else:
            self.pool_type, self.eos_id = self.module.pool_type, self.module.eos_id
            self.causal = self.module.attn_mask is not None

    @property
    def dtype(self) -> torch.dtype:
        return self.token_embedding.weight.dtype

    def prompt_support(self) -> Optional[str]:
        if not (self.causal and self.pool_type == "argmax" and self.spec.tokenizer_is_clip_bpe):
            return (f"the text tower of {self.spec.arch} reads its feature at position '{self.pool_type}' "
                    f"{'of a causal' if self.causal else 'of a bidirectional'} sequence with "
                    f"{'CLIP' if self.spec.tokenizer_is_clip_bpe else 'its own'} tokenizer; learned prompt "
                    "contexts need CoOp's layout [SOS] ctx CLASS . [EOT] read at the EOT token of a causal "
                    "transformer with CLIP's BPE tokenizer")
        return None

    def tokenize(self, prompts: Sequence[str]) -> TokenizedPrompts:
        full = self.spec.tokenizer(list(prompts)).long()
        rows = torch.arange(full.shape[0])
        if self.pool_type == "argmax":
            eot = full.argmax(dim=-1)
        elif self.pool_type == "eos":
            eot = (full == self.eos_id).int().argmax(dim=-1)
        elif self.pool_type == "first":
            eot = torch.zeros_like(rows)
        else:  # "last": the whole sequence, padding included, decides the feature
            eot = torch.full_like(rows, full.shape[1] - 1)
        if self.causal:  # later positions never reach the one read: cut them
            full = full[:, : int(eot.max()) + 1]
        return TokenizedPrompts(full.contiguous(), eot)

    def token_count(self, prompt: str) -> int:
        tok = self.spec.tokenizer
        if hasattr(tok, "encode") and hasattr(tok, "sot_token_id"):  # CLIP's BPE: start and end tokens
            return len(tok.encode(prompt)) + 2
        if hasattr(tok, "tokenizer"):  # a Hugging Face tokenizer (its special tokens included)
            return len(tok.tokenizer(prompt)["input_ids"])
        return 0

    def tokenize_classes(self, template: str, classnames: Sequence[str]) -> TokenizedPrompts:
        """Tokenised class prompts; a class whose prompt is too long raises :class:`PromptTooLongError`
        naming the class, the template and the count."""
        prompts = class_prompts(template, classnames)
        too_long = [(c, p) for c, p in zip(classnames, prompts) if self.token_count(p) > self.context_length]
        if too_long:
            name, prompt = too_long[0]
            raise PromptTooLongError(
                f"The class name {name!r} is too long for the text encoder: with the template {template!r} its "
                f"prompt has {self.token_count(prompt)} tokens, more than the {self.context_length} the encoder "
                "takes. Shorten the class name (in the dataset's class-name file or split) or the template."
            )
        return self.tokenize(prompts)

    def encode_embeddings(self, embeddings: torch.Tensor, eot: torch.Tensor,
                          before_block: Optional[BlockHook] = None) -> torch.Tensor:
        """Same arithmetic as open_clip's ``encode_text`` on the first ``L`` positions."""
        dtype = self.dtype
        length = embeddings.shape[1]
        x = embeddings.to(dtype) + self.positional_embedding[:length].to(dtype)  # NLD
        mask = causal_mask(length, x.dtype, x.device) if self.causal else None
        for i, block in enumerate(self.blocks):
            if before_block is not None:  # hooks see sequence-first states, as on OpenAI's CLIP
                x = before_block(i, x.transpose(0, 1)).transpose(0, 1)
            x = block(x, attn_mask=mask)
        x = self.module.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        proj = self.module.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj


class ImageTower:
    """The image encoder of a CLIP: its forward, its family and what CLIPFit tunes in it."""

    def __init__(self, model: nn.Module, kind: str, embed_dim: int):
        self.model, self.visual, self.kind, self.embed_dim = model, model.visual, kind, embed_dim

    @property
    def dtype(self) -> torch.dtype:
        return next(self.visual.parameters()).dtype

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image features (not normalised)."""
        return self.model.encode_image(images.to(self.dtype))

    def block_prefixes(self) -> List[List[str]]:
        """Per block in forward order, the name prefixes of its parameters."""
        v = "visual."
        if self.kind == "resnet":
            return [[f"{v}layer{s}.{j}."] for s in range(1, 5) for j in range(len(getattr(self.visual, f"layer{s}")))]
        if self.kind == "vit":
            return [[f"{v}transformer.resblocks.{i}."] for i in range(len(self.visual.transformer.resblocks))]
        if self.kind == "timm-vit":
            return [[f"{v}trunk.blocks.{i}."] for i in range(len(self.visual.trunk.blocks))]
        out = []  # convnext: a stage's downsampling belongs to its first block
        for s, stage in enumerate(self.visual.trunk.stages):
            for j in range(len(stage.blocks)):
                out.append([f"{v}trunk.stages.{s}.blocks.{j}."] + ([f"{v}trunk.stages.{s}.downsample."] if j == 0 else []))
        return out

    @staticmethod
    def end(name: str) -> str:
        """Which end ("pre" or "post") a parameter outside the blocks belongs to."""
        return "post" if name.startswith(_POST_PREFIXES) else "pre"

    @property
    def batch_first(self) -> bool:
        return self.model.__class__ is not CLIP

    @property
    def width(self) -> int:
        return int(self.visual.conv1.out_channels)

    def prompt_support(self) -> Optional[str]:
        """None when MaPLe's deep prompts (tokens appended after the patch tokens of CLIP's ViT, the
        class token read after ``ln_post``) are defined on this tower; else why not."""
        if self.kind == "vit":
            v = self.visual
            if getattr(v, "attn_pool", None) is not None or getattr(v, "pool_type", "tok") != "tok":
                return "this ViT pools its tokens (attention pool or average), so appended prompt tokens would be read"
            return None
        return {
            "resnet": "a ResNet image encoder has no token sequence to prompt",
            "convnext": "a ConvNeXt image encoder has no token sequence to prompt",
            "timm-vit": "MaPLe's deep prompts are written for CLIP's own ViT (class token, ln_pre, resblocks); "
                        "timm trunks (SigLIP's attention-pool head, EVA02's rotary positions) are not supported",
        }[self.kind]


class Backbone:
    """A CLIP's two towers, logit scale and bias, and how it is identified in checkpoints."""

    family = "openai"

    def __init__(self, model: nn.Module):
        self.model = model
        visual = model.visual
        self.text = TextTower(model)
        self.image = ImageTower(model, "resnet" if isinstance(visual, ModifiedResNet) else "vit",
                                int(model.text_projection.shape[1]))

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale

    @property
    def logit_bias(self) -> Optional[torch.Tensor]:
        return getattr(self.model, "logit_bias", None)

    @property
    def input_size(self) -> int:
        return int(self.model.visual.input_resolution)

    def to_half(self) -> None:
        """Hold the weights in fp16 as ``clip.model.build_model`` does (LayerNorms stay fp32)."""
        convert_weights(self.model)


class OpenCLIPBackbone(Backbone):
    """An open_clip model with its :class:`OpenCLIPSpec`."""

    family = "open_clip"

    def __init__(self, model: nn.Module, spec: OpenCLIPSpec):
        self.model, self.spec = model, spec
        visual = model.visual
        if hasattr(visual, "trunk"):
            kind = "timm-vit" if hasattr(visual.trunk, "blocks") else "convnext" if hasattr(visual.trunk, "stages") else ""
        elif hasattr(visual, "conv1") and hasattr(visual, "transformer"):
            kind = "vit"
        elif hasattr(visual, "layer1") and hasattr(visual, "attnpool"):
            kind = "resnet"
        else:
            kind = ""
        if not kind:
            raise ConfigValueError(
                f"open_clip:{spec.arch}: its image tower ({type(visual).__name__}"
                f"{'/' + type(visual.trunk).__name__ if hasattr(visual, 'trunk') else ''}) is not a family "
                "this toolkit supports (open_clip's ViT, timm ViT trunks, timm ConvNeXt, modified ResNet).")
        self.text = OpenCLIPTextTower(model, spec)
        self.image = ImageTower(model, kind, _embed_dim(model))

    @property
    def input_size(self) -> int:
        return int(_pair(self.spec.preprocess["size"])[0])

    @property
    def preprocess(self) -> Dict[str, Any]:
        """Size, mean, std, interpolation and resize mode the model was trained with."""
        return dict(self.spec.preprocess)

    def to_half(self) -> None:
        raise ConfigValueError(
            f"PREC fp16 stores OpenAI CLIP's weights in half precision the way clip.model.build_model does; it is not "
            f"defined for open_clip:{self.spec.arch} (timm trunks and open_clip's norms expect matching dtypes). "
            "Set the trainer's PREC to amp (fp32 weights, fp16 compute) or fp32."
        )


def _pair(size: Any) -> tuple:
    return tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))


def _embed_dim(model: nn.Module) -> int:
    """The joint embedding size: the text projection's output width."""
    module = getattr(model, "text", model)
    proj = module.text_projection
    if isinstance(proj, nn.Linear):
        return int(proj.out_features)
    return int(proj.shape[1]) if proj is not None else int(module.width)


def backbone(model: nn.Module) -> Backbone:
    """The adapter of ``model``: OpenAI's CLIP, or an open_clip model built by this toolkit's loader."""
    if isinstance(model, CLIP):
        return Backbone(model)
    spec = getattr(model, SPEC_ATTR, None)
    if spec is None:
        raise TypeError(
            f"{type(model).__name__} is neither OpenAI's CLIP nor an open_clip model loaded by this toolkit: load "
            "it with clipfit.methods.clip_loader.load_clip (MODEL.BACKBONE.NAME open_clip:<arch>)."
        )
    return OpenCLIPBackbone(model, spec)
