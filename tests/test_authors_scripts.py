"""The CLIPFit authors' configs and script command lines run here unchanged (paths aside)."""
from __future__ import annotations

import glob
import os
import subprocess
import sys

from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import save_tiny_clip
from clipfit.training.config import config_file_path, get_cfg, merge_from_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The config names of minglllli/CLIPFit configs/trainers/ClipFit/, with the epochs and
# batch size each one sets (None: Dassl's default, no OPTIM section in their file).
AUTHORS_CONFIGS = {
    "rn101": ("RN101", 200, 32), "rn101_ep50": ("RN101", 50, 32), "rn50": ("RN50", 200, 32),
    "rn50_ctxv1": ("RN50", 200, 32), "rn50_ep100": ("RN50", 100, 32), "rn50_ep50": ("RN50", 50, 32),
    "rn50_ep50_ctxv1": ("RN50", 50, 32), "rn50_val": ("RN50", None, 200),
    "vit_b16": ("ViT-B/16", 200, 32), "vit_b16_ctxv1": ("ViT-B/16", 200, 32),
    "vit_b16_ep10": ("ViT-B/16", 10, 32), "vit_b16_ep10_ctxv1": ("ViT-B/16", 10, 32),
    "vit_b16_ep20": ("ViT-B/16", 20, 32), "vit_b16_ep30": ("ViT-B/16", 30, 128),
    "vit_b16_ep50": ("ViT-B/16", 50, 32), "vit_b16_ep50_ctxv1": ("ViT-B/16", 50, 32),
    "vit_b16_ep100_ctxv1": ("ViT-B/16", 100, 32), "vit_b16_ep100_ctxv1_lambda0.4": ("ViT-B/16", 100, 32),
    "vit_b32": ("ViT-B/32", 200, 32), "vit_b32_ep50": ("ViT-B/32", 50, 32),
}


def test_every_authors_config_name_exists_with_their_settings():
    """Their names, ``configs/trainers/ClipFit/<name>.yaml``, read from ``configs/authors/ClipFit/``."""
    folder = os.path.join(ROOT, "configs", "trainers", "ClipFit")
    kept = os.path.join(ROOT, "configs", "authors", "ClipFit")
    assert sorted(os.path.basename(f)[:-5] for f in glob.glob(os.path.join(kept, "*.yaml"))) == sorted(AUTHORS_CONFIGS)
    for name, (backbone, epochs, batch) in AUTHORS_CONFIGS.items():
        assert config_file_path(os.path.join(folder, name + ".yaml")) == os.path.join(kept, name + ".yaml")
        cfg = get_cfg()
        merge_from_file(cfg, os.path.join(folder, name + ".yaml"))
        assert cfg.MODEL.BACKBONE.NAME == backbone and cfg.DATALOADER.TRAIN_X.BATCH_SIZE == batch, name
        assert cfg.OPTIM.MAX_EPOCH == (epochs or get_cfg().OPTIM.MAX_EPOCH), name
        if epochs:
            assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.LR_SCHEDULER) == ("sgd", 0.002, "cosine"), name
            assert (cfg.OPTIM.WARMUP_EPOCH, cfg.OPTIM.WARMUP_CONS_LR) == (1, 1e-5), name
        assert tuple(cfg.INPUT.SIZE) == (224, 224) and cfg.INPUT.INTERPOLATION == "bicubic", name


def test_their_base2new_train_command_line_runs(tmp_path):
    """scripts/ClipFit/base2new_train.sh's python line, paths changed (DATA, output, weights)."""
    data = str(tmp_path / "data")
    make_dataset("dtd", data, n_classes=4, per_class=6)
    weights = save_tiny_clip(str(tmp_path / "vit_b16_tiny.pt"), image_resolution=224, patch_size=32)
    out = tmp_path / "output/base2new/train_base/dtd/shots_16_alpha0/ClipFit/vit_b16_ep10_ctxv1/seed1"
    cmd = [
        sys.executable, "train.py", "--root", data, "--seed", "1", "--trainer", "ClipFit",
        "--dataset-config-file", "configs/datasets/dtd.yaml",
        "--config-file", "configs/trainers/ClipFit/vit_b16_ep10_ctxv1.yaml", "--output-dir", str(out),
        "TRAINER.COOP.N_CTX", "4", "TRAINER.COOP.CSC", "False", "TRAINER.COOP.W1", "0.2",
        "TRAINER.COOP.W2", "0.2", "TRAINER.COOP.CLASS_TOKEN_POSITION", "end",
        "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base",
        "MODEL.BACKBONE.PATH", weights,  # added: where the weights are
        # added for test time only: 8 loader workers per epoch cost ~100 s on 2 cores here;
        # without this line the run passes the same checks (measured once, 129 s)
        "DATALOADER.NUM_WORKERS", "0",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    log = (out / "log.txt").read_text()
    assert ("--config-file configs/trainers/ClipFit/vit_b16_ep10_ctxv1.yaml: read from "
            "configs/authors/ClipFit/vit_b16_ep10_ctxv1.yaml") in log
    assert "Precision: fp32 (TRAINER.COOP.PREC)" in log  # their trainer's key; fp16 falls back on CPU
    assert ("Note: TRAINER.COOP.N_CTX 4, TRAINER.COOP.CTX_INIT a photo of a, TRAINER.COOP.W1 0.2, "
            "TRAINER.COOP.W2 0.2: accepted for the CLIPFit authors' scripts, no effect on CLIPFit") in log
    assert "epoch [10/10]" in log and "* accuracy:" in log
    assert (out / "prompt_learner" / "model.pth.tar-10").is_file()  # their folder name


def test_their_vit_b16_and_ours_keep_their_own_epochs():
    """The two names in both folders: theirs 200 epochs (ClipFit), ours the paper's 100 (CLIPFit)."""
    for trainer_folder, epochs in (("ClipFit", 200), ("CLIPFit", 100)):
        cfg = get_cfg()
        merge_from_file(cfg, os.path.join("configs", "trainers", trainer_folder, "vit_b16.yaml"))
        assert cfg.OPTIM.MAX_EPOCH == epochs, trainer_folder


def test_no_two_tracked_paths_differ_only_by_case():
    """On macOS and Windows such a pair is one file (or folder), and one of the two is lost."""
    proc = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    seen = {}
    clashes = []
    for path in proc.stdout.splitlines():
        parts = path.split("/")
        for i in range(1, len(parts) + 1):  # the file and every folder above it
            prefix = "/".join(parts[:i])
            other = seen.setdefault(prefix.casefold(), prefix)
            if other != prefix:
                clashes.append(f"{other} / {prefix}")
    assert not sorted(set(clashes)), sorted(set(clashes))
