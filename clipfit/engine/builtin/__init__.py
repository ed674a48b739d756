"""The built-in engine: Dassl's behaviour for the parts CoOp-style training uses."""
from . import evaluator  # noqa: F401  (registers the Classification evaluator)
from .checkpoint import (capture_rng_state, load_checkpoint, restore_rng_state,
                         resume_from_checkpoint, save_checkpoint)
from .data import DataManager, DatasetBase, DatasetWrapper, Datum, build_data_loader, build_sampler
from .defaults import get_cfg_default
from .optim import build_lr_scheduler, build_optimizer
from .registry import (DATASET_REGISTRY, EVALUATOR_REGISTRY, TRAINER_REGISTRY, Registry,
                       build_dataset, build_evaluator, build_trainer)
from .tools import (AverageMeter, MetricMeter, collect_env_info, compute_accuracy,
                    listdir_nohidden, mkdir_if_missing, read_image, read_json,
                    set_random_seed, setup_logger, write_json)
from .trainer import SimpleTrainer, TrainerBase, TrainerX
from .transforms import INTERPOLATION_MODES, build_transform
