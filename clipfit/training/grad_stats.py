"""Per-iteration gradient and change statistics of the tuned tensors (``TRAINER.CLIPFIT.LOG_GRAD_STATS``).

The trainer builds a :class:`GradStatsRecorder` over its learned parameters before the
first update, calls :meth:`GradStatsRecorder.record` after each backward pass and before
the optimiser step (``CLIPTrainer.after_backward``, where AMP gradients are already
unscaled), and :meth:`GradStatsRecorder.save` at the end of training. Per
iteration and per tuned tensor it keeps

- ``grad_sq``: the squared gradient sum ``sum(grad ** 2)`` (Figures 4a and 11a of the paper),
- ``change``: the squared change ``||p_ref - p||^2`` from the reference (pre-trained) values
  before this iteration's update, i.e. after ``iteration`` updates (Figure 11b).

``<run>/grad_stats.pt`` holds only tensors, strings and numbers, so it loads with
``torch.load(..., weights_only=True)``; ``python -m clipfit.analysis grads <run>`` plots it.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional

import torch

from clipfit.fileio import FileContentError, atomic_path
from clipfit.errors import MissingFileError

FILE_NAME = "grad_stats.pt"
FORMAT = "clipfit-grad-stats-1"


class GradStatsRecorder:
    """Records ``grad_sq`` and ``change`` of ``params`` at each :meth:`record` call.

    ``reference``: the values changes are measured from (by name); default, the values
    of ``params`` when the recorder is built (build it before the first update).
    """

    def __init__(
        self,
        params: Mapping[str, torch.nn.Parameter],
        reference: Optional[Mapping[str, torch.Tensor]] = None,
    ):
        if not params:
            raise ValueError("GradStatsRecorder needs at least one tuned parameter to record.")
        self.names: List[str] = list(params)
        self.params = dict(params)
        source = reference if reference is not None else params
        missing = [n for n in self.names if n not in source]
        if missing:
            raise KeyError(f"No reference value for tuned tensors {missing[:4]}; pass one per parameter.")
        self.reference = {n: source[n].detach().float().clone() for n in self.names}
        self._iterations: List[int] = []
        self._rows: List[torch.Tensor] = []  # per call: [2, n_tensors] (grad_sq, change), on device

    def __len__(self) -> int:
        return len(self._iterations)

    @torch.no_grad()
    def record(self, iteration: int) -> None:
        """Statistics of the current gradients and values (call after backward, before the step;
        under AMP after ``scaler.unscale_``). A tensor without a gradient records 0."""
        grads, changes = [], []
        for name in self.names:
            p = self.params[name]
            ref = self.reference[name]
            if ref.device != p.device:
                ref = self.reference[name] = ref.to(p.device)
            g = p.grad
            grads.append(p.new_zeros((), dtype=torch.float32) if g is None else g.float().pow(2).sum())
            changes.append((p.float() - ref).pow(2).sum())
        self._rows.append(torch.stack([torch.stack(grads), torch.stack(changes)]))
        self._iterations.append(int(iteration))

    def state(self) -> Dict[str, Any]:
        """What :meth:`save` writes: names, iterations ``[T]``, ``grad_sq`` and ``change`` ``[T, n]``."""
        rows = torch.stack(self._rows).cpu() if self._rows else torch.zeros(0, 2, len(self.names))
        return {
            "format": FORMAT,
            "names": list(self.names),
            "numel": [self.params[n].numel() for n in self.names],
            "iterations": torch.tensor(self._iterations, dtype=torch.long),
            "grad_sq": rows[:, 0].double(),
            "change": rows[:, 1].double(),
        }

    def save(self, run_dir: str) -> str:
        """Write ``<run_dir>/grad_stats.pt`` atomically; returns its path."""
        path = os.path.join(run_dir, FILE_NAME)
        with atomic_path(path) as tmp:
            torch.save(self.state(), tmp)
        print(f"Gradient statistics ({len(self)} iterations) saved to {path}")
        return path


def load_grad_stats(path: str) -> Dict[str, Any]:
    """Read a ``grad_stats.pt`` (the file or the run folder holding it), with clear errors."""
    if os.path.isdir(path):
        path = os.path.join(path, FILE_NAME)
    if not os.path.isfile(path):
        raise MissingFileError(
            f"No gradient statistics at {path}. They are recorded only when training runs with "
            "TRAINER.CLIPFIT.LOG_GRAD_STATS True (add it to the trailing opts of train.py or the scripts)."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise FileContentError(f"{path} is not a gradient-statistics file of this toolkit ('{FORMAT}').")
    if not len(state["iterations"]):
        raise FileContentError(f"{path} holds no iterations: the run stopped before its first update.")
    return state
