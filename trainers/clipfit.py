"""The CLIPFit trainer: the method lives in :mod:`clipfit.methods.clipfit`, the loop in :mod:`clipfit.training.base_trainer`."""
from __future__ import annotations

from typing import Sequence

import torch

from clipfit.engine import TRAINER_REGISTRY
from clipfit.training.grad_stats import GradStatsRecorder
from clipfit.methods.clipfit import CLIPFitModel, CLIPFitSettings
from clipfit.methods.templates import resolve_template
from clipfit.training.base_trainer import CLIPTrainer, cfg_value
from clipfit.training.config import project_keys

# Keys the authors' train.py adds and their scripts set that CLIPFit does not read (their
# ClipFit trainer does not read them either): accepted, and logged when set.
INERT_KEYS = ("TRAINER.COOP.N_CTX", "TRAINER.COOP.CSC", "TRAINER.COOP.CTX_INIT",
              "TRAINER.COOP.CLASS_TOKEN_POSITION", "TRAINER.COOP.W1", "TRAINER.COOP.W2")


@TRAINER_REGISTRY.register()
class CLIPFit(CLIPTrainer):
    """CLIPFit (Li et al., EMNLP 2024): tune text FFN projection biases and image LayerNorms
    with ``CE + BETA * (1 - mean cos(w, w_clip))``. Options: ``TRAINER.CLIPFIT.*``."""

    prec_key = "TRAINER.CLIPFIT.PREC"
    model_name = "clipfit"

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        CLIPFitSettings.from_cfg(cfg.TRAINER.CLIPFIT).check()

    def build_classifier(self, clip_model: torch.nn.Module, classnames: Sequence[str]) -> CLIPFitModel:
        settings = CLIPFitSettings.from_cfg(self.cfg.TRAINER.CLIPFIT)
        return CLIPFitModel(clip_model, classnames, resolve_template(self.cfg), settings)

    def build_model(self) -> None:
        defaults = project_keys()
        changed = [f"{k} {cfg_value(self.cfg, k)}" for k in INERT_KEYS if cfg_value(self.cfg, k) != cfg_value(defaults, k)]
        if changed:
            print(f"Note: {', '.join(changed)}: accepted for the CLIPFit authors' scripts, no effect on CLIPFit")
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
    """The authors' trainer name, so their scripts' ``--trainer ClipFit`` runs CLIPFit; like
    their trainer it reads its precision from ``TRAINER.COOP.PREC``."""

    prec_key = "TRAINER.COOP.PREC"
    model_name = "prompt_learner"  # their checkpoint sub-directory, so their run folders load
