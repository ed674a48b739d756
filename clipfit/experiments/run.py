"""The experiment scripts' runs, in one interpreter: build the :class:`RunSpec` of each step,
then lock, skip, resume or train it in-process.

``python -m clipfit.experiments.run SCRIPT ARGS...`` is what ``scripts/<SCRIPT>.sh`` runs (its
environment contract: TRAINER CFG SHOTS DATA OUT CKPT_FREQ LOAD_EPOCH OVERWRITE DRY_RUN, read by
:meth:`ScriptEnv.from_environ`). The sweep and the paper runner use :func:`setting_specs`,
:func:`execute` and :func:`spec_state` directly. Names are checked (with "did you mean") before
torch is imported. See docs/run-model.md.
"""
from __future__ import annotations

import dataclasses
import os
import os.path as osp
import shlex
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from clipfit import REPO_ROOT
from clipfit.errors import ConfigValueError
from clipfit.experiments.protocol import (DEFAULT_TRAINER, DG_TARGETS, SOURCE_DATASET, default_config,
                                          default_rule, is_eval_only, setting_datasets)
from clipfit.experiments.results import RunResult, read_run
from clipfit.training import run_folder
from clipfit.training.config import closest_key
from clipfit.training.run_spec import TRAIN_PY, RunSpec, differences, recorded_identity

# script name -> (usage of its arguments, number of required arguments)
SCRIPTS: Dict[str, Tuple[str, int]] = {
    "base2new_train": ("DATASET SEED", 2), "base2new_test": ("DATASET SEED", 2),
    "fewshot": ("DATASET SEED SHOTS", 3), "xd_train": ("SEED", 1), "xd_test": ("DATASET SEED", 2),
    "dg_test": ("SEED", 1),
}
OTHER_SETTINGS = "other-settings"  # a spec's state: its folder holds a run with another identity


class ScriptError(Exception):
    """A script called with something that does not exist or is not ready (exit status 2)."""


class Busy(ScriptError):
    """A run folder locked by another process (a script, sweep job or train.py writing it)."""


@dataclass(frozen=True)
class ScriptEnv:
    """The scripts' environment contract (scripts/_common.sh)."""

    trainer: str = DEFAULT_TRAINER
    cfg: str = ""  # "" : the protocol's default (clipfit.experiments.protocol.default_config)
    shots: int = 16
    data: str = "./data"
    out: str = "output"
    ckpt_freq: int = 5
    load_epoch: Optional[int] = None
    overwrite: bool = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] = os.environ) -> "ScriptEnv":
        def number(key: str, default: Optional[int]) -> Optional[int]:
            value = environ.get(key, "")
            if not value:
                return default
            if not value.isdigit():
                raise ScriptError(f"{key}={value}: give a whole number")
            return int(value)

        return cls(trainer=environ.get("TRAINER") or DEFAULT_TRAINER, cfg=environ.get("CFG", ""),
                   shots=number("SHOTS", 16), data=environ.get("DATA") or "./data",
                   out=environ.get("OUT") or "output", ckpt_freq=number("CKPT_FREQ", 5),
                   load_epoch=number("LOAD_EPOCH", None), overwrite=environ.get("OVERWRITE") == "1")

    def config(self, setting: str, dataset: str) -> str:
        """``CFG``, else the protocol's default for this setting and dataset."""
        return self.cfg or default_config(self.trainer, setting, dataset, self.shots)


def _spec(env: ScriptEnv, setting: str, part: str, dataset: str, seed: int, cfg: str,
          opts: Sequence[str], subsample: str = "all", model: Optional[RunSpec] = None) -> RunSpec:
    return RunSpec(setting=setting, part=part, trainer=env.trainer, cfg=cfg, dataset=dataset, seed=seed,
                   shots=env.shots, subsample=subsample, data=env.data, out=env.out, opts=tuple(opts),
                   model=None if is_eval_only(env.trainer) else model,
                   load_epoch=env.load_epoch if model is not None else None,
                   eval_only=is_eval_only(env.trainer), ckpt_freq=env.ckpt_freq)


def _evaluated(env: ScriptEnv, setting: str, part: str, dataset: str, seed: int, cfg: str,
               opts: Sequence[str], model: RunSpec, subsample: str = "all") -> RunSpec:
    spec = _spec(env, setting, part, dataset, seed, cfg, opts, subsample, model)
    return dataclasses.replace(spec, eval_only=True)


def script_specs(script: str, args: Sequence[str], env: ScriptEnv) -> List[RunSpec]:
    """The runs ``scripts/<script>.sh ARGS`` makes, in order (``ARGS``: its positional
    arguments, then yacs KEY VALUE pairs)."""
    usage, n = SCRIPTS[script]
    args = [str(a) for a in args]
    if len(args) < n:
        raise ScriptError(f"usage: bash scripts/{script}.sh {usage} [KEY VALUE ...]\n  Trailing KEY "
                          "VALUE pairs are yacs opts passed to train.py. Environment: TRAINER CFG "
                          "SHOTS DATA OUT (see scripts/_common.sh).")
    for name, value in zip(usage.split(), args):
        if name in ("SEED", "SHOTS") and not value.lstrip("-").isdigit():
            raise ScriptError(f"{name} {value}: give a whole number")
    opts = list(args[n:])
    if script == "fewshot":
        env = dataclasses.replace(env, shots=int(args[2]))
    if script in ("xd_train", "dg_test"):
        seed, dataset = int(args[0]), SOURCE_DATASET
    else:
        dataset, seed = args[0], int(args[1])
    if script == "base2new_train":
        return [_spec(env, "base2new", "train_base", dataset, seed, env.config("base2new", dataset), opts,
                      "base")]
    if script == "base2new_test":
        cfg = env.config("base2new", dataset)
        trained = _spec(env, "base2new", "train_base", dataset, seed, cfg, opts, "base")
        return [_evaluated(env, "base2new", "test_new", dataset, seed, cfg, opts, trained, "new")]
    if script == "fewshot":
        return [_spec(env, "fewshot", "", dataset, seed, env.config("fewshot", dataset), opts)]
    setting = "dg" if script == "dg_test" else "xd"
    cfg = env.config(setting, SOURCE_DATASET)
    source = _spec(env, "xd", "train", SOURCE_DATASET, seed, cfg, opts)
    if script == "xd_train":
        return [source]
    targets = DG_TARGETS if script == "dg_test" else [dataset]
    tests = [_evaluated(env, setting, "test", t, seed, cfg, opts, source) for t in targets]
    return [source] + tests if script == "dg_test" else tests


def setting_specs(setting: str, seed: int, dataset: Optional[str], env: ScriptEnv,
                  opts: Sequence[str] = ()) -> List[RunSpec]:
    """The runs of one job of ``setting``: base2new ``dataset`` (train, then test on new classes),
    fewshot ``dataset`` (``env.shots``), xd (the ImageNet source, then each target: ``dataset``
    or all ten) or dg (the source model, then the 4 targets)."""
    if setting == "base2new":
        return script_specs("base2new_train", [dataset, seed, *opts], env) + \
            script_specs("base2new_test", [dataset, seed, *opts], env)
    if setting == "fewshot":
        return script_specs("fewshot", [dataset, seed, env.shots, *opts], env)
    if setting == "xd":
        targets = [dataset] if dataset else list(setting_datasets("xd"))
        return script_specs("xd_train", [seed, *opts], env) + [
            s for t in targets for s in script_specs("xd_test", [t, seed, *opts], env)]
    if setting == "dg":
        return script_specs("dg_test", [seed, *opts], env)
    raise ConfigValueError(f"Unknown setting '{setting}'")


# ---------------------------------------------------------------- checks and state

def _names(folder: str, suffix: str = "") -> List[str]:
    path = osp.join(REPO_ROOT, folder)
    if not osp.isdir(path):
        return []
    return sorted(n[:len(n) - len(suffix)] if suffix else n for n in os.listdir(path)
                  if not n.startswith(".") and n.endswith(suffix))


def _did_you_mean(name: str, known: Sequence[str]) -> str:
    close = closest_key(name, known)
    return f" Did you mean {close}?" if close else ""


def check_names(spec: RunSpec) -> None:
    """Raise :class:`ScriptError` when the dataset config, the trainer's config folder or its
    config file does not exist, with the closest name and the choices."""
    if not osp.isfile(osp.join(REPO_ROOT, spec.dataset_config_file)):
        names = _names("configs/datasets", ".yaml")
        raise ScriptError(f"no dataset config {spec.dataset_config_file}.{_did_you_mean(spec.dataset, names)} "
                          f"Datasets: {' '.join(names)}")
    folder = osp.dirname(spec.config_file)
    if not osp.isdir(osp.join(REPO_ROOT, folder)):
        names = _names("configs/trainers")
        raise ScriptError(f"no trainer configs for TRAINER={spec.trainer} ({folder}).{_did_you_mean(spec.trainer, names)}"
                          f" Set TRAINER to one of: {' '.join(names)}")
    if not osp.isfile(osp.join(REPO_ROOT, spec.config_file)):
        names = _names(folder, ".yaml")
        raise ScriptError(f"no trainer config {spec.config_file}.{_did_you_mean(spec.cfg, names)} "
                          f"Set CFG to one of: {' '.join(names)}")


def spec_state(spec: RunSpec, check_identity: bool = True) -> RunResult:
    """What ``spec``'s folder holds: finished (with metrics), missing, running, crashed,
    interrupted, not-started, or :data:`OTHER_SETTINGS` (a finished run with another identity;
    ``reason`` lists the differences). ``check_identity=False`` reads the folder only."""
    run = read_run(spec.folder)
    if not (run.finished and check_identity):
        return run
    old, keys = recorded_identity(spec.folder)
    if old is None:
        return run
    diff = differences(old, spec.identity(), keys)
    return dataclasses.replace(run, status=OTHER_SETTINGS, reason="; ".join(diff)) if diff else run


def resolve_model(spec: RunSpec) -> RunSpec:
    """A test run with the epoch it loads (``load_epoch``, else the model's last checkpoint);
    raises :class:`ScriptError` when its model is not trained yet."""
    if spec.model is None:
        return spec
    model = read_run(spec.model.folder)
    if not model.finished:
        raise ScriptError(
            f"the model in {spec.model.folder} is {model.status}" + (f" ({model.reason})" if model.reason else "")
            + ": train it first (the matching *_train.sh script with the same TRAINER, CFG, SHOTS and seed)")
    if spec.load_epoch is not None:
        return spec
    epoch = run_folder.last_checkpoint_epoch(spec.model.folder)
    if epoch is None:
        raise ScriptError(f"no checkpoint (model.pth.tar-N) in {spec.model.folder}/*/")
    return dataclasses.replace(spec, load_epoch=epoch)


def train_py_line(spec: RunSpec, overwrite: bool = False) -> str:
    """The ``train.py`` command ``spec`` amounts to (run in the repository root)."""
    return f"python {TRAIN_PY} {shlex.join(spec.argv(overwrite))}"


def execute(spec: RunSpec, overwrite: bool = False, holder: str = "",
            train: Optional[Callable[..., None]] = None) -> RunResult:
    """Run ``spec`` in this process under its folder's lock: skip it when finished with the same
    identity, resume it from its last checkpoint, retry it after a crash, or start it; refuse it
    (exit status 2) when its folder holds a run with another identity. ``holder`` describes this
    process in the lock (default: its pid and command line). ``train(argv, lock=...)`` runs
    train.py's arguments in-process (default: :func:`clipfit.training.cli.main`). Returns the
    folder's final state."""
    cwd = os.getcwd()
    os.chdir(REPO_ROOT)  # relative DATA and OUT, like the config paths, are the repository's
    try:
        return _execute(spec, overwrite, holder, train)
    finally:
        os.chdir(cwd)


def _execute(spec: RunSpec, overwrite: bool, holder: str, train: Optional[Callable[..., None]]) -> RunResult:
    check_names(spec)
    spec = resolve_model(spec)
    folder = spec.folder
    try:
        lock = run_folder.acquire(folder, holder or run_folder.process_line(os.getpid()))
    except run_folder.RunFolderError as err:
        raise Busy(str(err)) from None
    try:
        if train is None:
            from clipfit.training.cli import main as train  # imports torch: after the checks and the lock
        if lock.note:
            print(lock.note, file=sys.stderr)
        if not read_run(folder).finished:
            print(run_folder.state_decision(folder).line(spec.what, folder))
            print(f"    {train_py_line(spec, overwrite)}", flush=True)
            run_folder.set_aside_log(folder)
        train(spec.argv(overwrite), lock=lock)
    finally:
        lock.release()
    result = read_run(folder)
    if not result.finished:
        raise ScriptError(f"train.py exited without a final result in {folder} (see {folder}/log.txt)")
    return result


# ---------------------------------------------------------------- the scripts' entry point

def _config_source(script: str, spec: RunSpec) -> str:
    """Why ``spec`` uses its config: the source of its row in the protocol table."""
    setting = "dg" if script == "dg_test" else spec.setting
    dataset = SOURCE_DATASET if setting in ("xd", "dg") else spec.dataset
    return default_rule(spec.trainer, setting, dataset, spec.shots).source


def main(argv: Optional[Sequence[str]] = None, environ: Mapping[str, str] = os.environ) -> int:
    """``SCRIPT ARGS...``: the runs of ``scripts/SCRIPT.sh`` (DRY_RUN=1: each run folder, then
    the config's source and the train.py command, indented)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SCRIPTS:
        print(f"usage: python -m clipfit.experiments.run {{{','.join(SCRIPTS)}}} ARGS...", file=sys.stderr)
        return 2
    script, args = argv[0], argv[1:]
    try:
        env = ScriptEnv.from_environ(environ)
        specs = script_specs(script, args, env)
        if environ.get("DRY_RUN") == "1":
            for spec in specs:
                print(spec.folder)
                if not env.cfg:
                    print(f"    config {spec.cfg}: {_config_source(script, spec)}")
                print(f"    {train_py_line(spec, env.overwrite)}")
            return 0
        holder = run_folder.process_line(os.getpid()) if "CLIPFIT_SCRIPT" not in environ else \
            f"pid {os.getpid()}: bash {environ['CLIPFIT_SCRIPT']} {shlex.join(args)}"
        for spec in specs:
            execute(spec, env.overwrite, holder)
    except ScriptError as err:
        sys.stdout.flush()
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
