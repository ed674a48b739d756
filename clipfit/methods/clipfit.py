"""CLIPFit on a plain ``clip.model.CLIP``, usable without Dassl.

    from clipfit.methods.clip_loader import load_clip
    from clipfit.methods.clipfit import CLIPFitModel

    clip_model = load_clip("ViT-B/16")                     # or clip.load(...)[0].float()
    model = CLIPFitModel(clip_model, ["cat", "dog"], "a photo of a {}.")
    optim = torch.optim.SGD(model.learned_parameters().values(), lr=2e-3, momentum=0.9)
    loss, parts = model.loss(images, labels)               # CE + beta * (1 - mean cos)
    loss.backward(); optim.step()

Building the model freezes every CLIP parameter except the selected ones
(:mod:`clipfit.methods.params`) and encodes the class prompts once with the untouched
text encoder: those frozen features are all the regulariser needs, so no second
CLIP is kept.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from clipfit.methods.backbone import backbone
from clipfit.methods.classifier import CLIPClassifier
from clipfit.methods.losses import kd_regulariser, mse_regulariser
from clipfit.methods.options import CLIPFitSettings
from clipfit.methods.params import Selection, freeze_all_except, select_parameters
from clipfit.methods.templates import DEFAULT_TEMPLATE, check_template
from clipfit.methods.text import TokenizedPrompts, encode_tokens, normalize
from clipfit.errors import ConfigValueError

CFG_PREFIX = "TRAINER.CLIPFIT."


class CLIPFitModel(CLIPClassifier):
    """CLIPFit around ``clip_model`` (modified in place: parameters frozen except the tuned ones)."""

    def __init__(
        self,
        clip_model: nn.Module,
        classnames: Sequence[str],
        template: str = DEFAULT_TEMPLATE,
        settings: CLIPFitSettings = None,
    ):
        super().__init__(clip_model)
        self.settings = settings or CLIPFitSettings()
        self.settings.check()
        self.template = check_template(template, CFG_PREFIX + "TEMPLATE")
        self.classnames = list(classnames)
        text = backbone(clip_model).text
        prompts = text.tokenize_classes(self.template, classnames).to(text.positional_embedding.device)
        self.register_buffer("prompt_tokens", prompts.tokens, persistent=False)
        self.register_buffer("prompt_eot", prompts.eot, persistent=False)

        s = self.settings
        self.selection: Selection = select_parameters(
            clip_model, s.text_params, s.image_params, s.text_layers, s.image_layers,
            s.params_include, s.params_exclude, key_prefix=CFG_PREFIX,
        )
        if not self.selection.total:
            raise ConfigValueError(
                f"The CLIPFit parameter selection is empty ({CFG_PREFIX}TEXT_PARAMS {s.text_params}, "
                f"IMAGE_PARAMS {s.image_params}, PARAMS_INCLUDE {s.params_include}, PARAMS_EXCLUDE "
                f"{s.params_exclude}): tune something, or run --trainer ZeroshotCLIP for zero-shot CLIP."
            )
        freeze_all_except(clip_model, self.selection.named_parameters())
        with torch.no_grad():
            frozen = normalize(encode_tokens(clip_model, self._prompts()))
        self.register_buffer("frozen_text_features", frozen, persistent=False)

        text_biases = list(self.selection.groups["text"].values())
        if s.reg == "mse":
            if not text_biases:
                raise ConfigValueError(
                    f"{CFG_PREFIX}REG mse penalises changes of the tuned text tensors, but no text "
                    f"parameter is tuned ({CFG_PREFIX}TEXT_PARAMS {s.text_params!r}): tune text biases "
                    "or use REG kd or none."
                )
            for i, b in enumerate(text_biases):
                self.register_buffer(f"bias_ref_{i}", b.detach().float().clone(), persistent=False)

    def _prompts(self) -> TokenizedPrompts:
        return TokenizedPrompts(self.prompt_tokens, self.prompt_eot)

    def learned_parameters(self) -> Dict[str, nn.Parameter]:
        return self.selection.named_parameters()

    def checkpoint_settings(self) -> Dict[str, Any]:
        s = self.settings
        return {
            CFG_PREFIX + "TEXT_PARAMS": s.text_params,
            CFG_PREFIX + "IMAGE_PARAMS": s.image_params,
            CFG_PREFIX + "TEXT_LAYERS": list(s.text_layers),
            CFG_PREFIX + "IMAGE_LAYERS": list(s.image_layers),
            CFG_PREFIX + "PARAMS_INCLUDE": list(s.params_include),
            CFG_PREFIX + "PARAMS_EXCLUDE": list(s.params_exclude),
            "patterns (expanded)": self.selection.patterns,
        }

    def describe(self) -> List[str]:
        """Log lines: the settings, the template and the tuned parameters per group."""
        return [f"CLIPFit settings: {asdict(self.settings)}", f"Template: {self.template!r}"] + (
            self.selection.describe(self.clip)
        )

    def class_text_features(self) -> torch.Tensor:
        if not self.selection.groups["text"]:  # text encoder frozen: features never change
            return self.frozen_text_features
        return normalize(encode_tokens(self.clip, self._prompts()))

    def regulariser(self, text_features: torch.Tensor) -> torch.Tensor:
        """The ``REG`` term (fp32 scalar) for the current class features."""
        if self.settings.reg == "kd":
            return kd_regulariser(text_features, self.frozen_text_features)
        if self.settings.reg == "mse":
            biases = list(self.selection.groups["text"].values())
            refs = [getattr(self, f"bias_ref_{i}") for i in range(len(biases))]
            return mse_regulariser(biases, refs)
        return text_features.new_zeros((), dtype=torch.float32)

    def regularisers(self, text_features: torch.Tensor) -> Dict[str, Tuple[float, torch.Tensor]]:
        """``{"reg": (BETA, REG term)}``: the loss is ``CE + BETA * REG`` (parts ``ce``, ``reg``)."""
        return {"reg": (self.settings.beta, self.regulariser(text_features))}
