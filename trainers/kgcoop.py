"""KgCoOp: CoOp plus the knowledge-guided term (method in :mod:`clipfit.methods.coop`)."""
from clipfit.methods.coop import KgCoOpModel
from clipfit.engine import TRAINER_REGISTRY

from .coop import CoOp


@TRAINER_REGISTRY.register()
class KgCoOp(CoOp):
    """Knowledge-guided Context Optimization (Yao et al., CVPR 2023): CoOp's options plus
    ``TRAINER.COOP.W`` (weight) and ``TRAINER.COOP.KG_DISTANCE`` (cosine or euclidean)."""

    classifier_class = KgCoOpModel
