"""Which parameters of a CLIP (OpenAI's, or an open_clip backbone) are tuned: data, not code.

A selection is a list of parameter-name patterns, as PEFT's ``target_modules``. A pattern
is a glob (``*``, ``?``, ``[...]``; ``*`` also crosses dots) matched against a parameter's
full name, e.g. ``transformer.resblocks.*.mlp.c_fc.bias``; a pattern that names a module
(``ln_final``, ``transformer.resblocks.11.attn``) matches all of its parameters.

``TEXT_PARAMS`` and ``IMAGE_PARAMS`` are named shortcuts that expand to patterns
(:data:`TEXT_PRESETS`, :data:`IMAGE_PRESETS`; ResNet encoders :data:`RESNET_IMAGE_PRESETS`):
  text   ``proj_bias``  the FFN's second linear layer bias ``mlp.c_proj.bias`` (CLIPFit; Table 5 (d))
         ``ffn_bias``   both FFN biases ``mlp.c_fc.bias`` and ``mlp.c_proj.bias`` (Table 5 (c))
         ``all_bias``   every bias of each block: attention in/out projections, both LayerNorms,
                        both FFN layers (Table 5 (b); 67,584 for ViT-B/16)
         ``none``
  image  ``layernorm``  gain and bias of every LayerNorm: ``ln_pre``, each block's ``ln_1``/``ln_2``,
                        ``ln_post`` (CLIPFit). ResNet encoders have no LayerNorm: their BatchNorm
                        gains and biases are tuned instead, running statistics frozen.
         ``bias``       every bias (with the text ``all_bias``: Table 5 (a), BitFit)
         ``none``
On open_clip backbones the same presets apply per family (:func:`image_presets`,
:data:`clipfit.methods.backbone.IMAGE_NORM_PATTERNS`): ``layernorm`` is every normalisation layer
of the image tower (timm ViT trunks: ``norm1``/``norm2`` and the trunk's other norms; ConvNeXt:
its LayerNorms), and the text patterns start with ``text.`` on custom-text models (SigLIP, EVA02).

``TEXT_LAYERS``/``IMAGE_LAYERS`` restrict the presets to block indices (negative counts
from the end; empty: all). Image blocks are ViT residual blocks or, for ResNets, the
bottlenecks in forward order. Image parameters outside the blocks are tuned when the list
is empty, or when it names their end: ``"pre"`` (``ln_pre``; the ResNet stem) and ``"post"``
(``ln_post``; the ResNet attention pool), e.g. ``["pre", 0]``.

``PARAMS_INCLUDE`` adds the parameters its patterns match (layer lists do not apply);
``PARAMS_EXCLUDE`` removes those its patterns match from the result. A pattern that
matches no parameter is an error listing the nearest names. Tuned parameters under
``visual.`` form the "image" group, all others the "text" group.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch.nn as nn

from clipfit.methods.backbone import IMAGE_NORM_PATTERNS, backbone
from clipfit.errors import ConfigValueError

TEXT_PRESETS: Dict[str, List[str]] = {
    "proj_bias": ["transformer.resblocks.*.mlp.c_proj.bias"],
    "ffn_bias": ["transformer.resblocks.*.mlp.c_fc.bias", "transformer.resblocks.*.mlp.c_proj.bias"],
    "all_bias": ["transformer.resblocks.*bias"],  # ".bias" and the attention's "in_proj_bias"
    "none": [],
}
IMAGE_PRESETS: Dict[str, List[str]] = {"layernorm": IMAGE_NORM_PATTERNS["vit"], "bias": ["visual.*bias"], "none": []}
RESNET_IMAGE_PRESETS: Dict[str, List[str]] = {**IMAGE_PRESETS, "layernorm": IMAGE_NORM_PATTERNS["resnet"]}


def image_presets(kind: str) -> Dict[str, List[str]]:
    """The image presets of an image family (:data:`clipfit.methods.backbone.IMAGE_NORM_PATTERNS`):
    ``layernorm`` is every normalisation layer of the family (ConvNeXt's norms, ResNets' BatchNorms)."""
    return {**IMAGE_PRESETS, "layernorm": list(IMAGE_NORM_PATTERNS[kind])}


def text_presets(prefix: str) -> Dict[str, List[str]]:
    """:data:`TEXT_PRESETS` for a text tower whose parameters start with ``prefix`` (``text.`` for
    open_clip's custom-text models such as SigLIP and EVA02)."""
    return {k: [prefix + p for p in v] for k, v in TEXT_PRESETS.items()}

TEXT_CHOICES = tuple(TEXT_PRESETS)
IMAGE_CHOICES = tuple(IMAGE_PRESETS)
PATTERN_HELP = (
    "A pattern is a glob on a parameter's full name (e.g. 'transformer.resblocks.*.mlp.c_fc.bias') "
    "or a module's name ('ln_final')."
)


@dataclass
class Selection:
    """Tuned parameters by group ("text", "image"), keyed by their names in the CLIP model."""

    groups: Dict[str, Dict[str, nn.Parameter]]
    labels: Dict[str, str] = field(default_factory=dict)  # group -> what was asked for
    notes: List[str] = field(default_factory=list)
    patterns: Dict[str, List[str]] = field(default_factory=dict)  # text/image/include/exclude, expanded

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
        """Log lines: the expanded patterns, tensors and parameters per group, the total, notes."""
        lines = [f"  patterns {kind}: {pats}" for kind, pats in self.patterns.items() if pats]
        lines += [
            f"  {g} ({self.labels.get(g, '')}): {len(params)} tensors, {self.counts()[g]:,} parameters"
            for g, params in self.groups.items()
        ]
        total = f"  total: {self.total:,}"
        if model is not None:
            n_all = sum(p.numel() for p in model.parameters())
            total += f" of {n_all:,} ({100.0 * self.total / n_all:.4f}%)"
        return ["Tuned parameters:"] + lines + [total] + [f"  note: {n}" for n in self.notes]


def matches(name: str, pattern: str) -> bool:
    """Whether parameter ``name`` matches ``pattern`` (a glob on the name, or on a module's name)."""
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*")


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    return any(matches(name, p) for p in patterns)


def near_names(pattern: str, names: Iterable[str], n: int = 5) -> List[str]:
    """Parameter and module names close to ``pattern``, block indices written as ``*``."""
    candidates = set()
    for name in names:
        parts = re.sub(r"\.\d+(?=\.)", ".*", name).split(".")
        candidates.update(".".join(parts[:k]) for k in range(1, len(parts) + 1))
    return difflib.get_close_matches(pattern, sorted(candidates), n=n, cutoff=0.5)


def check_patterns(patterns: Sequence[str], names: Sequence[str], key: str) -> None:
    """An error naming ``key`` for the first pattern that matches none of ``names``."""
    for pattern in patterns:
        if not isinstance(pattern, str) or not any(matches(n, pattern) for n in names):
            near = near_names(str(pattern), names)
            hint = f" Near names: {', '.join(near)}." if near else ""
            raise ConfigValueError(
                f"{key} pattern {pattern!r} matches no parameter of this CLIP.{hint} {PATTERN_HELP}"
            )


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
            raise ConfigValueError(
                f"{key} lists {i!r}, but the encoder has {n} blocks: use integers from 0 to "
                f"{n - 1} (or -{n} to -1 from the end){extra}; [] means all."
            )
    return blocks, ends


def _block_prefixes(model: nn.Module, encoder: str) -> List[List[str]]:
    """Per block in forward order, the name prefixes of its parameters."""
    bb = backbone(model)
    if encoder == "text":
        return [[f"{bb.text.prefix}transformer.resblocks.{i}."] for i in range(len(bb.text.blocks))]
    return bb.image.block_prefixes()


def _select(
    model: nn.Module,
    encoder: str,
    rule: Callable[[str], bool],
    layers: Sequence[int],
    key: str,
    include_outside_blocks: bool,
) -> Dict[str, nn.Parameter]:
    blocks = _block_prefixes(model, encoder)
    wanted, ends = _layer_spec(layers, len(blocks), key, allow_ends=include_outside_blocks)
    start = "visual." if encoder == "image" else backbone(model).text.prefix + "transformer."
    chosen = {}
    for name, p in model.named_parameters():
        if not name.startswith(start) or not rule(name):
            continue
        block = next((i for i, pres in enumerate(blocks) if name.startswith(tuple(pres))), None)
        if block is None:
            keep = include_outside_blocks and backbone(model).image.end(name) in ends
        else:
            keep = wanted is None or block in wanted
        if keep:
            chosen[name] = p
    return chosen


def select_parameters(
    model: nn.Module,
    text: str = "proj_bias",
    image: str = "layernorm",
    text_layers: Sequence[int] = (),
    image_layers: Sequence[int] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    key_prefix: str = "TRAINER.CLIPFIT.",
) -> Selection:
    """The parameters to tune (see the module docstring). Does not change ``model``."""
    if text not in TEXT_CHOICES:
        raise ConfigValueError(f"{key_prefix}TEXT_PARAMS is {text!r}; choose one of {', '.join(TEXT_CHOICES)}.")
    if image not in IMAGE_CHOICES:
        raise ConfigValueError(f"{key_prefix}IMAGE_PARAMS is {image!r}; choose one of {', '.join(IMAGE_CHOICES)}.")
    names = [n for n, _ in model.named_parameters()]
    check_patterns(include, names, key_prefix + "PARAMS_INCLUDE")
    check_patterns(exclude, names, key_prefix + "PARAMS_EXCLUDE")
    bb = backbone(model)
    resnet = bb.image.kind == "resnet"
    patterns = {
        "text": list(text_presets(bb.text.prefix)[text]),
        "image": list(image_presets(bb.image.kind)[image]),
        "include": list(include),
        "exclude": list(exclude),
    }
    chosen = set(_select(model, "text", lambda n: matches_any(n, patterns["text"]), text_layers,
                         key_prefix + "TEXT_LAYERS", False))
    chosen |= set(_select(model, "image", lambda n: matches_any(n, patterns["image"]), image_layers,
                          key_prefix + "IMAGE_LAYERS", True))
    chosen |= {n for n in names if matches_any(n, include)}
    chosen -= {n for n in names if matches_any(n, exclude)}
    groups: Dict[str, Dict[str, nn.Parameter]] = {"text": {}, "image": {}}
    for name, p in model.named_parameters():
        if name in chosen:
            groups["image" if name.startswith("visual.") else "text"][name] = p
    notes = []
    if resnet and image == "layernorm":
        notes.append(
            "the ResNet image encoder has no LayerNorm: tuning its BatchNorm gains and biases "
            "instead; running statistics stay frozen (BatchNorm kept in eval mode)"
        )
    elif resnet and image == "bias":
        notes.append("ResNet image encoder: BatchNorm running statistics stay frozen (eval mode)")
    extra = (" + PARAMS_INCLUDE" if include else "") + (" - PARAMS_EXCLUDE" if exclude else "")
    labels = {
        "text": f"{text}, blocks {list(text_layers) or 'all'}{extra}",
        "image": f"{image}, blocks {list(image_layers) or 'all'}{extra}",
    }
    return Selection(groups, labels, notes, patterns)


def image_layernorm_parameters(model: nn.Module) -> Selection:
    """The image encoder's LayerNorms only (BatchNorm affine for ResNets): the "+UL" variant."""
    return select_parameters(model, text="none", image="layernorm")


def freeze_all_except(model: nn.Module, tuned: Dict[str, nn.Parameter]) -> None:
    """``requires_grad`` off for every parameter of ``model``, on for those in ``tuned``."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in tuned.values():
        p.requires_grad_(True)
