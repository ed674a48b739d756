"""CLIPFit's loss terms: classification on cosine logits and the two regularisers.

All are computed in fp32 whatever the model's precision (inputs are cast and autocast
is switched off), so a half-precision CLIP changes the features, not the arithmetic of
the loss.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from clipfit.methods.text import normalize



def _fp32(t: torch.Tensor):
    """A context in which autocast leaves ops on ``t``'s device in fp32."""
    return torch.autocast(device_type=t.device.type, enabled=False)


def cosine_logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                  logit_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``exp(logit_scale) * cos(image_i, text_k) (+ logit_bias)`` in fp32; ``text_features`` must be
    normalised. The bias (SigLIP's) shifts every logit alike: softmax and argmax ignore it."""
    with _fp32(image_features):
        logits = logit_scale.float().exp() * normalize(image_features.float()) @ text_features.float().t()
        return logits if logit_bias is None else logits + logit_bias.float()


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the logits (fp32)."""
    with _fp32(logits):
        return F.cross_entropy(logits.float(), labels)


def kd_regulariser(text_features: torch.Tensor, frozen_features: torch.Tensor) -> torch.Tensor:
    """``1 - mean_i cos(w_i, w_i_clip)``: 0 while the tuned class features equal the frozen ones."""
    with _fp32(text_features):
        cos = F.cosine_similarity(
            normalize(text_features.float()), normalize(frozen_features.float()), dim=-1, eps=1e-7
        )
        return 1.0 - cos.mean()


def mse_regulariser(biases: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(1/L) sum_i ||b_i_clip - b_i||^2`` over the ``L`` tuned text bias tensors."""
    if len(biases) != len(reference) or not biases:
        raise ValueError(
            f"The MSE regulariser needs the tuned text biases and their pre-trained values "
            f"(got {len(biases)} and {len(reference)}); tune some text biases (TEXT_PARAMS) "
            "or choose REG kd or none."
        )
    with _fp32(biases[0]):
        terms = [(r.float() - b.float()).pow(2).sum() for b, r in zip(biases, reference)]
        return torch.stack(terms).sum() / len(terms)
