"""The toy world: the shipped CLIP has learned something, CLIPFit learns more, the datasets load.

The learning tests fine-tune CLIPFit with its toy config (learning rate, epochs, BETA of
``configs/trainers/CLIPFit/toy.yaml``) on the base classes of ``toy_shapes`` (draw 1, run seed 1,
16 shots) in memory, without a trainer:

- Base accuracy rises at least BASE_MARGIN points over zero-shot; a broken method (the loss's
  sign flipped, the image LayerNorms frozen) stays below that margin.
- Without the KD term (``REG none``) the tuned text biases move the class features away from
  the frozen ones; KD keeps them close. A disabled KD term, or a text path that ignores the
  tuned biases (nothing moves), fails. Finding 4 itself (KD raises New) is small on the toy
  world (0.1 to 1.5 points in the trainer runs of docs/toy-world.md), within seed noise for a
  test, so the test checks what KD does, not what it is for.
"""
from __future__ import annotations

import json
import math
import os
import shutil

import pytest
import torch

import datasets  # noqa: F401  (registers the toy loaders)
from _helpers import build_from_cfg
from clipfit.methods.clip_loader import load_clip
from clipfit.methods.clipfit import CLIPFitModel, CLIPFitSettings
from clipfit.toyworld import findings, weights
from clipfit.toyworld.downstream import DATASETS, class_makers, make_dataset, sample
from clipfit.toyworld.pretrain import ZERO_SHOT_TEMPLATE, to_tensor, zero_shot_accuracy
from clipfit.toyworld.world import UNSEEN_PAIRS
from clipfit.training.config import get_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOTS, TEST_PER_CLASS = 16, 20
# Measured (16 base classes, 320 test images, zero-shot 36.6): CLIPFit 71.3; broken: wrong sign 6.2,
# frozen image LayerNorms 40.3.
BASE_MARGIN = 8.0  # points of base accuracy over zero-shot (finding 1)
# 1 - mean cos(class features, frozen ones) after training. Measured: KD 0.0001, REG none 0.0075,
# REG none with the text path ignoring the tuned biases 0.
DRIFT_KD_MAX, DRIFT_NONE_MIN = 0.0008, 0.0035


def _toy_config():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "trainers", "CLIPFit", "toy.yaml"))
    return cfg


def _tensors(items):
    return to_tensor([im for im, _, _ in items]), torch.tensor([y for _, y, _ in items])


def _draw_task() -> dict:
    """toy_shapes (draw 1): SHOTS training and TEST_PER_CLASS test images per base class."""
    names = list(class_makers("toy_shapes", seed=1))
    base = names[: math.ceil(len(names) / 2)]
    return {
        "base": base,
        "train": _tensors(sample("toy_shapes", SHOTS, image_seed=1, classes=base)),
        "test_base": _tensors(sample("toy_shapes", TEST_PER_CLASS, image_seed=2, classes=base)),
    }


@pytest.fixture(scope="module")
def task():
    return _draw_task()


@torch.no_grad()
def _accuracy(model: CLIPFitModel, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return 100.0 * (model(images).argmax(1) == labels).float().mean().item()


def _drift(model: CLIPFitModel) -> float:
    """1 - mean cos between the base class features now and the frozen ones."""
    with torch.no_grad():
        return 1.0 - (model.class_text_features() * model.frozen_text_features).sum(1).mean().item()


def _finetune(task, reg: str = "kd", breakage: str = "") -> dict:
    """Zero-shot and fine-tuned Base accuracy, and the text drift, of CLIPFit (toy config),
    optionally broken on purpose."""
    cfg = _toy_config()
    settings = CLIPFitSettings.from_cfg(cfg.TRAINER.CLIPFIT)
    settings.reg = reg
    if breakage == "frozen_layernorms":
        settings.image_params = "none"
    torch.manual_seed(1)
    model = CLIPFitModel(load_clip(weights.TOY_NAME), task["base"], ZERO_SHOT_TEMPLATE, settings)
    out = {"zs_base": _accuracy(model, *task["test_base"])}
    (x, y) = task["train"]
    optim = torch.optim.SGD(list(model.learned_parameters().values()), lr=cfg.OPTIM.LR, momentum=0.9)
    sign = -1.0 if breakage == "wrong_sign" else 1.0
    for _ in range(cfg.OPTIM.MAX_EPOCH):
        model.train()
        for idx in torch.randperm(len(y)).split(cfg.DATALOADER.TRAIN_X.BATCH_SIZE):
            loss, _ = model.loss(x[idx], y[idx])
            optim.zero_grad()
            (sign * loss).backward()
            optim.step()
    out["drift"] = _drift(model)
    out["base"] = _accuracy(model, *task["test_base"])
    return out


@pytest.fixture(scope="module")
def clipfit_runs(task):
    """CLIPFit with KD and with REG none, trained once for the tests below."""
    return {reg: _finetune(task, reg) for reg in ("kd", "none")}


def test_clipfit_raises_base_accuracy_well_above_zero_shot(clipfit_runs):
    r = clipfit_runs["kd"]
    assert r["base"] >= r["zs_base"] + BASE_MARGIN, f"CLIPFit: {r}, less than {BASE_MARGIN} points"


@pytest.mark.parametrize("breakage", ["wrong_sign", "frozen_layernorms"])
def test_a_broken_method_misses_the_base_margin(task, breakage):
    r = _finetune(task, breakage=breakage)
    assert r["base"] < r["zs_base"] + BASE_MARGIN, f"{breakage}: {r} reached the margin"


def test_the_tuned_text_biases_move_the_class_features_and_kd_holds_them(clipfit_runs):
    kd, none = clipfit_runs["kd"], clipfit_runs["none"]
    assert none["drift"] >= DRIFT_NONE_MIN, f"REG none: the text features hardly moved ({none}): is the text path live?"
    assert kd["drift"] <= DRIFT_KD_MAX, f"KD: the text features moved {kd['drift']:.3f} ({kd}): is the KD term on?"


def test_zero_shot_on_never_seen_pairs_is_above_three_times_chance():
    model = load_clip(weights.TOY_NAME)
    accuracy = zero_shot_accuracy(model, list(UNSEEN_PAIRS), per_class=10)
    assert accuracy > 3 * 100.0 / len(UNSEEN_PAIRS), accuracy


def test_shipped_weights_load_as_a_normal_fp32_clip_and_match_their_hash():
    assert weights.sha256_of(weights.SHIPPED_FILE) == weights.SHIPPED_SHA256
    model = load_clip(weights.TOY_NAME)
    assert type(model).__module__ == "clip.model" and type(model).__name__ == "CLIP"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model.visual.input_resolution == 32 and model.context_length == 77
    assert model.token_embedding.weight.shape[0] == 49408


def test_a_damaged_weights_file_is_a_clear_error(tmp_path, monkeypatch):
    damaged = tmp_path / "toy_clip.pt.xz"
    shutil.copy(weights.SHIPPED_FILE, damaged)
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(weights, "SHIPPED_FILE", str(damaged))
    with pytest.raises(weights.ToyWeightsError, match="damaged.*SHA-256"):
        load_clip(weights.TOY_NAME)
    with pytest.raises(weights.ToyWeightsError, match="not a packed toy CLIP"):  # no hash to compare
        weights.unpack(str(damaged))


@pytest.mark.parametrize("folder", list(DATASETS))
def test_make_data_layout_loads_through_the_loaders(tmp_path, folder):
    per_class = {"train": 3, "val": 1, "test": 2}
    path = make_dataset(folder, str(tmp_path), seed=5, per_class=per_class)
    assert make_dataset(folder, str(tmp_path), seed=5, per_class=per_class) == path  # kept as is
    with pytest.raises(FileExistsError, match="seed 6"):
        make_dataset(folder, str(tmp_path), seed=6, per_class=per_class)
    names = list(class_makers(folder, seed=5))
    n_base = math.ceil(len(names) / 2)
    cfg = get_cfg()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg.merge_from_file(os.path.join(repo, "configs", "datasets", f"{folder}.yaml"))
    assert cfg.DATASET.NAME == DATASETS[folder].name
    cfg.DATASET.ROOT = str(tmp_path)
    ds = build_from_cfg(cfg, shots=2, seed=1, subsample="base")
    assert ds.classnames == names[:n_base]
    assert len(ds.train_x) == 2 * n_base and len(ds.test) == per_class["test"] * n_base
    assert {x.label for x in ds.test} == set(range(n_base))
    new = build_from_cfg(cfg, shots=2, seed=1, subsample="new")
    assert new.classnames == names[n_base:]


def test_a_missing_toy_dataset_names_the_one_command_that_draws_it(tmp_path, capsys):
    from clipfit.data.folders import DatasetLayoutError
    from clipfit.toyworld.__main__ import main

    cfg = get_cfg()
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg.merge_from_file(os.path.join(repo, "configs", "datasets", "toy_shapes.yaml"))
    cfg.DATASET.ROOT = str(tmp_path)
    with pytest.raises(DatasetLayoutError) as err:
        build_from_cfg(cfg, shots=2, seed=1, subsample="base")
    command = str(err.value).splitlines()[-1].split("one command: ")[1]
    assert command == f"python -m clipfit.toyworld make-data --root {tmp_path} --datasets toy_shapes"
    assert main(command.split()[3:]) == 0  # the printed command draws exactly what was missing
    assert os.listdir(tmp_path) == ["toy_shapes"]


def test_make_data_command_refuses_a_folder_drawn_otherwise_with_a_clear_error(tmp_path, capsys):
    from clipfit.toyworld.__main__ import main

    stale = tmp_path / "toy_shapes"
    stale.mkdir()
    (stale / "toyworld.json").write_text('{"format": 0, "seed": 1}')
    assert main(["make-data", "--root", str(tmp_path), "--datasets", "toy_shapes"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"ERROR: {stale} exists but was not drawn by this version") and "delete it" in err[-1]
    assert os.listdir(stale) == ["toyworld.json"]  # nothing drawn over it


def _means(**new_of):
    """A toy table (Base, New per method) where every finding holds; ``new_of`` overrides New values."""
    table = {findings.ZERO_SHOT: (25.0, 25.0), findings.COOP: (26.0, 15.0), findings.CLIPFIT: (36.0, 30.0),
             findings.CLIPFIT_NO_REG: (35.0, 28.0)}
    return {k: {"base": b, "new": new_of.get(k, n)} for k, (b, n) in table.items()}


def test_findings_are_checked_with_their_numbers():
    lines = findings.finding_lines(_means(), n_base=16, n_new=16)
    assert lines[0] == "1. CLIPFit Base at least 8 above zero-shot Base: yes, 36.0 >= 25.0 + 8"
    assert lines[1] == "2. CoOp New below zero-shot New: yes, 15.0 < 25.0"
    assert lines[2].startswith("3. CLIPFit keeps New and has the best HM: yes, New 30.0 >= 25.0 - 2; HM 32.7 vs")
    assert lines[3] == "4. KD protects New (CLIPFit vs REG none): yes, 30.0 >= 28.0 + 1"
    assert lines[4] == "5. Zero-shot at least 3x chance: yes, Base 25.0 vs 18.8, New 25.0 vs 18.8"
    assert lines[5] == "5 of 5 checked findings hold (of 5)."
    broken = _means(**{findings.COOP: 26.0, findings.CLIPFIT_NO_REG: 29.5})
    held = [f.holds for f in findings.check_findings(broken, 16, 16)]
    assert held == [True, False, True, False, True]
    assert [f.holds for f in findings.check_findings(broken, 4, 16)] == [True, False, True, False, False]


def test_findings_without_their_runs_are_not_checked():
    means = _means()
    del means[findings.CLIPFIT_NO_REG]
    result = findings.check_findings(means, 16, 16)
    assert result[3].holds is None
    assert result[3].line == "4. not checked: no finished Base and New runs of CLIPFit (toy_reg_none)"
    assert findings.finding_lines(means, 16, 16)[-1] == "4 of 4 checked findings hold (of 5)."
    with pytest.raises(ValueError, match="at least one class"):
        findings.check_findings(means, 0, 16)


TOY_RUNS = {("ZeroshotCLIP", "toy"): (25.0, 25.0), ("CoOp", "toy"): (26.0, 15.0), ("CLIPFit", "toy"): (36.0, 30.0),
            ("CLIPFit", "toy_reg_none"): (35.0, 28.0)}


def _write_toy_runs(root, runs=TOY_RUNS) -> None:
    """Finished base2new runs under ``root/base2new``: seeds 1 and 2 at each (Base, New) -1 and +1."""
    for (trainer, cfg), (base, new) in runs.items():
        for seed, shift in ((1, -1.0), (2, 1.0)):
            for part, accuracy in (("train_base", base), ("test_new", new)):
                run = root / "base2new" / part / "toy_shapes" / "shots_16" / trainer / cfg / f"seed{seed}"
                run.mkdir(parents=True)
                (run / "metrics.json").write_text(json.dumps({"split": "test", "accuracy": accuracy + shift}))


def test_findings_command_reads_the_runs_of_each_config_apart(tmp_path, capsys):
    """CLIPFit's toy and toy_reg_none runs are two methods, not one mean."""
    from clipfit.toyworld.__main__ import main

    _write_toy_runs(tmp_path)
    assert main(["findings", str(tmp_path / "base2new"), "--dataset", "toy_shapes"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2] == "2. CoOp New below zero-shot New: yes, 15.0 < 25.0"
    assert out[4] == "4. KD protects New (CLIPFit vs REG none): yes, 30.0 >= 28.0 + 1"
    assert out[-1] == "5 of 5 checked findings hold (of 5)."


def test_table_command_puts_the_draws_side_by_side_with_the_findings_of_each(tmp_path, capsys):
    """Each draw is a column; a finding that fails on one draw says NO in that column only."""
    from clipfit.toyworld.__main__ import main

    _write_toy_runs(tmp_path / "draw1")
    _write_toy_runs(tmp_path / "draw2", {**TOY_RUNS, ("CoOp", "toy"): (26.0, 31.0)})  # CoOp's New rises
    _write_toy_runs(tmp_path / "draw3", {k: v for k, v in TOY_RUNS.items() if k[1] != "toy_reg_none"})
    roots = [str(tmp_path / f"draw{k}" / "base2new") for k in (1, 2, 3)]
    assert main(["table", *roots, "--dataset", "toy_shapes"]) == 0
    rows = {line.split(" | ")[0].lstrip("| "): line.rstrip(" |").split(" | ")[1:]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert rows["Base / New / HM"] == ["draw1", "draw2", "draw3"]
    assert rows["CoOp"] == ["26.0 / 15.0 / 19.0", "26.0 / 31.0 / 28.3", "26.0 / 15.0 / 19.0"]
    assert rows["CLIPFit (toy_reg_none)"] == ["35.0 / 28.0 / 31.1", "35.0 / 28.0 / 31.1", "-"]
    assert rows["2. CoOp New < zero-shot New"] == ["yes", "NO", "yes"]
    assert rows["4. CLIPFit New >= `REG none` New + 1"] == ["yes", "yes", "not checked"]
    assert rows["findings that hold (of those checked)"] == ["5 of 5", "4 of 5", "4 of 4"]
    page = tmp_path / "page.md"
    page.write_text("# Toy\n<!-- begin: toy-table-toy_shapes -->\nstale table\n<!-- end: toy-table-toy_shapes -->\n")
    assert main(["table", *roots, "--docs", str(page), "--measured-by", "bash scripts/toy_table.sh"]) == 0
    written = page.read_text()
    assert "stale table" not in written and "| 2. CoOp New < zero-shot New | yes | NO | yes |" in written
    assert "with `bash scripts/toy_table.sh`." in written
    capsys.readouterr()
    assert main(["table", *roots, "--labels", "a", "a", "b"]) == 2
    assert "one distinct label per folder" in capsys.readouterr().err


def test_the_shipped_toy_clip_is_part_of_a_toy_runs_identity(tmp_path):
    """Runs made with other toy weights (an earlier shipped CLIP, a remade one) are other runs."""
    from clipfit.training import run_spec

    cfg = get_cfg()
    cfg.MODEL.BACKBONE.NAME = weights.TOY_NAME
    assert run_spec.identity(cfg)[run_spec.WEIGHTS] == weights.SHIPPED_SHA256
    remade = tmp_path / "remade.pt.xz"
    remade.write_bytes(b"other weights")
    cfg.MODEL.BACKBONE.PATH = str(remade)
    assert run_spec.identity(cfg)[run_spec.WEIGHTS] not in (None, weights.SHIPPED_SHA256)


def test_the_demo_on_a_folder_drawn_otherwise_says_to_delete_it(tmp_path):
    """scripts/demo.sh stops before training, naming the folder to delete."""
    import subprocess

    stale = tmp_path / "demo" / "data" / "toy_shapes"
    stale.mkdir(parents=True)
    (stale / "toyworld.json").write_text('{"format": 0, "seed": 1}')
    env = {**os.environ, "DEMO": str(tmp_path / "demo"), "PYTHONPATH": REPO}
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "demo.sh")], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"ERROR: the demo could not draw its dataset (above). If {tmp_path / 'demo'} was made by another " \
           "version" in proc.stderr
    assert not (tmp_path / "demo" / "base2new").exists()
