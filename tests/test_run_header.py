"""train.py's start: a short header on the terminal, CoOp's full dump in log.txt, and the checks
made before torch is imported."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import save_tiny_clip
from clipfit.training.precheck import trainer_names
from clipfit.training.run_header import WIDTH, header_lines, tuned_line

from _helpers import tiny_train_argv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "CLIPFIT_ENGINE": "builtin", "PYTHONPATH": ROOT}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("header")
    make_dataset("dtd", str(root / "data"), n_classes=4, per_class=10)
    return {"root": str(root / "data"), "clip": save_tiny_clip(str(root / "tiny.pt"))}


def test_terminal_shows_the_header_and_log_txt_keeps_coops_full_dump(assets, tmp_path):
    out = tmp_path / "run"
    argv = tiny_train_argv(assets, "CLIPFit", "configs/trainers/CLIPFit/vit_b16.yaml", out,
                           "TRAINER.CLIPFIT.PREC", "fp32", "TRAINER.CLIPFIT.BETA", "2.0", epochs=1)
    proc = subprocess.run([sys.executable, "train.py", *argv], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    terminal = proc.stdout.splitlines()
    start = terminal.index("CLIPFit: training")
    header = terminal[start:terminal.index("Loading trainer: CLIPFit")]
    assert len(header) <= 12 and all(len(line) <= WIDTH for line in header), header
    text = "\n".join(header)
    for part in ("dataset DescribableTextures, 4 shots, seed 1", "config  configs/trainers/CLIPFit/vit_b16.yaml, "
                 "configs/datasets/dtd.yaml", f"output  {out}", "device  cpu, builtin engine",
                 "tuned   TRAINER.CLIPFIT: BETA 2.0, IMAGE_PARAMS layernorm, REG kd"):
        assert part in text, text
    for dump in ("** Arguments **", "** Config **", "** System info **", "Engine: builtin"):
        assert dump not in proc.stdout
    log = (out / "log.txt").read_text()
    assert log.startswith("***************\n** Arguments **\n***************\nannounce: \n")
    for line in ("** Config **", "  NAME: CLIPFit", "Engine: builtin", "Collecting env info ...",
                 "** System info **", "PyTorch version:", "Loading trainer: CLIPFit", "=> result",
                 "* accuracy:"):
        assert line in log, line
    assert log.index("** Config **") < log.index("** System info **") < log.index("Loading trainer")
    assert "CLIPFit: training" not in log  # the header is the terminal's; the log is CoOp's


def _args(**kw) -> argparse.Namespace:
    base = dict(eval_only=False, no_train=False, model_dir="", load_epoch=None, opts=[],
                config_file="c.yaml", dataset_config_file="")
    return argparse.Namespace(**{**base, **kw})


def test_tuned_line_says_nothing_is_tuned_in_an_evaluation_and_lists_set_options_otherwise():
    from clipfit.training.config import get_cfg

    cfg = get_cfg()
    assert tuned_line(cfg, _args(eval_only=True, model_dir="runs/a", load_epoch=5), None) == \
        "nothing: evaluates runs/a, epoch 5 checkpoint"
    assert tuned_line(cfg, _args(no_train=True), None).startswith("nothing: --no-train")

    class Trainer:
        prec_key = "TRAINER.CLIP_ADAPTER.PREC"

    cfg.TRAINER.UPDATE_IMAGE_LN = True
    line = tuned_line(cfg, _args(), Trainer)
    assert line.startswith("TRAINER.CLIP_ADAPTER: RATIO 0.2, REDUCTION 4") and "PREC" not in line
    assert line.endswith("TRAINER.UPDATE_IMAGE_LN True (+UL)")
    assert tuned_line(cfg, _args(), None) == "see 'Tuned parameters' below"
    cfg.TRAINER.NAME = "ClipFit"  # the authors' name: CLIPFit's options, whatever its prec_key
    assert tuned_line(cfg, _args(), type("ClipFit", (), {"prec_key": "TRAINER.COOP.PREC"})).startswith(
        "TRAINER.CLIPFIT: BETA 8.0")


def test_long_header_values_wrap_within_the_width():
    from clipfit.training.config import get_cfg

    cfg = get_cfg()
    cfg.TRAINER.NAME, cfg.DATASET.NAME, cfg.OUTPUT_DIR = "CoOp", "DescribableTextures", "o" * 40
    opts = [x for i in range(12) for x in (f"OPTIM.KEY_{i}", str(i * 1000))]
    lines = header_lines(_args(opts=opts), cfg, "cpu", "builtin", "TRAINER.COOP: " + "N_CTX 16, " * 20)
    assert all(len(line) <= WIDTH for line in lines)
    assert sum(line.startswith("  opts") for line in lines) == 1 and len(lines) > 8


def _before_torch(*argv: str) -> subprocess.CompletedProcess:
    """train.py's main in a fresh interpreter; prints whether torch got imported."""
    code = ("import sys\nfrom clipfit.training.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as e:\n    print('exit', e.code)\nprint('torch imported:', 'torch' in sys.modules)\n")
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv, message", [
    (["--trainer", "CLIPFt", "--config-file", "configs/trainers/CLIPFit/vit_b16.yaml"],
     'Unknown trainer name "CLIPFt". Known names: '),
    (["--trainer", "CLIPFit", "--config-file", "configs/trainers/CLIPFit/vit_b61.yaml"],
     "Did you mean configs/trainers/CLIPFit/vit_b16.yaml?"),
    (["--trainer", "CLIPFit", "--dataset-config-file", "configs/datasets/dtdd.yaml"],
     "Did you mean configs/datasets/dtd.yaml?"),
    (["--trainer", "CLIPFit", "--eval-only", "--model-dir", "no/such/run"],
     "--model-dir no/such/run: no such folder"),
])
def test_names_files_and_folders_are_checked_before_torch_is_imported(argv, message):
    proc = _before_torch(*argv)
    assert message in proc.stderr, proc.stderr
    assert proc.stdout.splitlines()[-2:] == ["exit 2", "torch imported: False"]


def test_the_unknown_trainer_error_suggests_the_closest_name():
    assert 'Did you mean "CLIPFit"?' in _before_torch("--trainer", "CLIPFt").stderr


def test_trainer_names_read_from_the_source_are_the_registered_ones():
    from clipfit import engine
    from clipfit.training.cli import import_plugins

    if engine.ENGINE != "builtin":
        pytest.skip("Dassl's registry holds Dassl's own trainers too")
    import_plugins()
    registry = engine.TRAINER_REGISTRY
    plugins = [n for n in registry.registered_names() if registry.get(n).__module__.startswith("trainers.")]
    assert sorted(trainer_names()) == sorted(plugins)  # other tests may register trainers of their own
