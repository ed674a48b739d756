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
import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, TypeVar

from clipfit.fileio import read_json
from clipfit.errors import MissingFileError
from clipfit.training.run_folder import FINISHED, PROGRESS_LINE, unfinished_state
from clipfit.training.run_spec import MODEL_DIR, recorded_identity

T = TypeVar("T")

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


def find_all_runs(root: str) -> Dict[RunKey, List[RunResult]]:
    """Every run folder of a known layout under ``root`` (``root`` itself included), by key; a
    key found twice (``root`` one folder too high: two output roots) lists both."""
    if not osp.isdir(root):
        raise MissingFileError(f"No folder {root}: pass the output root of the scripts "
                                "(OUT, default ./output) or one of its setting folders.")
    runs: Dict[RunKey, List[RunResult]] = {}
    for current, dirs, _ in os.walk(root):
        key = classify(current)
        if key is not None:
            runs.setdefault(key, []).append(read_run(current))
            dirs.clear()  # nothing of interest inside a run folder
        else:
            dirs.sort()
    return runs


def find_runs(root: str) -> Dict[RunKey, RunResult]:
    """The runs under ``root`` that may be averaged (:func:`screen_runs`)."""
    return screen_runs(find_all_runs(root))[0]


# Identity keys that differ between the seeds of one cell by design
PER_SEED_KEYS = ("SEED", MODEL_DIR)


def cell_identity(run_dir: str) -> Optional[Dict[str, object]]:
    """A run's recorded identity without its per-seed keys (None: no record, e.g. CoOp's own
    folders, which are then averaged as before)."""
    recorded, keys = recorded_identity(run_dir)
    if recorded is None:
        return None
    return {k: v for k, v in recorded.items() if k not in PER_SEED_KEYS and (keys is None or k in keys)}


def odd_ones(identities: Dict[T, Optional[Dict[str, object]]]) -> Dict[T, str]:
    """The members of one cell (the seeds of one method and dataset) whose identity differs from
    the one most of them share, with how it differs; when no identity is shared by most, all of
    them (with their differing settings). Members without a record are not judged."""
    known = {m: i for m, i in identities.items() if i is not None}
    groups = Counter(json.dumps(i, sort_keys=True, default=str) for i in known.values())
    if len(groups) < 2:
        return {}
    (top, n), (_, runner_up) = groups.most_common(2)
    if n == runner_up:
        keys = sorted({k for i in known.values() for k in i
                       if len({json.dumps(j.get(k), default=str) for j in known.values()}) > 1})
        return {m: "no settings shared by most seeds: " + "; ".join(f"{k} {i.get(k, '(unset)')!r}" for k in keys)
                for m, i in known.items()}
    common = json.loads(top)
    return {m: "; ".join(f"{k} {i.get(k, '(unset)')!r} (the others: {common.get(k, '(unset)')!r})"
                         for k in sorted(set(i) | set(common)) if i.get(k, "(unset)") != common.get(k, "(unset)"))
            for m, i in known.items() if json.dumps(i, sort_keys=True, default=str) != top}


def screen_runs(found: Dict[RunKey, List[RunResult]]) -> Tuple[Dict[RunKey, RunResult], Dict[RunKey, str]]:
    """The runs that may be averaged, and why each other one is left out: its key found twice
    (both left out), or settings that differ from the other seeds of its cell."""
    left_out: Dict[RunKey, str] = {}
    kept: Dict[RunKey, RunResult] = {}
    for key, results in found.items():
        if len(results) > 1:
            left_out[key] = f"found {len(results)} times: " + ", ".join(r.path for r in results)
        else:
            kept[key] = results[0]
    cells: Dict[RunKey, Dict[RunKey, Optional[Dict[str, object]]]] = {}
    for key, run in kept.items():
        if run.finished:
            cells.setdefault(dataclasses.replace(key, seed=0), {})[key] = cell_identity(run.path)
    for members in cells.values():
        for key, how in odd_ones(members).items():
            del kept[key]
            left_out[key] = how if how.startswith("no settings shared") else \
                f"other settings than the other seeds: {how}"
    return kept, left_out


def left_out_line(key: RunKey, why: str) -> str:
    """``Left out of the means: TRAINER/CFG DATASET seed N (SETTING ROLE): why``."""
    return f"Left out of the means: {key.trainer}/{key.cfg} {key.dataset} seed {key.seed} ({key.setting} {key.role}): {why}"


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
