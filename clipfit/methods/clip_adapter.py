"""CLIP-Adapter (Gao et al., IJCV 2023): a residual bottleneck adapter on the image features.

``f' = ratio * A(f) + (1 - ratio) * f`` with ``A = ReLU(W2 ReLU(W1 f))``, ``W1`` of shape
``[d / reduction, d]``, ``W2`` of shape ``[d, d / reduction]``, no biases (ViT-B/16:
d = 512, reduction 4: 131,072 parameters). The class features come from the dataset's
hand-crafted template with the frozen text encoder and are computed once. Keys:
``TRAINER.CLIP_ADAPTER.REDUCTION`` (4), ``RATIO`` (0.2), ``PREC``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
import torch.nn as nn
from yacs.config import CfgNode

from clipfit.methods.addon import AddOnClassifier
from clipfit.methods.backbone import backbone
from clipfit.methods.options import CLIPAdapterSettings, from_node
from clipfit.methods.templates import DEFAULT_TEMPLATE, check_template, resolve_template
from clipfit.methods.text import class_text_features
from clipfit.errors import ConfigValueError

CFG_PREFIX = "TRAINER.CLIP_ADAPTER."


class ResidualAdapter(nn.Module):
    """Bottleneck MLP blended with its input (parameter names as in CLIP-Adapter: ``fc.0``, ``fc.2``)."""

    def __init__(self, dim: int, reduction: int = CLIPAdapterSettings.reduction, ratio: float = CLIPAdapterSettings.ratio):
        super().__init__()
        if not (isinstance(reduction, int) and 1 <= reduction <= dim):
            raise ConfigValueError(
                f"{CFG_PREFIX}REDUCTION is {reduction!r}; use an integer from 1 to the feature size {dim}."
            )
        if not 0.0 <= ratio <= 1.0:
            raise ConfigValueError(f"{CFG_PREFIX}RATIO is {ratio}; it must lie in [0, 1] (0 leaves CLIP unchanged).")
        self.reduction, self.ratio = reduction, float(ratio)
        hidden = dim // reduction
        self.fc = nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, dim, bias=False), nn.ReLU()
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Blended features, in the adapter's dtype (fp32 unless the adapter was converted)."""
        x = features.to(self.fc[0].weight.dtype)
        return self.ratio * self.fc(x) + (1.0 - self.ratio) * x


class CLIPAdapterModel(AddOnClassifier):
    """Frozen CLIP with a :class:`ResidualAdapter` on its image features."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], template: str = DEFAULT_TEMPLATE,
                 reduction: int = CLIPAdapterSettings.reduction, ratio: float = CLIPAdapterSettings.ratio,
                 update_image_ln: bool = False):
        template = check_template(template, "DATASET.TEMPLATE")
        text_features = class_text_features(clip_model, template, classnames)
        super().__init__(clip_model, update_image_ln)
        self.template = template
        self.adapter = ResidualAdapter(backbone(clip_model).image.embed_dim, reduction, ratio)
        self.register_buffer("text_features", text_features, persistent=False)

    @classmethod
    def from_cfg(cls, clip_model: nn.Module, classnames: Sequence[str], cfg: CfgNode) -> "CLIPAdapterModel":
        return cls(clip_model, classnames, template=resolve_template(cfg),
                   **from_node(CLIPAdapterSettings, cfg.TRAINER.CLIP_ADAPTER),
                   update_image_ln=bool(cfg.TRAINER.UPDATE_IMAGE_LN))

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.adapter(super().image_features(images))

    def class_text_features(self) -> torch.Tensor:
        return self.text_features

    def checkpoint_settings(self) -> Dict[str, Any]:
        return {**super().checkpoint_settings(), CFG_PREFIX + "REDUCTION": self.adapter.reduction}

    def method_lines(self) -> List[str]:
        fc = self.adapter.fc
        return [
            f"Template: {self.template!r}",
            f"CLIP-Adapter: {fc[0].in_features} -> {fc[0].out_features} -> {fc[2].out_features}, "
            f"residual ratio {self.adapter.ratio} ({CFG_PREFIX}REDUCTION, {CFG_PREFIX}RATIO)",
        ]
