"""The jobs of a sweep: the runs (:class:`RunSpec`) one dataset and seed makes, the script
commands they amount to, and where the job logs.
"""
from __future__ import annotations

import os
import os.path as osp
import shlex
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from clipfit.errors import ConfigValueError
from clipfit import REPO_ROOT
from clipfit.experiments.protocol import FEWSHOT_SHOTS, SETTINGS, SOURCE_DATASET, setting_datasets
from clipfit.experiments.results import last_progress
from clipfit.experiments.run import ScriptEnv, script_specs, spec_state
from clipfit.training.run_folder import FINISHED, lock_holder
from clipfit.training.run_spec import RunSpec

HEADER_PREFIX = "==> "  # the announcement lines of a run (clipfit.experiments.run)
DONE_PREFIXES = ("==> finished ", "==> skip ")


@dataclass
class Job:
    """One unit of a sweep: script commands run in order (``commands``, shown and used by SLURM
    tasks), the runs they make (``specs``, run in-process by the local sweep) and its log."""

    name: str
    commands: List[List[str]]
    specs: List[RunSpec] = field(default_factory=list)
    log: str = ""
    env: Dict[str, str] = field(default_factory=dict)  # assignments before each command (--methods)

    @property
    def shell(self) -> str:
        prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in self.env.items())
        return " && ".join(prefix + shlex.join(c) for c in self.commands)

    @property
    def run_dirs(self) -> List[str]:
        return [s.folder if osp.isabs(s.folder) else osp.join(REPO_ROOT, s.folder) for s in self.specs]

    def status(self) -> str:
        """done (every run finished with this identity), partial (some) or todo (none)."""
        finished = [spec_state(s).status == FINISHED for s in self.specs]
        if finished and all(finished):
            return "done"
        return "partial" if any(finished) else "todo"

    def holder(self) -> Optional[str]:
        """Who holds the lock of one of the job's run folders now (None: nobody)."""
        return next((h for h in map(lock_holder, self.run_dirs) if h), None)


def _script(name: str, *args) -> List[str]:
    return ["bash", osp.join("scripts", name), *map(str, args)]


def plan(setting: str, seeds: Sequence[int], datasets: Optional[Sequence[str]] = None,
         shots: Sequence[int] = FEWSHOT_SHOTS, opts: Sequence[str] = (),
         env: Optional[Dict[str, str]] = None) -> List[Job]:
    """The jobs of ``setting`` (seed-major, so a killed sweep leaves whole seeds done), with their
    runs, under the scripts' environment ``env`` (default: this process's)."""
    chosen = list(datasets) if datasets else list(setting_datasets(setting))
    environ = dict(os.environ if env is None else env)
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
            raise ConfigValueError(f"Unknown setting '{setting}'; choose one of {', '.join(SETTINGS)}")
    base = sweep_dir(setting, environ)
    script_env = ScriptEnv.from_environ(environ)
    for job in jobs:
        job.log = osp.join(base, "logs", f"{job.name}.log")
        specs = [s for c in job.commands
                 for s in script_specs(osp.basename(c[1])[:-len(".sh")], c[2:], script_env)]
        job.specs = list({s.folder: s for s in specs}.values())  # dg: the source model once
    return jobs


def sweep_dir(setting: str, env: Dict[str, str]) -> str:
    """Where a sweep keeps job logs and SLURM files: ``$OUT/sweeps/<setting>/<tag>``."""
    out = env.get("OUT") or "output"
    tag = env.get("TRAINER") or "CLIPFit"
    if env.get("CFG"):
        tag += f"_{env['CFG']}"
    if env.get("SHOTS", "16") != "16" and setting != "fewshot":
        tag += f"_shots{env['SHOTS']}"
    return osp.join(out if osp.isabs(out) else osp.join(REPO_ROOT, out), "sweeps", setting, tag)


def job_datasets(job: Job) -> List[str]:
    """The datasets (config names) a job's runs read."""
    return list(dict.fromkeys(s.dataset for s in job.specs))


def _opt(opts: Sequence[str], key: str) -> Optional[str]:
    pairs = dict(zip(opts[0::2], opts[1::2]))
    return pairs.get(key)


def _config_backbone(job: Job) -> Dict[str, str]:
    """``MODEL.BACKBONE`` of the trainer config a job's runs use, or {} without such a file."""
    import yaml

    for spec in job.specs:
        cfg_file = osp.join(REPO_ROOT, spec.config_file)
        if osp.isfile(cfg_file):
            with open(cfg_file) as f:
                backbone = ((yaml.safe_load(f) or {}).get("MODEL") or {}).get("BACKBONE") or {}
            return {k: str(v) for k, v in backbone.items() if v}
    return {}


def _missing_weights(job: Job, env: Dict[str, str], opts: Sequence[str]) -> str:
    """What is missing of the weights ``job`` loads ("" when they are there): the trailing opts
    first, then the job's trainer config, then the default ViT-B/16."""
    from clipfit.methods.clip_loader import cached_weights_path, download_url

    backbone = _config_backbone(job)
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


def job_progress(job: Job) -> str:
    """What a running job does now: the announcement of the run going on (not the line that
    closed the one before) and its training progress."""
    try:
        with open(job.log, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    headers = [i for i, ln in enumerate(lines) if ln.startswith(HEADER_PREFIX)]
    # the run going on: the last header that does not close a run (finished, skipped)
    current = [i for i in headers if not lines[i].startswith(DONE_PREFIXES)]
    last_header = max(current or headers, default=-1)
    step = lines[last_header][len(HEADER_PREFIX):] if last_header >= 0 else ""
    progress = last_progress(job.log)
    has_progress_after = any(ln.startswith("epoch [") for ln in lines[last_header + 1:])
    step = step.replace(REPO_ROOT + os.sep, "")
    return step + (f" [{progress}]" if progress and has_progress_after else "")
