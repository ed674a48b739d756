"""Random CLIP models in OpenAI's weight format, for tests, demos and benchmarks.

``make_tiny_clip`` builds a small model (image 32 px by default, so configs must set
``INPUT.SIZE (32, 32)``; text and vision width 64, i.e. one attention head, because
``clip.model.build_model`` infers ``heads = width // 64``). The vocabulary stays
49,408 and the context 77 because the real tokenizer is used. ``save_tiny_clip``
writes it as a plain state dict or as a TorchScript archive like OpenAI's files, so
:func:`clipfit.methods.clip_loader.load_clip` exercises its real loading path on it.

``build_tiny_clip`` returns the built model directly. ``build_vit_b16`` builds the full ViT-B/16 architecture with random weights (on the
``meta`` device for parameter counts without memory, or on a real device for speed).
"""
from __future__ import annotations

import math
import warnings
from typing import Dict, Tuple, Union

import torch

from clipfit.fileio import atomic_path

from clipfit.methods.openai_clip import CLIP

TINY_IMAGE_SIZE = 32
VOCAB_SIZE = 49408
CONTEXT_LENGTH = 77
VIT_B16 = dict(
    embed_dim=512,
    image_resolution=224,
    vision_layers=12,
    vision_width=768,
    vision_patch_size=16,
    context_length=CONTEXT_LENGTH,
    vocab_size=VOCAB_SIZE,
    transformer_width=512,
    transformer_heads=8,
    transformer_layers=12,
)


def _tiny_dims(
    arch: str, image_resolution: int, width: int, layers: int, text_width: int, text_layers: int,
    embed_dim: int, patch_size: int,
) -> dict:
    if arch == "vit":
        vision_layers: Union[int, Tuple[int, ...]] = layers
        vision_width, patch = width, patch_size
    elif arch == "rn":
        # ModifiedResNet: 4 stages of ``layers`` bottlenecks; embed width = 32 * width
        vision_layers, vision_width, patch = (layers,) * 4, width, None
    else:
        raise ValueError(f"arch must be 'vit' or 'rn', got {arch!r}")
    return dict(
        embed_dim=embed_dim,
        image_resolution=image_resolution,
        vision_layers=vision_layers,
        vision_width=vision_width,
        vision_patch_size=patch,
        context_length=CONTEXT_LENGTH,
        vocab_size=VOCAB_SIZE,
        transformer_width=text_width,
        transformer_heads=text_width // 64,
        transformer_layers=text_layers,
    )


def _perturb_norms_and_biases(model: CLIP, gen: torch.Generator) -> None:
    """Give norm gains/biases and linear biases non-trivial values, as trained weights have."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_norm = ".ln_" in f".{name}" or ".bn" in f".{name}" or "downsample.1." in name
            if is_norm and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias") or name.endswith("in_proj_bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))
            elif name.endswith("running_mean"):
                buf.copy_(0.1 * torch.randn(buf.shape, generator=gen))
        model.logit_scale.fill_(math.log(100.0))


def make_tiny_clip(
    arch: str = "vit",
    *,
    image_resolution: int = TINY_IMAGE_SIZE,
    width: int = 0,
    layers: int = 0,
    text_width: int = 64,
    text_layers: int = 2,
    embed_dim: int = 32,
    patch_size: int = 16,
    seed: int = 0,
) -> Dict[str, torch.Tensor]:
    """A random CLIP state dict in OpenAI key format (fp32). ``arch``: "vit" or "rn".

    ``width``/``layers`` (0: default) are the vision width and depth: 64 and 2 blocks
    for "vit"; for "rn" the stem width (default 8) and bottlenecks per stage (default 1),
    and ``image_resolution`` must be a multiple of 32. The global RNG is left untouched.
    """
    width = width or (64 if arch == "vit" else 8)
    layers = layers or (2 if arch == "vit" else 1)
    dims = _tiny_dims(arch, image_resolution, width, layers, text_width, text_layers, embed_dim, patch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(**dims)
    gen = torch.Generator().manual_seed(seed + 1)
    _perturb_norms_and_biases(model, gen)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def build_tiny_clip(arch: str = "vit", **kwargs) -> CLIP:
    """``make_tiny_clip`` built into a ``clip.model.CLIP`` (fp32, eval mode), as the loader would."""
    return _clip_from_state_dict(make_tiny_clip(arch, **kwargs))


def _clip_from_state_dict(state_dict: Dict[str, torch.Tensor]) -> CLIP:
    from clipfit.methods.clip_loader import build_clip

    return build_clip(state_dict)


def save_tiny_clip(
    path: str, fmt: str = "state_dict", state_dict: Dict[str, torch.Tensor] = None, **kwargs
) -> str:
    """Write a tiny CLIP (``make_tiny_clip(**kwargs)`` unless ``state_dict`` is given).

    ``fmt``: "state_dict" (``torch.save`` of the dict) or "jit" (a traced TorchScript
    module carrying ``input_resolution``/``context_length``/``vocab_size`` like OpenAI's).
    Returns ``path``.
    """
    state_dict = state_dict if state_dict is not None else make_tiny_clip(**kwargs)
    if fmt not in ("state_dict", "jit"):
        raise ValueError(f"fmt must be 'state_dict' or 'jit', got {fmt!r}")
    with atomic_path(path) as tmp:
        if fmt == "state_dict":
            torch.save(state_dict, tmp)
        else:
            model = _clip_from_state_dict(state_dict)
            res, context = model.visual.input_resolution, model.context_length
            for key, value in (("context_length", context), ("vocab_size", model.vocab_size)):
                delattr(model, key)  # plain attributes on CLIP; buffers in OpenAI's archives
                model.register_buffer(key, torch.tensor(value))
            model.register_buffer("input_resolution", torch.tensor(res))
            image = torch.zeros(1, 3, res, res)
            text = torch.zeros(1, context, dtype=torch.long)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings, torch.jit.save's deprecation
                traced = torch.jit.trace_module(model, {"forward": (image, text)}, check_trace=False)
                torch.jit.save(traced, tmp)
    return path


def build_vit_b16(device: Union[str, torch.device] = "meta", seed: int = 0) -> CLIP:
    """The ViT-B/16 CLIP architecture with random weights, fp32, in eval mode.

    On the ``meta`` device no memory is allocated (for parameter names and counts).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(device):
            model = CLIP(**VIT_B16)
    return model.eval()


def class_names(num_classes: int) -> list:
    """``num_classes`` distinct class names of realistic length (two or three words)."""
    vocab = [
        "red", "small", "striped", "wild", "old", "spotted", "golden", "dark", "sea", "mountain",
        "cat", "dog", "bird", "flower", "car", "texture", "aircraft", "food", "scene", "fish",
    ]
    n = len(vocab)
    return [
        f"{vocab[i % n]}_{vocab[(i // n) % n]}" + (f"_{i // (n * n)}" if i >= n * n else "")
        for i in range(num_classes)
    ]
