"""CLIP as an image classifier over class text features: the interface the shared trainer drives.

A subclass decides which tensors are learned, how the class features are made and
which terms the training loss adds to the cross-entropy; :class:`clipfit.training.base_trainer.CLIPTrainer` does the rest
(precision, optimiser, test-time caching of class features, small checkpoints).
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from clipfit.methods.backbone import backbone
from clipfit.methods.losses import classification_loss, cosine_logits
from clipfit.methods.text import class_text_features

LossParts = Dict[str, torch.Tensor]


class CLIPClassifier(nn.Module):
    """Wraps a plain ``clip.model.CLIP`` (``self.clip``), which always stays in eval mode.

    ``encoder_methods`` names the methods that run the encoders, which ``TRAIN.COMPILE`` compiles.
    CLIP has no dropout, and keeping it in eval mode keeps BatchNorm running statistics
    (ResNet encoders) frozen while their affine parameters may be tuned.
    """

    encoder_methods = ("image_features", "class_text_features")

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.clip = clip_model

    # What a subclass provides --------------------------------------------------------
    def learned_parameters(self) -> Dict[str, nn.Parameter]:
        """The tensors training changes, by stable names (used by optimiser and checkpoints)."""
        return {}

    def checkpoint_settings(self) -> Dict[str, Any]:
        """Config values (by dotted key) that determine the learned tensors; a checkpoint
        made with other values is refused."""
        return {}

    def describe(self) -> List[str]:
        """Log lines printed once the model is built (settings, tuned parameter counts)."""
        return []

    def class_text_features(self) -> torch.Tensor:
        """Normalised class features ``[K, embed_dim]`` (with gradient when they are learned)."""
        raise NotImplementedError

    def regularisers(self, text_features: torch.Tensor) -> Dict[str, Tuple[float, torch.Tensor]]:
        """Loss terms added to the cross-entropy, by name, each ``(weight, term)``; none by default."""
        return {}

    # Shared ------------------------------------------------------------------------------
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Image features (not normalised); no autograd graph when no image parameter is tuned."""
        tuned = any(p.requires_grad for p in self.clip.visual.parameters())
        grad = contextlib.nullcontext() if tuned else torch.no_grad()
        with grad:
            return backbone(self.clip).image.encode(images)

    def logits(self, images: torch.Tensor, text_features: torch.Tensor = None) -> torch.Tensor:
        """``exp(logit_scale) * cos`` (+ the model's logit bias) between images and classes (fp32). Pass precomputed
        ``text_features`` to avoid re-encoding the class prompts."""
        if text_features is None:
            text_features = self.class_text_features()
        bb = backbone(self.clip)
        return cosine_logits(self.image_features(images), text_features, bb.logit_scale, bb.logit_bias)

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, LossParts]:
        """The training loss of every method: ``CE + sum(weight * term)`` over :meth:`regularisers`.

        Parts (detached): ``logits``; with terms, also ``ce`` and each term by name (without
        terms only ``loss`` and ``acc`` are logged, as CoOp's and CLIP-Adapter's code do).
        """
        text_features = self.class_text_features()
        logits = self.logits(images, text_features)
        ce = classification_loss(logits, labels)
        total, parts = ce, {"logits": logits.detach()}
        for name, (weight, term) in self.regularisers(text_features).items():
            total = total + weight * term
            parts.update({"ce": ce.detach(), name: term.detach()})
        return total, parts

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images)

    def train(self, mode: bool = True) -> "CLIPClassifier":
        super().train(mode)
        self.clip.eval()
        return self


class ZeroShotClassifier(CLIPClassifier):
    """Zero-shot CLIP: class features of a hand-crafted template, computed once."""

    encoder_methods = ("image_features",)  # the class features are computed once, eagerly

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], template: str):
        super().__init__(clip_model)
        self.template = template
        self.register_buffer(
            "text_features", class_text_features(clip_model, template, classnames), persistent=False
        )

    def class_text_features(self) -> torch.Tensor:
        return self.text_features
