"""``python -m clipfit.data.doctor`` on fabricated data roots, healthy and corrupted."""

import json
import os

import pytest

import datasets  # noqa: F401  (registers the loaders)
from clipfit.training.config import get_cfg
from clipfit.data.doctor import main
from clipfit.engine import build_dataset, set_random_seed
from clipfit.errors import UnknownNameError
from clipfit.testing.fake_datasets import make_dataset


def doctor(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr().out
    return rc, out.splitlines()


def cache_fewshot(root, seed):
    """Run the DTD loader once with 2 shots, which writes the cache for ``seed``."""
    cfg = get_cfg()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.DATASET.NUM_SHOTS, cfg.SEED = (
        str(root),
        "DescribableTextures",
        2,
        seed,
    )
    set_random_seed(seed)
    build_dataset(cfg)


def lines_about(lines, dataset):
    return [line for line in lines if line.startswith(f"[{dataset}]")]


def test_a_healthy_root_has_no_problems_and_a_summary_table(tmp_path, capsys):
    for name in ("dtd", "oxford_pets", "imagenet_r"):
        make_dataset(name, str(tmp_path), per_class=40)  # 20+ training images per class
    rc, lines = doctor(capsys, "--root", tmp_path, "--skip-counts")
    assert rc == 0 and lines[-1] == "No problems found."
    row = next(line for line in lines if line.startswith("DescribableTextures"))
    assert row.split()[1:8] == ["dtd/", "ok", "4", "80", "32", "48", "0"]
    assert next(line for line in lines if line.startswith("Caltech101")).split()[2] == "absent"

    rc, lines = doctor(capsys, "--root", tmp_path, "--dataset", "dtd")  # sizes compared with CoOp's
    assert rc == 1
    assert lines_about(lines, "DescribableTextures") == [
        "[DescribableTextures] sizes differ from the published ones: classes 4 (published 47), train 80 "
        "(published 2,820), val 32 (published 1,128), test 48 (published 1,692). Fix: use CoOp's split file "
        "and a complete copy of the dataset (or pass --skip-counts for a deliberate subset)."
    ]


DEAD_PID = 4_999_999  # above Linux's largest pid (2**22): no process has it


def test_corruptions_are_reported_one_line_each_with_the_fix(tmp_path, capsys):
    dtd = make_dataset("dtd", str(tmp_path), per_class=40)
    cache_fewshot(tmp_path, 1)
    cache_fewshot(tmp_path, 2)
    fewshot = os.path.join(dtd, "split_fewshot")
    with open(os.path.join(fewshot, "shot_2-seed_1.json")) as f:
        cache = json.load(f)
    with open(os.path.join(dtd, "split_zhou_DescribableTextures.json")) as f:
        cache["train"][0] = json.load(f)["test"][0]  # an image the split holds out for testing
    with open(os.path.join(fewshot, "shot_2-seed_1.json"), "w") as f:
        json.dump(cache, f)
    with open(os.path.join(fewshot, "shot_2-seed_2.json"), "w") as f:
        f.write('{"train": [')
    leftover = os.path.join(fewshot, f".shot_4-seed_1.json.{DEAD_PID}.tmp")
    open(leftover, "w").close()
    os.utime(leftover, (0, 0))  # old: a killed write, not one in progress
    broken = os.path.join(dtd, "images", "bubbly", "bubbly_0003.jpg")
    with open(broken, "wb") as f:
        f.write(b"\xff\xd8 not really a jpeg")

    pets = make_dataset("oxford_pets", str(tmp_path), per_class=40)
    os.remove(os.path.join(pets, "images", "Abyssinian_1.jpg"))
    eurosat = make_dataset("eurosat", str(tmp_path), per_class=40, with_split=False)

    rc, lines = doctor(
        capsys,
        "--root",
        tmp_path,
        "--skip-counts",
        "--max-images",
        0,
        "--dataset",
        "dtd",
        "oxford_pets",
        "EuroSAT",
        "food101",
    )
    assert rc == 1
    about_dtd = lines_about(lines, "DescribableTextures")
    assert len(about_dtd) == 4
    assert any(f"unreadable image {broken}" in line and "Fix: replace it" in line for line in about_dtd)
    assert any(
        "shot_2-seed_1.json: 1 of its train images are not in the split's train set" in line
        and "Fix: delete it" in line
        for line in about_dtd
    )
    assert any("shot_2-seed_2.json is not valid JSON" in line for line in about_dtd)
    assert any(".tmp is a partial file" in line for line in about_dtd)

    about_pets = lines_about(lines, "OxfordPets")
    assert len(about_pets) == 1 and "do not exist" in about_pets[0] and "Abyssinian_1.jpg" in about_pets[0]

    about_eurosat = lines_about(lines, "EuroSAT")
    assert "split_zhou_EuroSAT.json is missing" in about_eurosat[0] and "download CoOp's" in about_eurosat[0]
    assert not os.path.exists(os.path.join(eurosat, "split_zhou_EuroSAT.json"))  # the doctor writes nothing
    assert lines_about(lines, "Food101") == [
        f"[Food101] {os.path.join(str(tmp_path), 'food-101')} not found. "
        'Fix: prepare it as DATASETS.md, section "Food101", explains.'
    ]


def test_small_and_missing_classes_are_named(tmp_path, capsys):
    dtd = make_dataset("dtd", str(tmp_path), per_class=10)
    split_file = os.path.join(dtd, "split_zhou_DescribableTextures.json")
    with open(split_file) as f:
        split = json.load(f)
    split["test"] = [row for row in split["test"] if row[2] != "braided"]
    with open(split_file, "w") as f:
        json.dump(split, f)
    rc, lines = doctor(capsys, "--root", tmp_path, "--skip-counts")
    assert rc == 1
    assert lines_about(lines, "DescribableTextures") == [
        "[DescribableTextures] 4 class(es) have fewer than 16 training images: "
        "banded (5), blotchy (5), braided (5), "
        "bubbly (5). Fix: add images; until then 16-shot runs keep all the images these classes have.",
        "[DescribableTextures] class(es) without test images: braided. "
        "Fix: use CoOp's split file, or give every "
        "class some images in this split.",
    ]


def test_an_empty_root_is_not_a_healthy_one(tmp_path, capsys):
    rc, lines = doctor(capsys, "--root", tmp_path)
    assert rc == 1 and "No problems found." not in lines
    assert any("No dataset found" in line and "nothing was checked" in line and "DATASETS.md" in line
               and f"python -m clipfit.toyworld make-data --root {tmp_path}" in line for line in lines)


def draw_toy(root):
    from clipfit.toyworld.downstream import make_dataset as draw

    draw("toy_shapes", str(root), per_class={"train": 16, "val": 1, "test": 1})


def test_a_root_of_toy_datasets_is_checked(tmp_path, capsys):
    draw_toy(tmp_path)
    rc, lines = doctor(capsys, "--root", tmp_path)
    assert rc == 0 and lines[-1] == "No problems found." and not any("No dataset found" in x for x in lines)
    row = next(line for line in lines if line.startswith("ToyShapes"))
    assert row.split()[1:7] == ["toy_shapes/", "ok", "32", "512", "32", "32"]
    assert next(line for line in lines if line.startswith("ToyCold")).split()[2] == "absent"

    rc, lines = doctor(capsys, "--root", tmp_path, "--dataset", "toy_shapes")  # no published sizes to compare
    assert rc == 0 and [line.split()[0] for line in lines[2:-1]] == ["ToyShapes"]
    os.remove(os.path.join(tmp_path, "toy_shapes", "split_zhou_ToyShapes.json"))
    rc, lines = doctor(capsys, "--root", tmp_path, "--dataset", "ToyShapes")
    assert rc == 1 and "split_zhou_ToyShapes.json is missing" in lines_about(lines, "ToyShapes")[0]


@pytest.mark.parametrize("typo, suggestion", [("dtdd", "dtd"), ("toy_shapez", "toy_shapes"), ("EuroSat", "eurosat")])
def test_unknown_dataset_name_is_rejected_with_the_closest_one(typo, suggestion, tmp_path):
    with pytest.raises(UnknownNameError, match=f"Unknown dataset '{typo}'. Did you mean {suggestion}\\?"):
        main(["--root", str(tmp_path), "--dataset", typo])
    from clipfit.data.__main__ import main as data_command

    assert data_command(["doctor", "--root", str(tmp_path), "--dataset", typo]) == 2  # a user error: exit 2
