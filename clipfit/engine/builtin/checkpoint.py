"""Checkpoint files with Dassl's names and layout, written atomically, read with weights_only."""
from __future__ import annotations

import os.path as osp
import random
import shutil
import warnings
from collections import OrderedDict
from typing import Any, Dict, Optional

import numpy as np
import torch

from clipfit.fileio import atomic_path, write_text

from .tools import mkdir_if_missing


def capture_rng_state() -> Dict[str, Any]:
    """The state of every random generator a run uses, in a weights_only-safe form."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Optional[Dict[str, Any]]) -> None:
    """Restore what :func:`capture_rng_state` saved (no-op for checkpoints without it)."""
    if not state:
        return
    random.setstate(tuple(s if not isinstance(s, list) else tuple(s) for s in state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    state: Dict[str, Any],
    save_dir: str,
    is_best: bool = False,
    remove_module_from_keys: bool = True,
    model_name: str = "",
) -> str:
    """Save ``state`` to ``save_dir/model.pth.tar-<epoch>`` (or ``model_name``) and record it
    in ``save_dir/checkpoint``. Both files are written atomically, so an interrupted run never
    leaves a half-written checkpoint behind."""
    mkdir_if_missing(save_dir)
    if remove_module_from_keys:
        state["state_dict"] = OrderedDict(
            (k[7:] if k.startswith("module.") else k, v) for k, v in state["state_dict"].items()
        )
    if not model_name:
        model_name = "model.pth.tar-" + str(state["epoch"])
    fpath = osp.join(save_dir, model_name)
    with atomic_path(fpath) as tmp:
        torch.save(state, tmp)
    print(f"Checkpoint saved to {fpath}")
    write_text(osp.join(save_dir, "checkpoint"), osp.basename(fpath) + "\n")

    if is_best:
        shutil.copy(fpath, osp.join(save_dir, "model-best.pth.tar"))
    return fpath


def load_checkpoint(fpath: str) -> Dict[str, Any]:
    """Load a checkpoint onto the CPU (or GPU when available) with ``weights_only=True``."""
    if not fpath:
        raise ValueError("Checkpoint path is empty")
    if not osp.exists(fpath):
        raise FileNotFoundError(f'No checkpoint at "{fpath}"')
    map_location = None if torch.cuda.is_available() else "cpu"
    try:
        return torch.load(fpath, map_location=map_location, weights_only=True)
    except Exception as e:
        raise RuntimeError(
            f'Cannot load checkpoint "{fpath}" ({type(e).__name__}: {e}). The file is damaged '
            "or holds arbitrary Python objects (only tensors and plain data are loaded); "
            "delete it and train again."
        ) from e


def resume_from_checkpoint(fdir: str, model, optimizer=None, scheduler=None) -> int:
    """Load the checkpoint named in ``fdir/checkpoint`` into model/optimizer/scheduler;
    return the epoch to start from."""
    with open(osp.join(fdir, "checkpoint"), "r") as f:
        fpath = osp.join(fdir, f.readline().strip())
    print(f'Loading checkpoint from "{fpath}"')
    checkpoint = load_checkpoint(fpath)
    model.load_state_dict(checkpoint["state_dict"])
    print("Loaded model weights")
    if optimizer is not None and checkpoint.get("optimizer") is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
        print("Loaded optimizer")
    if scheduler is not None and checkpoint.get("scheduler") is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
        print("Loaded scheduler")
    restore_rng_state(checkpoint.get("rng_state"))
    start_epoch = checkpoint["epoch"]
    print(f"Previous epoch: {start_epoch}")
    return start_epoch


def load_pretrained_weights(model: torch.nn.Module, weight_path: str) -> None:
    """Load matching tensors (same name and size) from ``weight_path`` into ``model``."""
    checkpoint = load_checkpoint(weight_path)
    state_dict = checkpoint.get("state_dict", checkpoint)
    model_dict = model.state_dict()
    matched, discarded = OrderedDict(), []
    for k, v in state_dict.items():
        k = k[7:] if k.startswith("module.") else k
        if k in model_dict and model_dict[k].size() == v.size():
            matched[k] = v
        else:
            discarded.append(k)
    model_dict.update(matched)
    model.load_state_dict(model_dict)
    if not matched:
        warnings.warn(f"Cannot load {weight_path} (check the key names manually)")
    else:
        print(f"Successfully loaded pretrained weights from {weight_path}")
        if discarded:
            print(f"Layers discarded due to unmatched keys or size: {discarded}")
