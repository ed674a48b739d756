"""MaPLe: coupled deep vision-language prompts (method in :mod:`clipfit.methods.maple`)."""
from clipfit.engine import TRAINER_REGISTRY
from clipfit.methods.maple import MaPLeModel

from ._addon import AddOnTrainer


@TRAINER_REGISTRY.register()
class MaPLe(AddOnTrainer):
    """Multi-modal Prompt Learning (Khattak et al., CVPR 2023). Options: ``TRAINER.MAPLE.{N_CTX,
    CTX_INIT, PROMPT_DEPTH, PREC}``; ``TRAINER.UPDATE_IMAGE_LN`` for +UL."""

    prec_key = "TRAINER.MAPLE.PREC"
    model_name = "MultiModalPromptLearner"
    classifier_class = MaPLeModel
