"""Reading run folders: final metrics, whether a run finished, where it stopped.

A run folder is one ``--output-dir`` of ``train.py``. Its final metrics come from
``metrics.json`` (full precision, written by our trainers) and otherwise from Dassl's log
(``log.txt``, one decimal), so folders made by CoOp's or KgCoOp's own code read too.
A run is *finished* when it has final metrics. A folder without them is *running* (another
process holds its lock), *crashed* (with the last error line), *interrupted* (with its last
checkpoint) or *not-started* (training never began): see :mod:`clipfit.training.run_folder`,
the low-level module of run-folder facts this one reads above.
"""
from __future__ import annotations

import glob
import math
import os
import os.path as osp
import re
import statistics
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from clipfit.fileio import read_json
from clipfit.training.run_folder import FINISHED, PROGRESS_LINE, unfinished_state

METRICS_FILE = "metrics.json"
LOG_FILE = "log.txt"
TRAIN_END_SIGNAL = "Finish training"  # Dassl prints it before the final test of a training run
TEST_END_SIGNAL = "=> result"  # Dassl's evaluator prints it before every result block

# Log keyword (as in "* accuracy: 71.2%") -> key in metrics.json
JSON_KEYS: Dict[str, str] = {
    "accuracy": "accuracy", "error": "error_rate", "macro_f1": "macro_f1",
    "total": "total", "correct": "correct",
}
_METRIC_LINE = re.compile(r"^\* (\w+): ([\d,.eE+-]+)%?$")
_SEED_DIR = re.compile(r"^seed(\d+)$")

MISSING = "missing"  # else FINISHED or one of run_folder's unfinished states


@dataclass
class RunResult:
    """The final metrics of one run folder, or why there are none."""

    path: str
    status: str  # finished, missing, or running, crashed, interrupted, not-started
    metrics: Dict[str, float] = field(default_factory=dict)  # log keywords: accuracy, error, ...
    source: str = ""  # the file the metrics came from
    reason: str = ""  # for unfinished or missing runs: what is wrong (crash: the error line)

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    @property
    def accuracy(self) -> float:
        return self.metrics["accuracy"]


def read_metrics_json(path: str) -> Optional[Dict[str, float]]:
    """Metrics of a ``metrics.json`` under log keyword names; None when absent or invalid."""
    try:
        data = read_json(path, "Metrics file")
    except (OSError, ValueError):
        return None
    if not isinstance(data.get("accuracy"), (int, float)):
        return None
    return {kw: float(data[key]) for kw, key in JSON_KEYS.items()
            if isinstance(data.get(key), (int, float))}


def parse_log(path: str, end_signal: Optional[str] = None) -> Optional[Dict[str, float]]:
    """Final metrics in a Dassl log, or None when it has none (an unfinished run).

    As CoOp's ``parse_test_res.py``: every ``* name: value`` line after the end signal counts,
    the last one of a name wins. With ``end_signal=None`` the log type is detected: a training
    log counts from "Finish training" (its earlier result blocks are validation), a log with
    training progress but no "Finish training" is unfinished, an eval-only log counts from
    "=> result".
    """
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f]
    except OSError:
        return None
    if end_signal is None:
        if TRAIN_END_SIGNAL in lines:
            end_signal = TRAIN_END_SIGNAL
        elif any(PROGRESS_LINE.match(line) for line in lines):
            return None
        else:
            end_signal = TEST_END_SIGNAL
    metrics: Dict[str, float] = {}
    started = False
    for line in lines:
        started = started or line == end_signal
        match = _METRIC_LINE.match(line) if started else None
        if match:
            metrics[match.group(1)] = float(match.group(2).replace(",", ""))
    return metrics if "accuracy" in metrics else None


def log_files(run_dir: str) -> List[str]:
    """``log.txt`` and Dassl's time-stamped logs of later attempts, newest first."""
    paths = glob.glob(osp.join(run_dir, LOG_FILE)) + glob.glob(osp.join(run_dir, LOG_FILE + "-*"))
    return sorted(paths, key=osp.getmtime, reverse=True)


def read_run(run_dir: str, end_signal: Optional[str] = None) -> RunResult:
    """The final metrics of ``run_dir``: ``metrics.json`` first, else the newest log with a
    result."""
    if not osp.isdir(run_dir):
        return RunResult(run_dir, MISSING, reason="folder does not exist")
    json_path = osp.join(run_dir, METRICS_FILE)
    metrics = read_metrics_json(json_path)
    if metrics is not None:
        return RunResult(run_dir, FINISHED, metrics, json_path)
    return read_logs(run_dir, end_signal)


def read_logs(run_dir: str, end_signal: Optional[str] = None) -> RunResult:
    """The final metrics of ``run_dir`` from its newest log with a result (not metrics.json)."""
    logs = log_files(run_dir)
    for path in logs:
        metrics = parse_log(path, end_signal)
        if metrics is not None:
            return RunResult(run_dir, FINISHED, metrics, path)
    state, detail = unfinished_state(run_dir)
    return RunResult(run_dir, state, source=logs[0] if logs else "", reason=detail)


def run_status(run_dir: str) -> str:
    """finished, missing, running, crashed, interrupted or not-started."""
    return read_run(run_dir).status


def last_progress(log_path: str) -> str:
    """The epoch and ETA of the last Dassl progress line in ``log_path`` ("" when none)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            tail = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(tail):
        match = PROGRESS_LINE.match(line.strip())
        if match:
            eta = re.search(r"eta (\S+)", line)
            return f"epoch {match.group(1)}/{match.group(2)}" + (f", eta {eta.group(1)}" if eta else "")
    return ""


def seed_of(run_dir: str) -> Optional[int]:
    """The seed of a ``seed<N>`` folder, None for other names."""
    match = _SEED_DIR.match(osp.basename(osp.normpath(run_dir)))
    return int(match.group(1)) if match else None


# Run-folder layouts of the experiment scripts, read from the end of a run folder's path:
#   base2new: .../{train_base,test_new}/<dataset>/shots_<S>/<trainer>/<cfg>/seed<N>  (CoOp's)
#   fewshot:  .../fewshot/<dataset>/shots_<S>/<trainer>/<cfg>/seed<N>
#   xd:       .../xd/train/imagenet/shots_<S>/<trainer>/<cfg>/seed<N>  (ImageNet source models,
#             shared by the distribution shift tests) and .../xd/test/<dataset>/...
#   dg:       .../dg/test/<dataset>/shots_<S>/<trainer>/<cfg>/seed<N>
BASE2NEW_ROLES = {"train_base": "base", "test_new": "new"}
_SHOTS_DIR = re.compile(r"^shots_(\d+)")


@dataclass(frozen=True)
class RunKey:
    """Where a run folder sits in the experiment layout."""

    setting: str  # base2new, fewshot, xd or dg
    role: str  # base, new (base2new); test (fewshot); source, target (xd, dg)
    dataset: str
    shots: int
    trainer: str
    cfg: str
    seed: int


def classify(run_dir: str) -> Optional[RunKey]:
    """The :class:`RunKey` of a ``seed<N>`` folder of a known layout, else None."""
    parts = osp.abspath(run_dir).split(os.sep)
    seed = seed_of(run_dir)
    if seed is None or len(parts) < 8:
        return None
    shots = _SHOTS_DIR.match(parts[-4])
    if not shots:
        return None
    dataset, trainer, cfg = parts[-5], parts[-3], parts[-2]
    tail = (dataset, int(shots.group(1)), trainer, cfg, seed)
    if parts[-6] in BASE2NEW_ROLES:
        return RunKey("base2new", BASE2NEW_ROLES[parts[-6]], *tail)
    if parts[-6] == "fewshot":
        return RunKey("fewshot", "test", *tail)
    if parts[-7] == "xd" and parts[-6] == "train":
        return RunKey("xd", "source", *tail)
    if parts[-7] in ("xd", "dg") and parts[-6] == "test":
        return RunKey(parts[-7], "target", *tail)
    return None


def find_runs(root: str) -> Dict[RunKey, RunResult]:
    """Every run folder of a known layout under ``root`` (``root`` itself included)."""
    if not osp.isdir(root):
        raise FileNotFoundError(f"No folder {root}: pass the output root of the scripts "
                                "(OUT, default ./output) or one of its setting folders.")
    runs: Dict[RunKey, RunResult] = {}
    for current, dirs, _ in os.walk(root):
        key = classify(current)
        if key is not None:
            runs[key] = read_run(current)
            dirs.clear()  # nothing of interest inside a run folder
        else:
            dirs.sort()
    return runs


@dataclass
class Stat:
    """Mean and standard deviation over seeds (population std, ddof=0, as CoOp's ``np.std``)."""

    mean: float
    std: float
    n: int
    values: List[float]


def summarize(values: Sequence[float]) -> Optional[Stat]:
    """Mean and std of ``values``; None when empty."""
    if not values:
        return None
    return Stat(statistics.fmean(values), statistics.pstdev(values), len(values), list(values))


def ci95(values: Sequence[float]) -> float:
    """Half-width of the 95% confidence interval, as CoOp's parser computes it."""
    return 1.96 * statistics.pstdev(values) / math.sqrt(len(values))


def harmonic_mean(base: float, new: float) -> float:
    """HM = 2 * Base * New / (Base + New), 0 when both are 0."""
    return 2 * base * new / (base + new) if base + new else 0.0
