"""CoOp (Zhou et al., IJCV 2022) and KgCoOp (Yao et al., CVPR 2023) on a frozen CLIP.

CoOp learns the context vectors of the class prompts (:mod:`clipfit.methods.prompt_learner`)
with cross-entropy. KgCoOp adds ``W * L_kg``, which keeps the learned class features
``w_i`` near those of the hand-crafted prompt, ``w_i_clip`` (the dataset's template,
encoded once by the untouched CLIP). Two distances (``TRAINER.COOP.KG_DISTANCE``):

``cosine`` (default; KgCoOp's public code)
    ``1 - mean_i cos(w_i, w_i_clip)``: the same term as CLIPFit's knowledge distillation
    (:func:`clipfit.methods.losses.kd_regulariser`).
``euclidean`` (KgCoOp's paper, Eq. 6)
    ``mean_i ||w_i - w_i_clip||^2``, on the L2-normalised features the classifier uses.
    On unit vectors ``||a - b||^2 = 2 (1 - cos(a, b))``, so this equals exactly twice the
    cosine term: the same optimum and gradient direction, with twice the weight.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from yacs.config import CfgNode

from clipfit.methods.addon import AddOnClassifier
from clipfit.methods.clip_loader import CLIP, architecture
from clipfit.methods.losses import kd_regulariser
from clipfit.methods.openai_clip import clip_api, convert_weights
from clipfit.methods.options import KgCoOpSettings, PromptSettings, from_node
from clipfit.methods.prompt_learner import CFG_PREFIX, PromptLearner
from clipfit.methods.templates import DEFAULT_TEMPLATE, check_template, class_prompts, resolve_template
from clipfit.methods.text import class_text_features, encode_embeddings, normalize
from clipfit.errors import ConfigValueError

KG_DISTANCES = ("cosine", "euclidean")


def check_kg_distance(distance: str) -> str:
    """``distance`` if it is one of :data:`KG_DISTANCES`; else an error naming the config key."""
    if distance not in KG_DISTANCES:
        raise ConfigValueError(f"{CFG_PREFIX}KG_DISTANCE is {distance!r}; choose one of {', '.join(KG_DISTANCES)}.")
    return distance


def kg_regulariser(text_features: torch.Tensor, clip_features: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """KgCoOp's ``L_kg`` between learned and hand-crafted class features (fp32 scalar)."""
    if check_kg_distance(distance) == "cosine":
        return kd_regulariser(text_features, clip_features)
    diff = normalize(text_features.float()) - normalize(clip_features.float())
    return diff.pow(2).sum(dim=-1).mean()


class CoOpModel(AddOnClassifier):
    """Learned context vectors in front of (or around) each class name; CLIP frozen."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], prompt: Optional[PromptSettings] = None,
                 update_image_ln: bool = False, prompt_learner: Optional[PromptLearner] = None):
        super().__init__(clip_model, update_image_ln)
        self.prompt_learner = prompt_learner or PromptLearner(clip_model, classnames, prompt)

    @staticmethod
    def cfg_args(cfg: CfgNode) -> Dict[str, Any]:
        """Keyword arguments from ``TRAINER.COOP`` and ``TRAINER.UPDATE_IMAGE_LN``."""
        return dict(prompt=PromptSettings.from_cfg(cfg.TRAINER.COOP), update_image_ln=bool(cfg.TRAINER.UPDATE_IMAGE_LN))

    @classmethod
    def from_cfg(cls, clip_model: nn.Module, classnames: Sequence[str], cfg: CfgNode) -> "CoOpModel":
        return cls(clip_model, classnames, **cls.cfg_args(cfg))

    def class_text_features(self) -> torch.Tensor:
        prompts = self.prompt_learner()
        return normalize(encode_embeddings(self.clip, prompts, self.prompt_learner.eot))

    def checkpoint_settings(self) -> Dict[str, Any]:
        pl = self.prompt_learner
        return {**super().checkpoint_settings(), CFG_PREFIX + "N_CTX": pl.n_ctx, CFG_PREFIX + "CSC": pl.csc}

    def method_lines(self) -> List[str]:
        return self.prompt_learner.describe()


def _draw_like_kgcoop(clip_model: nn.Module, dtype: torch.dtype) -> None:
    """Draw, and discard, the random initialisations KgCoOp's code makes after its context:
    modules it never uses (a bias vector, a 512-wide meta-net, an adapter) and a second CLIP
    (built for the hand-crafted features, initialised randomly before its weights load), so
    the global generator, and with it the batch order, follows KgCoOp's with the same seed."""
    nn.init.normal_(torch.empty(1, 512, dtype=dtype), std=0.02)
    a = architecture(clip_model)
    vision_layers = a["vision_layers"] if a["image_encoder"] == "ViT" else tuple(
        int(n) for n in str(a["vision_layers"]).split("-"))
    # on the CPU generator, as KgCoOp builds it (on the meta device nothing is drawn)
    with torch.device("meta" if clip_model.positional_embedding.is_meta else "cpu"):
        CLIP(a["embed_dim"], a["image_resolution"], vision_layers, a["vision_width"], a["patch_size"] or None,
             a["context_length"], a["vocab_size"], a["text_width"], a["text_width"] // 64, a["text_layers"])
    nn.Linear(512, 512)
    nn.Linear(512, 128, bias=False)
    nn.Linear(128, 512, bias=False)


def kgcoop_reference_features(clip_model: nn.Module, template: str, classnames: Sequence[str]) -> torch.Tensor:
    """The hand-crafted class features as KgCoOp's code computes them, whatever the run's
    precision: by a CLIP in half precision (its second CLIP is never cast to fp32). KgCoOp's code
    exists for OpenAI's CLIP only; other backbones use the model's own text path and precision."""
    if not isinstance(clip_model, CLIP):
        return class_text_features(clip_model, template, classnames)
    half = copy.deepcopy(clip_model)
    convert_weights(half)
    tokens = clip_api.tokenize(class_prompts(template, classnames), context_length=half.context_length)
    with torch.no_grad():  # CLIP's own encode_text on all positions; KgCoOp normalises in fp16
        features = half.encode_text(tokens.to(half.positional_embedding.device))
        for _ in range(2):  # once when computed, once more in its forward pass
            features = features / features.norm(dim=-1, keepdim=True)
    return features.to(clip_model.text_projection.dtype)


class KgCoOpModel(CoOpModel):
    """CoOp plus ``weight * L_kg`` towards the hand-crafted prompt's class features."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], template: str = DEFAULT_TEMPLATE,
                 weight: float = KgCoOpSettings.weight, distance: str = KgCoOpSettings.distance, **coop_args: Any):
        check_kg_distance(distance)
        if not weight >= 0:
            raise ConfigValueError(f"{CFG_PREFIX}W is {weight}; it must be a number >= 0.")
        template = check_template(template, "DATASET.TEMPLATE")
        clip_features = kgcoop_reference_features(clip_model, template, classnames)  # before any tuning
        super().__init__(clip_model, classnames, **coop_args)
        if isinstance(clip_model, CLIP):  # replays KgCoOp's random draws (its code runs on OpenAI's CLIP only)
            _draw_like_kgcoop(clip_model, self.prompt_learner.ctx.dtype)
        self.template, self.weight, self.distance = template, float(weight), distance
        self.register_buffer("clip_text_features", clip_features, persistent=False)

    @classmethod
    def from_cfg(cls, clip_model: nn.Module, classnames: Sequence[str], cfg: CfgNode) -> "KgCoOpModel":
        return cls(clip_model, classnames, template=resolve_template(cfg),
                   **from_node(KgCoOpSettings, cfg.TRAINER.COOP), **cls.cfg_args(cfg))

    def regularisers(self, text_features: torch.Tensor) -> Dict[str, Tuple[float, torch.Tensor]]:
        return {"kg": (self.weight, kg_regulariser(text_features, self.clip_text_features, self.distance))}

    def method_lines(self) -> List[str]:
        return super().method_lines() + [
            f"Hand-crafted template: {self.template!r}",
            f"KgCoOp: W {self.weight}, distance {self.distance} ({CFG_PREFIX}W, {CFG_PREFIX}KG_DISTANCE)",
        ]
