"""``train.py``'s command line: CoOp's flags, config layering, run set-up."""
from __future__ import annotations

import argparse
import importlib
import os
import os.path as osp
import pkgutil
import sys
from typing import List, Optional

import torch

from clipfit.fileio import write_text
from clipfit.training.config import get_cfg, merge_from_file, merge_from_list
from clipfit import REPO_ROOT



def build_parser() -> argparse.ArgumentParser:
    """CoOp's ``train.py`` flags (same names and meaning), plus ``--deterministic``."""
    p = argparse.ArgumentParser(description="Train or evaluate a CLIP trainer (CoOp-compatible flags)")
    p.add_argument("--root", type=str, default="", help="path to dataset")
    p.add_argument("--output-dir", type=str, default="", help="output directory")
    p.add_argument("--resume", type=str, default="",
                   help="checkpoint directory (from which the training resumes)")
    p.add_argument("--seed", type=int, default=-1, help="only positive value enables a fixed seed")
    p.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    p.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    p.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    p.add_argument("--config-file", type=str, default="", help="path to config file")
    p.add_argument("--dataset-config-file", type=str, default="",
                   help="path to config file for dataset setup")
    p.add_argument("--trainer", type=str, default="", help="name of trainer")
    p.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    p.add_argument("--head", type=str, default="", help="name of head")
    p.add_argument("--eval-only", action="store_true", help="evaluation only")
    p.add_argument("--model-dir", type=str, default="",
                   help="load model from this directory for eval-only mode")
    p.add_argument("--load-epoch", type=int,
                   help="load model weights at this epoch for evaluation")
    p.add_argument("--no-train", action="store_true",
                   help="do not call trainer.train(); evaluate the model as built")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms and fixed seeds (sets DETERMINISTIC True)")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                   help="modify config options using the command-line")
    return p


def _reset_cfg(cfg, args: argparse.Namespace) -> None:
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed >= 0:  # CoOp tests `if args.seed`, which silently ignores --seed 0
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head
    if args.deterministic:
        cfg.DETERMINISTIC = True


def _config_path(path: str, flag: str) -> str:
    if not osp.isfile(path):
        raise FileNotFoundError(f"{flag} {path}: no such file (paths are relative to the current folder)")
    return path


def setup_cfg(args: argparse.Namespace):
    """Defaults, then the dataset config, the trainer config, the flags, then opts."""
    cfg = get_cfg()
    if args.dataset_config_file:
        merge_from_file(cfg, _config_path(args.dataset_config_file, "--dataset-config-file"))
    if args.config_file:
        merge_from_file(cfg, _config_path(args.config_file, "--config-file"))
    _reset_cfg(cfg, args)
    merge_from_list(cfg, args.opts or [])
    if cfg.DETERMINISTIC and cfg.SEED < 0:
        print("Deterministic mode needs a seed; none given, using SEED 1")
        cfg.SEED = 1
    cfg.freeze()
    return cfg


def import_plugins(root: str = REPO_ROOT) -> None:
    """Import every module of ``datasets/`` and ``trainers/`` so that they register."""
    if root not in sys.path:
        sys.path.insert(0, root)
    for package in ("datasets", "trainers"):
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")


def set_deterministic() -> None:
    """Deterministic kernels everywhere; errors on ops that have no deterministic version."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)


def save_config(cfg) -> str:
    """Write the full config of a run to ``<OUTPUT_DIR>/config.yaml`` (atomically)."""
    return write_text(osp.join(cfg.OUTPUT_DIR, "config.yaml"), cfg.dump())


def print_args(args: argparse.Namespace, cfg) -> None:
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(args.__dict__):
        print(f"{key}: {args.__dict__[key]}")
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def main(argv: Optional[List[str]] = None) -> None:
    from clipfit import engine

    args = build_parser().parse_args(argv)
    import_plugins()
    cfg = setup_cfg(args)
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        engine.set_random_seed(cfg.SEED)
    engine.setup_logger(cfg.OUTPUT_DIR)
    if cfg.DETERMINISTIC:
        set_deterministic()
    elif torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True

    print_args(args, cfg)
    save_config(cfg)
    print(f"Engine: {engine.ENGINE}")
    print("Collecting env info ...")
    print(f"** System info **\n{engine.collect_env_info()}\n")

    trainer = engine.build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return
    if args.no_train:
        trainer.test()
        return
    trainer.train()
