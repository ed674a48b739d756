"""The engine bridge: Dassl's names, from real Dassl when it is installed, else built in.

``CLIPFIT_ENGINE=builtin`` forces the built-in engine; ``CLIPFIT_ENGINE=dassl`` requires
Dassl (a clear error when it is missing). With Dassl, our trainers and datasets register in
Dassl's own registries, next to CoOp's and KgCoOp's.

Whatever the engine, ``build_lr_scheduler`` is ours: Dassl's warm-up schedulers pass
``verbose`` to torch's ``LRScheduler``, which current torch rejects. Ours give the same
learning rate in every epoch. ``capture_rng_state``/``restore_rng_state`` are ours too.
"""
from __future__ import annotations

import os

from clipfit.errors import ConfigValueError, InstallError

from .builtin.checkpoint import capture_rng_state, restore_rng_state
from .builtin.optim import build_lr_scheduler

_CHOICE = os.environ.get("CLIPFIT_ENGINE", "auto").strip().lower()
if _CHOICE not in ("auto", "builtin", "dassl"):
    raise ConfigValueError(f"CLIPFIT_ENGINE must be 'builtin', 'dassl' or unset, got '{_CHOICE}'")


def _import_dassl() -> bool:
    if _CHOICE == "builtin":
        return False
    try:
        import dassl  # noqa: F401
    except ImportError as e:
        if _CHOICE == "dassl":
            raise InstallError(
                "CLIPFIT_ENGINE=dassl but Dassl cannot be imported "
                f"({e}). Install Dassl.pytorch (see its README) or unset CLIPFIT_ENGINE to use "
                "the built-in engine."
            ) from e
        return False
    return True


if _import_dassl():
    ENGINE = "dassl"
    from dassl.config import get_cfg_default
    from dassl.data import DataManager
    from dassl.data.data_manager import DatasetWrapper, build_data_loader
    from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum, build_dataset
    from dassl.data.transforms import build_transform
    from dassl.engine import TRAINER_REGISTRY, SimpleTrainer, TrainerBase, TrainerX, build_trainer
    from dassl.evaluation import build_evaluator
    from dassl.metrics import compute_accuracy
    from dassl.optim import build_optimizer
    from dassl.utils import (AverageMeter, MetricMeter, collect_env_info, listdir_nohidden,
                             load_checkpoint, mkdir_if_missing, read_image, read_json,
                             resume_from_checkpoint, save_checkpoint, set_random_seed,
                             setup_logger, write_json)
else:
    ENGINE = "builtin"
    from .builtin import (DATASET_REGISTRY, TRAINER_REGISTRY, AverageMeter, DataManager,
                          DatasetBase, DatasetWrapper, Datum, MetricMeter, SimpleTrainer,
                          TrainerBase, TrainerX, build_data_loader, build_dataset,
                          build_evaluator, build_optimizer, build_trainer, build_transform,
                          collect_env_info, compute_accuracy, get_cfg_default,
                          listdir_nohidden, load_checkpoint, mkdir_if_missing, read_image, read_json,
                          resume_from_checkpoint, save_checkpoint, set_random_seed,
                          setup_logger, write_json)

__all__ = [
    "ENGINE", "TRAINER_REGISTRY", "DATASET_REGISTRY", "TrainerBase", "SimpleTrainer", "TrainerX",
    "build_trainer", "build_dataset", "build_evaluator", "build_transform", "build_data_loader",
    "get_cfg_default", "DataManager", "DatasetWrapper", "DatasetBase", "Datum", "build_optimizer",
    "build_lr_scheduler", "load_checkpoint", "save_checkpoint", "resume_from_checkpoint",
    "set_random_seed", "setup_logger", "collect_env_info",
    "listdir_nohidden", "mkdir_if_missing", "read_json", "write_json", "read_image",
    "compute_accuracy", "AverageMeter", "MetricMeter",
    "capture_rng_state", "restore_rng_state",
]
