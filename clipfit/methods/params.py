"""Which parameters of a plain ``clip.model.CLIP`` are tuned: a config choice, not code.

Text encoder (``TEXT_PARAMS``), inside each residual block of ``transformer.resblocks``:
  ``proj_bias``  the FFN's second linear layer bias ``mlp.c_proj.bias`` (CLIPFit; Table 5 (d))
  ``ffn_bias``   both FFN biases ``mlp.c_fc.bias`` and ``mlp.c_proj.bias`` (Table 5 (c))
  ``all_bias``   every bias of the block: attention in/out projections, both LayerNorms,
                 both FFN layers (Table 5 (b); 67,584 for ViT-B/16)
  ``none``
Image encoder (``IMAGE_PARAMS``):
  ``layernorm``  gain and bias of every LayerNorm: ``ln_pre``, each block's ``ln_1``/``ln_2``,
                 ``ln_post`` (CLIPFit). ResNet encoders have no LayerNorm: their BatchNorm
                 gains and biases are tuned instead, running statistics frozen.
  ``bias``       every bias (with the text ``all_bias``: Table 5 (a), BitFit)
  ``none``
``TEXT_LAYERS``/``IMAGE_LAYERS`` list block indices (negative counts from the end;
empty: all). Image blocks are ViT residual blocks or, for ResNets, the bottlenecks in
forward order. Image parameters outside the blocks are tuned when the list is empty, or
when it names their end: ``"pre"`` (``ln_pre``; the ResNet stem) and ``"post"``
(``ln_post``; the ResNet attention pool), e.g. ``["pre", 0]``. The text ``ln_final`` is
never tuned.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch.nn as nn
from yacs.config import CfgNode

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from clip.model import CLIP, ModifiedResNet

TEXT_CHOICES = ("proj_bias", "ffn_bias", "all_bias", "none")
IMAGE_CHOICES = ("layernorm", "bias", "none")


@dataclass
class Selection:
    """Tuned parameters by group ("text", "image"), keyed by their names in the CLIP model."""

    groups: Dict[str, Dict[str, nn.Parameter]]
    labels: Dict[str, str] = field(default_factory=dict)  # group -> what was asked for
    notes: List[str] = field(default_factory=list)

    def named_parameters(self) -> Dict[str, nn.Parameter]:
        """All tuned parameters, text first, each group in the model's order."""
        return {name: p for group in self.groups.values() for name, p in group.items()}

    def counts(self) -> Dict[str, int]:
        """Number of tuned scalars per group."""
        return {g: sum(p.numel() for p in params.values()) for g, params in self.groups.items()}

    @property
    def total(self) -> int:
        return sum(self.counts().values())

    def describe(self, model: Optional[nn.Module] = None) -> List[str]:
        """Log lines: tensors and parameters per group, the total, and any notes."""
        lines = [
            f"  {g} ({self.labels.get(g, '')}): {len(params)} tensors, {self.counts()[g]:,} parameters"
            for g, params in self.groups.items()
        ]
        total = f"  total: {self.total:,}"
        if model is not None:
            n_all = sum(p.numel() for p in model.parameters())
            total += f" of {n_all:,} ({100.0 * self.total / n_all:.4f}%)"
        return ["Tuned parameters:"] + lines + [total] + [f"  note: {n}" for n in self.notes]


ENDS = ("pre", "post")


def _layer_spec(layers: Sequence, n: int, key: str, allow_ends: bool) -> Tuple[Optional[set], set]:
    """(block indices, named ends); indices None means every block and both ends."""
    if not layers:
        return None, set(ENDS)
    blocks, ends = set(), set()
    for i in layers:
        if allow_ends and i in ENDS:
            ends.add(i)
        elif isinstance(i, int) and -n <= i < n:
            blocks.add(i % n)
        else:
            extra = ', or "pre"/"post" for the parameters before/after the blocks' if allow_ends else ""
            raise ValueError(
                f"{key} lists {i!r}, but the encoder has {n} blocks: use integers from 0 to "
                f"{n - 1} (or -{n} to -1 from the end){extra}; [] means all."
            )
    return blocks, ends


def _image_end(name: str) -> str:
    """Which end of the image encoder a parameter outside the blocks belongs to."""
    after = ("visual.ln_post.", "visual.attnpool.")
    return "post" if name.startswith(after) or name == "visual.proj" else "pre"


def _block_prefixes(model: CLIP, encoder: str) -> List[str]:
    if encoder == "text":
        return [f"transformer.resblocks.{i}." for i in range(len(model.transformer.resblocks))]
    visual = model.visual
    if isinstance(visual, ModifiedResNet):
        return [
            f"visual.layer{s}.{j}." for s in range(1, 5) for j in range(len(getattr(visual, f"layer{s}")))
        ]
    return [f"visual.transformer.resblocks.{i}." for i in range(len(visual.transformer.resblocks))]


def _norm_parameter_names(module: nn.Module, prefix: str, norm_types: tuple) -> set:
    return {
        f"{prefix}{mod_name}.{p_name}"
        for mod_name, mod in module.named_modules()
        if isinstance(mod, norm_types)
        for p_name, _ in mod.named_parameters(recurse=False)
    }


def _is_bias(name: str) -> bool:
    return name.endswith("bias")  # ".bias" and MultiheadAttention's "in_proj_bias"


def _select(
    model: CLIP,
    encoder: str,
    rule: Callable[[str], bool],
    layers: Sequence[int],
    key: str,
    include_outside_blocks: bool,
) -> Dict[str, nn.Parameter]:
    blocks = _block_prefixes(model, encoder)
    wanted, ends = _layer_spec(layers, len(blocks), key, allow_ends=include_outside_blocks)
    in_encoder = (lambda n: n.startswith("visual.")) if encoder == "image" else (
        lambda n: n.startswith("transformer.")
    )
    chosen = {}
    for name, p in model.named_parameters():
        if not in_encoder(name) or not rule(name):
            continue
        block = next((i for i, pre in enumerate(blocks) if name.startswith(pre)), None)
        if block is None:
            keep = include_outside_blocks and _image_end(name) in ends
        else:
            keep = wanted is None or block in wanted
        if keep:
            chosen[name] = p
    return chosen


def select_parameters(
    model: CLIP,
    text: str = "proj_bias",
    image: str = "layernorm",
    text_layers: Sequence[int] = (),
    image_layers: Sequence[int] = (),
    key_prefix: str = "TRAINER.CLIPFIT.",
) -> Selection:
    """The parameters to tune (see the module docstring). Does not change ``model``."""
    if text not in TEXT_CHOICES:
        raise ValueError(f"{key_prefix}TEXT_PARAMS is {text!r}; choose one of {', '.join(TEXT_CHOICES)}.")
    if image not in IMAGE_CHOICES:
        raise ValueError(f"{key_prefix}IMAGE_PARAMS is {image!r}; choose one of {', '.join(IMAGE_CHOICES)}.")
    text_rules: Dict[str, Callable[[str], bool]] = {
        "proj_bias": lambda n: n.endswith("mlp.c_proj.bias"),
        "ffn_bias": lambda n: n.endswith("mlp.c_proj.bias") or n.endswith("mlp.c_fc.bias"),
        "all_bias": _is_bias,
        "none": lambda n: False,
    }
    resnet = isinstance(model.visual, ModifiedResNet)
    norm_types = (nn.BatchNorm2d,) if resnet else (nn.LayerNorm,)
    norm_names = _norm_parameter_names(model.visual, "visual.", norm_types)
    image_rules: Dict[str, Callable[[str], bool]] = {
        "layernorm": lambda n: n in norm_names,
        "bias": _is_bias,
        "none": lambda n: False,
    }
    groups = {
        "text": _select(model, "text", text_rules[text], text_layers, key_prefix + "TEXT_LAYERS", False),
        "image": _select(model, "image", image_rules[image], image_layers, key_prefix + "IMAGE_LAYERS", True),
    }
    notes = []
    if resnet and image == "layernorm":
        notes.append(
            "the ResNet image encoder has no LayerNorm: tuning its BatchNorm gains and biases "
            "instead; running statistics stay frozen (BatchNorm kept in eval mode)"
        )
    elif resnet and image == "bias":
        notes.append("ResNet image encoder: BatchNorm running statistics stay frozen (eval mode)")
    labels = {
        "text": f"{text}, blocks {list(text_layers) or 'all'}",
        "image": f"{image}, blocks {list(image_layers) or 'all'}",
    }
    return Selection(groups, labels, notes)


def selection_from_cfg(model: CLIP, node: CfgNode, key_prefix: str = "TRAINER.CLIPFIT.") -> Selection:
    """:func:`select_parameters` with a config node's TEXT_PARAMS/IMAGE_PARAMS/TEXT_LAYERS/IMAGE_LAYERS."""
    return select_parameters(
        model, node.TEXT_PARAMS, node.IMAGE_PARAMS, list(node.TEXT_LAYERS), list(node.IMAGE_LAYERS), key_prefix
    )


def image_layernorm_parameters(model: CLIP) -> Selection:
    """The image encoder's LayerNorms only (BatchNorm affine for ResNets): the "+UL" variant."""
    return select_parameters(model, text="none", image="layernorm")


def freeze_all_except(model: nn.Module, tuned: Dict[str, nn.Parameter]) -> None:
    """``requires_grad`` off for every parameter of ``model``, on for those in ``tuned``."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in tuned.values():
        p.requires_grad_(True)
