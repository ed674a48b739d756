"""Numeric precision and compilation of a trainer's model: which precision runs, its autocast
context, and ``torch.compile`` of the encoders with a fall-back to eager mode.

Precisions (each trainer's ``PREC`` key):

- ``fp32``: everything in fp32.
- ``fp16``: CLIP held in half precision as ``clip.model.build_model`` does (LayerNorms stay
  fp32); CUDA only.
- ``amp``: fp32 weights, forward pass under fp16 autocast, loss scaling; CUDA only.
- ``bf16``: fp32 weights (so the learned tensors and the optimiser state are fp32), forward
  pass under bf16 autocast, no loss scaling (bf16 has fp32's exponent range). CPU and CUDA.

Without a GPU, fp16 and amp fall back to fp32 with a one-line warning. bf16 is refused on a
GPU that cannot run it and warned about on a CPU without bf16 instructions (``avx512_bf16``
or ``amx_bf16``), where PyTorch emulates it and it may be slower than fp32.

``TRAIN.COMPILE True`` compiles the methods of the classifier that run the encoders (its
``encoder_methods``) with ``torch.compile``: bound methods are replaced on the instance, no
module is wrapped, so ``state_dict`` keys, checkpoints and resume are those of eager mode. If
compiling fails, the classifier goes back to its eager methods with a one-line warning naming
the reason, and the step that failed is run again eagerly.
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Dict, List, Optional, Set

import torch
import torch.nn as nn

from clipfit.errors import ConfigValueError

PREC_CHOICES = ("fp16", "amp", "bf16", "fp32")
AUTOCAST_DTYPES = {"amp": torch.float16, "bf16": torch.bfloat16}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic
CPUINFO = "/proc/cpuinfo"
DEFAULT_ENCODER_METHODS = ("image_features", "class_text_features")


class PrecisionError(ConfigValueError):
    """A precision the configuration asks for that this device cannot run."""


def check_choice(key: str, value: str) -> None:
    """Refuse a ``PREC`` value that is not one of :data:`PREC_CHOICES`."""
    if value not in PREC_CHOICES:
        raise ConfigValueError(f"{key} is {value!r}; choose one of {', '.join(PREC_CHOICES)}.")


def cpu_flags(path: str = CPUINFO) -> Optional[Set[str]]:
    """The CPU feature flags listed in ``path`` (Linux's ``/proc/cpuinfo``); None when unreadable."""
    try:
        with open(path, "r") as f:
            text = f.read()
    except OSError:
        return None
    flags: Set[str] = set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def _check_bf16(key: str, device: torch.device, cpuinfo: str) -> None:
    """Refuse bf16 where ``device`` cannot run it; warn (one line) where it would be emulated."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if not torch.cuda.is_bf16_supported(including_emulation=True):
            raise PrecisionError(
                f"{key} bf16: the GPU {name} cannot run bf16. Set {key} amp (fp16 autocast with loss "
                "scaling) or fp32.")
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            major, minor = torch.cuda.get_device_capability(device)
            print(f"WARNING: {key} bf16: the GPU {name} (compute capability {major}.{minor}) has no bf16 units "
                  f"and emulates it, which is slow; {key} amp is usually faster there")
    elif device.type == "cpu":
        flags = cpu_flags(cpuinfo)
        if flags is None:
            print(f"WARNING: {key} bf16: cannot read {cpuinfo} to tell whether this CPU has bf16 instructions "
                  f"({' or '.join(CPU_BF16_FLAGS)}); without them bf16 is emulated and may be slower than fp32")
        elif not flags & set(CPU_BF16_FLAGS):
            print(f"WARNING: {key} bf16: this CPU has no bf16 instructions ({' or '.join(CPU_BF16_FLAGS)} in "
                  f"{cpuinfo}), so PyTorch emulates bf16 and it may be slower than fp32; {key} fp32 avoids that")
    else:
        raise PrecisionError(f"{key} bf16 runs on a CPU or a CUDA GPU, not on {device.type}: set {key} fp32.")


def resolve(key: str, requested: str, device: torch.device, cpuinfo: str = CPUINFO) -> str:
    """The precision that runs on ``device`` when config key ``key`` asks for ``requested``."""
    check_choice(key, requested)
    if requested == "bf16":
        _check_bf16(key, device, cpuinfo)
        return requested
    if requested != "fp32" and device.type != "cuda":
        print(f"WARNING: {key} {requested} needs a CUDA GPU; running in fp32 on {device.type}")
        return "fp32"
    return requested


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward-pass context of ``precision``: autocast for amp and bf16, else nothing."""
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def needs_loss_scaling(precision: str) -> bool:
    """True for amp: fp16 gradients underflow without a scaler (bf16 has fp32's exponent range)."""
    return precision == "amp"


def anomaly_advice(key: str, precision: str) -> str:
    """What to try when the loss is not finite in ``precision``."""
    return {
        "fp16": f"set {key} amp (fp32 weights, loss scaling), bf16 or fp32",
        "amp": f"set {key} bf16 or fp32",
        "bf16": f"set {key} fp32, or lower OPTIM.LR",
        "fp32": "lower OPTIM.LR",
    }[precision]


def _one_line(err: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of ``err``, followed by its cause when the first line only announces it
    (dynamo's ``BackendCompilerFailed: backend='inductor' raised:``)."""
    text = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
    cause = getattr(err, "inner_exception", None) or err.__cause__
    if text.endswith(":") and cause is not None:
        text = f"{text} {_one_line(cause, limit)}"
    return text[:limit]


class EncoderCompiler:
    """``torch.compile`` of a classifier's encoder methods, with a fall-back to eager mode.

    :meth:`apply` replaces each of ``model.encoder_methods`` on the instance by a guarded
    call of its compiled version. A guarded call that raises switches every method back to
    eager (one warning line with the reason) and runs eagerly; :meth:`run_step` does the
    same for a whole training step, whose backward pass compiles lazily. :meth:`start_first` and
    :meth:`end_first` print the first compiled step's duration once.
    """

    def __init__(self, enabled: bool, backend: str = "inductor", mode: str = "", key: str = "TRAIN.COMPILE"):
        self.enabled, self.backend, self.mode, self.key = bool(enabled), backend, mode, key
        self.model: Optional[nn.Module] = None
        self.methods: List[str] = []
        self.failure = ""  # the reason compiling failed; empty while it has not
        self._started: Optional[float] = None  # when the first compiled step began
        self._reported = False

    @property
    def active(self) -> bool:
        """True while compiled methods are in place."""
        return bool(self.methods) and not self.failure

    def apply(self, model: nn.Module) -> None:
        """Compile ``model``'s encoder methods (nothing when disabled)."""
        if not self.enabled:
            return
        self.model = model
        names = tuple(getattr(model, "encoder_methods", DEFAULT_ENCODER_METHODS))
        options: Dict[str, Any] = {"backend": self.backend}
        if self.mode:
            options["mode"] = self.mode
        self.methods = list(names)
        eager = {name: getattr(model, name) for name in names}
        try:
            compiled = {name: torch.compile(fn, **options) for name, fn in eager.items()}
        except Exception as err:  # noqa: BLE001 - any failure means: run eagerly
            self.fall_back(err)
            return
        for name, fn in compiled.items():
            setattr(model, name, self._guarded(eager[name], fn))
        mode = f", mode {self.mode}" if self.mode else ""
        print(f"{self.key}: compiling {', '.join(names)} of {type(model).__name__} with torch.compile "
              f"(backend {self.backend}{mode}) at their first call")

    def _guarded(self, eager: Callable, compiled: Callable) -> Callable:
        def call(*args, **kwargs):
            if self.failure:
                return eager(*args, **kwargs)
            try:
                return compiled(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - a compile failure must not stop training
                self.fall_back(err)
                return eager(*args, **kwargs)
        return call

    def fall_back(self, err: BaseException) -> None:
        """Restore the eager methods and say why, in one line."""
        self.failure = _one_line(err)
        if self.model is not None:
            for name in self.methods:
                self.model.__dict__.pop(name, None)
        print(f"WARNING: {self.key} True, but compiling failed ({self.failure}); running eagerly")

    def run_step(self, step: Callable[[], Any]) -> Any:
        """Run a training step; if it fails in compiled code, fall back and run it again eagerly.

        ``step`` must be repeatable up to the optimiser step (it zeroes gradients first)."""
        if not self.active:
            return step()
        self.start_first()
        try:
            result = step()
        except Exception as err:  # noqa: BLE001 - e.g. the backward pass failing to compile
            self.fall_back(err)
            return step()
        self.end_first("training step")
        return result

    def start_first(self) -> None:
        """Start the clock of the first compiled step (no effect once started or reported)."""
        if self.active and self._started is None and not self._reported:
            self._started = time.perf_counter()

    def end_first(self, what: str) -> None:
        """Print once how long the first compiled ``what`` took since :meth:`start_first`."""
        if self.active and self._started is not None and not self._reported:
            self._reported = True
            print(f"{self.key}: the first {what} took {time.perf_counter() - self._started:.1f} s, "
                  "compilation included")
