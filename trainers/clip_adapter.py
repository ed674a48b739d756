"""CLIP-Adapter: a residual bottleneck adapter on the image features (method in :mod:`clipfit.methods.clip_adapter`)."""
from clipfit.methods.clip_adapter import CLIPAdapterModel
from clipfit.engine import TRAINER_REGISTRY

from ._addon import AddOnTrainer


@TRAINER_REGISTRY.register()
class CLIP_Adapter(AddOnTrainer):
    """CLIP-Adapter (Gao et al., IJCV 2023). Options: ``TRAINER.CLIP_ADAPTER.{REDUCTION, RATIO,
    PREC}``; ``TRAINER.UPDATE_IMAGE_LN`` for +UL."""

    prec_key = "TRAINER.CLIP_ADAPTER.PREC"
    model_name = "clip_adapter"
    reference_prefix = "adapter."  # CLIP-Adapter's checkpoint keys (``fc.0.weight``, ``fc.2.weight``)
    classifier_class = CLIPAdapterModel
