"""Checkpoints in the reference repositories' key names, in both directions.

A trainer that stands in for a reference one (CoOp, KgCoOp, CLIP-Adapter) saves its
learned tensors under the reference's state-dict keys: our names without the trainer's
:attr:`reference_prefix` (``prompt_learner.ctx`` is saved as CoOp's ``ctx``,
``adapter.fc.0.weight`` as CLIP-Adapter's ``fc.0.weight``), so CoOp's
``interpret_prompt.py`` and ``--eval-only`` read them. Loading accepts those keys, our own,
and checkpoints written by the reference code itself, which carry no ``meta``: CoOp's
and KgCoOp's (``ctx`` plus the fixed ``token_prefix``/``token_suffix``, ignored),
CLIP-Adapter's, and the CLIPFit authors' whole-model ones (their prompt learner holds
``text_encoder.*`` and ``image_encoder.*``: only the tuned tensors are taken). Every file
is read with ``weights_only=True``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

import torch

from clipfit.checkpoint_files import ForeignCheckpointError, load_weights_only
from clipfit.training import tuned_checkpoint as ckpt_io

class _Inert:
    """Stands in for a Python object a reference checkpoint pickles: keeps its data, runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state


def _plain_dict(*args: Any) -> Dict[Any, Any]:
    return {}


# Dassl's warm-up scheduler keeps its successor scheduler object (and through it the optimizer)
# in its state dict, so every checkpoint its trainers write pickles these; with weights_only=True
# they load as inert stand-ins (only "state_dict" and "epoch" are used).
_REFERENCE_OBJECTS: List[Any] = [dict, (_plain_dict, "collections.defaultdict")] + [
    (type(name.rsplit(".", 1)[-1], (_Inert,), {}), name) for name in (
        "torch.optim.lr_scheduler.CosineAnnealingLR", "torch.optim.lr_scheduler.StepLR",
        "torch.optim.lr_scheduler.MultiStepLR", "torch.optim.sgd.SGD", "torch.optim.adam.Adam",
        "torch.optim.adamw.AdamW", "torch.optim.rmsprop.RMSprop")
]

# where the CLIPFit authors' prompt learner keeps CLIP's encoders
_AUTHORS_PREFIXES = (("visual.", "image_encoder."), ("transformer.", "text_encoder.transformer."))


def to_reference_keys(state: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """``state`` with ``prefix`` removed from the keys that start with it."""
    if not prefix:
        return dict(state)
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def _candidates(name: str, prefix: str) -> List[str]:
    names = [name]
    if prefix and name.startswith(prefix):
        names.append(name[len(prefix):])
    names += [theirs + name[len(ours):] for ours, theirs in _AUTHORS_PREFIXES if name.startswith(ours)]
    return names


def from_reference_keys(
    state: Mapping[str, torch.Tensor], learned: Mapping[str, torch.Tensor], prefix: str, path: str
) -> Dict[str, torch.Tensor]:
    """The tensor of each learned parameter, found under our name or a reference's; other
    entries (fixed tokens, frozen CLIP weights) are left out. Missing or misshapen tensors
    are a :class:`ckpt_io.CheckpointMismatchError`."""
    out, problems = {}, []
    for name, param in learned.items():
        key = next((k for k in _candidates(name, prefix) if k in state), None)
        if key is None:
            problems.append(f"no tensor for {name} (looked for {', '.join(_candidates(name, prefix))})")
        elif not isinstance(state[key], torch.Tensor) or tuple(state[key].shape) != tuple(param.shape):
            shape = tuple(state[key].shape) if isinstance(state[key], torch.Tensor) else type(state[key]).__name__
            problems.append(f"{key} has shape {shape}, the model's {name} {tuple(param.shape)}")
        else:
            out[name] = state[key]
    if problems:
        shown = "\n  - ".join(problems[:6]) + (f"\n  - ... ({len(problems)} in all)" if len(problems) > 6 else "")
        keys = ", ".join(list(state)[:6])
        raise ckpt_io.CheckpointMismatchError(
            f"Checkpoint {path} does not hold this model's learned tensors:\n  - {shown}\n"
            f"Its keys begin: {keys}. Use the trainer and config of the run that made it."
        )
    return out


def read_any(path: str, learned: Mapping[str, torch.Tensor], prefix: str) -> Tuple[Dict[str, Any], bool]:
    """A checkpoint of ours or of a reference trainer, its ``state_dict`` in our names.

    Returns ``(checkpoint, ours)``; ``ours`` is False for a file without our ``meta`` (then
    only names and shapes could be checked, and it holds no optimiser state to resume from).
    """
    try:
        checkpoint = ckpt_io.read(path)  # ours: meta checked by the caller
    except ForeignCheckpointError:
        with torch.serialization.safe_globals(_REFERENCE_OBJECTS):  # still weights_only=True
            raw = load_weights_only(path)  # damaged files and other pickled objects raise
        state = raw.get("state_dict", raw) if isinstance(raw, dict) else None
        if not isinstance(state, dict):
            raise
        print(f"Note: {path} has no meta of this toolkit (written by a reference trainer?): "
              "only its tensor names and shapes can be checked")
        tensors = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
        try:
            mapped = from_reference_keys(tensors, learned, prefix, path)
        except ckpt_io.CheckpointMismatchError as err:
            raise ForeignCheckpointError(
                f"{path} is not a checkpoint of this toolkit (no meta), nor a reference trainer's for this "
                f"model: {err}") from None
        checkpoint = {"state_dict": mapped, "epoch": int(raw.get("epoch", 0) or 0), "val_result": raw.get("val_result")}
        return checkpoint, False
    shapes = checkpoint["meta"]["shapes"]  # our names: undo the reference's key names
    checkpoint["state_dict"] = {(prefix + k if k not in shapes and prefix + k in shapes else k): v
                                for k, v in checkpoint["state_dict"].items()}
    return checkpoint, True
