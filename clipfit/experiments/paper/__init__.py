"""The CLIPFit paper's reported results, as data.

Li et al., "Vision-Language Model Fine-Tuning via Simple Parameter-Efficient
Modification". One JSON file per table sits beside this module, transcribed from
the paper text as printed (known inconsistencies of the paper's own numbers are
listed in each file, not corrected):

============  ==========  ==============  ==========================================
file          setting     shots           content
============  ==========  ==============  ==========================================
table1.json   base2new    16              Table 1, base/new/hm, 11 datasets + Average
table11.json  base2new    4               Table 11 (Appendix G)
table12.json  base2new    8               Table 12 (Appendix G)
table10.json  fewshot     1, 2, 4, 8, 16  Table 10 (Appendix F), accuracy
table2.json   fewshot     1, 2, 4, 8, 16  Table 2, the 11-dataset Average only
table9.json   xd          16              Table 9 (Appendix D), ImageNet -> 10 targets
table3.json   dg          16              Table 3, ImageNet -> ImageNetV2, ImageNetSketch
============  ==========  ==============  ==========================================

API
---
``lookup(method, setting, dataset, metric="accuracy", shots=16) -> float | None``
    The paper's number, or None where the paper reports none (method, dataset or
    shots not in the setting's tables, or a value the paper text lost).

    - ``method``: trainer registry name (CLIPFit, CoOp, CoCoOp, KgCoOp, MaPLe,
      ProGrad, CLIP_Adapter, Tip-Adapter, ZeroshotCLIP) or the paper's label
      (CLIP, Adapter, CLIP-adapter, TIP-adapter, ...); case and ``-``/``_``/spaces
      are ignored. ZeroshotCLIP is not trained, so its numbers answer any ``shots``.
    - ``setting``: "base2new", "fewshot", "xd" (cross-dataset) or "dg"
      (distribution shift); anything else raises ValueError.
    - ``dataset``: Dassl name (ImageNet, OxfordFlowers, DescribableTextures,
      ImageNetV2, ...), the short name the scripts use (imagenet, oxford_flowers,
      dtd, imagenetv2, ...) or "Average" (the table's own average row: 11 datasets;
      in "xd" the 10 targets; in "dg" ImageNet and its two variants).
    - ``metric``: "base", "new" or "hm" in base2new; "accuracy" elsewhere;
      anything else raises ValueError.
    - The setting's tables are searched in the order above; the first non-null
      value wins (Table 2 supplies the 2-shot CoOp Average that Table 10 lost).
    - Values are as printed, including the cells a table lists under
      ``known_inconsistencies`` (the paper's own HM/average mismatches).

``settings() -> dict[str, dict]``
    Per setting: ``{"tables": [...], "shots": [...], "metrics": [...]}``.
``load_table(name) -> dict``
    One table's JSON (a fresh copy): ``name`` is the file stem ("table1") or the
    paper's label ("Table 1").
``table_names() -> tuple[str, ...]``; ``canonical_method(name)`` and
``canonical_dataset(name)`` -> the key used in the data, or None if unknown.
"""
from __future__ import annotations

import copy
import re
from functools import lru_cache
from pathlib import Path

from clipfit.fileio import read_json

__all__ = [
    "SETTINGS",
    "TABLES",
    "canonical_dataset",
    "canonical_method",
    "load_table",
    "lookup",
    "settings",
    "table_names",
]

_DIR = Path(__file__).resolve().parent

# Lookup order within a setting: the first table with a non-null value wins.
TABLES: tuple[str, ...] = ("table1", "table11", "table12", "table10", "table2", "table9", "table3")
SETTINGS: tuple[str, ...] = ("base2new", "fewshot", "xd", "dg")
_ZERO_SHOT_METHODS = frozenset({"ZeroshotCLIP"})
_METRIC_ALIASES = {"h": "hm", "acc": "accuracy"}

# Key used in the data -> other spellings (the paper's labels, our trainer names).
_METHOD_ALIASES: dict[str, tuple[str, ...]] = {
    "CLIPFit": (),
    "CoOp": (),
    "CoCoOp": (),
    "KgCoOp": (),
    "MaPLe": (),
    "ProGrad": (),
    "CLIP_Adapter": ("Adapter",),
    "Tip-Adapter": (),
    "ZeroshotCLIP": ("CLIP",),
}
# Dassl dataset name -> the short names the scripts and configs use, and paper labels.
_DATASET_ALIASES: dict[str, tuple[str, ...]] = {
    "ImageNet": ("imagenet",),
    "Caltech101": ("caltech101",),
    "OxfordPets": ("oxford_pets",),
    "StanfordCars": ("stanford_cars",),
    "OxfordFlowers": ("oxford_flowers", "Flowers102", "Flowers"),
    "Food101": ("food101",),
    "FGVCAircraft": ("fgvc_aircraft",),
    "SUN397": ("sun397",),
    "DescribableTextures": ("dtd",),
    "EuroSAT": ("eurosat",),
    "UCF101": ("ucf101",),
    "ImageNetV2": ("imagenetv2", "ImageNet-V2"),
    "ImageNetSketch": ("imagenet_sketch", "ImageNet-Sketch"),
    "ImageNetA": ("imagenet_a", "ImageNet-A"),
    "ImageNetR": ("imagenet_r", "ImageNet-R"),
    "Average": ("avg",),
}


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _alias_index(aliases: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {_norm(alias): key for key, names in aliases.items() for alias in (key, *names)}


_METHODS = _alias_index(_METHOD_ALIASES)
_DATASETS = _alias_index(_DATASET_ALIASES)


def canonical_method(name: str) -> str | None:
    """The data's key for a method name or paper label, or None if the paper has no such method."""
    return _METHODS.get(_norm(name))


def canonical_dataset(name: str) -> str | None:
    """The Dassl name for a Dassl name, script short name or paper label, or None if unknown."""
    return _DATASETS.get(_norm(name))


def table_names() -> tuple[str, ...]:
    """File stems of every reference table, in lookup order."""
    return TABLES


@lru_cache(maxsize=None)
def _read(stem: str) -> dict:
    return read_json(str(_DIR / f"{stem}.json"), "Reference table")


def load_table(name: str) -> dict:
    """One table's data (a copy): ``name`` is "table1" or "Table 1"."""
    stem = _norm(name)
    if stem not in TABLES:
        raise ValueError(f"No reference table {name!r}; available: {', '.join(TABLES)}.")
    return copy.deepcopy(_read(stem))


@lru_cache(maxsize=None)
def _index() -> dict[tuple[str, str, str, int | None, str], float]:
    """(setting, method, dataset, shots, metric) -> value, first non-null in TABLES order.

    Zero-shot methods are filed under shots None: their numbers do not depend on shots.
    """
    index: dict[tuple[str, str, str, int | None, str], float] = {}
    for stem in TABLES:
        table = _read(stem)
        for row in table["rows"]:
            shots = None if row["method"] in _ZERO_SHOT_METHODS else row["shots"]
            for metric in table["metrics"]:
                key = (table["setting"], row["method"], row["dataset"], shots, metric)
                if row[metric] is not None:
                    index.setdefault(key, row[metric])
    return index


@lru_cache(maxsize=None)
def _settings() -> dict[str, dict]:
    out: dict[str, dict] = {s: {"tables": [], "shots": [], "metrics": []} for s in SETTINGS}
    for stem in TABLES:
        table = _read(stem)
        entry = out[table["setting"]]
        entry["tables"].append(table["source"]["table"])
        entry["shots"] = sorted(set(entry["shots"]) | set(table["shots"]))
        entry["metrics"] += [m for m in table["metrics"] if m not in entry["metrics"]]
    return out


def settings() -> dict[str, dict]:
    """Per setting: the tables (lookup order), the shots and the metrics they report."""
    return copy.deepcopy(_settings())


def _setting_and_metric(setting: str, metric: str) -> tuple[str, str]:
    key = setting.lower()
    if key not in SETTINGS:
        raise ValueError(f"Unknown setting {setting!r}; use one of {', '.join(SETTINGS)}.")
    valid = _settings()[key]["metrics"]
    name = _METRIC_ALIASES.get(metric.lower(), metric.lower())
    if name not in valid:
        raise ValueError(f"The {key} setting reports {', '.join(valid)}, not {metric!r}.")
    return key, name


def lookup(
    method: str, setting: str, dataset: str, metric: str = "accuracy", shots: int = 16
) -> float | None:
    """The paper's number for this method, setting, dataset, metric and shots, or None if it has none."""
    setting_key, metric_key = _setting_and_metric(setting, metric)
    method_key, dataset_key = canonical_method(method), canonical_dataset(dataset)
    if method_key is None or dataset_key is None:
        return None
    shots_key = None if method_key in _ZERO_SHOT_METHODS else int(shots)
    return _index().get((setting_key, method_key, dataset_key, shots_key, metric_key))
