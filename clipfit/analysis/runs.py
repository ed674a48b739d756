"""Finished runs: their checkpoint, their config and the pre-trained CLIP they started from.

A run is given as its output folder (holding ``config.yaml`` and
``<model name>/model.pth.tar-<epoch>``), a model folder, or a checkpoint file. Without
``--epoch`` the latest checkpoint is used (the one the ``checkpoint`` file names).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch
from yacs.config import CfgNode

from clipfit.checkpoint_files import POINTER_FILE, checkpoint_file, has_checkpoint, read_pointer, saved_epochs
from clipfit.training import tuned_checkpoint as ckpt_io
from clipfit.methods.clip_loader import CLIPWeightsNotFoundError, architecture, load_clip
from clipfit.training.config import get_cfg, merge_from_file
from clipfit.errors import UserError

CONFIG_FILE = "config.yaml"
ANALYSIS_FOLDER = "analysis"


class RunError(UserError, ValueError):
    """A run that cannot be analysed, with what to do about it."""

    def __str__(self) -> str:
        return self.args[0]


@dataclass
class Run:
    """One checkpoint of a finished run."""

    label: str
    checkpoint_path: str
    run_dir: str  # folder holding config.yaml (or the model folder's parent without one)
    checkpoint: Dict[str, Any]
    cfg: Optional[CfgNode]  # the run's config.yaml, None when the run has none

    @property
    def meta(self) -> Dict[str, Any]:
        return self.checkpoint["meta"]

    @property
    def tuned(self) -> Dict[str, torch.Tensor]:
        return self.checkpoint["state_dict"]


def _is_model_dir(path: str) -> bool:
    return has_checkpoint(path)


def find_checkpoint(path: str, epoch: Optional[int] = None) -> str:
    """The checkpoint file for a run folder, model folder or file (see the module docstring)."""
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise RunError(f"{path} does not exist: pass a run's output folder, its model folder or a checkpoint file.")
    model_dir = path
    if not _is_model_dir(path):
        subdirs = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
        found = [d for d in subdirs if _is_model_dir(os.path.join(path, d))]
        if not found:
            raise RunError(
                f"No checkpoint under {path}: expected <model name>/model.pth.tar-<epoch> as written by "
                "train.py (a run that ended before its first checkpoint, or --eval-only output, has none)."
            )
        if len(found) > 1:
            raise RunError(f"{path} holds several models ({', '.join(found)}): pass one of these folders.")
        model_dir = os.path.join(path, found[0])
    if epoch is not None:
        return os.path.join(model_dir, checkpoint_file(epoch))
    if os.path.isfile(os.path.join(model_dir, POINTER_FILE)):
        return read_pointer(model_dir)
    return os.path.join(model_dir, checkpoint_file(saved_epochs(model_dir)[-1]))


def load_run_config(run_dir: str) -> Optional[CfgNode]:
    """The run's ``config.yaml`` on top of the current defaults, or None when there is none."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    cfg = get_cfg()
    try:
        merge_from_file(cfg, path)
    except KeyError as err:
        raise RunError(f"Cannot read the config of run {run_dir}: {err}") from err
    return cfg


def load_run(path: str, label: str = "", epoch: Optional[int] = None) -> Run:
    """Read a run's checkpoint (weights_only) and config."""
    ckpt_path = find_checkpoint(path, epoch)
    checkpoint = ckpt_io.read(ckpt_path)
    model_dir = os.path.dirname(os.path.abspath(ckpt_path))
    run_dir = next(
        (d for d in (os.path.dirname(model_dir), model_dir) if os.path.isfile(os.path.join(d, CONFIG_FILE))),
        os.path.dirname(model_dir),
    )
    return Run(label or path, ckpt_path, run_dir, checkpoint, load_run_config(run_dir))


def default_labels(paths: Sequence[str]) -> List[str]:
    """Shortest trailing path parts that tell the runs apart (``kd/seed1``, ``none/seed1``)."""
    parts = [os.path.normpath(os.path.abspath(p)).split(os.sep) for p in paths]
    for n in range(1, max(map(len, parts)) + 1):
        labels = ["/".join(p[-n:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return list(paths)


def load_runs(paths: Sequence[str], labels: Sequence[str] = (), epoch: Optional[int] = None) -> List[Run]:
    """:func:`load_run` for each path; ``labels`` (one per path) name them in legends."""
    if labels and len(labels) != len(paths):
        raise RunError(f"--labels gives {len(labels)} labels for {len(paths)} runs: give one per run.")
    return [load_run(p, lab, epoch) for p, lab in zip(paths, labels or default_labels(paths))]


def output_dir(out_dir: str, runs: Sequence[Run]) -> str:
    """``out_dir``, else ``<run>/analysis`` for a single run (several runs need ``--out``)."""
    if out_dir:
        return out_dir
    if len(runs) > 1:
        raise RunError("With several runs, say where the results go: pass --out DIR.")
    return os.path.join(runs[0].run_dir, ANALYSIS_FOLDER)


class PretrainedCLIPs:
    """The pre-trained CLIP of each run, loaded once per weights file and checked against it.

    ``clip_path`` overrides the weights of every run (``--clip``); otherwise a run's
    ``MODEL.BACKBONE.PATH`` or the clip download cache for its backbone name is used.
    """

    def __init__(self, clip_path: str = ""):
        self.clip_path = clip_path
        self._models: Dict[tuple, torch.nn.Module] = {}

    def source(self, run: Run) -> tuple:
        """(backbone name, weights path or "" for the download cache) of a run's pre-trained CLIP."""
        if self.clip_path:
            return run.meta["backbone"], self.clip_path
        if run.cfg is not None:
            return run.cfg.MODEL.BACKBONE.NAME, run.cfg.MODEL.BACKBONE.PATH
        return run.meta["backbone"], ""

    def model(self, run: Run) -> torch.nn.Module:
        """The pre-trained CLIP (fp32, CPU) a run started from; :class:`RunError` if it does not fit."""
        key = self.source(run)
        if key not in self._models:
            try:
                self._models[key] = load_clip(key[0], key[1])
            except CLIPWeightsNotFoundError as err:
                raise RunError(f"{err}\nFor the analysis, --clip PATH names the pre-trained weights.") from err
        model = self._models[key]
        check_backbone(run, model, key)
        return model

    def state_dict(self, run: Run) -> Dict[str, torch.Tensor]:
        return self.model(run).state_dict()


def check_backbone(run: Run, model: torch.nn.Module, source: tuple) -> None:
    """:class:`RunError` listing every difference between the run's backbone and ``model``."""
    saved = run.meta
    params = dict(model.named_parameters())
    current = ckpt_io.make_meta(
        saved["backbone"],
        architecture(model),
        {n: params[n] for n in saved["shapes"] if n in params},
        saved["settings"],
    )
    diffs = ckpt_io.differences(saved, current)
    if diffs:
        where = source[1] or f"the clip cache for {source[0]}"
        raise RunError(
            f"Checkpoint {run.checkpoint_path} was not trained from the CLIP loaded from {where} "
            f"(backbone {saved['backbone']}):\n  - " + "\n  - ".join(diffs)
            + "\nPass --clip with the weights the run started from (its MODEL.BACKBONE.PATH), or "
            "analyse a checkpoint of that backbone."
        )


def same_backbone(runs: Sequence[Run]) -> None:
    """Runs drawn on one figure must share their backbone architecture."""
    first = runs[0]
    for run in runs[1:]:
        if run.meta["arch"] != first.meta["arch"] or run.meta["backbone"] != first.meta["backbone"]:
            raise RunError(
                f"Runs {first.label} ({first.meta['backbone']}) and {run.label} ({run.meta['backbone']}) "
                "use different backbones, so their layers do not correspond: analyse them separately."
            )
