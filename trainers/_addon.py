"""The trainer shape shared by the add-on baselines (CoOp, KgCoOp, CLIP-Adapter).

Not a trainer itself (``train.py`` skips modules whose name starts with ``_``): each
baseline names its precision key, its model name (the checkpoint sub-directory of its
own repository) and the :class:`clipfit.methods.addon.AddOnClassifier` it builds from the config.
"""
from __future__ import annotations

from typing import Sequence, Type

import torch

from clipfit.methods.addon import AddOnClassifier
from clipfit.training.base_trainer import CLIPTrainer


class AddOnTrainer(CLIPTrainer):
    """Builds ``classifier_class.from_cfg(clip, classnames, cfg)`` and logs its description."""

    classifier_class: Type[AddOnClassifier] = AddOnClassifier

    def build_classifier(self, clip_model: torch.nn.Module, classnames: Sequence[str]) -> AddOnClassifier:
        return self.classifier_class.from_cfg(clip_model, classnames, self.cfg)
