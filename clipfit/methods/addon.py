"""Baselines that add learned modules to a frozen CLIP (CoOp, KgCoOp, CLIP-Adapter).

:class:`AddOnClassifier` freezes every CLIP parameter, learns the modules a subclass
adds as attributes (context vectors, an adapter) and, with ``update_image_ln`` ("+UL",
CLIPFit paper Table 4, key ``TRAINER.UPDATE_IMAGE_LN``), also the image encoder's
LayerNorms, chosen by the same code as CLIPFit's (:func:`clipfit.methods.params.image_layernorm_parameters`).
Its loss is :meth:`CLIPClassifier.loss`: cross-entropy on the cosine logits plus the
weighted terms a subclass returns from ``regularisers`` (KgCoOp's knowledge-guided term).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch.nn as nn

from clipfit.methods.classifier import CLIPClassifier
from clipfit.methods.params import Selection, freeze_all_except, image_layernorm_parameters

UL_KEY = "TRAINER.UPDATE_IMAGE_LN"


class AddOnClassifier(CLIPClassifier):
    """A frozen CLIP (``self.clip``) plus learned modules; optionally its image LayerNorms."""

    def __init__(self, clip_model: nn.Module, update_image_ln: bool = False):
        super().__init__(clip_model)
        self.update_image_ln = bool(update_image_ln)
        self.image_ln: Optional[Selection] = image_layernorm_parameters(clip_model) if update_image_ln else None
        freeze_all_except(clip_model, self.image_ln.named_parameters() if self.image_ln else {})

    def added_parameters(self) -> Dict[str, nn.Parameter]:
        """The parameters of the modules the method adds (everything outside ``self.clip``)."""
        return {name: p for name, p in self.named_parameters() if not name.startswith("clip.")}

    def learned_parameters(self) -> Dict[str, nn.Parameter]:
        """Added parameters, then the image LayerNorms under +UL (by their CLIP names)."""
        tuned_ln = self.image_ln.named_parameters() if self.image_ln else {}
        return {**self.added_parameters(), **tuned_ln}

    def checkpoint_settings(self) -> Dict[str, Any]:
        return {UL_KEY: self.update_image_ln}

    def method_lines(self) -> List[str]:
        """Log lines describing the method's own settings (subclasses add theirs)."""
        return []

    def describe(self) -> List[str]:
        """Log lines: the method's settings and the learned tensors with their counts."""
        added = self.added_parameters()
        n_added = sum(p.numel() for p in added.values())
        n_all = sum(p.numel() for p in self.parameters())
        lines = self.method_lines() + ["Learned parameters:"]
        lines += [f"  {name} {list(p.shape)}: {p.numel():,}" for name, p in added.items()]
        n_ln = 0
        if self.image_ln is not None:
            n_ln = self.image_ln.total
            lines.append(
                f"  image LayerNorms (+UL, {UL_KEY}): {len(self.image_ln.groups['image'])} tensors, {n_ln:,}"
            )
            lines += [f"  note: {n}" for n in self.image_ln.notes]
        lines.append(f"  total: {n_added + n_ln:,} of {n_all:,} ({100.0 * (n_added + n_ln) / n_all:.4f}%)")
        return lines
