"""The CLIPFit trainer: the method lives in :mod:`clipfit.methods.clipfit`, the loop in :mod:`clipfit.training.base_trainer`."""
from __future__ import annotations

from typing import Sequence

import torch

from clipfit.engine import TRAINER_REGISTRY
from clipfit.training.grad_stats import GradStatsRecorder
from clipfit.methods.clipfit import CLIPFitModel, CLIPFitSettings
from clipfit.methods.templates import resolve_template
from clipfit.training.base_trainer import CLIPTrainer


@TRAINER_REGISTRY.register()
class CLIPFit(CLIPTrainer):
    """CLIPFit (Li et al., EMNLP 2024): tune text FFN projection biases and image LayerNorms
    with ``CE + BETA * (1 - mean cos(w, w_clip))``. Options: ``TRAINER.CLIPFIT.*``."""

    prec_key = "TRAINER.CLIPFIT.PREC"
    template_key = "TRAINER.CLIPFIT.TEMPLATE"
    model_name = "clipfit"

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        CLIPFitSettings.from_cfg(cfg.TRAINER.CLIPFIT).check()

    def build_classifier(self, clip_model: torch.nn.Module, classnames: Sequence[str]) -> CLIPFitModel:
        settings = CLIPFitSettings.from_cfg(self.cfg.TRAINER.CLIPFIT)
        return CLIPFitModel(clip_model, classnames, resolve_template(self.cfg, self.template_key), settings)

    def build_model(self) -> None:
        super().build_model()
        # built before any resume or update: changes are measured from the pre-trained values
        self.grad_stats = (
            GradStatsRecorder(self.model.learned_parameters()) if self.cfg.TRAINER.CLIPFIT.LOG_GRAD_STATS else None
        )

    def after_backward(self) -> None:
        if self.grad_stats is not None:
            self.grad_stats.record(self.epoch * self.num_batches + self.batch_idx)

    def after_train(self) -> None:
        if self.grad_stats is not None:
            self.grad_stats.save(self.cfg.OUTPUT_DIR)  # <OUTPUT_DIR>/grad_stats.pt
        super().after_train()


@TRAINER_REGISTRY.register()
class ClipFit(CLIPFit):
    """The authors' trainer name, so their scripts' ``--trainer ClipFit`` runs CLIPFit."""
