"""ProGrad: CoOp with the prompt gradient projected against zero-shot CLIP's (method in
:mod:`clipfit.methods.prograd`)."""
from typing import Dict

from clipfit.engine import TRAINER_REGISTRY, compute_accuracy
from clipfit.methods.prograd import ProGradModel

from .coop import CoOp


@TRAINER_REGISTRY.register()
class ProGrad(CoOp):
    """Prompt-aligned Gradient (Zhu et al., ICCV 2023): CoOp's options plus ``TRAINER.PROGRAD.{LAMBDA, T}``."""

    classifier_class = ProGradModel

    def forward_backward(self, batch) -> Dict[str, float]:
        image, label = self.parse_batch_train(batch)
        with self.autocast():
            xe, kl, logits = self.model.losses(image, label)
        self.detect_anomaly(xe)
        self.detect_anomaly(kl)
        self.model_zero_grad()
        scale = self.scaler.scale if self.scaler is not None else (lambda t: t)
        grads = self.model.projected_gradients(scale(xe), scale(kl))
        for p, g in zip(self.model.learned_parameters().values(), grads):
            p.grad = g
        if self.scaler is None:
            self.after_backward()
            self.model_update()
        else:  # the projection is linear in the task gradient: unscaling after it is exact
            self.scaler.unscale_(self.optim)
            self.after_backward()
            self.scaler.step(self.optim)
            self.scaler.update()
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"xe_loss": xe.item(), "kl_loss": kl.item(), "acc": compute_accuracy(logits, label)[0].item()}
