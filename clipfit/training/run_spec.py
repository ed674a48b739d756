"""One run as a value: :class:`RunSpec`, and the identity check every entry point goes through.

A :class:`RunSpec` says what makes a run what it is: setting, trainer, config, dataset and the
data it reads, shots, subsample, seed, trailing yacs opts and (for a test run) the trained run
and epoch it loads. From it follow its folder (CoOp's layout), the ``train.py`` command it
amounts to (:meth:`RunSpec.argv`) and its announcement (:attr:`RunSpec.what`).

The *identity* of a run (:func:`identity`) is read from its resolved config, so ``train.py
--output-dir`` and the scripts check the same thing: every config key except those that only
say where and how verbosely it runs (:data:`NOT_IDENTITY`), the data root as an absolute path,
the SHA256 of the base weights, and for an evaluation the model folder and epoch it loads.
``run.json`` records it; a rerun whose identity differs in any part is refused, naming each
difference and the two ways out (:func:`decide`). See docs/run-model.md.
"""
from __future__ import annotations

import hashlib
import os
import os.path as osp
import re
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

from clipfit.errors import ConfigValueError
from clipfit import REPO_ROOT
from clipfit.training import run_folder
from clipfit.training.run_folder import Decision, RunFolderError

# Config keys that do not change a run's numbers: where it writes, how often it prints or saves,
# the device, how many loader processes (capped per machine) and the test batch size.
NOT_IDENTITY = ("OUTPUT_DIR", "RESUME", "USE_CUDA", "VERBOSE", "DATALOADER.NUM_WORKERS",
                "DATALOADER.TEST.BATCH_SIZE", "TRAIN.CHECKPOINT_FREQ", "TRAIN.PRINT_FREQ")
# Keys of run.json format 1 (older folders): only these are compared with such a record
LEGACY_KEYS = ("DATASET.NAME", "DATASET.SUBSAMPLE_CLASSES", "DATASET.NUM_SHOTS", "DATASET.TEMPLATE",
               "SEED", "MODEL.BACKBONE.NAME", "MODEL.BACKBONE.PATH", "INPUT.SIZE",
               "DATALOADER.TRAIN_X.BATCH_SIZE")
LEGACY_SUBTREES = ("OPTIM", "TRAINER")
WEIGHTS = "weights sha256"
MODEL_DIR, LOAD_EPOCH = "model dir", "load epoch"
# Opts whose value names the data a custom dataset reads; its run folder is named after it
DATA_KEYS = ("DATASET.CSV_FILE", "DATASET.IMAGE_DIR")
# Run-folder layout (CoOp's): <out>/<setting>/[<part>/]<dataset>/shots_<S>/<trainer>/<cfg>/seed<N>
PARTS: Dict[Tuple[str, str], str] = {  # (setting, part) -> announcement, {t}: trainer/cfg
    ("base2new", "train_base"): "base2new train {t} {d} seed {s}",
    ("base2new", "test_new"): "base2new test (new classes) {t} {d} seed {s}",
    ("fewshot", ""): "fewshot {k}-shot {t} {d} seed {s}",
    ("xd", "train"): "ImageNet source {t} seed {s}",
    ("xd", "test"): "cross-dataset test {t} {d} seed {s}",
    ("dg", "test"): "distribution-shift test {t} {d} seed {s}",
}
TRAIN_PY = "train.py"


@dataclass(frozen=True)
class RunSpec:
    """One run of the experiment layout. ``model`` is the trained run a test run loads (None for
    training runs and for trainers that are evaluated only); ``load_epoch`` None: its last
    checkpoint. ``data`` and ``out`` are the dataset root and the output root (``$DATA``,
    ``$OUT``); ``ckpt_freq`` is how often a training saves (not part of the identity)."""

    setting: str
    part: str
    trainer: str
    cfg: str
    dataset: str
    seed: int
    shots: int = 16
    subsample: str = "all"
    data: str = "./data"
    out: str = "output"
    opts: Tuple[str, ...] = ()
    model: Optional["RunSpec"] = None
    load_epoch: Optional[int] = None
    eval_only: bool = False
    ckpt_freq: int = 5

    def __post_init__(self) -> None:
        if (self.setting, self.part) not in PARTS:
            raise ConfigValueError(f"No run layout for setting {self.setting!r}, part {self.part!r}: "
                             f"one of {sorted(PARTS)}")
        if len(self.opts) % 2:
            raise ConfigValueError(f"Trailing opts come in KEY VALUE pairs; got {list(self.opts)}")

    @property
    def evaluates(self) -> bool:
        """Whether the run only evaluates (a test run, or a trainer that is never trained)."""
        return self.eval_only or self.model is not None

    @property
    def config_file(self) -> str:
        """``configs/trainers/<trainer folder>/<cfg>.yaml`` (relative to the repository)."""
        from clipfit.experiments.protocol import config_trainer

        return osp.join("configs", "trainers", config_trainer(self.trainer), f"{self.cfg}.yaml")

    @property
    def dataset_config_file(self) -> str:
        return osp.join("configs", "datasets", f"{self.dataset}.yaml")

    @property
    def data_name(self) -> str:
        """The dataset's folder name: the config name, and for a custom dataset the data it
        reads (``image_folder-birds`` for ``DATASET.IMAGE_DIR /x/birds``)."""
        given = dict(zip(self.opts[0::2], self.opts[1::2]))
        source = next((given[k] for k in DATA_KEYS if given.get(k)), "")
        if not source:
            return self.dataset
        stem = osp.splitext(osp.basename(osp.normpath(source)))[0]
        return f"{self.dataset}-{re.sub(r'[^A-Za-z0-9._+-]', '_', stem)}"

    @property
    def folder(self) -> str:
        """The run folder (CoOp's layout)."""
        return osp.join(self.out, self.setting, *([self.part] if self.part else []), self.data_name,
                        f"shots_{self.shots}", self.trainer, self.cfg, f"seed{self.seed}")

    @property
    def what(self) -> str:
        """The run's name in the ``==>`` lines of the scripts and the sweep's status."""
        return PARTS[(self.setting, self.part)].format(
            t=f"{self.trainer}/{self.cfg}", d=self.data_name, s=self.seed, k=self.shots)

    def script_opts(self) -> List[str]:
        """The opts the layout adds before the trailing ones: checkpoint frequency (training),
        shots (not for cross-dataset and shift tests), subsample."""
        opts = [] if self.evaluates else ["TRAIN.CHECKPOINT_FREQ", str(self.ckpt_freq)]
        if not (self.evaluates and self.setting in ("xd", "dg")):
            opts += ["DATASET.NUM_SHOTS", str(self.shots)]
        if self.subsample != "all":
            opts += ["DATASET.SUBSAMPLE_CLASSES", self.subsample]
        return opts

    def argv(self, overwrite: bool = False) -> List[str]:
        """The ``train.py`` arguments of this run (run in the repository root)."""
        args = ["--root", self.data, "--seed", str(self.seed), "--trainer", self.trainer,
                "--dataset-config-file", self.dataset_config_file, "--config-file", self.config_file,
                "--output-dir", self.folder, "--announce", self.what]
        if not self.evaluates:
            args += ["--resume", self.folder]
        else:
            args.append("--eval-only")
            if self.model is not None:
                args += ["--model-dir", self.model.folder]
                if self.load_epoch is not None:
                    args += ["--load-epoch", str(self.load_epoch)]
        if overwrite:
            args.append("--overwrite")
        return args + self.script_opts() + list(self.opts)

    def identity(self) -> Dict[str, object]:
        """This run's identity (:func:`identity` of its resolved config), as ``train.py`` would
        record it (the weights' SHA256 reused from the folder's record while the file is
        unchanged). Needs the config files and, for a test run, the model folder."""
        from clipfit.training.cli import build_parser, setup_cfg

        cwd = os.getcwd()
        os.chdir(REPO_ROOT)  # config paths are relative to the repository, as train.py runs there
        try:
            spec = self
            if self.model is not None and self.load_epoch is None:  # the epoch a run would load now
                spec = replace(self, load_epoch=run_folder.last_checkpoint_epoch(self.model.folder))
            args = build_parser().parse_args(spec.argv())
            cfg = setup_cfg(args)
        finally:
            os.chdir(cwd)
        recorded = (run_folder.read_record(self.folder) or {}).get("weights")
        return identity(cfg, (args.model_dir, args.load_epoch) if self.evaluates else None, recorded)


# ---------------------------------------------------------------- identity

def flat_settings(node) -> Dict[str, object]:
    """A yacs config as ``{"A.B": value}``, tuples as lists (as config.yaml stores them)."""
    out: Dict[str, object] = {}
    for k, v in node.items():
        if hasattr(v, "items"):
            out.update({f"{k}.{kk}": vv for kk, vv in flat_settings(v).items()})
        else:
            out[k] = _plain(v)
    return out


def _plain(value):
    return list(map(_plain, value)) if isinstance(value, (list, tuple)) else value


def weights_fingerprint(path: str, previous: Optional[dict] = None) -> Optional[dict]:
    """Size, mtime and SHA256 of a weights file (the SHA256 reused from ``previous`` when size
    and mtime match); None when there is no such file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    print_ = {"path": osp.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if previous and all(previous.get(k) == v for k, v in print_.items()) and previous.get("sha256"):
        return {**print_, "sha256": previous["sha256"]}
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return {**print_, "sha256": digest.hexdigest()}


def weights_file(cfg) -> str:
    """The weights file the loader would read for ``cfg`` without downloading ("" if none)."""
    if cfg.MODEL.BACKBONE.PATH:
        return osp.expanduser(cfg.MODEL.BACKBONE.PATH)
    try:
        from clipfit.methods.clip_loader import cached_weights_path

        return cached_weights_path(cfg.MODEL.BACKBONE.NAME)
    except ValueError:  # a backbone name the clip package does not know
        return ""


def settings(cfg, eval_from: Optional[Tuple[str, Optional[int]]] = None) -> Dict[str, object]:
    """Every key of the resolved config but :data:`NOT_IDENTITY` (the data root absolute); for
    an evaluation, the model folder and epoch it loads."""
    flat = {k: v for k, v in flat_settings(cfg).items() if k not in NOT_IDENTITY}
    if flat.get("DATASET.ROOT"):
        flat["DATASET.ROOT"] = osp.abspath(osp.expanduser(str(flat["DATASET.ROOT"])))
    if eval_from is not None:
        flat[MODEL_DIR] = osp.abspath(eval_from[0]) if eval_from[0] else ""
        flat[LOAD_EPOCH] = eval_from[1]
    return flat


def identity(cfg, eval_from: Optional[Tuple[str, Optional[int]]] = None,
             previous_weights: Optional[dict] = None) -> Dict[str, object]:
    """:func:`settings` plus the SHA256 of the base weights (``previous_weights``: the fingerprint
    recorded before, reused when the file's size and mtime match)."""
    ident = settings(cfg, eval_from)
    weights = weights_fingerprint(weights_file(cfg), previous_weights)
    ident[WEIGHTS] = weights["sha256"] if weights else None
    return ident


def differences(old: Dict[str, object], new: Dict[str, object], keys=None) -> List[str]:
    """``KEY: old -> new`` for every key (of ``keys``, default both dicts') that differs; a moved
    weights file with the same SHA256 is no difference."""
    same_weights = old.get(WEIGHTS) and old.get(WEIGHTS) == new.get(WEIGHTS)
    lines = []
    for key in sorted(keys if keys is not None else set(old) | set(new)):
        if key == "MODEL.BACKBONE.PATH" and same_weights:
            continue
        if old.get(key, "(unset)") != new.get(key, "(unset)"):
            lines.append(f"{key}: {old.get(key, '(unset)')!r} (recorded) -> "
                         f"{new.get(key, '(unset)')!r} (now)")
    return lines


def _legacy(key: str) -> bool:
    return key in LEGACY_KEYS or key.split(".")[0] in LEGACY_SUBTREES or key in (WEIGHTS, MODEL_DIR,
                                                                                 LOAD_EPOCH)


def recorded_identity(folder: str) -> Tuple[Optional[Dict[str, object]], Optional[set]]:
    """The identity a folder recorded and the keys to compare it on (None: all): ``run.json``,
    or for older folders their format-1 record or ``config.yaml`` (compared on the keys such
    records held)."""
    record = run_folder.read_record(folder, any_format=True) or {}
    old = record.get("settings")
    if old and record.get("format") == run_folder.RECORD_FORMAT:
        return old, None
    if not old:
        cfg = run_folder.read_config_yaml(folder)
        old = settings(cfg) if cfg is not None else None
    return old, ({k for k in old if _legacy(k)} if old else None)


def decide(folder: str, kind: str, ident: Dict[str, object], overwrite: bool,
           finished_accuracy: Optional[float]) -> Decision:
    """Check ``folder`` for a run of ``kind`` with identity ``ident``; raises
    :class:`RunFolderError` when it holds a different run (another identity, or a training run
    for an evaluation)."""
    if not osp.isdir(folder):
        return Decision("start")
    if kind == run_folder.EVAL and run_folder.holds_training(folder):
        raise RunFolderError(
            f"{folder} holds a training run: evaluating into it would overwrite its results. "
            "Write the evaluation to another --output-dir (and load the model with --model-dir "
            f"{folder}).")
    if overwrite:
        return Decision("start", "--overwrite: the previous run in this folder is deleted")
    if finished_accuracy is not None or run_folder.last_checkpoint_epoch(folder) is not None:
        old, keys = recorded_identity(folder)
        diff = differences(old, ident, keys) if old else []
        if diff:
            what = "a finished run" if finished_accuracy is not None else "an unfinished run"
            raise RunFolderError(
                f"{folder} holds {what} with other settings:\n  " + "\n  ".join(diff)
                + f"\n{run_folder.WAYS_OUT}")
    if finished_accuracy is not None:
        return Decision("skip", f"finished (accuracy {finished_accuracy:.2f}%)")
    return run_folder.state_decision(folder)
