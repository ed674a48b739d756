"""Where each tuned tensor sits in CLIP: its plot series, position and tick label.

Names are OpenAI CLIP parameter names (``transformer.resblocks.3.mlp.c_proj.bias``,
``visual.transformer.resblocks.0.ln_1.weight``, ``visual.ln_pre.bias``, ...), given in the
model's order. A series is what one curve of a figure shows:

- text encoder: one series per tensor role, one point per residual block, labelled by the
  block index (``TEXT_LAYERS`` indexing): CLIPFit's series is ``mlp.c_proj.bias``;
- image encoder norms: every LayerNorm (BatchNorm for ResNets) in forward order in one
  series for gains and one for biases, labelled by module: ``ln_pre``, ``0.ln_1``,
  ``0.ln_2``, ..., ``ln_post`` (position 0 is ``ln_pre``, the paper's "first LayerNorm");
- other image tensors: one series per role, one point per block.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

_BLOCK = (
    re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)$"),
    re.compile(r"^visual\.transformer\.resblocks\.(\d+)\.(.+)$"),
    re.compile(r"^visual\.(layer\d\.\d+)\.(.+)$"),  # ResNet bottleneck
)
ENCODERS = ("text", "image")


@dataclass(frozen=True)
class TensorInfo:
    """One tuned tensor's place in the figures and tables."""

    name: str
    encoder: str  # "text" or "image"
    kind: str  # "gain" (a weight) or "bias"
    series: str  # e.g. "text mlp.c_proj.bias", "image LayerNorm gain"
    label: str  # tick label: block index ("3") or norm module ("0.ln_1", "ln_pre")
    position: int  # index along the series (0-based)


def encoder_of(name: str) -> str:
    """``image`` for ``visual.*`` tensors, ``text`` for the rest."""
    return "image" if name.startswith("visual.") else "text"


def _split_block(name: str) -> Tuple[str, str]:
    """(block label or "", name inside the block or the encoder)."""
    for pattern in _BLOCK:
        m = pattern.match(name)
        if m:
            return m.group(1), m.group(2)
    return "", name.split(".", 1)[1] if name.startswith("visual.") else name


def _norm_type(module: str) -> str:
    leaf = module.rsplit(".", 1)[-1]
    if leaf.startswith("ln_"):
        return "LayerNorm"
    if re.fullmatch(r"bn\d", leaf) or module.endswith("downsample.1"):
        return "BatchNorm"
    return ""


def describe(names: Sequence[str]) -> List[TensorInfo]:
    """A :class:`TensorInfo` per name, positions counted per series in the given order."""
    out, counts = [], {}
    for name in names:
        encoder = encoder_of(name)
        block, rest = _split_block(name)
        module, leaf = rest.rsplit(".", 1) if "." in rest else ("", rest)
        kind = "gain" if leaf == "weight" else "bias"
        norm = _norm_type(module) if encoder == "image" else ""
        if norm:
            series = f"image {norm} {kind}"
            label = f"{block}.{module}" if block else module
        else:
            series = f"{encoder} {rest}"
            label = block or module or rest
        position = counts.get(series, 0)
        counts[series] = position + 1
        out.append(TensorInfo(name, encoder, kind, series, label, position))
    return out


def series_order(infos: Sequence[TensorInfo]) -> Dict[str, List[TensorInfo]]:
    """The infos grouped by series, series in order of first appearance."""
    grouped: Dict[str, List[TensorInfo]] = {}
    for info in infos:
        grouped.setdefault(info.series, []).append(info)
    return grouped


ROLE_NAMES = {
    "mlp.c_proj.bias": "FFN output bias (mlp.c_proj.bias)",
    "mlp.c_fc.bias": "FFN hidden bias (mlp.c_fc.bias)",
}


def series_title(series: str) -> str:
    """A readable title: "Text encoder: FFN output bias (mlp.c_proj.bias)", "Image encoder: LayerNorm gain"."""
    encoder, what = series.split(" ", 1)
    return f"{encoder.capitalize()} encoder: {ROLE_NAMES.get(what, what)}"


def x_label(series: str) -> str:
    """The x-axis caption of a series: which layers its positions are."""
    encoder, what = series.split(" ", 1)
    if encoder == "image" and what.split(" ")[0] in ("LayerNorm", "BatchNorm"):
        norm = what.split(" ")[0]
        return f"{norm} in forward order (b.ln_1 / b.ln_2: in residual block b)"
    key = "TEXT_LAYERS" if encoder == "text" else "IMAGE_LAYERS"
    return f"{encoder} encoder residual block (index as in TRAINER.CLIPFIT.{key})"
