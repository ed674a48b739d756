"""ProGrad: CoOp with the prompt gradient projected against zero-shot CLIP's (method in
:mod:`clipfit.methods.prograd`)."""
import torch

from clipfit.engine import TRAINER_REGISTRY
from clipfit.methods.classifier import LossParts
from clipfit.methods.prograd import ProGradModel

from .coop import CoOp


@TRAINER_REGISTRY.register()
class ProGrad(CoOp):
    """Prompt-aligned Gradient (Zhu et al., ICCV 2023): CoOp's options plus ``TRAINER.PROGRAD.{LAMBDA, T}``."""

    classifier_class = ProGradModel

    def compute_gradients(self, loss: torch.Tensor, parts: LossParts) -> None:
        """The gradient of ``loss`` (xe) projected against that of ``kl_loss``; both are scaled
        alike under amp, and the projection is linear in the task gradient, so unscaling after
        it (in the base's step) is exact."""
        self.detect_anomaly(parts["kl_loss"])
        grads = self.model.projected_gradients(self.scaled(loss), self.scaled(parts["kl_loss"]))
        for p, g in zip(self.model.learned_parameters().values(), grads):
            p.grad = g
