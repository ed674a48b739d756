"""Checks of ``train.py``'s arguments that need no torch: config files, the trainer's name and
the folders to load from are checked before torch is imported (seconds on a cold start), so a
typo is answered at once. (``--resume DIR`` may name a folder that does not exist yet: training
then starts from scratch, as in Dassl.)

A trainer name is checked against the trainers of ``trainers/`` read from their source (the
classes registered with ``@TRAINER_REGISTRY.register()``), only when the built-in engine will
run: with Dassl installed its registry holds Dassl's own trainers too, and it checks the name.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import os.path as osp
from typing import List

from clipfit import REPO_ROOT
from clipfit.errors import MissingFileError, UnknownNameError
from clipfit.training.config import closest_key, config_file_path

ENGINE_ENV = "CLIPFIT_ENGINE"  # clipfit/engine/__init__.py reads it


def config_path(path: str, flag: str) -> str:
    """The file ``path`` names (:func:`config_file_path`: the authors' folder is read from where this
    repository keeps it); else an error naming the closest config file beside it."""
    given, path = path, config_file_path(path)
    if not osp.isfile(path):
        folder = osp.dirname(path) or "."
        names = sorted(n for n in os.listdir(folder) if n.endswith((".yaml", ".yml"))) \
            if osp.isdir(folder) else []
        close = closest_key(osp.basename(path), names)
        hint = f" Did you mean {osp.join(osp.dirname(given), close)}?" if close else ""
        listing = f" Files in {osp.dirname(given) or '.'}: {', '.join(names)}." if names else ""
        raise MissingFileError(f"{flag} {given}: no such file (paths are relative to the current "
                               f"folder).{hint}{listing}")
    return path


def _registered(node: ast.ClassDef) -> bool:
    for deco in node.decorator_list:
        call = deco.func if isinstance(deco, ast.Call) else deco
        if isinstance(call, ast.Attribute) and call.attr == "register" \
                and isinstance(call.value, ast.Name) and call.value.id == "TRAINER_REGISTRY":
            return True
    return False


def trainer_names(folder: str = osp.join(REPO_ROOT, "trainers")) -> List[str]:
    """The trainers ``folder``'s modules register, read from their source."""
    names = []
    for entry in sorted(os.listdir(folder)):
        if entry.endswith(".py") and not entry.startswith("_"):
            with open(osp.join(folder, entry), encoding="utf-8") as f:
                tree = ast.parse(f.read(), entry)
            names += [n.name for n in tree.body if isinstance(n, ast.ClassDef) and _registered(n)]
    return names


def builtin_engine_will_run() -> bool:
    """Whether ``clipfit.engine`` will pick the built-in engine (Dassl absent, or forced)."""
    choice = os.environ.get(ENGINE_ENV, "auto").strip().lower()
    return choice == "builtin" or (choice == "auto" and importlib.util.find_spec("dassl") is None)


def check_arguments(args: argparse.Namespace) -> None:
    """Config files, the trainer name and the model folder ``args`` names (no torch needed)."""
    for path, flag in ((args.dataset_config_file, "--dataset-config-file"),
                       (args.config_file, "--config-file")):
        if path:
            config_path(path, flag)
    if args.trainer and builtin_engine_will_run():
        known = trainer_names()
        if args.trainer not in known:
            close = closest_key(args.trainer, known)
            hint = f' Did you mean "{close}"?' if close else ""
            raise UnknownNameError(f'Unknown trainer name "{args.trainer}". Known names: '
                              f'{", ".join(sorted(known))}.{hint}')
    if args.eval_only and args.model_dir and not osp.isdir(args.model_dir):
        raise MissingFileError(f"--model-dir {args.model_dir}: no such folder (paths are relative "
                                "to the current folder); give the output folder of a training run.")
