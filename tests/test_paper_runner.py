"""The paper runner without a cluster: the plan of the paper's tables, the tasks file and the
array script, the report against the paper (marks, differences, none on data the paper lacks),
the preemption rules, and a user error held back from the next run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clipfit.experiments import paper
from clipfit.experiments.paper import report, runner
from clipfit.experiments.paper.plan import Selection, plan, read_tasks, spec_from_dict, spec_to_dict, write_tasks
from clipfit.experiments.protocol import default_config
from clipfit.fileio import FileContentError, write_json
from clipfit.training import preemption, run_folder

REPO = Path(__file__).resolve().parents[1]


def test_the_whole_paper_plan_follows_the_tables_and_the_protocol():
    tasks = plan(Selection())
    by_kind = {}
    for t in tasks:
        by_kind.setdefault(t.name.split("-")[0], []).append(t)
    # Table 1: 7 methods x 11 datasets x 3 seeds; Table 10: 7 methods x 11 x 5 shots x 3 seeds;
    # Tables 9 and 3 share one ImageNet source model per trainer and seed (8 trainers of either)
    assert len(by_kind["base2new"]) == 7 * 11 * 3
    assert len(by_kind["fewshot"]) == 7 * 11 * 5 * 3
    assert len(by_kind["transfer"]) == 8 * 3
    b2n = next(t for t in by_kind["base2new"] if t.name == "base2new-CLIPFit-dtd-16shot-seed2")
    assert [(s.part, s.subsample, s.cfg) for s in b2n.specs] == [("train_base", "base", "vit_b16"),
                                                                 ("test_new", "new", "vit_b16")]
    assert b2n.specs[1].model == b2n.specs[0]
    coop = next(t for t in by_kind["transfer"] if t.name == "transfer-CoOp-16shot-seed1")
    assert [s.part for s in coop.specs].count("train") == 1 and len(coop.specs) == 1 + 10 + 4  # one source
    clipfit = next(t for t in by_kind["transfer"] if t.name == "transfer-CLIPFit-16shot-seed1")
    sources = [s.cfg for s in clipfit.specs if s.part == "train"]  # beta 8 for xd, beta 2 for dg
    assert sources == ["vit_b16_ep10", "vit_b16_ep10_beta2"] and len(clipfit.specs) == 2 + 10 + 4
    for t in tasks:
        for s in t.specs:
            if s.setting in ("base2new", "fewshot"):
                assert s.cfg == default_config(s.trainer, s.setting, s.dataset, s.shots)
            elif s.part == "test":
                assert s.cfg == default_config(s.trainer, s.setting, "imagenet", s.shots)
                assert s.model is None or s.model.cfg == s.cfg  # zero-shot CLIP, Tip-Adapter: no model
    fewshot = {s.shots for t in by_kind["fewshot"] for s in t.specs}
    assert fewshot == {1, 2, 4, 8, 16} and "ZeroshotCLIP" not in {t.specs[0].trainer for t in by_kind["fewshot"]}


def test_the_tasks_file_round_trips_and_a_damaged_one_is_refused(tmp_path):
    tasks = plan(Selection(settings=("base2new",), trainers=("CoOp",), datasets=("dtd",), seeds=(1,),
                           opts=("OPTIM.MAX_EPOCH", "2")))
    path = tmp_path / "tasks.json"
    write_tasks(str(path), tasks)
    (back,) = read_tasks(str(path))
    assert back.specs == tasks[0].specs and spec_from_dict(spec_to_dict(back.specs[1])) == back.specs[1]
    data = json.loads(path.read_text())
    data["tasks"][0]["specs"][0]["seed"] = "1; rm -rf /"
    write_json(str(path), data)
    with pytest.raises(FileContentError, match="task 0 is damaged.*seed must be a int"):
        read_tasks(str(path))
    write_json(str(path), {"format": "something else", "tasks": []})
    with pytest.raises(FileContentError, match="not a paper tasks file"):
        read_tasks(str(path))


def test_the_array_script_execs_one_command_with_the_resources_asked_for(tmp_path):
    gpu = runner.sbatch_script("/x/t.json", 12, "/x", runner.SlurmOptions(partition="gpu", time="4:00:00",
                                                                          cpus_per_task=8, max_parallel=4))
    assert "#SBATCH --array=0-11%4" in gpu and "#SBATCH --gres=gpu:1" in gpu and "#SBATCH --partition=gpu" in gpu
    assert "#SBATCH --time=4:00:00" in gpu and "#SBATCH --cpus-per-task=8" in gpu and "#SBATCH --requeue" in gpu
    assert "#SBATCH --signal=B:USR1@300" in gpu and "eval" not in gpu
    assert gpu.splitlines()[-1].startswith("exec ") and gpu.rstrip().endswith('/x/t.json "$SLURM_ARRAY_TASK_ID"')
    cpu = runner.sbatch_script("/x/t.json", 1, "/x", runner.SlurmOptions(gres="none"))
    assert "--gres" not in cpu and "--partition" not in cpu


# ---------------------------------------------------------------- the report

def _fake_run(spec, accuracy: float, identity=None) -> None:
    """A finished run folder for ``spec``: metrics.json, run.json with its identity, a checkpoint."""
    from clipfit.experiments.run import resolve_model

    folder = Path(spec.folder)
    (folder / "model").mkdir(parents=True, exist_ok=True)
    (folder / "model" / "model.pth.tar-10").write_bytes(b"")
    spec = resolve_model(spec)
    write_json(str(folder / "metrics.json"), {"accuracy": accuracy})
    write_json(str(folder / "run.json"), {"format": run_folder.RECORD_FORMAT, "kind": "train", "state": "finished",
                                          "settings": identity or spec.identity(), "weights": None})


def test_the_report_marks_missing_and_mixed_seeds_and_compares_only_the_papers_data(tmp_path):
    sel = Selection(settings=("base2new",), trainers=("CLIPFit",), datasets=("dtd", "eurosat", "toy_shapes"),
                    seeds=(1, 2, 3), data=str(tmp_path / "data"), out=str(tmp_path / "out"))
    tasks = {t.name: t for t in plan(sel)}
    values = {1: (80.0, 70.0), 2: (82.0, 72.0), 3: (84.0, 74.0)}
    for seed, (base, new) in values.items():
        for dataset in ("dtd", "toy_shapes"):
            train, test = tasks[f"base2new-CLIPFit-{dataset}-16shot-seed{seed}"].specs
            _fake_run(train, base)
            _fake_run(test, new)
    for seed in (1, 2):  # eurosat: seed 3 never ran, and seed 2's test ran with other settings
        train, test = tasks[f"base2new-CLIPFit-eurosat-16shot-seed{seed}"].specs
        _fake_run(train, 90.0 + seed)
        _fake_run(test, 60.0, {**test.identity(), "OPTIM.MAX_EPOCH": 1} if seed == 2 else None)
    (table,) = report.build(list(tasks.values()), sel.settings, sel.seeds)
    cell = table.cells
    dtd_base = paper.lookup("CLIPFit", "base2new", "dtd", "base")
    assert cell[("CLIPFit", "dtd", "base")].mean == pytest.approx(82.0)
    assert cell[("CLIPFit", "dtd", "base")].delta == pytest.approx(82.0 - dtd_base)
    assert cell[("CLIPFit", "dtd", "hm")].delta == pytest.approx(
        2 * 82 * 72 / (82 + 72) - paper.lookup("CLIPFit", "base2new", "dtd", "hm"))
    euro_base, euro_new = cell[("CLIPFit", "eurosat", "base")], cell[("CLIPFit", "eurosat", "new")]
    assert euro_base.missing == [3] and euro_base.mean == pytest.approx(91.5) and euro_base.delta is None
    assert euro_new.mixed == [2] and euro_new.missing == [3] and euro_new.values == {1: 60.0}
    toy = cell[("CLIPFit", "toy_shapes", "base")]
    assert toy.complete and toy.paper is None and toy.delta is None
    assert cell[("CLIPFit", "Average", "base")].mean is None  # eurosat incomplete: no silent average
    text = report.render([table], "markdown")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert f"82.00 ± 1.63 ({82 - dtd_base:+.2f})" in rows["DTD"]
    assert "91.50 ± 0.50 [2/3]" in rows["EuroSAT"] and "60.00 [1/3] mixed" in rows["EuroSAT"]
    assert "(" not in rows["toy_shapes"] and "82.00 ± 1.63" in rows["toy_shapes"]
    assert "EuroSAT New: seed 2 holds a run with other settings" in text
    csv_lines = report.render([table], "csv").splitlines()
    assert csv_lines[0].endswith("paper,delta") and any(",toy_shapes,base,82.0000," in ln and ln.endswith(",,")
                                                        for ln in csv_lines)


# ---------------------------------------------------------------- preemption

class _FakeTrainer:
    """What preemption.after_epoch uses of a trainer: it saves empty checkpoint files."""

    def __init__(self, folder: Path, freq: int):
        from yacs.config import CfgNode

        self.output_dir, self.epoch = str(folder), 0
        self.cfg = CfgNode({"TRAIN": CfgNode({"CHECKPOINT_FREQ": freq})})

    def get_model_names(self):
        return ["model"]

    def save_model(self, epoch, directory):
        (Path(directory) / "model").mkdir(parents=True, exist_ok=True)
        (Path(directory) / "model" / f"model.pth.tar-{epoch + 1}").write_bytes(b"")


def test_inside_preemptible_every_epoch_has_a_checkpoint_and_only_the_configs_stay(tmp_path):
    trainer = _FakeTrainer(tmp_path, freq=3)
    with preemption.preemptible():
        for trainer.epoch in range(7):
            if (trainer.epoch + 1) % 3 == 0:  # the engine's own save
                trainer.save_model(trainer.epoch, str(tmp_path))
            preemption.after_epoch(trainer)
            assert (tmp_path / "model" / f"model.pth.tar-{trainer.epoch + 1}").exists()
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == [
        "model.pth.tar-3", "model.pth.tar-6", "model.pth.tar-7"]
    trainer.epoch = 7
    preemption.after_epoch(trainer)  # outside: nothing happens
    assert not (tmp_path / "model" / "model.pth.tar-8").exists()


@pytest.mark.parametrize("signum, state, requeued", [
    (signal.SIGUSR1, "RUNNING", True),  # the time-limit warning
    (signal.SIGTERM, "RUNNING", True),  # preemption with a grace time
    (signal.SIGTERM, "COMPLETING", False),  # scancel: SLURM is ending it
])
def test_a_signal_stops_the_run_and_requeues_only_a_job_slurm_keeps(monkeypatch, capsys, signum, state, requeued):
    calls = []
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setattr(preemption, "job_state", lambda job: state)
    monkeypatch.setattr(preemption, "requeue", lambda job: calls.append(job) or f"requeued job {job}")
    with pytest.raises(preemption.Preempted):
        with preemption.preemptible():
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the handler raises before this ends
    assert calls == (["42"] if requeued else [])
    assert preemption.stopped_by() == signum
    out = capsys.readouterr().out
    assert f"Stopped by {signal.Signals(signum).name}" in out and ("not requeued" in out) != requeued
    assert signal.getsignal(signal.SIGUSR1) is not preemption._on_signal  # handlers restored


# ---------------------------------------------------------------- a user error, held back

def test_a_task_failing_from_a_bad_option_is_shown_and_held_back(tmp_path):
    from clipfit.toyworld.downstream import make_dataset

    make_dataset("toy_shapes", str(tmp_path / "data"), seed=1, per_class={"train": 2, "val": 1, "test": 1})
    sel = ["--settings", "base2new", "--trainers", "CoOp", "--datasets", "toy_shapes", "--seeds", "1",
           "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    bad = ["--", "OPTIM.NO_SUCH_KEY", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CLIPFIT_ENGINE": "builtin"}

    def paper_cli(*args):
        return subprocess.run([sys.executable, "-m", "clipfit.experiments.paper", *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)

    first = paper_cli("run", *sel, *bad)
    assert first.returncode == 1 and "[FAIL]" in first.stdout
    (state,) = json.loads(paper_cli("status", *sel, "--json", *bad).stdout).values()
    assert state["state"] == "failed" and state["user_error"] and state["attempts"] == 1
    assert state["detail"].startswith("ERROR:") and "OPTIM.NO_SUCH_KEY" in state["detail"]
    again = paper_cli("run", *sel, *bad)
    assert "held back (a user error)" in again.stdout and "0 to start" in again.stdout
    (state,) = json.loads(paper_cli("status", *sel, "--json", *bad).stdout).values()
    assert state["attempts"] == 1  # not started again


def test_the_estimate_counts_the_images_of_each_training_at_table_7s_time_per_image():
    from clipfit.experiments.paper import cost

    sel = Selection(settings=("base2new",), trainers=("CLIPFit", "CLIP_Adapter"), datasets=("dtd",))
    rows = {(label, trainer): (n, images, hours) for label, trainer, n, images, hours in
            cost.estimate(plan(sel), sel.settings)}
    images = 16 * 24 * 100 * 3  # shots x base classes (ceil 47/2) x epochs x seeds
    assert rows[("Table 1", "CLIPFit")] == (3, pytest.approx(images / 1e6), pytest.approx(images * 0.96e-3 / 3600))
    assert rows[("Table 1", "CLIP_Adapter")][2] != rows[("Table 1", "CLIP_Adapter")][2]  # not in Table 7: nan
    assert "| Table 1 | all timed" in cost.render(list(cost.estimate(plan(sel), sel.settings))).replace("  ", "")


def test_compare_paper_of_parse_test_res_prints_no_difference_on_data_the_paper_lacks():
    from clipfit.experiments.results import RunKey, RunResult
    from clipfit.experiments.table_parts import render
    from clipfit.experiments.tables import PaperReference, base2new_table

    def runs(dataset):
        return {RunKey("base2new", role, dataset, 16, "CLIPFit", "vit_b16", seed):
                RunResult(f"/o/{role}/{seed}", "finished", {"accuracy": 80.0 + seed}) for role in ("base", "new")
                for seed in (1, 2, 3)}

    toy = render([base2new_table(runs("toy_shapes"), 16, paper=PaperReference())], "table")
    assert "(paper)" not in toy and "83.72" not in toy  # the paper's CLIPFit Average
    dtd = render([base2new_table(runs("dtd"), 16, paper=PaperReference())], "table")
    assert "CLIPFit (paper)" in dtd and "81.97 (+0.03)" in dtd  # the paper's DTD, compared
    assert "83.72 " in dtd and "83.72 (" not in dtd  # its 11-dataset Average is shown, not compared to 1 dataset


def test_status_shows_a_running_run_with_its_epoch_and_an_interrupted_one_as_left(tmp_path):
    from clipfit.experiments.paper import status

    sel = Selection(settings=("fewshot",), trainers=("CoOp",), datasets=("dtd",), seeds=(1, 2), shots=(4,),
                    out=str(tmp_path / "out"))
    running, interrupted = plan(sel)
    folder = Path(running.specs[0].folder)
    folder.mkdir(parents=True)
    (folder / "log.txt").write_text("epoch [3/50] batch [1/1] time 0.1 (0.1) loss 1.0 (1.0) eta 0:00:47\n")
    stopped = Path(interrupted.specs[0].folder)
    (stopped / "model").mkdir(parents=True)
    (stopped / "model" / "model.pth.tar-7").write_bytes(b"")
    lock = run_folder.acquire(str(folder), "pid 1: a test")
    try:
        states = status.task_states([running, interrupted], str(tmp_path / "out" / "paper"))
    finally:
        lock.release()
    assert states[running.name].state == "running" and "epoch 3/50" in states[running.name].detail
    assert (states[interrupted.name].state, states[interrupted.name].detail) == ("left", "resumes from epoch 7")
    text = status.render([running, interrupted], states, sel.settings)
    assert text.startswith("Table 10 (fewshot, 4 shots): 2 runs: 0 finished, 1 running, 0 queued, 0 failed, 1 left")
    start, held = status.todo([running, interrupted], states, max_attempts=3)
    assert [t.name for t in start] == [interrupted.name] and not held


def test_nothing_starts_while_a_dataset_is_missing(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "clipfit.experiments.paper", "run", "--settings", "base2new",
                           "--trainers", "CoOp", "--datasets", "dtd", "--seeds", "1", "--data", str(tmp_path / "data"),
                           "--out", str(tmp_path / "out"), "--slurm", "--gres", "none"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Nothing started" in proc.stderr
    assert f"{tmp_path / 'data'}/dtd not found" in proc.stdout and "DATASETS.md" in proc.stdout
    assert not (tmp_path / "out" / "paper" / "slurm").exists()
