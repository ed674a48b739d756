"""CoOp-compatible dataset loaders; importing this package registers them all in DATASET_REGISTRY.

Module and registry names are CoOp's (``datasets/dtd.py`` registers ``DescribableTextures``),
so CoOp's dataset configs and scripts work unchanged; ``custom`` adds ``ImageFolder`` and
``CSVDataset`` for your own data, and ``toy`` the toy world's datasets. See DATASETS.md for the layouts.
"""

from . import (  # noqa: F401  (imported for registration)
    caltech101,
    custom,
    dtd,
    eurosat,
    fgvc_aircraft,
    food101,
    imagenet,
    imagenet_a,
    imagenet_r,
    imagenet_sketch,
    imagenetv2,
    oxford_flowers,
    oxford_pets,
    stanford_cars,
    sun397,
    toy,
    ucf101,
)
