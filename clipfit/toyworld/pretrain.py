"""Contrastive pretraining of a tiny OpenAI-architecture CLIP on the toy world.

Each step draws fresh image-caption pairs of the seen colour-shape pairs
(:func:`clipfit.toyworld.world.captioned_batch`). A caption can be true of several
images of a batch ("a red star" fits every red star, whatever its size), so the
loss is CLIP's symmetric cross-entropy with the target spread evenly over every
true pair. The result is a plain ``clip.model.CLIP`` (``build_model`` rebuilds it
from the state dict), scored afterwards by zero-shot accuracy on seen and unseen
colour-shape pairs.
"""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from clipfit.methods.text import encode_tokens, normalize, tokenize

from .world import (
    CAPTION_TEMPLATES, COLOURS, IMAGE_SIZE, PATTERNS, PRETRAIN_STYLE, SHAPES, SIZES, UNSEEN_PAIRS, Style, Thing,
    captioned_batch, draw, seen_pairs,
)

from clipfit.methods.openai_clip import CLIP, clip_api

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # the normalisation every CLIP config uses
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ZERO_SHOT_TEMPLATE = "a photo of a {}."


@dataclass
class PretrainConfig:
    """Architecture and optimisation of the toy CLIP (the shipped weights use the defaults)."""

    seed: int = 0
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    embed_dim: int = 64
    vision_width: int = 96
    vision_layers: int = 4
    patch_size: int = 8
    text_width: int = 64  # build_model infers heads = width // 64
    text_layers: int = 3


def build_untrained(cfg: PretrainConfig) -> CLIP:
    """A freshly initialised CLIP with the toy dimensions (OpenAI's initialisation)."""
    return CLIP(
        embed_dim=cfg.embed_dim,
        image_resolution=IMAGE_SIZE,
        vision_layers=cfg.vision_layers,
        vision_width=cfg.vision_width,
        vision_patch_size=cfg.patch_size,
        context_length=77,
        vocab_size=49408,
        transformer_width=cfg.text_width,
        transformer_heads=cfg.text_width // 64,
        transformer_layers=cfg.text_layers,
    )


def to_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """Images as a CLIP-normalised float batch ``[N, 3, H, W]``."""
    x = torch.from_numpy(np.stack([np.asarray(im, np.float32) for im in images])).permute(0, 3, 1, 2) / 255
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def contrastive_loss(model: CLIP, images: torch.Tensor, captions: Sequence[str], positives: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy with the targets spread over every true image-caption pair."""
    image_features = normalize(model.encode_image(images))
    text_features = normalize(encode_tokens(model, tokenize(captions, model.context_length)))
    logits = model.logit_scale.exp() * image_features @ text_features.t()
    targets = positives.float()
    loss_i = F.cross_entropy(logits, targets / targets.sum(1, keepdim=True))
    loss_t = F.cross_entropy(logits.t(), targets.t() / targets.t().sum(1, keepdim=True))
    return (loss_i + loss_t) / 2


def _optimizer(model: CLIP, cfg: PretrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def _lr_factor(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


class PairStream(torch.utils.data.IterableDataset):
    """``steps`` batches of fresh pretraining pairs from one seeded generator."""

    def __init__(self, cfg: PretrainConfig):
        super().__init__()
        self.cfg = cfg

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, List[str], torch.Tensor]]:
        rng = random.Random(self.cfg.seed)
        for _ in range(self.cfg.steps):
            batch = captioned_batch(rng, self.cfg.batch_size)
            yield to_tensor(batch.images), batch.captions, torch.from_numpy(batch.positives())


def pretrain(cfg: PretrainConfig, progress: bool = True, workers: int = 1) -> CLIP:
    """Train a toy CLIP (seeded: the same config gives the same weights on the same machine).

    ``workers`` (0 or 1) draws the images in a background process while the model trains.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_untrained(cfg)
    model.train()
    optim = _optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: _lr_factor(s, cfg))
    batches = torch.utils.data.DataLoader(PairStream(cfg), batch_size=None, num_workers=min(workers, 1))
    bar = tqdm(batches, total=cfg.steps, desc="pretraining", disable=not progress, mininterval=2.0)
    for images, captions, positives in bar:
        loss = contrastive_loss(model, images, captions, positives)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return model.eval()


def pair_names(pairs: Sequence[Tuple[str, str]]) -> List[str]:
    """Class names of colour-shape pairs, e.g. ``red_star``."""
    return [f"{c}_{s}" for c, s in pairs]


@torch.no_grad()
def zero_shot_accuracy(
    model: CLIP,
    pairs: Sequence[Tuple[str, str]],
    style: Style = PRETRAIN_STYLE,
    per_class: int = 20,
    seed: int = 12345,
    template: str = ZERO_SHOT_TEMPLATE,
) -> float:
    """Zero-shot accuracy (%) among the colour-shape ``pairs``, on fresh images in ``style``."""
    rng = random.Random(seed)
    prompts = [template.format(f"{c} {s}") for c, s in pairs]
    text = normalize(encode_tokens(model, tokenize(prompts, model.context_length)))
    images, labels = [], []
    for label, (c, s) in enumerate(pairs):
        for _ in range(per_class):
            images.append(draw(Thing(c, s, rng.choice(SIZES), rng.choice(PATTERNS)), style, rng=rng))
            labels.append(label)
    predictions = (normalize(model.encode_image(to_tensor(images))) @ text.t()).argmax(1)
    return 100.0 * (predictions == torch.tensor(labels)).float().mean().item()


def evaluation_pairs(seed: int = 0) -> Dict[str, List[Tuple[str, str]]]:
    """Sixteen seen pairs (drawn with ``seed``) and the sixteen unseen pairs."""
    seen = random.Random(seed).sample(seen_pairs(), len(UNSEEN_PAIRS))
    return {"seen": seen, "unseen": list(UNSEEN_PAIRS)}


def report(model: CLIP, per_class: int = 20) -> Dict[str, float]:
    """Zero-shot accuracy on 16 seen and the 16 unseen pairs (chance 6.25%)."""
    return {name: zero_shot_accuracy(model, pairs, per_class=per_class) for name, pairs in evaluation_pairs().items()}


def describe_run(cfg: PretrainConfig, seconds: float, scores: Dict[str, float]) -> str:
    """One line with the recipe, time and zero-shot scores."""
    parts = ", ".join(f"{k}={v}" for k, v in asdict(cfg).items())
    scores_text = ", ".join(f"{k} {v:.1f}%" for k, v in scores.items())
    return f"toy CLIP ({parts}) in {seconds / 60:.1f} min; zero-shot: {scores_text} (chance {100 / 16:.2f}%)"


def used_tokens() -> List[int]:
    """Ids of every token a pretraining caption can contain (the rows the shipped file keeps)."""
    words = list(COLOURS) + list(SHAPES) + list(SIZES) + list(PATTERNS)
    texts = [template.format(" ".join(words)) for template in CAPTION_TEMPLATES]
    tokens = clip_api.tokenize(texts, context_length=200)
    return sorted(set(tokens[tokens > 0].tolist()))
