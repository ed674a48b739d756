"""Hand-crafted prompt templates, one per dataset (those of the CLIPFit authors' code).

Keys are Dassl ``DATASET.NAME`` values. A template holds one ``{}`` for the class name.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from yacs.config import CfgNode

DEFAULT_TEMPLATE = "a photo of a {}."

DATASET_TEMPLATES: Dict[str, str] = {
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


def check_template(template: str, key: str) -> str:
    """``template`` if it formats one class name; else an error naming the config ``key``."""
    try:
        ok = "{}" in template and template.format("x") != template
    except (IndexError, KeyError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"{key} is {template!r}: a template needs exactly one '{{}}' where the class name "
            "goes (and no other braces), e.g. 'a photo of a {}.'"
        )
    return template


def resolve_template(cfg: CfgNode, trainer_key: Optional[str] = None) -> str:
    """The template for this run.

    Order: the trainer's own key (dotted, e.g. ``"TRAINER.CLIPFIT.TEMPLATE"``) when
    given and non-empty, then ``DATASET.TEMPLATE``, then the dataset's default, then
    ``"a photo of a {}."``.
    """
    if trainer_key:
        node = cfg
        for part in trainer_key.split("."):
            node = node[part]
        if node:
            return check_template(node, trainer_key)
    if cfg.DATASET.TEMPLATE:
        return check_template(cfg.DATASET.TEMPLATE, "DATASET.TEMPLATE")
    return DATASET_TEMPLATES.get(cfg.DATASET.NAME, DEFAULT_TEMPLATE)


def class_prompts(template: str, classnames: Sequence[str]) -> List[str]:
    """One prompt per class: ``template`` filled with the class name, "_" read as a space."""
    return [template.format(name.replace("_", " ")) for name in classnames]
