"""Small random open_clip models of each supported family, for tests and benchmarks.

Each family is open_clip's own model class and tower, built from a custom model config
(open_clip's ``add_model_config``) with tiny widths and depths at 32 px. The timm trunks are
timm's own builders (``vit_base_patch16_siglip_224``, ``eva02_base_patch16_clip_224``,
``convnext_base``) registered under new names with small dimensions: the same code paths as
the real models (MAP head, rotary positions and sub-LNs, LayerNorm2d stem), fewer parameters.

SigLIP's tokenizer comes from the Hugging Face hub and cannot be loaded offline: the tiny
SigLIP keeps SigLIP's text tower (bidirectional, read at the last position, projection with a
bias, logit bias) and stands in CLIP's BPE tokenizer for it (its name avoids "siglip", which
makes open_clip pick SigLIP's tokenizer).
"""
from __future__ import annotations

import functools
import json
import os
import tempfile
from typing import Callable, Dict, Sequence

import torch

from clipfit.methods import open_clip_lib
from clipfit.methods.backbone import backbone
from clipfit.methods.classifier import ZeroShotClassifier
from clipfit.methods.clip_adapter import CLIPAdapterModel
from clipfit.methods.clipfit import CLIPFitModel
from clipfit.methods.cocoop import CoCoOpModel
from clipfit.methods.coop import CoOpModel, KgCoOpModel
from clipfit.methods.maple import MaPLeModel
from clipfit.methods.open_clip_loader import build_open_clip
from clipfit.methods.prograd import ProGradModel
from clipfit.methods.options import PromptSettings
from clipfit.methods.templates import DEFAULT_TEMPLATE
from clipfit.methods.tip_adapter import TipAdapterModel
from clipfit.errors import UserError

TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
# family -> (architecture name, open_clip model config)
TINY_CONFIGS: Dict[str, tuple] = {
    "vit": ("clipfit-tiny-ViT", {
        "embed_dim": 32, "text_cfg": TINY_TEXT,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8}}),
    "vit-quickgelu": ("clipfit-tiny-ViT-quickgelu", {
        "embed_dim": 32, "quick_gelu": True, "text_cfg": TINY_TEXT,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8}}),
    "siglip": ("clipfit-tiny-sigmoid", {
        "embed_dim": 32, "init_logit_bias": -10, "custom_text": True,
        "vision_cfg": {"image_size": 32, "timm_model_name": "clipfit_tiny_siglip", "timm_model_pretrained": False,
                       "timm_pool": "map", "timm_proj": "none"},
        "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2,
                     "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6}}}),
    "eva02": ("clipfit-tiny-EVA02", {
        "embed_dim": 32, "custom_text": True, "text_cfg": TINY_TEXT,
        "vision_cfg": {"image_size": 32, "timm_model_name": "clipfit_tiny_eva02", "timm_model_pretrained": False,
                       "timm_pool": "token", "timm_proj": None}}),
    "convnext": ("clipfit-tiny-convnext", {
        "embed_dim": 32, "text_cfg": TINY_TEXT,
        "vision_cfg": {"image_size": 32, "timm_model_name": "clipfit_tiny_convnext", "timm_model_pretrained": False,
                       "timm_pool": "", "timm_proj": "linear", "timm_drop": 0.0}}),
}
_REGISTERED: Dict[str, str] = {}


def _register_timm_trunks() -> None:
    """timm's SigLIP, EVA02 and ConvNeXt builders under tiny names (32 px, width 32, 2 blocks)."""
    import timm
    from timm.models import convnext, eva, vision_transformer
    from timm.models import register_model

    if "clipfit_tiny_siglip" in timm.list_models("clipfit_tiny_*"):
        return
    small = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)

    def clipfit_tiny_siglip(pretrained: bool = False, **kwargs):
        return vision_transformer.vit_base_patch16_siglip_224(pretrained=False, **{**small, **kwargs})

    def clipfit_tiny_eva02(pretrained: bool = False, **kwargs):
        return eva.eva02_base_patch16_clip_224(pretrained=False, **{**small, "ref_feat_shape": (4, 4), **kwargs})

    def clipfit_tiny_convnext(pretrained: bool = False, **kwargs):
        return convnext.convnext_base(pretrained=False, **{"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64], **kwargs})

    for fn in (clipfit_tiny_siglip, clipfit_tiny_eva02, clipfit_tiny_convnext):
        register_model(fn)


def register_tiny_configs() -> Dict[str, str]:
    """Register the tiny configs with open_clip (once per process); family -> architecture name."""
    if not _REGISTERED:
        _register_timm_trunks()
        folder = tempfile.mkdtemp(prefix="clipfit-tiny-open-clip-")
        for family, (arch, cfg) in TINY_CONFIGS.items():
            with open(os.path.join(folder, f"{arch}.json"), "w") as f:
                json.dump(cfg, f)
            _REGISTERED[family] = arch
        open_clip_lib.require().add_model_config(folder)
    return dict(_REGISTERED)


def make_tiny_open_clip(family: str, seed: int = 0) -> torch.nn.Module:
    """A tiny random model of ``family`` with the spec the loader attaches; norms and biases are
    drawn away from 1/0 so that tuning them and loading them are visible."""
    arch = register_tiny_configs()[family]
    torch.manual_seed(seed)
    model = build_open_clip(arch)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "ln" in name or name.endswith("bias")):
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def save_tiny_open_clip(family: str, path: str, seed: int = 0) -> str:
    """Write a tiny model's ``state_dict()`` to ``path`` (as open_clip saves weights); returns ``path``."""
    torch.save(make_tiny_open_clip(family, seed).state_dict(), path)
    return path


def _tip(model: torch.nn.Module, classnames: Sequence[str], learn: bool) -> TipAdapterModel:
    keys = torch.nn.functional.normalize(torch.randn(2 * len(classnames), backbone(model).image.embed_dim), dim=-1)
    return TipAdapterModel(model, classnames, [DEFAULT_TEMPLATE], keys, torch.arange(len(keys)) % len(classnames),
                           learn_keys=learn)


# trainer name -> its method built with default settings on a model (MaPLe at depth 2: tiny towers)
METHODS: Dict[str, Callable[[torch.nn.Module, Sequence[str]], torch.nn.Module]] = {
    "ZeroshotCLIP": lambda m, c: ZeroShotClassifier(m, c, DEFAULT_TEMPLATE),
    "CLIPFit": lambda m, c: CLIPFitModel(m, c),
    "CoOp": lambda m, c: CoOpModel(m, c),
    "CoCoOp": lambda m, c: CoCoOpModel(m, c),
    "KgCoOp": lambda m, c: KgCoOpModel(m, c),
    "MaPLe": lambda m, c: MaPLeModel(m, c, depth=2),
    "ProGrad": lambda m, c: ProGradModel(m, c, prompt=PromptSettings()),
    "CLIP_Adapter": lambda m, c: CLIPAdapterModel(m, c),
    "TipAdapter": lambda m, c: _tip(m, c, False),
    "TipAdapterF": lambda m, c: _tip(m, c, True),
}


def support(family: str) -> Dict[str, str]:
    """Trainer -> "works" or "refused: <why>" on a tiny model of ``family`` (each method built on a fresh
    one; a refusal is a :class:`~clipfit.errors.UserError`, anything else propagates)."""
    return dict(_support(family))


@functools.lru_cache(maxsize=None)
def _support(family: str) -> Dict[str, str]:
    """:func:`support`, computed once per process (the tests and the bench's table share it)."""
    out = {}
    for trainer, build in METHODS.items():
        try:
            build(make_tiny_open_clip(family), ["cat", "dog"])
            out[trainer] = "works"
        except UserError as err:
            out[trainer] = f"refused: {err}"
    return out


class StandInTokenizer:
    """CLIP's BPE ids folded into a smaller vocabulary (``id % vocab_size``), padded to the context:
    stands in for a hub tokenizer (SigLIP's) where only shapes matter (benchmarks). Not for results."""

    def __init__(self, context_length: int, vocab_size: int):
        self.context_length, self.vocab_size = context_length, vocab_size
        self.clip = open_clip_lib.require().SimpleTokenizer(context_length=context_length)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return self.clip(list(texts)) % self.vocab_size


def build_with_stand_in(arch: str) -> torch.nn.Module:
    """open_clip's ``arch`` with random weights; a :class:`StandInTokenizer` where its own needs the hub."""
    try:
        return build_open_clip(arch)
    except FileNotFoundError:
        text = open_clip_lib.require().get_model_config(arch)["text_cfg"]
        return build_open_clip(arch, tokenizer=StandInTokenizer(text.get("context_length", 77), text["vocab_size"]))
