"""The run model: the protocol table, a RunSpec's folder, train.py command and identity, and a
run's identity including the data it reads (two custom image folders through the scripts and
train.py --output-dir)."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clipfit.experiments import protocol
from clipfit.experiments.protocol import CONFIG_RULES, config_table, default_config, default_rule
from clipfit.experiments.results import read_run
from clipfit.experiments.run import (OTHER_SETTINGS, ScriptEnv, ScriptError, script_specs, setting_specs,
                                     spec_state)
from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import TINY_IMAGE_SIZE, save_tiny_clip
from clipfit.training import run_folder

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the protocol table

@pytest.mark.parametrize("trainer, setting, dataset, shots, config", [
    ("CLIPFit", "base2new", "dtd", 16, "vit_b16"),
    ("ClipFit", "base2new", "imagenet", 16, "vit_b16_ep10"),  # the authors' name reads CLIPFit's rows
    ("CLIPFit", "fewshot", "food101", 4, "vit_b16_ep10_beta2"),
    ("CLIPFit", "fewshot", "sun397", 4, "vit_b16"),  # beta 8 for SUN397 and DTD
    ("CLIPFit", "dg", "imagenet", 16, "vit_b16_ep10_beta2"),
    ("CoOp", "fewshot", "caltech101", 1, "vit_b16_ep50"),
    ("CoOp", "fewshot", "caltech101", 4, "vit_b16_ep100"),
    ("CoOp", "fewshot", "caltech101", 8, "vit_b16"),
    ("CoOp", "fewshot", "imagenet", 8, "vit_b16_ep50"),
    ("CoOp", "base2new", "imagenet", 16, "vit_b16_ep50_ctxv1"),
    ("CoOp", "base2new", "dtd", 16, "vit_b16_ctxv1"),
    ("MaPLe", "dg", "imagenet", 16, "vit_b16_c2_ep5_batch4_2ctx_cross_datasets"),
    ("ProGrad", "fewshot", "eurosat", 16, "vit_b16_lambda0.8"),
    ("ProGrad", "fewshot", "eurosat", 2, "vit_b16_ep100"),
    ("TipAdapterF", "fewshot", "dtd", 16, "vit_b16_dtd"),
    ("KgCoOp", "fewshot", "toy_shapes", 16, "toy"),
    ("CLIP_Adapter", "base2new", "dtd", 16, "vit_b16"),
])
def test_default_configs_are_the_references_choices(trainer, setting, dataset, shots, config):
    assert default_config(trainer, setting, dataset, shots) == config


def test_every_default_config_exists_and_every_row_is_reachable_with_its_source():
    used = set()
    folders = sorted(p.name for p in (REPO / "configs" / "trainers").iterdir() if p.is_dir())
    for trainer in folders:
        for setting in protocol.SETTINGS:
            # xd and dg runs all use the config of their ImageNet source model
            datasets = protocol.DATASETS if setting in ("base2new", "fewshot") else [protocol.SOURCE_DATASET]
            for dataset in [*datasets, "toy_shapes"]:
                for shots in protocol.FEWSHOT_SHOTS:
                    used.add(default_rule(trainer, setting, dataset, shots))
                    name = default_config(trainer, setting, dataset, shots)
                    path = REPO / "configs" / "trainers" / protocol.config_trainer(trainer) / f"{name}.yaml"
                    assert path.is_file() or dataset.startswith("toy_"), (trainer, setting, dataset, shots)
    assert used == set(CONFIG_RULES), "a row no trainer reaches"
    table = config_table()
    assert all(r.source in table and r.source for r in CONFIG_RULES)
    with pytest.raises(ValueError, match="Unknown setting 'fewshoot'"):
        default_config("CLIPFit", "fewshoot", "dtd", 16)


# ---------------------------------------------------------------- RunSpec

def test_spec_folder_command_and_test_runs_follow_coops_layout():
    env = ScriptEnv(out="/o", data="/d", load_epoch=None)
    train, test = setting_specs("base2new", 1, "dtd", env, ["OPTIM.LR", "0.01"])
    assert train.folder == "/o/base2new/train_base/dtd/shots_16/CLIPFit/vit_b16/seed1"
    assert test.folder == "/o/base2new/test_new/dtd/shots_16/CLIPFit/vit_b16/seed1"
    assert test.model == train and test.evaluates and not train.evaluates
    argv = train.argv()
    assert argv[argv.index("--output-dir") + 1] == argv[argv.index("--resume") + 1] == train.folder
    assert argv[-8:] == ["TRAIN.CHECKPOINT_FREQ", "5", "DATASET.NUM_SHOTS", "16",
                         "DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.LR", "0.01"]  # trailing opts last
    assert "--model-dir" in test.argv() and "--resume" not in test.argv()
    assert train.what == "base2new train CLIPFit/vit_b16 dtd seed 1"
    zero = script_specs("base2new_test", ["dtd", "1"], dataclasses.replace(env, trainer="ZeroshotCLIP"))[0]
    assert zero.model is None and zero.eval_only and "--model-dir" not in zero.argv()
    xd = setting_specs("xd", 2, None, env)
    assert [s.folder.split("/")[4] for s in xd[1:]] == list(protocol.XD_TARGETS)
    assert all(s.model == xd[0] for s in xd[1:])
    with pytest.raises(dataclasses.FrozenInstanceError):
        train.seed = 2
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        dataclasses.replace(train, opts=("OPTIM.LR",))
    with pytest.raises(ScriptError, match="usage: bash scripts/fewshot.sh DATASET SEED SHOTS"):
        script_specs("fewshot", ["dtd", "1"], env)


def test_a_custom_datasets_folder_is_named_after_the_data_it_reads():
    env = ScriptEnv(out="/o")
    birds, = script_specs("fewshot", ["image_folder", "1", "4", "DATASET.IMAGE_DIR", "/x/birds/"], env)
    flowers, = script_specs("fewshot", ["csv_dataset", "1", "4", "DATASET.CSV_FILE", "lists/flowers.csv"], env)
    assert birds.folder == "/o/fewshot/image_folder-birds/shots_4/CLIPFit/vit_b16_beta2/seed1"
    assert flowers.data_name == "csv_dataset-flowers"
    assert script_specs("fewshot", ["dtd", "1", "4"], env)[0].data_name == "dtd"


# ---------------------------------------------------------------- identity with the data

@pytest.fixture(scope="module")
def two_image_folders(tmp_path_factory):
    """``<root>/birds`` and ``<root>/flowers``: two class-folder trees (3 and 4 classes) and a tiny CLIP."""
    root = tmp_path_factory.mktemp("custom")
    for name, classes in (("birds", 3), ("flowers", 4)):
        made = make_dataset("dtd", str(root / f"{name}-src"), n_classes=classes, per_class=6, with_split=False)
        shutil.move(os.path.join(made, "images"), root / name)
    return root, save_tiny_clip(str(root / "tiny_clip.pt"))


def _tiny(clip):
    return ["MODEL.BACKBONE.PATH", str(clip), "INPUT.SIZE", f"({TINY_IMAGE_SIZE}, {TINY_IMAGE_SIZE})",
            "OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
            "TRAINER.CLIPFIT.PREC", "fp32"]


def test_runs_on_other_data_are_other_runs_and_train_py_refuses_to_mix_them(two_image_folders, tmp_path):
    root, clip = two_image_folders
    env = {**{k: v for k, v in os.environ.items() if k not in ("TRAINER", "CFG", "SHOTS")},
           "DATA": str(root), "OUT": str(tmp_path / "out"), "PYTHON": sys.executable,
           "CLIPFIT_ENGINE": "builtin", "PYTHONPATH": str(REPO)}

    def fewshot(images):
        return subprocess.run(["bash", str(REPO / "scripts" / "fewshot.sh"), "image_folder", "1", "4",
                               "DATASET.IMAGE_DIR", images, *_tiny(clip)], env=env, capture_output=True,
                              text=True, timeout=300)

    first = fewshot("birds")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    second = fewshot("flowers")  # before: "==> skip ... finished" with the birds result
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "==> skip" not in second.stdout and "==> finished fewshot 4-shot" in second.stdout
    base = tmp_path / "out" / "fewshot"
    birds = base / "image_folder-birds" / "shots_4" / "CLIPFit" / "vit_b16_beta2" / "seed1"
    flowers = base / "image_folder-flowers" / "shots_4" / "CLIPFit" / "vit_b16_beta2" / "seed1"
    assert read_run(str(birds)).metrics["total"] != read_run(str(flowers)).metrics["total"]  # 3 vs 4 classes
    record = json.loads((birds / "run.json").read_text())["settings"]
    assert record["DATASET.IMAGE_DIR"] == "birds" and record["DATASET.ROOT"] == str(root)

    # train.py pointed at the birds run with the flowers data: refused, nothing overwritten
    metrics = (birds / "metrics.json").read_bytes()
    spec, = script_specs("fewshot", ["image_folder", "1", "4", "DATASET.IMAGE_DIR", "flowers", *_tiny(clip)],
                         ScriptEnv(data=str(root), out=str(tmp_path / "out")))
    argv = spec.argv()
    argv[argv.index("--output-dir") + 1] = argv[argv.index("--resume") + 1] = str(birds)
    proc = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "DATASET.IMAGE_DIR: 'birds' (recorded) -> 'flowers' (now)" in proc.stderr
    assert "--overwrite" in proc.stderr and "--output-dir" in proc.stderr
    assert (birds / "metrics.json").read_bytes() == metrics
    assert not run_folder.lock_holder(str(birds))

    # the same identity reads as finished; another data root as a finished run with other settings
    same, = script_specs("fewshot", ["image_folder", "1", "4", "DATASET.IMAGE_DIR", "birds", *_tiny(clip)],
                         ScriptEnv(data=str(root), out=str(tmp_path / "out")))
    assert spec_state(same).finished
    moved = spec_state(dataclasses.replace(same, data=str(tmp_path)))
    assert moved.status == OTHER_SETTINGS and f"DATASET.ROOT: '{root}' (recorded) -> '{tmp_path}'" in moved.reason
