"""Messages a newcomer meets: user errors without tracebacks, help texts that agree with the
code, warnings and folders that are not wanted, and the fabricated-data command."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from clipfit.training.cli import build_parser, user_error_message

REPO = Path(__file__).resolve().parents[1]


def test_user_errors_are_recognised_by_type_not_by_where_they_were_raised():
    from clipfit.errors import ConfigValueError, UnreadableFileError
    from clipfit.methods.clipfit import CLIPFitSettings

    with pytest.raises(ConfigValueError) as err:
        CLIPFitSettings(reg="x").check()
    assert user_error_message(err.value) == "TRAINER.CLIPFIT.REG is 'x'; choose one of kd, mse, none."
    assert isinstance(err.value, ValueError)  # callers catching ValueError still do

    def library_bug():
        raise ValueError("an invariant of the library broke")  # a raise line in the repository

    with pytest.raises(ValueError) as err:
        library_bug()
    assert user_error_message(err.value) is None  # a bug: shown with its traceback
    with pytest.raises(KeyError) as err:
        {}["k"]
    assert user_error_message(err.value) is None
    worker = UnreadableFileError(
        "Caught UnreadableFileError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        f'  File "{REPO}/clipfit/engine/builtin/tools.py", line 70, in read_image\n'
        "    raise UnreadableFileError(\n"
        "clipfit.errors.UnreadableFileError: Cannot read image /d/x.jpg (broken). Replace it.")
    assert user_error_message(worker) == "Cannot read image /d/x.jpg (broken). Replace it."


def test_a_library_value_error_ends_with_its_traceback_and_exit_status_1(tmp_path):
    """A ValueError raised inside library code while train.py runs is a bug, not a user error."""
    spy = tmp_path / "spy.py"
    spy.write_text(
        "import runpy, sys\n"
        "import clipfit.training.config as config\n"
        "def broken(*args, **kwargs):\n"
        "    raise ValueError('an invariant of the library broke')\n"
        "config.merge_from_list = broken\n"
        "import clipfit.training.cli as cli\n"
        "cli.merge_from_list = broken\n"
        "sys.argv = ['train.py'] + sys.argv[1:]\n"
        "runpy.run_path('train.py', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, str(spy), "--trainer", "CLIPFit"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.rstrip().endswith("ValueError: an invariant of the library broke")


def test_a_broken_install_is_reported_as_one_with_the_fix(tmp_path):
    """torchvision that fails to import (as a CPU torch with a CUDA torchvision does)."""
    fake = tmp_path / "torchvision"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    proc = subprocess.run([sys.executable, "train.py", "--trainer", "CLIPFit"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("ERROR: Importing torchvision failed (RuntimeError: operator torchvision::nms "
                                  "does not exist). This is an install problem")
    assert "pip install -e ." in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_train_py_user_error_ends_with_the_message_alone(tmp_path):
    argv = [sys.executable, "train.py", "--output-dir", str(tmp_path / "o"), "--trainer", "CLIPFit",
            "--dataset-config-file", "configs/datasets/dtdd.yaml"]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1  # the message, no traceback
    assert proc.stderr.startswith("ERROR: --dataset-config-file configs/datasets/dtdd.yaml: no such file")
    assert "Did you mean configs/datasets/dtd.yaml?" in proc.stderr and "dtd.yaml, eurosat.yaml" in proc.stderr


def test_user_error_in_process_and_its_traceback_with_clipfit_debug(tmp_path, capsys, monkeypatch):
    from clipfit.training.cli import main
    from clipfit.training.config import ConfigKeyError

    argv = ["--output-dir", str(tmp_path / "o"), "--config-file",
            "configs/trainers/CLIPFit/vit_b16.yaml", "OPTIM.LRR", "1"]
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err == ("ERROR: Unknown config key OPTIM.LRR (in command-line opts). "
                                       "Did you mean OPTIM.LR?\n")
    monkeypatch.setenv("CLIPFIT_DEBUG", "1")
    with pytest.raises(ConfigKeyError):
        main(argv)


def test_help_texts_agree_with_the_code():
    from clipfit.training.cli import setup_cfg

    assert "fixed seed when 0 or more" in build_parser().format_help()

    def seed(*flags: str) -> int:
        return setup_cfg(build_parser().parse_args(list(flags))).SEED

    assert seed("--seed", "0") == 0  # CoOp's `if args.seed:` would drop 0
    assert seed("--seed", "3") == 3 and seed() == -1  # no --seed: no fixed seed
    doctor = subprocess.run([sys.executable, "-m", "clipfit.data", "doctor", "--help"], cwd=REPO,
                            capture_output=True, text=True)
    assert "under --root" in doctor.stdout and "under DATA" not in doctor.stdout


def test_testing_cli_makes_datasets_and_a_tiny_clip(tmp_path):
    from clipfit.methods.clip_loader import read_state_dict
    from clipfit.testing.__main__ import main

    assert main(["make", "dtd", "eurosat", "--root", str(tmp_path / "data"), "--classes", "3",
                 "--per-class", "4"]) == 0
    assert sorted(p.name for p in (tmp_path / "data" / "dtd" / "images").iterdir()) == [
        "banded", "blotchy", "braided"]
    assert (tmp_path / "data" / "eurosat" / "split_zhou_EuroSAT.json").is_file()
    assert main(["make", "dtd", "--root", str(tmp_path / "data")]) == 2  # exists: not overwritten
    assert main(["tiny-clip", "--out", str(tmp_path / "tiny.pt")]) == 0
    assert "visual.conv1.weight" in read_state_dict(str(tmp_path / "tiny.pt"))


def test_corrupt_image_message_does_not_advise_deleting_it(tmp_path):
    from clipfit.engine.builtin.tools import read_image

    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"no image")
    with pytest.raises(OSError) as err:
        read_image(str(bad))
    assert "Replace it with a readable image" in str(err.value)
    assert "deleting it is an error too" in str(err.value) and "Replace or delete" not in str(err.value)


def test_no_tensorboard_folder_without_tensorboard(tmp_path, monkeypatch):
    from clipfit.engine.builtin.trainer import SimpleTrainer

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    trainer = SimpleTrainer.__new__(SimpleTrainer)
    trainer._writer = None
    trainer.init_writer(str(tmp_path / "tensorboard"))
    assert trainer._writer is None and not (tmp_path / "tensorboard").exists()


def test_reading_a_jit_archive_does_not_warn(tmp_path):
    from clipfit.methods.clip_loader import read_state_dict
    from clipfit.testing.tiny_clip import save_tiny_clip

    path = save_tiny_clip(str(tmp_path / "tiny_jit.pt"), fmt="jit")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert "visual.conv1.weight" in read_state_dict(path)
    assert not [w for w in caught if "jit" in str(w.message)], [str(w.message) for w in caught]


def test_unknown_trainer_name_is_a_user_error_on_either_engine():
    """Dassl's registry raises a bare KeyError: train.py checks the name itself before building."""
    from clipfit.errors import ConfigValueError, UnknownNameError
    from clipfit.training.cli import check_registered

    class DasslLikeRegistry:
        def registered_names(self):
            return ["CLIPFit", "CoOp", "KgCoOp"]

    with pytest.raises(UnknownNameError) as err:
        check_registered(DasslLikeRegistry(), "ClipFitt", "TRAINER.NAME (--trainer)")
    assert user_error_message(err.value) == ("TRAINER.NAME (--trainer) is 'ClipFitt', which is not registered. "
                                             "Did you mean CLIPFit? Known names: CLIPFit, CoOp, KgCoOp.")
    with pytest.raises(ConfigValueError, match="TRAINER.NAME .* is empty"):
        check_registered(DasslLikeRegistry(), "", "TRAINER.NAME (--trainer)")
    check_registered(DasslLikeRegistry(), "CoOp", "TRAINER.NAME (--trainer)")  # known: no error
