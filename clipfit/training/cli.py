"""``train.py``'s command line: CoOp's flags, config layering, run set-up."""
from __future__ import annotations

import argparse
import glob
import importlib
import os
import os.path as osp
import pkgutil
import signal
import sys
import traceback
from typing import Callable, Dict, List, Optional, Tuple

from clipfit.fileio import write_text
from clipfit.training import run_folder, run_spec
from clipfit.training.config import closest_key, get_cfg, merge_from_file, merge_from_list
from clipfit.training.precheck import check_arguments, config_path as _config_path
from clipfit.training.run_header import print_run_start, tuned_line
from clipfit import REPO_ROOT
from clipfit.errors import ConfigValueError, UnknownNameError, UserError, check_runtime_imports

DEBUG_ENV = "CLIPFIT_DEBUG"  # 1: show the traceback of user errors too
WORKER_TRACEBACK = "Original Traceback (most recent call last)"  # torch's re-raise of a worker's error
# Settings a test run takes over from the config.yaml of the model it loads (--model-dir)
TAKEN_OVER = ("MODEL.BACKBONE.NAME", "MODEL.BACKBONE.PATH", "INPUT.SIZE", "DATASET.TEMPLATE")


def build_parser() -> argparse.ArgumentParser:
    """CoOp's ``train.py`` flags (same names and meaning), plus ``--deterministic``."""
    p = argparse.ArgumentParser(description="Train or evaluate a CLIP trainer (CoOp-compatible flags)")
    p.add_argument("--root", type=str, default="", help="path to dataset")
    p.add_argument("--output-dir", type=str, default="", help="output directory")
    p.add_argument("--resume", type=str, default="",
                   help="checkpoint directory (from which the training resumes)")
    p.add_argument("--seed", type=int, default=-1,
                   help="fixed seed when 0 or more (default -1: no fixed seed)")
    p.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    p.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    p.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    p.add_argument("--config-file", type=str, default="", help="path to config file")
    p.add_argument("--dataset-config-file", type=str, default="",
                   help="path to config file for dataset setup")
    p.add_argument("--trainer", type=str, default="", help="name of trainer")
    p.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    p.add_argument("--head", type=str, default="", help="name of head")
    p.add_argument("--eval-only", action="store_true", help="evaluation only")
    p.add_argument("--model-dir", type=str, default="",
                   help="load model from this directory for eval-only mode")
    p.add_argument("--load-epoch", type=int,
                   help="load model weights at this epoch for evaluation")
    p.add_argument("--no-train", action="store_true",
                   help="do not call trainer.train(); evaluate the model as built")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms and fixed seeds (sets DETERMINISTIC True)")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in --output-dir, deleting the checkpoints and results of "
                        "the run it holds (needed when its settings differ)")
    p.add_argument("--announce", metavar="WHAT", default="",
                   help="for scripts/*.sh: skip a finished run with the same settings, and "
                        "print '==> skip/finished WHAT ...' lines")
    p.add_argument("opts", default=None, nargs=argparse.REMAINDER,
                   help="modify config options using the command-line")
    return p


def _reset_cfg(cfg, args: argparse.Namespace) -> None:
    if args.root:
        cfg.DATASET.ROOT = args.root
    if args.output_dir:
        cfg.OUTPUT_DIR = args.output_dir
    if args.resume:
        cfg.RESUME = args.resume
    if args.seed >= 0:  # CoOp tests `if args.seed`, which silently ignores --seed 0
        cfg.SEED = args.seed
    if args.source_domains:
        cfg.DATASET.SOURCE_DOMAINS = args.source_domains
    if args.target_domains:
        cfg.DATASET.TARGET_DOMAINS = args.target_domains
    if args.transforms:
        cfg.INPUT.TRANSFORMS = args.transforms
    if args.trainer:
        cfg.TRAINER.NAME = args.trainer
    if args.backbone:
        cfg.MODEL.BACKBONE.NAME = args.backbone
    if args.head:
        cfg.MODEL.HEAD.NAME = args.head
    if args.deterministic:
        cfg.DETERMINISTIC = True


def _taken_over(cfg, model_dir: str, opts: List[str]) -> List[str]:
    """``KEY VALUE`` opts of the trained run's settings (its config.yaml in ``model_dir``) that
    differ from ``cfg``: weights, input size, template, TRAINER.* (precision, method keys);
    keys given in ``opts`` are left out (the command line wins)."""
    path = osp.join(model_dir, "config.yaml")
    if not osp.isfile(path):
        return []
    with open(path) as f:
        trained = run_spec.flat_settings(cfg.load_cfg(f))
    now, given = run_spec.flat_settings(cfg), set(opts[0::2])
    keys = [k for k in trained if (k in TAKEN_OVER or (k.startswith("TRAINER.") and k != "TRAINER.NAME"))
            and k in now and k not in given and trained[k] != now[k]]
    return [x for k in keys for x in (k, repr(trained[k]))]


def cpu_count() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def setup_cfg(args: argparse.Namespace, notes: Optional[List[str]] = None):
    """Defaults, then the dataset config, the trainer config, the flags, then opts.

    An evaluation with ``--model-dir`` starts from the trained run's settings (see
    :func:`_taken_over`); data-loader workers are capped at the CPUs this process may use
    unless ``DATALOADER.NUM_WORKERS`` is on the command line. ``notes`` receives what was
    changed, for the log.
    """
    notes = [] if notes is None else notes
    opts = list(args.opts or [])
    cfg = get_cfg()
    for given, flag in ((args.dataset_config_file, "--dataset-config-file"), (args.config_file, "--config-file")):
        if given:
            path = _config_path(given, flag)
            if path != given:
                notes.append(f"{flag} {given}: read from {osp.relpath(path)} (this repository keeps that "
                             "folder's configs there)")
            merge_from_file(cfg, path, notes, trainer=args.trainer)
    _reset_cfg(cfg, args)
    if args.eval_only and args.model_dir:
        inherited = _taken_over(cfg, args.model_dir, opts)
        if inherited:
            merge_from_list(cfg, inherited)
            pairs = ", ".join(f"{k} {v}" for k, v in zip(inherited[0::2], inherited[1::2]))
            notes.append(f"Settings taken over from the trained run ({args.model_dir}/config.yaml;"
                         f" options on the command line override them): {pairs}")
    merge_from_list(cfg, opts, notes)
    cpus = cpu_count()
    if "DATALOADER.NUM_WORKERS" not in opts[0::2] and cfg.DATALOADER.NUM_WORKERS > cpus:
        notes.append(f"DATALOADER.NUM_WORKERS {cfg.DATALOADER.NUM_WORKERS} capped at {cpus}, the "
                     "CPUs this process may use (set DATALOADER.NUM_WORKERS on the command line "
                     "to choose)")
        cfg.DATALOADER.NUM_WORKERS = cpus
    if cfg.DETERMINISTIC and cfg.SEED < 0:
        notes.append("Deterministic mode needs a seed; none given, using SEED 1")
        cfg.SEED = 1
    cfg.freeze()
    return cfg


def identity_of(cfg, args: argparse.Namespace) -> Tuple[Dict[str, object], Optional[dict]]:
    """This run's identity (:func:`run_spec.identity`) and the base weights' fingerprint (its
    SHA256 reused from the folder's record when the file's size and mtime match)."""
    evaluates = args.eval_only or args.no_train
    previous = (run_folder.read_record(cfg.OUTPUT_DIR) or {}).get("weights") if cfg.OUTPUT_DIR else None
    weights = run_spec.weights_fingerprint(run_spec.weights_file(cfg), previous)
    ident = run_spec.identity(cfg, (args.model_dir, args.load_epoch) if evaluates else None, weights)
    return ident, weights


def import_plugins(root: str = REPO_ROOT) -> None:
    """Import every module of ``datasets/`` and ``trainers/`` so that they register."""
    if root not in sys.path:
        sys.path.insert(0, root)
    for package in ("datasets", "trainers"):
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")


def check_registered(registry, name: str, key: str) -> None:
    """A :class:`UnknownNameError` when ``name`` is not in ``registry``, on either engine (Dassl's
    registry would raise a bare ``KeyError``: a traceback)."""
    if not name:
        raise ConfigValueError(f"{key} is empty: set it in a config file or on the command line.")
    known = sorted(registry.registered_names())
    if name not in known:
        close = closest_key(name, known)
        hint = f" Did you mean {close}?" if close else ""
        raise UnknownNameError(f"{key} is {name!r}, which is not registered.{hint} Known names: {', '.join(known)}.")


def set_deterministic() -> None:
    """Deterministic kernels everywhere; errors on ops that have no deterministic version."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)


def save_config(cfg) -> str:
    """Write the full config of a run to ``<OUTPUT_DIR>/config.yaml`` (atomically)."""
    return write_text(osp.join(cfg.OUTPUT_DIR, "config.yaml"), cfg.dump())


def user_error_message(err: BaseException) -> Optional[str]:
    """The message of a :class:`clipfit.errors.UserError` (also one a data-loader worker raised),
    None for any other exception: that is a bug, shown with its traceback."""
    if not isinstance(err, UserError):
        return None
    text = str(err)
    if WORKER_TRACEBACK in text:  # re-raised by the loader: the worker's message follows its last frame
        lines = text.rstrip().splitlines()
        frames = [i for i, line in enumerate(lines) if line.lstrip().startswith('File "')]
        if frames and frames[-1] + 2 < len(lines):
            text = "\n".join(lines[frames[-1] + 2:]).split(": ", 1)[-1]
    return text


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run_user_command(command: Callable[[], Optional[int]]) -> int:
    """Run ``command``; a :class:`UserError` prints its message alone, last, on stderr and gives
    exit status 2 (its traceback goes to the log file, or to stderr with CLIPFIT_DEBUG=1). Any
    other exception propagates with its traceback (exit status 1)."""
    try:
        return command() or 0
    except Exception as err:
        message = user_error_message(err)
        if message is None or _debug():
            raise
        log = getattr(sys.stdout, "file", None)  # the tee to log.txt, once the logger is set up
        if log is not None and not log.closed:
            log.write("".join(traceback.format_exception(err)))
            log.write(f"ERROR: {message}\n")
            log.flush()
        sys.stdout.flush()
        print(f"ERROR: {message}", file=sys.stderr)
        return 2


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with the line that says where the run stopped and how to resume it."""


def _interrupted_line(cfg, evaluating: bool) -> str:
    if evaluating or not cfg.OUTPUT_DIR:
        return "Interrupted: nothing was saved; run the same command again."
    epoch = run_folder.last_checkpoint_epoch(cfg.OUTPUT_DIR)
    if epoch is None:
        return ("Interrupted before the first checkpoint (TRAIN.CHECKPOINT_FREQ): the same "
                "command starts again from epoch 1.")
    path = next(iter(glob.glob(osp.join(cfg.OUTPUT_DIR, "*", f"model.pth.tar-{epoch}"))),
                cfg.OUTPUT_DIR)
    return (f"Interrupted. Last checkpoint: {path} (epoch {epoch}); run the same command again "
            "to resume from it.")


def main(argv: Optional[List[str]] = None, lock: Optional[run_folder.FolderLock] = None) -> None:
    """``train.py``: user errors end with their message and exit status 2, bugs with their
    traceback and exit status 1, Ctrl-C with one line saying where the last checkpoint is.
    ``lock``: the lock on ``--output-dir`` that the caller (a script or sweep worker running the
    run in-process) holds already."""
    stdout = sys.stdout
    try:
        code = run_user_command(lambda: _main(argv, lock))
    except Interrupted as stop:
        sys.stdout.flush()
        print(stop.args[0], file=sys.stderr)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the caller (a script) sees Ctrl-C too
        os.kill(os.getpid(), signal.SIGINT)
        raise
    finally:
        _detach_log(stdout)
    if code:
        sys.exit(code)


def _detach_log(stdout) -> None:
    """Stop teeing stdout to the run's ``log.txt`` (a run in-process: what follows is not its)."""
    tee = sys.stdout
    if tee is stdout:
        return
    tee.flush()
    if getattr(tee, "file", None) is not None:
        tee.file.close()
    tee.console = open(os.devnull, "w")  # Dassl's Logger closes its console when collected
    sys.stdout = stdout


def _main(argv: Optional[List[str]], held: Optional[run_folder.FolderLock]) -> None:
    args = build_parser().parse_args(argv)
    check_arguments(args)  # before torch is imported: a typo is answered at once
    check_runtime_imports()  # a torch, torchvision or openai-clip that fails to import: an install problem
    import_plugins()
    lock = held
    if lock is None and args.output_dir:
        lock = run_folder.acquire(args.output_dir, run_folder.process_line(os.getpid()))
    try:
        _run(args, [lock.note] if lock is not None and lock.note else [])
    finally:
        if lock is not None and held is None:
            lock.release()


def _run(args: argparse.Namespace, notes: List[str]) -> None:
    from clipfit import engine
    from clipfit.experiments.results import read_run

    cfg = setup_cfg(args, notes)
    evaluating = args.eval_only or args.no_train
    folder = cfg.OUTPUT_DIR
    if folder:
        settings, weights = identity_of(cfg, args)
        run = read_run(folder)
        decision = run_spec.decide(folder, run_folder.EVAL if evaluating else run_folder.TRAIN,
                                     settings, args.overwrite, run.accuracy if run.finished else None)
        if decision.action == "skip" and args.announce:
            print(decision.line(args.announce, folder))
            return
        if args.overwrite:
            run_folder.clear(folder)
        # the scripts' lock step has announced how an unfinished run goes on ("==> resume ...")
        if decision.detail and decision.action != "skip" and (args.overwrite or not args.announce):
            notes.append(f"{folder}: {decision.detail}")
        run_folder.start_record(folder, run_folder.EVAL if evaluating else run_folder.TRAIN,
                                settings, weights, " ".join(sys.argv))
    try:
        _train_or_test(engine, cfg, args, notes)
    except KeyboardInterrupt:
        if folder:
            run_folder.update_record(folder, state=run_folder.INTERRUPTED)
        raise Interrupted(_interrupted_line(cfg, evaluating)) from None
    except BaseException as err:
        if folder:
            error = user_error_message(err) if isinstance(err, Exception) else None
            lines = (error or "".join(traceback.format_exception_only(err))).strip().splitlines()
            run_folder.update_record(folder, state=run_folder.CRASHED,
                                     error=lines[0] if lines else type(err).__name__)
        raise
    if folder:
        run_folder.update_record(folder, state=run_folder.FINISHED)
        if args.announce:
            run = read_run(folder)
            print(f"==> finished {args.announce}: "
                  + (f"accuracy {run.accuracy:.2f}%" if run.finished else f"no final result ({run.status})"))


def _train_or_test(engine, cfg, args: argparse.Namespace, notes: List[str]) -> None:
    import torch  # here, so that the identity of a run (run_spec) is read without torch

    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        engine.set_random_seed(cfg.SEED)
    engine.setup_logger(cfg.OUTPUT_DIR)
    if cfg.DETERMINISTIC:
        set_deterministic()
    elif torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True

    try:
        trainer_class = engine.TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    except KeyError:  # check_registered below says so, with the known names
        trainer_class = None
    print_run_start(args, cfg, notes, engine.ENGINE, engine.collect_env_info,
                    tuned_line(cfg, args, trainer_class))
    save_config(cfg)

    check_registered(engine.TRAINER_REGISTRY, cfg.TRAINER.NAME, "TRAINER.NAME (--trainer)")
    check_registered(engine.DATASET_REGISTRY, cfg.DATASET.NAME, "DATASET.NAME (--dataset-config-file)")
    trainer = engine.build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return
    if args.no_train:
        trainer.test()
        return
    trainer.train()
