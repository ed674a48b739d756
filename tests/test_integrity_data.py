"""Damaged splits, few-shot caches and config files: never used as they are, always named with the fix."""
from __future__ import annotations

import json
import os

import pytest
from clip.simple_tokenizer import SimpleTokenizer

import datasets  # noqa: F401  (registers the loaders)
from _helpers import build
from clipfit.data.splits import DatasetLayoutError
from clipfit.fileio import FileContentError
from clipfit.methods.text import PromptTooLongError, tokenize_classes
from clipfit.testing.fake_datasets import make_dataset
from clipfit.training.config import ALLOW_PY_ENV, get_cfg, merge_from_file

SPLIT = "split_zhou_DescribableTextures.json"
SHOTS, SEED = 2, 1


@pytest.fixture
def dtd(tmp_path):
    """A fabricated DTD (4 classes, 5 train and 2 val images each) with its 2-shot seed-1 cache made."""
    folder = make_dataset("dtd", str(tmp_path))
    first = build(tmp_path, "dtd", shots=SHOTS, seed=SEED)
    cache = os.path.join(folder, "split_fewshot", f"shot_{SHOTS}-seed_{SEED}.json")
    with open(cache) as f:
        original = json.load(f)
    return {"root": tmp_path, "folder": folder, "cache": cache, "original": original,
            "train": [x.impath for x in first.train_x], "val": [x.impath for x in first.val]}


def _edit_json(path, change):
    with open(path) as f:
        data = json.load(f)
    change(data)
    with open(path, "w") as f:
        json.dump(data, f)


def _one_class(d):
    d["train"] = [r for r in d["train"] if r[1] == 0]


def _duplicated(d):
    d["train"] = d["train"] + d["train"]


def _every_image(split_path):
    def change(d):
        with open(split_path) as f:
            d["train"] = json.load(f)["train"]
    return change


def _other_shots(d):
    d["num_shots"], d["seed"] = 16, 99


def _outside(d):
    d["train"][0][0] = "../../" + d["train"][0][0]


@pytest.mark.parametrize("damage", ["one_class", "duplicated", "every_image", "other_shots", "outside",
                                    "truncated", "binary", "a_list"])
def test_a_bad_fewshot_cache_is_made_again_with_a_note_and_the_same_selection(dtd, damage, capsys):
    cache = dtd["cache"]
    if damage == "truncated":
        with open(cache, "rb") as f:
            data = f.read()
        with open(cache, "wb") as f:
            f.write(data[: len(data) // 2])
    elif damage == "binary":
        with open(cache, "r+b") as f:
            f.seek(20)
            f.write(b"\xff\xfe\x00\x81")
    elif damage == "a_list":
        with open(cache, "w") as f:
            json.dump([], f)
    else:
        change = {"one_class": _one_class, "duplicated": _duplicated, "other_shots": _other_shots,
                  "every_image": _every_image(os.path.join(dtd["folder"], SPLIT)), "outside": _outside}[damage]
        _edit_json(cache, change)
    capsys.readouterr()
    again = build(dtd["root"], "dtd", shots=SHOTS, seed=SEED)
    out = capsys.readouterr().out
    assert f"NOTE: the few-shot cache {cache} cannot be used" in out and "Sampling it again" in out
    assert [x.impath for x in again.train_x] == dtd["train"]
    assert [x.impath for x in again.val] == dtd["val"]
    with open(cache) as f:
        assert json.load(f) == dtd["original"]


def test_the_note_says_what_is_wrong(dtd, capsys):
    expected = {
        _one_class: "lacks 3 of the split's 4 classes",
        _duplicated: "duplicated row",
        _other_shots: "says num_shots 16, seed 99, but its name is for 2 shots, seed 1",
        _outside: "outside the dataset folder",
    }
    for change, words in expected.items():
        with open(dtd["cache"], "w") as f:
            json.dump(dtd["original"], f)
        _edit_json(dtd["cache"], change)
        capsys.readouterr()
        build(dtd["root"], "dtd", shots=SHOTS, seed=SEED)
        assert words in capsys.readouterr().out


def test_a_cache_asking_too_many_images_of_a_small_class_is_caught(dtd, capsys):
    # 4 shots but only 2 val images per class: the val list must hold all 2 of each class
    build(dtd["root"], "dtd", shots=4, seed=SEED)
    cache = dtd["cache"].replace(f"shot_{SHOTS}", "shot_4")
    _edit_json(cache, lambda d: d.__setitem__("val", d["val"][1:]))
    capsys.readouterr()
    build(dtd["root"], "dtd", shots=4, seed=SEED)
    assert "does not hold 4 images per class (label 0: 1 instead of 2)" in capsys.readouterr().out


def _split_path(tmp_path):
    return os.path.join(make_dataset("dtd", str(tmp_path)), SPLIT)


def test_an_empty_split_list_is_refused_and_no_empty_cache_is_written(tmp_path):
    path = _split_path(tmp_path)
    _edit_json(path, lambda d: d.__setitem__("train", []))
    with pytest.raises(FileContentError, match=f"train list of split file {path} is empty.*Fix: download"):
        build(tmp_path, "dtd", shots=SHOTS, seed=SEED)
    assert not os.path.exists(os.path.join(os.path.dirname(path), "split_fewshot"))


@pytest.mark.parametrize("row, problem", [
    (["banded/banded_0001.jpg", 0], "a row must be"),
    (["banded/banded_0001.jpg", "zero", "banded"], "label is not a non-negative integer"),
    (["../../../etc/passwd", 0, "banded"], "outside the dataset folder"),
    (["/etc/passwd", 0, "banded"], "outside the dataset folder"),
    (["banded/../../x.jpg", 0, "banded"], "outside the dataset folder"),
])
def test_malformed_and_escaping_split_rows_are_refused_with_the_row_and_the_file(tmp_path, row, problem):
    path = _split_path(tmp_path)
    _edit_json(path, lambda d: d["val"].__setitem__(1, row))
    with pytest.raises(FileContentError) as err:
        build(tmp_path, "dtd")
    message = str(err.value)
    assert f"Row 1 of the val list of {path}" in message and repr(row) in message and problem in message
    assert "Fix: download CoOp's split file again" in message


def test_binary_bytes_in_a_split_file_are_named(tmp_path):
    path = _split_path(tmp_path)
    with open(path, "r+b") as f:
        f.seek(40)
        f.write(b"\x80\x81\xfe")
    with pytest.raises(FileContentError, match=f"Split file {path} holds binary data.*Fix: download"):
        build(tmp_path, "dtd")


def test_subsample_new_on_a_one_class_dataset_says_why(tmp_path):
    path = _split_path(tmp_path)
    _edit_json(path, lambda d: [d.__setitem__(k, [r for r in d[k] if r[1] == 0]) for k in ("train", "val", "test")])
    assert build(tmp_path, "dtd", subsample="base").num_classes == 1
    with pytest.raises(ValueError, match="SUBSAMPLE_CLASSES new keeps no class: the training set has 1 class"):
        build(tmp_path, "dtd", subsample="new")


def test_a_missing_image_is_still_a_layout_error(tmp_path):
    path = _split_path(tmp_path)
    _edit_json(path, lambda d: d["test"].__setitem__(0, ["banded/none.jpg", 0, "banded"]))
    with pytest.raises(DatasetLayoutError, match="none.jpg"):
        build(tmp_path, "dtd")


# Config files ---------------------------------------------------------------------------------
def test_a_yaml_syntax_error_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("OPTIM:\n  LR: 0.1\n  MAX_EPOCH: [3\n")
    with pytest.raises(FileContentError) as err:
        merge_from_file(get_cfg(), str(path))
    assert f"Config file {path} is not valid YAML" in str(err.value) and f"in {path}, line 3" in str(err.value)
    path.write_bytes(b"OPTIM:\n  LR: \xff\xfe\n")
    with pytest.raises(FileContentError, match=f"Config file {path} holds binary data"):
        merge_from_file(get_cfg(), str(path))


def test_a_python_config_file_is_refused_unless_allowed(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.py"
    path.write_text(f"open({str(marker)!r}, 'w').close()\nfrom yacs.config import CfgNode\ncfg = CfgNode({{}})\n")
    monkeypatch.delenv(ALLOW_PY_ENV, raising=False)
    with pytest.raises(FileContentError, match=f"{path} is Python code.*{ALLOW_PY_ENV}=1"):
        merge_from_file(get_cfg(), str(path))
    assert not marker.exists()
    monkeypatch.setenv(ALLOW_PY_ENV, "1")
    merge_from_file(get_cfg(), str(path))
    assert marker.exists()


def test_a_class_name_too_long_for_the_text_encoder_names_class_template_and_count():
    long_name = "extraordinarily " * 40
    with pytest.raises(PromptTooLongError) as err:
        tokenize_classes("a photo of a {}, a type of texture.", ["banded", long_name])
    message = str(err.value)
    assert repr(long_name) in message and "'a photo of a {}, a type of texture.'" in message
    prompt = f"a photo of a {long_name}, a type of texture."
    count = len(SimpleTokenizer().encode(prompt)) + 2  # start and end tokens
    assert count > 77 and f"its prompt has {count} tokens, more than the 77" in message
