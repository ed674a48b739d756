"""The paper's evaluation protocol as data: which datasets each setting uses (in the paper's
order), and which config each trainer uses per setting, dataset and shots (:data:`CONFIG_RULES`,
the source of each choice beside it).

One source for the experiment scripts, the sweep runner, the paper runner and the results
tables. Names are CoOp's dataset config names (``configs/datasets/<name>.yaml``).
``python -m clipfit.experiments.protocol table`` prints the config table.
"""
from __future__ import annotations

import argparse
import fnmatch
from dataclasses import dataclass
from typing import Dict, List, Tuple

from clipfit.errors import ConfigValueError

# The 11 datasets of CoOp and of the paper, in the order of the paper's tables.
DATASETS: Tuple[str, ...] = (
    "imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
    "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101",
)
SOURCE_DATASET = "imagenet"  # cross-dataset and distribution shift train on 16-shot ImageNet
DG_TARGETS: Tuple[str, ...] = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
XD_TARGETS: Tuple[str, ...] = tuple(d for d in DATASETS if d != SOURCE_DATASET)

DISPLAY_NAMES: Dict[str, str] = {
    "imagenet": "ImageNet", "caltech101": "Caltech101", "oxford_pets": "OxfordPets",
    "stanford_cars": "StanfordCars", "oxford_flowers": "Flowers102", "food101": "Food101",
    "fgvc_aircraft": "FGVCAircraft", "sun397": "SUN397", "dtd": "DTD", "eurosat": "EuroSAT",
    "ucf101": "UCF101", "imagenetv2": "ImageNetV2", "imagenet_sketch": "ImageNet-Sketch",
    "imagenet_a": "ImageNet-A", "imagenet_r": "ImageNet-R",
}

SEEDS: Tuple[int, ...] = (1, 2, 3)
FEWSHOT_SHOTS: Tuple[int, ...] = (1, 2, 4, 8, 16)
SETTINGS: Tuple[str, ...] = ("base2new", "fewshot", "xd", "dg")

_SETTING_DATASETS: Dict[str, Tuple[str, ...]] = {
    "base2new": DATASETS,
    "fewshot": DATASETS,
    "xd": XD_TARGETS,
    "dg": DG_TARGETS,
}


def setting_datasets(setting: str) -> Tuple[str, ...]:
    """The evaluation datasets of ``setting`` (targets only for ``xd`` and ``dg``)."""
    try:
        return _SETTING_DATASETS[setting]
    except KeyError:
        raise ConfigValueError(f"Unknown setting '{setting}'; choose one of {', '.join(SETTINGS)}")


def display_name(dataset: str) -> str:
    """The paper's name for a dataset config name (the name itself when unknown)."""
    return DISPLAY_NAMES.get(dataset, dataset)


def dataset_order(names) -> List[str]:
    """``names`` sorted as in the paper's tables; unknown names last, alphabetically."""
    known = list(DATASETS) + list(DG_TARGETS)
    return sorted(set(names), key=lambda n: (known.index(n) if n in known else len(known), n))


# ---------------------------------------------------------------- the default configs

DEFAULT_TRAINER = "CLIPFit"
TRAINER_ALIASES: Dict[str, str] = {"ClipFit": "CLIPFit"}  # the authors' name shares CLIPFit's configs
# Trainers that are evaluated only, never trained (their test needs no trained model)
EVAL_ONLY_TRAINERS: Tuple[str, ...] = ("ZeroshotCLIP*", "TipAdapter")


@dataclass(frozen=True)
class ConfigRule:
    """One row of the protocol: ``config`` (a name under ``configs/trainers/<trainer>/``; ``{dataset}``
    is replaced) for the runs that match every pattern (``fnmatch``; ``|`` separates choices)."""

    trainer: str
    setting: str
    dataset: str
    shots: str
    config: str
    source: str

    def matches(self, trainer: str, setting: str, dataset: str, shots: int) -> bool:
        return all(any(fnmatch.fnmatchcase(value, p) for p in pattern.split("|")) for value, pattern in
                   ((trainer, self.trainer), (setting, self.setting), (dataset, self.dataset),
                    (str(shots), self.shots)))


_IN10 = "imagenet|food101"  # CLIPFit: 10 epochs for these two
CONFIG_RULES: Tuple[ConfigRule, ...] = (  # first match wins
    ConfigRule("*", "*", "toy_*", "*", "toy", "the toy world: configs/trainers/*/toy.yaml"),
    ConfigRule("CLIPFit", "dg", _IN10, "*", "vit_b16_ep10_beta2",
               "CLIPFit paper 4.1: 10 epochs for ImageNet and Food101; beta 2 for distribution shift"),
    ConfigRule("CLIPFit", "fewshot", "sun397|dtd", "*", "vit_b16",
               "CLIPFit paper 4.1: few-shot beta 2, except SUN397 and DTD (beta 8)"),
    ConfigRule("CLIPFit", "fewshot", _IN10, "*", "vit_b16_ep10_beta2",
               "CLIPFit paper 4.1: 10 epochs for ImageNet and Food101; few-shot beta 2"),
    ConfigRule("CLIPFit", "fewshot", "*", "*", "vit_b16_beta2", "CLIPFit paper 4.1: few-shot beta 2"),
    ConfigRule("CLIPFit", "*", _IN10, "*", "vit_b16_ep10",
               "CLIPFit paper 4.1: 10 epochs for ImageNet and Food101; beta 8 for base2new and cross-dataset"),
    ConfigRule("CLIPFit", "*", "*", "*", "vit_b16",
               "CLIPFit paper 4.1: 100 epochs; beta 8 for base2new and cross-dataset"),
    ConfigRule("CoOp", "fewshot", "imagenet", "*", "vit_b16_ep50", "CoOp COOP.md: *_ep50 for ImageNet, all shots"),
    ConfigRule("CoOp", "fewshot", "*", "1", "vit_b16_ep50",
               "CoOp COOP.md (scripts/coop/main.sh, 16 random tokens): 1 shot 50 epochs"),
    ConfigRule("CoOp", "fewshot", "*", "2|4", "vit_b16_ep100", "CoOp COOP.md: 2 and 4 shots 100 epochs"),
    ConfigRule("CoOp", "fewshot", "*", "*", "vit_b16", "CoOp COOP.md: 8 and 16 shots 200 epochs"),
    ConfigRule("CoOp", "base2new", "imagenet", "*", "vit_b16_ep50_ctxv1",
               "CoOp scripts/cocoop/base2new_train.sh"),
    ConfigRule("CoOp", "xd|dg", "*", "*", "vit_b16_ep50_ctxv1", "CoOp scripts/cocoop/xd_train.sh"),
    ConfigRule("CoOp", "*", "*", "*", "vit_b16_ctxv1",
               "CoOp scripts/cocoop/base2new_train.sh (\"when TRAINER=CoOp\")"),
    ConfigRule("CoCoOp", "*", "*", "*", "vit_b16_c4_ep10_batch1_ctxv1",
               "CoOp scripts/cocoop/{base2new,xd}_train.sh"),
    ConfigRule("KgCoOp", "*", "*", "*", "vit_b16_ep100_ctxv1",
               "KgCoOp scripts/{base2new,xd}_train.sh (W 8.0: scripts/run.sh, xd_train.sh); it ships "
               "no few-shot script, so few-shot uses the same config"),
    ConfigRule("MaPLe", "xd|dg", "*", "*", "vit_b16_c2_ep5_batch4_2ctx_cross_datasets",
               "MaPLe's scripts: cross-dataset (and shift) depth 3, 2 epochs"),
    ConfigRule("MaPLe", "*", "*", "*", "vit_b16_c2_ep5_batch4_2ctx", "MaPLe's scripts: base-to-new depth 9"),
    ConfigRule("ProGrad", "base2new", "imagenet", "*", "vit_b16_ep50", "ProGrad README: ImageNet ep50"),
    ConfigRule("ProGrad", "xd|dg", "*", "*", "vit_b16_ep50", "ProGrad README: trained on ImageNet, ep50"),
    ConfigRule("ProGrad", "fewshot", "*", "1", "vit_b16_ep50", "ProGrad README: 1 shot ep50"),
    ConfigRule("ProGrad", "base2new", "*", "*", "vit_b16_ep100", "ProGrad README: base-to-new ep100"),
    ConfigRule("ProGrad", "fewshot", "*", "2|4", "vit_b16_ep100", "ProGrad README: 2-4 shots ep100"),
    ConfigRule("ProGrad", "fewshot", "oxford_flowers|dtd|eurosat", "*", "vit_b16_lambda0.8",
               "ProGrad README: 8-16 shots 200 epochs, lambda 0.8 on flowers, DTD and EuroSAT"),
    ConfigRule("ProGrad", "*", "*", "*", "vit_b16", "ProGrad README: 8-16 shots 200 epochs"),
    ConfigRule("TipAdapter|TipAdapterF", "*", "*", "*", "vit_b16_{dataset}",
               "Tip-Adapter's repository: one config per dataset"),
    ConfigRule("ZeroshotCLIP*", "*", "*", "*", "vit_b16", "CoOp scripts/coop/zeroshot.sh"),
    ConfigRule("*", "*", "*", "*", "vit_b16",
               "CLIP_Adapter: its repository (clip_adapter.py only) ships no config or script, see "
               "configs/trainers/CLIP_Adapter/vit_b16.yaml"),
)


def config_trainer(trainer: str) -> str:
    """The folder under ``configs/trainers/`` of ``trainer`` (ClipFit, the authors' name: CLIPFit)."""
    return TRAINER_ALIASES.get(trainer, trainer)


def is_eval_only(trainer: str) -> bool:
    """Whether ``trainer`` is evaluated only (zero-shot CLIP, Tip-Adapter): never trained."""
    return any(fnmatch.fnmatchcase(trainer, p) for p in EVAL_ONLY_TRAINERS)


def default_rule(trainer: str, setting: str, dataset: str, shots: int) -> ConfigRule:
    """The first row of :data:`CONFIG_RULES` for this run (the last row matches everything)."""
    if setting not in SETTINGS:
        raise ConfigValueError(f"Unknown setting '{setting}'; choose one of {', '.join(SETTINGS)}")
    trainer = config_trainer(trainer)
    return next(r for r in CONFIG_RULES if r.matches(trainer, setting, dataset, shots))


def default_config(trainer: str, setting: str, dataset: str, shots: int) -> str:
    """The config name ``trainer``'s own repository uses for this setting, dataset and shots."""
    return default_rule(trainer, setting, dataset, shots).config.format(dataset=dataset)


def config_table() -> str:
    """:data:`CONFIG_RULES` as text, one row a line (first match wins)."""
    head = ("trainer", "setting", "dataset", "shots", "config")
    rows = [head] + [(r.trainer, r.setting, r.dataset, r.shots, r.config) for r in CONFIG_RULES]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) + (f"  # {r.source}" if r else "")
             for row, r in zip(rows, (None,) + CONFIG_RULES)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("datasets", help="print the datasets of a setting, space-separated")
    p.add_argument("setting", choices=SETTINGS)
    sub.add_parser("table", help="print the default config of each trainer, setting, dataset and shots")
    args = parser.parse_args(argv)
    if args.command == "datasets":
        print(" ".join(setting_datasets(args.setting)))
    else:
        print(config_table(), end="")


if __name__ == "__main__":
    main()
