"""Zero-shot CLIP with the dataset's hand-crafted template (evaluation only)."""
from __future__ import annotations

from typing import Sequence

import torch

from clipfit.methods.classifier import ZeroShotClassifier
from clipfit.engine import TRAINER_REGISTRY
from clipfit.methods.templates import resolve_template
from clipfit.training.base_trainer import CLIPTrainer
from clipfit.errors import UserError


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(CLIPTrainer):
    """CLIP's class prompts as the classifier; run with ``--eval-only`` or ``--no-train``.

    Template: ``DATASET.TEMPLATE``, else CoOp's ``zsclip.py`` template for the dataset. Precision:
    ``TRAINER.COOP.PREC`` (CoOp evaluates zero-shot CLIP with its CoOp config).
    """

    prec_key = "TRAINER.COOP.PREC"

    def build_classifier(self, clip_model: torch.nn.Module, classnames: Sequence[str]) -> ZeroShotClassifier:
        template = resolve_template(self.cfg)
        print(f"Template: {template!r}")
        return ZeroShotClassifier(clip_model, classnames, template)

    def train(self) -> None:
        raise UserError("ZeroshotCLIP has nothing to train: run train.py with --eval-only or --no-train.")
