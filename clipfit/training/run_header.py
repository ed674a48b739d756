"""What ``train.py`` prints before the trainer is built: a short header on the terminal, and the
full dump in CoOp's format (arguments, config, environment) in ``log.txt`` only.

The terminal says what runs: trainer, dataset, config files, output folder, device and engine,
and which options of the method are set. ``log.txt`` keeps every line a CoOp or Dassl log has
(``** Arguments **``, ``** Config **``, ``** System info **``), so tools that read those logs
read ours.
"""
from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Callable, List, Optional, TextIO, Tuple

WIDTH = 100  # terminal columns the header fits in
LABEL = 10  # width of the header's labels


def coop_dump(args: argparse.Namespace, cfg) -> str:
    """CoOp's ``print_args``: every argument, then the full config."""
    lines = ["***************", "** Arguments **", "***************"]
    lines += [f"{key}: {args.__dict__[key]}" for key in sorted(args.__dict__)]
    lines += ["************", "** Config **", "************", str(cfg)]
    return "\n".join(lines) + "\n"


def option_group(cfg, trainer_class: Optional[type]) -> Optional[str]:
    """The config group of the trainer's options: ``TRAINER.<NAME>`` when there is one (so
    ``ClipFit`` shows ``TRAINER.CLIPFIT``), else the group of its ``prec_key`` (KgCoOp:
    ``TRAINER.COOP``)."""
    own = str(cfg.TRAINER.NAME).upper()
    if trainer_class is not None and isinstance(cfg.TRAINER.get(own), dict):
        return f"TRAINER.{own}"
    prec_key = getattr(trainer_class, "prec_key", None)
    return prec_key.rsplit(".", 1)[0] if prec_key else None


def tuned_line(cfg, args: argparse.Namespace, trainer_class: Optional[type]) -> str:
    """What is tuned: nothing for an evaluation; else the trainer's options that are set (empty
    and false ones left out; the counts per parameter group follow once the model is built)."""
    if args.eval_only:
        epoch = "the best" if args.load_epoch is None else f"epoch {args.load_epoch}"
        return f"nothing: evaluates {args.model_dir or '(no --model-dir)'}, {epoch} checkpoint"
    if args.no_train:
        return "nothing: --no-train tests the model as built"
    group = option_group(cfg, trainer_class)
    if group is None:
        return "see 'Tuned parameters' below"
    node = cfg
    for part in group.split("."):
        node = node[part]
    options = ", ".join(f"{k} {node[k]}" for k in sorted(node)
                        if k != "PREC" and node[k] not in ("", [], (), False, None))
    extra = ", TRAINER.UPDATE_IMAGE_LN True (+UL)" if cfg.TRAINER.get("UPDATE_IMAGE_LN") else ""
    return f"{group}: {options}{extra}"


def header_lines(args: argparse.Namespace, cfg, device: str, engine: str, tuned: str) -> List[str]:
    """The terminal header, each line at most :data:`WIDTH` columns (long values wrap)."""
    data = cfg.DATASET
    shots = f", {data.NUM_SHOTS} shots" if data.NUM_SHOTS > 0 else ""
    classes = f", {data.SUBSAMPLE_CLASSES} classes" if data.SUBSAMPLE_CLASSES != "all" else ""
    seed = f", seed {cfg.SEED}" if cfg.SEED >= 0 else ""
    opts = list(args.opts or [])
    rows: List[Tuple[str, str]] = [
        ("dataset", f"{data.NAME}{classes}{shots}{seed} (root {data.ROOT or '(none)'})"),
        ("config", ", ".join(p for p in (args.config_file, args.dataset_config_file) if p) or "(defaults)"),
        ("opts", " ".join(opts)) if opts else ("", ""),
        ("output", f"{cfg.OUTPUT_DIR}; its log.txt holds the full arguments, config and environment"
         if cfg.OUTPUT_DIR else "(none: --output-dir not given)"),
        ("device", f"{device}, {engine} engine"),
        ("tuned", tuned),
    ]
    lines = [f"{cfg.TRAINER.NAME}: {'evaluation' if args.eval_only or args.no_train else 'training'}"]
    for label, value in rows:
        if label:
            lines += textwrap.wrap(value, WIDTH, initial_indent=f"  {label:<{LABEL - 2}}",
                                   subsequent_indent=" " * LABEL, break_on_hyphens=False,
                                   break_long_words=False) or [f"  {label}"]
    return lines


def device_name(cfg) -> str:
    """The device the trainer will use: Dassl's rule (CUDA when available and ``USE_CUDA``)."""
    import torch

    if cfg.USE_CUDA and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return "cpu"


def print_run_start(args: argparse.Namespace, cfg, notes: List[str], engine_name: str,
                    collect_env: Callable[[], str], tuned: str,
                    stdout: Optional[TextIO] = None) -> None:
    """Header and notes on the terminal; the CoOp dump, the notes, the engine and the
    environment in the log file. ``stdout`` is the logger's tee (``sys.stdout`` after
    ``setup_logger``: Dassl's and ours both have ``console`` and ``file``)."""
    stdout = stdout or sys.stdout
    console, log = getattr(stdout, "console", stdout), getattr(stdout, "file", None)
    header = header_lines(args, cfg, device_name(cfg), engine_name, tuned)
    console.write("\n".join(header + notes) + "\n")
    if log is None:
        return
    log.write(coop_dump(args, cfg))
    log.write("".join(f"{note}\n" for note in notes))
    log.write(f"Engine: {engine_name}\nCollecting env info ...\n** System info **\n{collect_env()}\n\n")
    log.flush()
