"""Small checkpoints: only the learned tensors, plus what is needed to check them.

Files are written with the engine's ``save_checkpoint`` (Dassl's layout:
``<dir>/<name>/model.pth.tar-<epoch>``, a ``checkpoint`` file naming the latest one,
``model-best.pth.tar``; keys ``state_dict``, ``epoch``, ``optimizer``, ``scheduler``,
``val_result``) with one more key, ``meta``: the backbone name, its architecture,
every learned tensor's shape and the settings that decide which tensors are learned.
File names and the checked ``torch.load`` come from :mod:`clipfit.checkpoint_files`;
:func:`check_compatible` refuses a checkpoint whose meta differs, saying what differs.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

import torch

from clipfit.checkpoint_files import (CheckpointMismatchError, DamagedCheckpointError, ForeignCheckpointError,
                                      load_weights_only)

FORMAT = "clipfit-learned-tensors-1"


def learned_state(params: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Detached CPU copies of the learned tensors, in their own dtype."""
    return {name: p.detach().to("cpu", copy=True) for name, p in params.items()}


def make_meta(
    backbone: str, arch: Mapping[str, Any], params: Mapping[str, torch.Tensor], settings: Mapping[str, Any],
    info: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """What a checkpoint must match to be loaded (``info`` is kept for the record only)."""
    return {
        "format": FORMAT,
        "backbone": backbone,
        "arch": dict(arch),
        "shapes": {name: list(p.shape) for name, p in params.items()},
        "settings": dict(settings),
        "info": dict(info or {}),
    }


def read(path: str) -> Dict[str, Any]:
    """Load a checkpoint of this toolkit; a damaged file raises :class:`DamagedCheckpointError`,
    a foreign one :class:`ForeignCheckpointError`, both naming the path."""
    ckpt = load_weights_only(path)
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ForeignCheckpointError(
            f"{path} is not a checkpoint of this toolkit (no '{FORMAT}' meta): it may come from "
            "the authors' code or another trainer. Retrain with this toolkit."
        )
    missing = [k for k in ("state_dict", "epoch") if k not in ckpt]
    if missing:
        raise DamagedCheckpointError(f"{path} has no {', '.join(missing)}: it is damaged. Delete it.")
    return ckpt


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> List[str]:
    """Human-readable differences between a checkpoint's meta and the current model's."""
    out = []
    if saved["backbone"] != current["backbone"]:
        out.append(f"MODEL.BACKBONE.NAME: checkpoint {saved['backbone']}, current {current['backbone']}")
    for k in sorted(set(saved["arch"]) | set(current["arch"])):
        a, b = saved["arch"].get(k), current["arch"].get(k)
        if a != b:
            out.append(f"architecture {k}: checkpoint {a}, current {b}")
    for k in sorted(set(saved["settings"]) | set(current["settings"])):
        a, b = saved["settings"].get(k), current["settings"].get(k)
        if a != b:
            out.append(f"{k}: checkpoint {a}, current {b}")
    s_shapes, c_shapes = saved["shapes"], current["shapes"]
    missing = [n for n in c_shapes if n not in s_shapes]
    extra = [n for n in s_shapes if n not in c_shapes]
    resized = [f"{n} {s_shapes[n]} vs {c_shapes[n]}" for n in c_shapes if n in s_shapes and s_shapes[n] != c_shapes[n]]
    for label, names in (("tensors missing from the checkpoint", missing),
                         ("tensors the current model does not learn", extra),
                         ("shapes differ (checkpoint vs current)", resized)):
        if names:
            shown = ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "")
            out.append(f"{label}: {shown}")
    return out


def check_compatible(ckpt: Mapping[str, Any], current_meta: Mapping[str, Any], path: str) -> None:
    """Raise :class:`CheckpointMismatchError` listing every difference, if any."""
    diffs = differences(ckpt["meta"], current_meta)
    stored, meta = set(ckpt["state_dict"]), ckpt["meta"]["shapes"]
    if stored != set(meta):
        diffs.append("the checkpoint's tensors do not match its own meta (corrupt file?)")
    if diffs:
        raise CheckpointMismatchError(
            f"Checkpoint {path} does not fit the current model:\n  - " + "\n  - ".join(diffs)
            + "\nUse the config of the run that made it (same backbone and parameter-selection "
            "keys) or pick the --model-dir of a matching run."
        )


def restore(params: Mapping[str, torch.nn.Parameter], state_dict: Mapping[str, torch.Tensor]) -> None:
    """Copy checkpoint tensors into the learned parameters (cast to their dtype and device)."""
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state_dict[name])


def check_weights(ckpt: Mapping[str, Any], fingerprint: str, source: str, path: str) -> None:
    """Refuse a checkpoint tuned from other pre-trained weights than ``fingerprint`` (of the
    weights loaded from ``source``), naming both; checkpoints without a record pass."""
    saved = ckpt["meta"].get("weights") or {}
    if saved.get("fingerprint", fingerprint) != fingerprint:
        raise CheckpointMismatchError(
            f"Checkpoint {path} was tuned from pre-trained weights {saved['fingerprint']} "
            f"({saved.get('source', 'unknown file')}), but this run loaded weights {fingerprint} ({source}). "
            "Load the weights it was tuned from (MODEL.BACKBONE.PATH), or set "
            "MODEL.CHECK_WEIGHTS_FINGERPRINT False to apply it anyway."
        )
