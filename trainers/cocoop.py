"""CoCoOp: image-conditional prompt context (method in :mod:`clipfit.methods.cocoop`)."""
from clipfit.engine import TRAINER_REGISTRY
from clipfit.methods.cocoop import CoCoOpModel

from ._addon import AddOnTrainer


@TRAINER_REGISTRY.register()
class CoCoOp(AddOnTrainer):
    """Conditional Context Optimization (Zhou et al., CVPR 2022). Options: ``TRAINER.COCOOP.{N_CTX,
    CTX_INIT, PREC, TEXT_BATCH_SIZE}``; ``TRAINER.UPDATE_IMAGE_LN`` for +UL."""

    prec_key = "TRAINER.COCOOP.PREC"
    model_name = "prompt_learner"
    classifier_class = CoCoOpModel
