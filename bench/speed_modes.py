"""Shared by the speed benchmarks: a method run in one precision/compile mode, timed the way the
trainer runs it (the same autocast, loss scaling and encoder compilation as
:class:`clipfit.training.base_trainer.CLIPTrainer`, from :mod:`clipfit.training.precision`).

A mode is ``<prec>`` or ``<prec>+compile`` (``fp32``, ``bf16+compile``, ...).
"""
from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from clipfit.methods.openai_clip import convert_weights  # noqa: E402
from clipfit.training import precision as prec  # noqa: E402

COMPILE_SUFFIX = "+compile"


@dataclass(frozen=True)
class Mode:
    """A precision and whether the encoders are compiled."""

    prec: str
    compiled: bool = False

    @classmethod
    def parse(cls, text: str) -> "Mode":
        name, compiled = (text[: -len(COMPILE_SUFFIX)], True) if text.endswith(COMPILE_SUFFIX) else (text, False)
        prec.check_choice("mode", name)
        return cls(name, compiled)

    def __str__(self) -> str:
        return self.prec + (COMPILE_SUFFIX if self.compiled else "")


def check_device(modes: Sequence[Mode], device: torch.device) -> None:
    """Refuse modes the device cannot run (fp16 and amp need CUDA; bf16 per :func:`prec.resolve`)."""
    for mode in modes:
        if mode.prec in ("fp16", "amp") and device.type != "cuda":
            raise SystemExit(f"mode {mode} needs --device cuda (fp16 and amp run on a GPU only)")
        if mode.prec == "bf16":
            prec.resolve("--prec", "bf16", device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_bytes(device: torch.device) -> int:
    """Peak memory of this process: CUDA allocations, else the resident set (Linux: KiB units)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Runner:
    """A classifier in ``mode`` with an SGD optimiser over its learned tensors, as the trainer sets it up."""

    def __init__(self, build: Callable[[torch.nn.Module], torch.nn.Module], clip_model: torch.nn.Module,
                 mode: Mode, device: torch.device, lr: float = 0.002, backend: str = "inductor"):
        self.mode, self.device = mode, device
        clip_model = clip_model.to(device)
        if mode.prec == "fp16":
            convert_weights(clip_model)
        with self.autocast():
            self.model = build(clip_model).to(device)
        self.compiler = prec.EncoderCompiler(mode.compiled, backend, key="--compile")
        self.compiler.apply(self.model)
        params = list(self.model.learned_parameters().values())
        self.optim = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
        self.scaler = torch.amp.GradScaler(device.type) if prec.needs_loss_scaling(mode.prec) else None

    def autocast(self):
        return prec.autocast(self.mode.prec, self.device)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Forward, backward and SGD step (the trainer's ``forward_backward`` without logging)."""
        self.model.train()

        def step():
            with self.autocast():
                loss = self.model.loss(images, labels)[0]
            self.optim.zero_grad()
            (loss if self.scaler is None else self.scaler.scale(loss)).backward()

        self.compiler.run_step(step)
        if self.scaler is None:
            self.optim.step()
        else:
            self.scaler.step(self.optim)
            self.scaler.update()

    @torch.no_grad()
    def test_pass(self, batches: Sequence[torch.Tensor]) -> None:
        """One ``test()``: class features once, then logits and argmax per batch."""
        self.model.eval()
        with self.autocast():
            text = self.model.class_text_features()
            for batch in batches:
                self.model.logits(batch, text).argmax(dim=1)

    def time_training(self, images: torch.Tensor, labels: torch.Tensor, steps: int) -> Tuple[float, List[float]]:
        """Seconds of the first step (compilation included) and of each of ``steps`` later steps."""
        times = []
        for _ in range(steps + 1):
            sync(self.device)
            start = time.perf_counter()
            self.train_step(images, labels)
            sync(self.device)
            times.append(time.perf_counter() - start)
        return times[0], times[1:]

    def time_test(self, batches: Sequence[torch.Tensor]) -> float:
        """Seconds of one test pass after an untimed one (which compiles the inference graphs)."""
        self.test_pass(batches[:1])
        sync(self.device)
        start = time.perf_counter()
        self.test_pass(batches)
        sync(self.device)
        return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def machine(device: torch.device) -> str:
    """The device a measurement ran on in a few words (GPU name, or CPU model and bf16 flags), and torch."""
    if device.type == "cuda":
        hw = torch.cuda.get_device_name(device)
    else:
        model = next((line.split(":", 1)[1].strip() for line in _cpuinfo_lines() if line.startswith("model name")),
                     platform.processor() or platform.machine())
        flags = prec.cpu_flags() or set()
        bf16 = ", ".join(sorted(flags & set(prec.CPU_BF16_FLAGS))) or "no bf16 instructions"
        hw = f"{model} ({bf16}), {torch.get_num_threads()} threads"
    return f"{hw}, torch {torch.__version__}"


def _cpuinfo_lines() -> List[str]:
    try:
        with open(prec.CPUINFO) as f:
            return f.read().splitlines()
    except OSError:
        return []
