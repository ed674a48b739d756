"""CoOp: learned prompt context vectors (method in :mod:`clipfit.methods.coop`)."""
from clipfit.methods.coop import CoOpModel
from clipfit.engine import TRAINER_REGISTRY

from ._addon import AddOnTrainer


@TRAINER_REGISTRY.register()
class CoOp(AddOnTrainer):
    """Context Optimization (Zhou et al., IJCV 2022). Options: ``TRAINER.COOP.{N_CTX, CTX_INIT,
    CSC, CLASS_TOKEN_POSITION, PREC}``; ``TRAINER.UPDATE_IMAGE_LN`` for +UL."""

    prec_key = "TRAINER.COOP.PREC"
    model_name = "prompt_learner"
    reference_prefix = "prompt_learner."  # CoOp's and KgCoOp's checkpoint keys (``ctx``)
    classifier_class = CoOpModel
