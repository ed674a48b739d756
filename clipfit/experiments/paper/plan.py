"""The paper's runs as tasks: what ``paper run`` starts, ``status`` follows and ``report`` reads.

A :class:`Selection` (settings, trainers, datasets, seeds, shots; each defaults to the paper's
full set) gives :class:`Task` s. A task is the runs (:class:`RunSpec`, from the run model) that
must run in order in one process: base2new trains on the base classes then tests the new ones;
fewshot is one run; cross-dataset and distribution shift share one ImageNet source model per
trainer and seed, so one task trains it and then tests every target of both settings. Every run
has the protocol's config for its trainer, setting, dataset and shots.

Tasks travel to SLURM array tasks as a JSON file (:func:`write_tasks` / :func:`read_tasks`,
checked when read), never as shell lines.
"""
from __future__ import annotations

import dataclasses
import datetime
import os.path as osp
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from clipfit import REPO_ROOT
from clipfit.experiments import paper
from clipfit.experiments.protocol import (DATASETS, DG_TARGETS, FEWSHOT_SHOTS, SEEDS, SETTINGS,
                                          XD_TARGETS)
from clipfit.experiments.run import ScriptEnv, setting_specs
from clipfit.fileio import FileContentError, read_json, write_json
from clipfit.training.run_spec import RunSpec

TASKS_FORMAT = "clipfit-paper-tasks/1"
PAPER_SHOTS = 16  # base-to-new (Table 1), cross-dataset and distribution shift
# The trainers of each setting's tables in the paper (registry names)
TRAINER_NAMES = {"Tip-Adapter": "TipAdapter"}
TRANSFER = ("xd", "dg")  # settings that test the ImageNet source model


def paper_trainers(setting: str, shots: int) -> List[str]:
    """The methods of the paper's tables of ``setting`` at ``shots``, as trainer names, in the
    paper's order (none when the paper has no such table)."""
    names: List[str] = []
    for stem in paper.TABLES:
        table = paper.load_table(stem)
        if table["setting"] == setting and shots in table["shots"]:
            names += [TRAINER_NAMES.get(m, m) for m in table["methods"] if TRAINER_NAMES.get(m, m) not in names]
    return names


def setting_targets(setting: str) -> Tuple[str, ...]:
    """The datasets a setting reports on (base2new and fewshot: the 11; xd and dg: the targets)."""
    return {"base2new": DATASETS, "fewshot": DATASETS, "xd": XD_TARGETS, "dg": DG_TARGETS}[setting]


@dataclass(frozen=True)
class Selection:
    """Which part of the paper to run. Empty fields mean the paper's full set."""

    settings: Tuple[str, ...] = SETTINGS
    trainers: Tuple[str, ...] = ()  # () : each setting's paper methods
    datasets: Tuple[str, ...] = ()  # () : each setting's datasets
    seeds: Tuple[int, ...] = SEEDS
    shots: Tuple[int, ...] = ()  # () : fewshot 1 2 4 8 16, the others 16
    data: str = "./data"
    out: str = "output"
    opts: Tuple[str, ...] = ()

    def trainers_of(self, setting: str, shots: int) -> List[str]:
        return list(self.trainers) if self.trainers else paper_trainers(setting, shots)

    def datasets_of(self, setting: str) -> List[str]:
        """The chosen datasets of ``setting``; for xd and dg, the chosen ones among its targets."""
        known = setting_targets(setting)
        if not self.datasets:
            return list(known)
        if setting == "dg":
            return [d for d in self.datasets if d in known]
        if setting == "xd":  # the source is not a target; data the paper lacks can be one
            return [d for d in self.datasets if d in known or d not in DATASETS + DG_TARGETS]
        return list(self.datasets)

    def shots_of(self, setting: str) -> List[int]:
        if self.shots:
            return list(self.shots)
        return list(FEWSHOT_SHOTS) if setting == "fewshot" else [PAPER_SHOTS]


@dataclass
class Task:
    """Runs that go in order in one process, and the log they append to."""

    name: str
    specs: List[RunSpec]
    log: str

    @property
    def folders(self) -> List[str]:
        return [absolute(s.folder) for s in self.specs]


def absolute(path: str) -> str:
    """A run-model path as the runs see it (relative ones are the repository's)."""
    return path if osp.isabs(path) else osp.join(REPO_ROOT, path)


def paper_dir(selection: Selection) -> str:
    """Where the runner keeps its task logs, task files and records: ``<out>/paper``."""
    return osp.join(absolute(selection.out), "paper")


def _env(selection: Selection, trainer: str, shots: int) -> ScriptEnv:
    return ScriptEnv(trainer=trainer, shots=shots, data=selection.data, out=selection.out)


def plan(selection: Selection) -> List[Task]:
    """The tasks of ``selection``, seed-major (a stopped campaign leaves whole seeds done)."""
    for setting in selection.settings:
        if setting not in SETTINGS:
            raise ValueError(f"Unknown setting '{setting}'; choose from {', '.join(SETTINGS)}")
    logs = osp.join(paper_dir(selection), "logs")
    tasks: Dict[str, Task] = {}

    def add(name: str, specs: Sequence[RunSpec]) -> None:
        task = tasks.setdefault(name, Task(name, [], osp.join(logs, f"{name}.log")))
        known = {s.folder for s in task.specs}
        task.specs += [s for s in specs if s.folder not in known]

    opts = list(selection.opts)
    for seed in selection.seeds:
        for setting in selection.settings:
            for shots in selection.shots_of(setting):
                for trainer in selection.trainers_of(setting, shots):
                    env = _env(selection, trainer, shots)
                    if setting in TRANSFER:  # one task per source model: it, then its targets
                        for target in selection.datasets_of(setting):
                            specs = setting_specs("xd", seed, target, env, opts) if setting == "xd" else [
                                s for s in setting_specs("dg", seed, None, env, opts)
                                if s.part == "train" or s.dataset == target]
                            add(f"transfer-{trainer}-{shots}shot-seed{seed}", specs)
                        continue
                    for dataset in selection.datasets_of(setting):
                        add(f"{setting}-{trainer}-{dataset}-{shots}shot-seed{seed}",
                            setting_specs(setting, seed, dataset, env, opts))
    return list(tasks.values())


# ---------------------------------------------------------------- the tasks file

def spec_to_dict(spec: RunSpec) -> dict:
    """A :class:`RunSpec` as JSON data (``model``: the trained run's, nested)."""
    data = dataclasses.asdict(spec)
    data["model"] = spec_to_dict(spec.model) if spec.model is not None else None
    data["opts"] = list(spec.opts)
    return data


def spec_from_dict(data: dict) -> RunSpec:
    """The :class:`RunSpec` of :func:`spec_to_dict`'s data; ``ValueError`` on anything else."""
    fields = {f.name for f in dataclasses.fields(RunSpec)}
    if not isinstance(data, dict) or set(data) != fields:
        raise ValueError(f"a run must have exactly the fields {sorted(fields)}")
    model = spec_from_dict(data["model"]) if data["model"] is not None else None
    types = {"setting": str, "part": str, "trainer": str, "cfg": str, "dataset": str, "seed": int,
             "shots": int, "subsample": str, "data": str, "out": str, "eval_only": bool, "ckpt_freq": int}
    for key, kind in types.items():
        if not isinstance(data[key], kind):
            raise ValueError(f"{key} must be a {kind.__name__}, not {data[key]!r}")
    if not (isinstance(data["opts"], list) and all(isinstance(o, str) for o in data["opts"])):
        raise ValueError(f"opts must be a list of strings, not {data['opts']!r}")
    return RunSpec(**{**data, "model": model, "opts": tuple(data["opts"])})


def write_tasks(path: str, tasks: Sequence[Task]) -> None:
    """The tasks file of a SLURM array: task ``i`` is array index ``i``."""
    write_json(path, {"format": TASKS_FORMAT, "created": datetime.datetime.now().isoformat(timespec="seconds"),
                      "tasks": [{"name": t.name, "log": t.log, "specs": [spec_to_dict(s) for s in t.specs]}
                                for t in tasks]}, indent=1)


def read_tasks(path: str) -> List[Task]:
    """The tasks of a tasks file, checked (``FileContentError`` naming the file when it is not
    one of ours or is damaged)."""
    data = read_json(path, "Paper tasks file")
    if not isinstance(data, dict) or data.get("format") != TASKS_FORMAT or not isinstance(data.get("tasks"), list):
        raise FileContentError(f"{path} is not a paper tasks file (format {TASKS_FORMAT}); "
                               "submit again (python -m clipfit.experiments.paper run --slurm, or scripts/sweep.sh "
                               "SETTING --slurm).")
    tasks = []
    for i, item in enumerate(data["tasks"]):
        try:
            if not (isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("log"), str)
                    and isinstance(item.get("specs"), list) and item["specs"]):
                raise ValueError("a task needs a name, a log and a list of runs")
            tasks.append(Task(item["name"], [spec_from_dict(s) for s in item["specs"]], item["log"]))
        except (ValueError, TypeError) as err:
            raise FileContentError(f"{path}: task {i} is damaged ({err}); submit again (python -m "
                                   "clipfit.experiments.paper run --slurm, or scripts/sweep.sh SETTING --slurm).") from None
    return tasks

