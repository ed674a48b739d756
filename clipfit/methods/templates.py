"""Hand-crafted prompt templates: each trainer uses its own reference code's, per dataset.

Keys are Dassl ``DATASET.NAME`` values; a template holds one ``{}`` for the class name.
Two tables exist in the reference code, and they differ only for DTD:

- :data:`CLIPFIT_TEMPLATES`: the CLIPFit authors' ``trainers/ClipFit.py``, identical to
  KgCoOp's ``trainers/kgcoop.py`` (DTD "a photo of a {}, a type of texture.");
- :data:`ZEROSHOT_TEMPLATES`: CoOp's ``trainers/zsclip.py`` (its ``ZeroshotCLIP``),
  identical to CLIP-Adapter's ``clip_adapter.py`` (DTD "{} texture.").

CoOp itself has no hand-crafted template: its prompt is learned context, class name, ".".

``DATASET.TEMPLATE`` (one key for every trainer) replaces the table's template when set:
the class prompts of zero-shot CLIP and CLIPFit, and the hand-crafted prompts KgCoOp
and CLIP-Adapter build their class features from.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

from yacs.config import CfgNode
from clipfit.errors import ConfigValueError

DEFAULT_TEMPLATE = "a photo of a {}."

CLIPFIT_TEMPLATES: Dict[str, str] = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "a photo of a {}, a type of texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": DEFAULT_TEMPLATE,
    "Food101": "a photo of {}, a type of food.",
    "SUN397": DEFAULT_TEMPLATE,
    "Caltech101": DEFAULT_TEMPLATE,
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": DEFAULT_TEMPLATE,
    "ImageNetSketch": DEFAULT_TEMPLATE,
    "ImageNetV2": DEFAULT_TEMPLATE,
    "ImageNetA": DEFAULT_TEMPLATE,
    "ImageNetR": DEFAULT_TEMPLATE,
}

ZEROSHOT_TEMPLATES: Dict[str, str] = {**CLIPFIT_TEMPLATES, "DescribableTextures": "{} texture."}

# trainer name -> its reference's table; trainers not listed use CLIPFIT_TEMPLATES
TRAINER_TEMPLATES: Dict[str, Dict[str, str]] = {
    "ZeroshotCLIP": ZEROSHOT_TEMPLATES,
    "CLIP_Adapter": ZEROSHOT_TEMPLATES,
    "KgCoOp": CLIPFIT_TEMPLATES,
    "CLIPFit": CLIPFIT_TEMPLATES,
    "ClipFit": CLIPFIT_TEMPLATES,
}


def check_template(template: str, key: str) -> str:
    """``template`` if it formats one class name; else an error naming the config ``key``."""
    try:
        ok = "{}" in template and template.format("x") != template
    except (IndexError, KeyError, ValueError):
        ok = False
    if not ok:
        raise ConfigValueError(
            f"{key} is {template!r}: a template needs exactly one '{{}}' where the class name "
            "goes (and no other braces), e.g. 'a photo of a {}.'"
        )
    return template


def resolve_template(cfg: CfgNode) -> str:
    """``DATASET.TEMPLATE`` when set, else the template of ``TRAINER.NAME``'s reference for
    ``DATASET.NAME`` (see the module docstring), else ``"a photo of a {}."``."""
    if cfg.DATASET.TEMPLATE:
        return check_template(cfg.DATASET.TEMPLATE, "DATASET.TEMPLATE")
    table = TRAINER_TEMPLATES.get(cfg.TRAINER.NAME, CLIPFIT_TEMPLATES)
    return table.get(cfg.DATASET.NAME, DEFAULT_TEMPLATE)


def class_prompts(template: str, classnames: Sequence[str]) -> List[str]:
    """One prompt per class: ``template`` filled with the class name, "_" read as a space."""
    return [template.format(name.replace("_", " ")) for name in classnames]
