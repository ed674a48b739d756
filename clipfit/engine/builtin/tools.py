"""Small utilities with Dassl's names and behaviour (files, seeds, images, meters)."""
from __future__ import annotations

import errno
import functools
import os
import os.path as osp
import random
import sys
import time
from collections import defaultdict
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from PIL import Image

from clipfit import fileio
from clipfit.errors import MissingFileError, UnreadableFileError


def mkdir_if_missing(dirname: str) -> None:
    """Create ``dirname`` (and parents) if it does not exist."""
    if dirname and not osp.exists(dirname):
        try:
            os.makedirs(dirname)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise


def read_json(fpath: str) -> Any:
    """Read a JSON file (Dassl's signature), naming the file when it is damaged."""
    return fileio.read_json(fpath, kind=object)


def write_json(obj: Any, fpath: str) -> None:
    """Write JSON atomically (temporary file, then rename), creating parent folders."""
    fileio.write_json(fpath, obj, indent=4, separators=(",", ": "))


def set_random_seed(seed: int) -> None:
    """Seed python's random, numpy and torch (all CUDA devices too)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def read_image(path: str) -> Image.Image:
    """Read an image as RGB; a missing or corrupt file raises an error naming its path."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError as e:
        raise MissingFileError(f"Image not found: {path}") from e
    except OSError as e:
        raise UnreadableFileError(
            f"Cannot read image {path} ({e}). Replace it with a readable image of the same "
            "name (the split file lists it, so deleting it is an error too); python -m "
            "clipfit.data doctor --root DATA lists every unreadable image."
        ) from e


@functools.lru_cache(maxsize=1)
def collect_env_info() -> str:
    """Environment summary printed at the start of each run (collected once per process: it shells
    out for ~1 s, and a process running several runs, a test session or a sweep worker, sees one environment)."""
    import PIL
    from torch.utils.collect_env import get_pretty_env_info

    try:
        env_str = get_pretty_env_info()
    except Exception as e:  # collect_env shells out; never fail a run for it
        env_str = f"(torch environment info unavailable: {e})\nPyTorch version: {torch.__version__}"
    return env_str + f"\n        Pillow ({PIL.__version__})"


def listdir_nohidden(path: str, sort: bool = False) -> List[str]:
    """Non-hidden entries of ``path``."""
    items = [f for f in os.listdir(path) if not f.startswith(".")]
    if sort:
        items.sort()
    return items


def tolist_if_not(x: Any) -> list:
    return x if isinstance(x, list) else [x]


class _Tee:
    """Write everything printed to the console and to a log file."""

    def __init__(self, fpath: str):
        self.console = sys.stdout
        mkdir_if_missing(osp.dirname(fpath))
        self.file = open(fpath, "w", buffering=1)  # line-buffered: a killed run keeps its log

    def write(self, msg: str) -> None:
        self.console.write(msg)
        self.file.write(msg)

    def flush(self) -> None:
        self.console.flush()
        self.file.flush()
        os.fsync(self.file.fileno())

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        self.file.close()


def setup_logger(output: Optional[str] = None) -> None:
    """Tee stdout to ``<output>/log.txt`` (or to ``output`` when it names a .txt/.log file).

    An existing log is never overwritten: the new one gets a time suffix, as in Dassl.
    """
    if output is None:
        return
    fpath = output if output.endswith((".txt", ".log")) else osp.join(output, "log.txt")
    if osp.exists(fpath):
        fpath += time.strftime("-%Y-%m-%d-%H-%M-%S")
    if isinstance(sys.stdout, _Tee):
        sys.stdout.close()
        sys.stdout = sys.stdout.console
    sys.stdout = _Tee(fpath)


class AverageMeter:
    """Current value and running average of a scalar."""

    def __init__(self, ema: bool = False):
        self.ema = ema
        self.reset()

    def reset(self) -> None:
        self.val = 0.0
        self.avg = 0.0
        self.sum = 0.0
        self.count = 0

    def update(self, val: Any, n: int = 1) -> None:
        if isinstance(val, torch.Tensor):
            val = val.item()
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.avg * 0.9 + self.val * 0.1 if self.ema else self.sum / self.count


class MetricMeter:
    """A set of named AverageMeters, printed as ``name val (avg)``."""

    def __init__(self, delimiter: str = " "):
        self.meters: Dict[str, AverageMeter] = defaultdict(AverageMeter)
        self.delimiter = delimiter

    def update(self, input_dict: Optional[Dict[str, Any]]) -> None:
        if input_dict is None:
            return
        if not isinstance(input_dict, dict):
            raise TypeError("Input to MetricMeter.update() must be a dictionary")
        for k, v in input_dict.items():
            if isinstance(v, torch.Tensor):
                v = v.item()
            self.meters[k].update(v)

    def __str__(self) -> str:
        return self.delimiter.join(f"{n} {m.val:.4f} ({m.avg:.4f})" for n, m in self.meters.items())


def compute_accuracy(output: torch.Tensor, target: torch.Tensor, topk=(1,)) -> List[torch.Tensor]:
    """Top-k accuracies in percent (Dassl's ``compute_accuracy``)."""
    maxk = max(topk)
    batch_size = target.size(0)
    if isinstance(output, (tuple, list)):
        output = output[0]
    _, pred = output.topk(maxk, 1, True, True)
    pred = pred.t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    res = []
    for k in topk:
        correct_k = correct[:k].reshape(-1).float().sum(0, keepdim=True)
        res.append(correct_k.mul_(100.0 / batch_size))
    return res
