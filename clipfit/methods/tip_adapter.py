"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022): a key-value cache of the few-shot set.

Cache: keys ``F`` are the normalised CLIP features of the N few-shot training images, each
the mean over ``AUGMENT_EPOCH`` randomly augmented views (averaged before normalising);
values ``L`` are their one-hot labels ``[N, K]``. For a normalised test feature ``f``:

    logits = CLIP_SCALE * f W^T + alpha * exp(-beta * (1 - f F^T)) L

with ``W`` the class features of the hand-crafted templates (averaged over the templates
of an ensemble, then normalised) and ``CLIP_SCALE`` 100 as in Tip-Adapter's code. Tip-Adapter
is training-free; Tip-Adapter-F learns the keys ``F`` (``cache_keys``, N x d values) with
cross-entropy on these logits at the initial ``alpha``/``beta``. Before testing, both search
``beta`` and ``alpha`` on the validation set over Tip-Adapter's grid:
``beta_i = 0.1 + i (scale_beta - 0.1) / steps_beta`` (i < steps_beta), likewise alpha; the first
best accuracy wins (beta outer, alpha inner, as in its code).
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from clipfit.methods.classifier import CLIPClassifier, LossParts
from clipfit.methods.losses import classification_loss
from clipfit.methods.options import TipSettings
from clipfit.methods.text import class_text_features, normalize
from clipfit.errors import ConfigValueError

CFG_PREFIX = "TRAINER.TIP_ADAPTER."
# Tip-Adapter's prompts where they differ from the dataset defaults (its datasets/*.py)
TIP_TEMPLATES: Dict[str, List[str]] = {
    "DescribableTextures": ["{} texture."],
    "ImageNet": [
        "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
        "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
    ],
}


def tip_templates(dataset: str, default: str) -> List[str]:
    """Tip-Adapter's templates for a Dassl dataset name (``default`` where it uses the usual one)."""
    return list(TIP_TEMPLATES.get(dataset, [default]))


def ensemble_text_features(clip_model: nn.Module, templates: Sequence[str], classnames: Sequence[str]) -> torch.Tensor:
    """Class features ``[K, d]``: per template normalised, averaged over templates, normalised."""
    per_template = torch.stack([class_text_features(clip_model, t, classnames) for t in templates])
    return normalize(per_template.float().mean(dim=0))


def build_cache(views: Iterable[Iterable[Tuple[torch.Tensor, torch.Tensor]]], encode) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cache keys ``[N, d]`` (normalised mean of each image's views) and labels ``[N]``.

    ``views`` yields, per augmentation epoch, the batches ``(images, labels)`` of the
    few-shot set in one fixed order; ``encode`` maps images to (unnormalised) features.
    """
    sums, labels, n_views = None, None, 0
    with torch.no_grad():
        for epoch in views:
            feats, labs = zip(*[(encode(images).float(), y) for images, y in epoch])
            feats, labs = torch.cat(feats), torch.cat(labs)
            if labels is None:
                sums, labels = torch.zeros_like(feats), labs
            elif not torch.equal(labs, labels):
                raise RuntimeError("The cache's augmentation epochs saw the images in different orders.")
            sums += feats
            n_views += 1
    if labels is None:
        raise ConfigValueError(f"The few-shot training set is empty: Tip-Adapter's cache needs it ({CFG_PREFIX}AUGMENT_EPOCH).")
    return normalize(sums / n_views), labels


def cache_logits(affinity: torch.Tensor, values: torch.Tensor, beta: float) -> torch.Tensor:
    """``exp(-beta (1 - affinity)) @ values`` (Tip-Adapter's form of the same expression)."""
    return ((-1) * (beta - beta * affinity)).exp() @ values


def accuracy_count(logits: torch.Tensor, labels: torch.Tensor) -> int:
    return int((logits.argmax(dim=1) == labels).sum())


class TipAdapterModel(CLIPClassifier):
    """Frozen CLIP, the hand-crafted classifier ``W`` and the cache; keys learned with ``learn_keys``."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], templates: Sequence[str],
                 keys: torch.Tensor, labels: torch.Tensor, settings: Optional[TipSettings] = None,
                 learn_keys: bool = False):
        super().__init__(clip_model)
        self.settings = (settings or TipSettings()).check()
        for p in clip_model.parameters():
            p.requires_grad_(False)
        n_cls = len(classnames)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_cls):
            raise ValueError(f"Cache labels must lie in [0, {n_cls}); got {int(labels.min())}..{int(labels.max())}.")
        self.templates = list(templates)
        self.register_buffer("clip_weights", ensemble_text_features(clip_model, templates, classnames), persistent=False)
        self.register_buffer("cache_values", F.one_hot(labels.long(), n_cls).float(), persistent=False)
        keys = keys.float().detach().clone()
        if learn_keys:
            self.cache_keys = nn.Parameter(keys)
        else:
            self.register_buffer("cache_keys", keys, persistent=False)
        self.alpha, self.beta = self.settings.init_alpha, self.settings.init_beta

    # Classifier interface ------------------------------------------------------------------
    def learned_parameters(self) -> Dict[str, nn.Parameter]:
        return {"cache_keys": self.cache_keys} if isinstance(self.cache_keys, nn.Parameter) else {}

    def checkpoint_settings(self) -> Dict[str, Any]:
        return {"cache size": list(self.cache_values.shape)}

    def class_text_features(self) -> torch.Tensor:
        return self.clip_weights

    def tip_logits(self, features: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
        """Logits of normalised image features ``[B, d]`` at ``alpha``, ``beta`` (fp32)."""
        features = features.float()
        clip_logits = self.settings.clip_scale * features @ self.clip_weights.t()
        return clip_logits + cache_logits(features @ self.cache_keys.t(), self.cache_values, beta) * alpha

    def normalized_image_features(self, images: torch.Tensor) -> torch.Tensor:
        return normalize(self.image_features(images).float())

    def logits(self, images: torch.Tensor, text_features: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.tip_logits(self.normalized_image_features(images), self.alpha, self.beta)

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, LossParts]:
        """Tip-Adapter-F's training loss: cross-entropy at the initial alpha and beta."""
        if not self.learned_parameters():
            raise NotImplementedError("Tip-Adapter is training-free; Tip-Adapter-F learns the cache keys.")
        s = self.settings
        logits = self.tip_logits(self.normalized_image_features(images), s.init_alpha, s.init_beta)
        return classification_loss(logits, labels), {"logits": logits.detach()}

    # Hyper-parameter search ---------------------------------------------------------------
    @torch.no_grad()
    def search(self, features: torch.Tensor, labels: torch.Tensor) -> Tuple[float, float, float]:
        """Set ``alpha``/``beta`` to the grid point with the best accuracy on ``features``
        (normalised, e.g. the validation set); returns ``(beta, alpha, accuracy %)``."""
        features = features.float()
        betas, alphas = self.settings.grid()
        clip_logits = self.settings.clip_scale * features @ self.clip_weights.t()
        affinity = features @ self.cache_keys.t()
        best = (0, self.beta, self.alpha)  # Tip-Adapter: strictly better than the best so far
        for beta in betas:
            cache = cache_logits(affinity, self.cache_values, beta)
            for alpha in alphas:
                correct = accuracy_count(clip_logits + cache * alpha, labels)
                if correct > best[0]:
                    best = (correct, beta, alpha)
        self.beta, self.alpha = best[1], best[2]
        return self.beta, self.alpha, 100.0 * best[0] / max(1, labels.numel())

    def describe(self) -> List[str]:
        n, k = self.cache_values.shape
        learned = sum(p.numel() for p in self.learned_parameters().values())
        return [
            f"Templates: {self.templates}",
            f"Cache: {n} images x {k} classes, keys {list(self.cache_keys.shape)}, "
            f"{self.settings.augment_epoch} augmented views each ({CFG_PREFIX}AUGMENT_EPOCH)",
            f"Initial alpha {self.settings.init_alpha}, beta {self.settings.init_beta}; search on val: "
            f"{self.settings.search} over beta (0.1, {self.settings.search_scale[0]}) x {self.settings.search_step[0]}, "
            f"alpha (0.1, {self.settings.search_scale[1]}) x {self.settings.search_step[1]}",
            f"Learned parameters: {'cache_keys ' + str(list(self.cache_keys.shape)) + ': ' if learned else ''}{learned:,}",
        ]
