"""The paper's evaluation protocol: which datasets each setting uses, in the paper's order.

One source for the dataset lists of the experiment scripts (``scripts/*.sh`` ask
``python -m clipfit.experiments.protocol datasets SETTING``), the sweep runner and the results tables.
Names are CoOp's dataset config names (``configs/datasets/<name>.yaml``).
"""
from __future__ import annotations

import argparse
from typing import Dict, List, Tuple

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
        raise ValueError(f"Unknown setting '{setting}'; choose one of {', '.join(SETTINGS)}")


def display_name(dataset: str) -> str:
    """The paper's name for a dataset config name (the name itself when unknown)."""
    return DISPLAY_NAMES.get(dataset, dataset)


def dataset_order(names) -> List[str]:
    """``names`` sorted as in the paper's tables; unknown names last, alphabetically."""
    known = list(DATASETS) + list(DG_TARGETS)
    return sorted(set(names), key=lambda n: (known.index(n) if n in known else len(known), n))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("datasets", help="print the datasets of a setting, space-separated")
    p.add_argument("setting", choices=SETTINGS)
    args = parser.parse_args(argv)
    if args.command == "datasets":
        print(" ".join(setting_datasets(args.setting)))


if __name__ == "__main__":
    main()
