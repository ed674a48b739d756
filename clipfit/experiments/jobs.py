"""The jobs of a sweep: which script commands one dataset and seed runs, and where they write.

The experiment scripts define where each run writes: :func:`resolve` asks them (``DRY_RUN=1``).
"""
from __future__ import annotations

import os
import os.path as osp
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from clipfit import REPO_ROOT
from clipfit.experiments.protocol import (DG_TARGETS, FEWSHOT_SHOTS, SETTINGS, SOURCE_DATASET,
                                          setting_datasets)
from clipfit.experiments.results import FINISHED, last_progress, run_status

HEADER_PREFIX = "==> "  # the scripts' announcement lines


@dataclass
class Job:
    """One unit of a sweep: shell commands run in order, and the run folders they fill."""

    name: str
    commands: List[List[str]]
    run_dirs: List[str] = field(default_factory=list)
    log: str = ""
    lock: str = ""

    @property
    def shell(self) -> str:
        return " && ".join(shlex.join(c) for c in self.commands)

    def status(self) -> str:
        """done (every run finished), partial (some) or todo (none)."""
        finished = [run_status(d) == FINISHED for d in self.run_dirs]
        if finished and all(finished):
            return "done"
        return "partial" if any(finished) else "todo"


def _script(name: str, *args) -> List[str]:
    return ["bash", osp.join("scripts", name), *map(str, args)]


def plan(setting: str, seeds: Sequence[int], datasets: Optional[Sequence[str]] = None,
         shots: Sequence[int] = FEWSHOT_SHOTS, opts: Sequence[str] = ()) -> List[Job]:
    """The jobs of ``setting`` (seed-major, so a killed sweep leaves whole seeds done)."""
    chosen = list(datasets) if datasets else list(setting_datasets(setting))
    jobs: List[Job] = []
    for seed in seeds:
        if setting == "base2new":
            jobs += [Job(f"{d}-seed{seed}", [_script("base2new_train.sh", d, seed, *opts),
                                             _script("base2new_test.sh", d, seed, *opts)])
                     for d in chosen]
        elif setting == "fewshot":
            jobs += [Job(f"{d}-{k}shot-seed{seed}", [_script("fewshot.sh", d, seed, k, *opts)])
                     for k in shots for d in chosen]
        elif setting == "xd":
            jobs.append(Job(f"{SOURCE_DATASET}-seed{seed}",
                            [_script("xd_train.sh", seed, *opts)]
                            + [_script("xd_test.sh", d, seed, *opts) for d in chosen]))
        elif setting == "dg":
            jobs.append(Job(f"{SOURCE_DATASET}-seed{seed}", [_script("dg_test.sh", seed, *opts)]))
        else:
            raise ValueError(f"Unknown setting '{setting}'; choose one of {', '.join(SETTINGS)}")
    return jobs


def sweep_dir(setting: str, env: Dict[str, str]) -> str:
    """Where a sweep keeps job logs, locks and SLURM files: ``$OUT/sweeps/<setting>/<tag>``."""
    out = env.get("OUT") or "output"
    tag = env.get("TRAINER") or "CLIPFit"
    if env.get("CFG"):
        tag += f"_{env['CFG']}"
    if env.get("SHOTS", "16") != "16" and setting != "fewshot":
        tag += f"_shots{env['SHOTS']}"
    return osp.join(out if osp.isabs(out) else osp.join(REPO_ROOT, out), "sweeps", setting, tag)


def resolve(jobs: Sequence[Job], setting: str, env: Dict[str, str]) -> None:
    """Fill each job's run folders (asking its scripts with ``DRY_RUN=1``), log and lock."""
    base = sweep_dir(setting, env)
    dry_env = {**env, "DRY_RUN": "1"}
    for job in jobs:
        job.run_dirs = []
        for command in job.commands:
            proc = subprocess.run(command, cwd=REPO_ROOT, env=dry_env, capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"{shlex.join(command)} failed in DRY_RUN mode:\n"
                                   f"{proc.stderr.strip() or proc.stdout.strip()}")
            job.run_dirs += [p if osp.isabs(p) else osp.join(REPO_ROOT, p)
                             for p in proc.stdout.split() if p]
        job.log = osp.join(base, "logs", f"{job.name}.log")
        job.lock = osp.join(base, "locks", f"{job.name}.lock")


def job_datasets(job: Job) -> List[str]:
    """The datasets (config names) a job's scripts read."""
    names: List[str] = []
    for command in job.commands:
        script = osp.basename(command[1])
        if script == "xd_train.sh":
            names.append(SOURCE_DATASET)
        elif script == "dg_test.sh":
            names += [SOURCE_DATASET, *DG_TARGETS]
        else:
            names.append(command[2])
    return list(dict.fromkeys(names))


def _opt(opts: Sequence[str], key: str) -> Optional[str]:
    pairs = dict(zip(opts[0::2], opts[1::2]))
    return pairs.get(key)


def _config_backbone(job: Job, env: Dict[str, str]) -> Dict[str, str]:
    """``MODEL.BACKBONE`` of the trainer config a job's runs use (their folders name it:
    ``.../<TRAINER>/<cfg>/seed<N>``), or {} when there is no such file."""
    import yaml

    trainer = env.get("TRAINER") or "CLIPFit"
    for run_dir in job.run_dirs:
        cfg_file = osp.join(REPO_ROOT, "configs", "trainers", trainer,
                            f"{osp.basename(osp.dirname(run_dir))}.yaml")
        if osp.isfile(cfg_file):
            with open(cfg_file) as f:
                backbone = ((yaml.safe_load(f) or {}).get("MODEL") or {}).get("BACKBONE") or {}
            return {k: str(v) for k, v in backbone.items() if v}
    return {}


def _missing_weights(job: Job, env: Dict[str, str], opts: Sequence[str]) -> str:
    """What is missing of the weights ``job`` loads ("" when they are there): the trailing opts
    first, then the job's trainer config, then the default ViT-B/16."""
    from clipfit.methods.clip_loader import cached_weights_path, download_url

    backbone = _config_backbone(job, env)
    path = _opt(opts, "MODEL.BACKBONE.PATH") or backbone.get("PATH", "")
    if path:
        full = osp.expanduser(path if osp.isabs(path) else osp.join(REPO_ROOT, path))
        return "" if osp.isfile(full) else f"MODEL.BACKBONE.PATH {path}: no such file ({full})"
    name = _opt(opts, "MODEL.BACKBONE.NAME") or backbone.get("NAME") or "ViT-B/16"
    try:
        target = cached_weights_path(name)
    except ValueError:  # not an OpenAI name (e.g. the shipped toy CLIP): the loader checks it
        return ""
    if osp.isfile(target):
        return ""
    return (f"CLIP weights {name}: {target} not found: download {download_url(name)} to it "
            "(README, \"CLIP weights offline\"), or pass -- MODEL.BACKBONE.PATH FILE")


def missing_inputs(jobs: Sequence[Job], env: Dict[str, str], opts: Sequence[str]) -> Dict[str, str]:
    """What the jobs need and is not there: ``{dataset or "weights": what is missing and how to
    get it}``. Dataset folders are looked for under ``$DATA``; the weights as each job's
    trailing opts and trainer config name them (:func:`_missing_weights`)."""
    from clipfit.data.doctor import import_loaders, resolve_name
    from clipfit.data.splits import DOCS
    from clipfit.engine import DATASET_REGISTRY

    import_loaders()
    data = env.get("DATA") or "data"
    root = data if osp.isabs(data) else osp.join(REPO_ROOT, data)
    missing: Dict[str, str] = {}
    for name in dict.fromkeys(d for job in jobs for d in job_datasets(job)):
        cls = DATASET_REGISTRY.get(resolve_name(name))
        folder = osp.join(root, cls.dataset_dir)
        if not osp.isdir(folder):
            missing[name] = (f"{folder} not found: prepare it as {DOCS}, section "
                             f"\"{cls.doc_section}\", explains")
    for job in jobs:
        problem = _missing_weights(job, env, opts)
        if problem:
            missing["weights"] = problem
            break
    return missing


def display_path(path: str) -> str:
    rel = osp.relpath(path, REPO_ROOT)
    return path if rel.startswith("..") else rel


def task_command(job: Job) -> List[str]:
    """The command that runs ``job`` under its lock, appending to its log."""
    return [sys.executable, "-m", "clipfit.experiments.sweep", "task", "--lock", job.lock, "--log", job.log,
            "--", "bash", "-c", job.shell]


def job_progress(job: Job) -> str:
    """What a running job does now: its last script announcement and training progress."""
    try:
        with open(job.log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    step = next((ln[len(HEADER_PREFIX):] for ln in reversed(lines)
                 if ln.startswith(HEADER_PREFIX)), "")
    progress = last_progress(job.log)
    last_header = max((i for i, ln in enumerate(lines) if ln.startswith(HEADER_PREFIX)),
                      default=-1)
    has_progress_after = any(ln.startswith("epoch [") for ln in lines[last_header + 1:])
    step = step.replace(REPO_ROOT + os.sep, "")
    return step + (f" [{progress}]" if progress and has_progress_after else "")
