"""Checkpoint files with Dassl's names and layout, written atomically, read with weights_only."""
from __future__ import annotations

import io
import os.path as osp
import random
from collections import OrderedDict
from typing import Any, Dict, Optional, Sequence

import numpy as np
import torch

from clipfit.checkpoint_files import BEST_FILE, POINTER_FILE, checkpoint_file, load_newest, load_weights_only
from clipfit.fileio import write_bytes, write_text

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
    restore_cuda_rng_states(state.get("cuda") or [])


def restore_cuda_rng_states(saved: Sequence[torch.Tensor]) -> None:
    """Give device ``i`` the generator state saved for device ``i``, for the devices both runs
    have: a run saved with 4 GPUs resumes on 1 (or on the CPU), one saved with 1 on 4 (the
    other devices keep their seeded state). A note says when the counts differ."""
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for i in range(min(len(saved), available)):
        torch.cuda.set_rng_state(saved[i], i)
    if saved and len(saved) != available:
        print(f"Note: the checkpoint holds CUDA generator states of {len(saved)} device(s), this run "
              f"has {available}: restored {min(len(saved), available)}; others keep their seeded state")


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
        model_name = checkpoint_file(state["epoch"])
    fpath = osp.join(save_dir, model_name)
    buffer = io.BytesIO()
    torch.save(state, buffer)  # in memory first: a full disk is then reported with the size needed
    write_bytes(fpath, buffer.getvalue())
    print(f"Checkpoint saved to {fpath}")
    write_text(osp.join(save_dir, POINTER_FILE), osp.basename(fpath) + "\n")

    if is_best:
        write_bytes(osp.join(save_dir, BEST_FILE), buffer.getvalue())
    return fpath


def load_checkpoint(fpath: str) -> Dict[str, Any]:
    """Load a checkpoint onto the CPU (or GPU when available) with ``weights_only=True``; a damaged
    or foreign file raises an error that names it (:mod:`clipfit.checkpoint_files`)."""
    if not fpath:
        raise ValueError("Checkpoint path is empty")
    return load_weights_only(fpath, map_location=None if torch.cuda.is_available() else "cpu")


def resume_from_checkpoint(fdir: str, model, optimizer=None, scheduler=None) -> int:
    """Load the newest checkpoint of ``fdir`` that loads (the one ``fdir/checkpoint`` names first)
    into model/optimizer/scheduler; return the epoch to start from."""
    def load(path: str) -> Dict[str, Any]:
        print(f'Loading checkpoint from "{path}"')
        return load_checkpoint(path)

    _, checkpoint = load_newest(fdir, load)
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
