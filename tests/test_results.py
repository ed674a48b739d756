"""Reading run folders (metrics.json, Dassl logs) and the results tables of parse_test_res.py."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clipfit.experiments import results
from clipfit.experiments.results import classify, find_runs, harmonic_mean, parse_log, read_run
from clipfit.experiments.table_parts import render
from clipfit.experiments.tables import PaperReference, build_tables
from clipfit.training import run_folder

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
TRAIN_LOG = DATA / "dassl_train_log.txt"  # a CoOp/KgCoOp training log in Dassl's format
TEST_LOG = DATA / "dassl_test_log.txt"  # an eval-only log (base2new test on new classes)


def write_metrics(run_dir: Path, accuracy: float, **extra) -> Path:
    """A finished run as our trainers leave it: metrics.json (full precision)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"split": "test", "accuracy": accuracy, "error_rate": 100 - accuracy,
            "macro_f1": accuracy - 1, "total": 1000, "correct": round(accuracy * 10), **extra}
    (run_dir / "metrics.json").write_text(json.dumps(data))
    return run_dir


def write_log(run_dir: Path, accuracy: float, sample: Path = TRAIN_LOG, name: str = "log.txt",
              cut_at: str = "") -> Path:
    """A run with only a Dassl log: the sample log with ``accuracy``, cut before ``cut_at``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    text = re.sub(r"\* accuracy: [\d.]+%", f"* accuracy: {accuracy:.1f}%", sample.read_text())
    if cut_at:
        text = text[:text.index(cut_at)]
    (run_dir / name).write_text(text)
    return run_dir


def run_cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, str(REPO / "parse_test_res.py"), *args], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# --- Dassl logs -------------------------------------------------------------------------

def test_sample_train_log_is_read_like_coop():
    metrics = parse_log(str(TRAIN_LOG))
    assert metrics == {"total": 864, "correct": 692, "accuracy": 80.1, "error": 19.9,
                       "macro_f1": 80.0}
    assert parse_log(str(TRAIN_LOG), "Finish training")["accuracy"] == 80.1


def test_sample_test_log_is_read_and_thousands_separators_parse(tmp_path):
    assert parse_log(str(TEST_LOG))["accuracy"] == 56.2
    log = tmp_path / "log.txt"
    log.write_text(TEST_LOG.read_text().replace("* total: 828", "* total: 1,692"))
    assert parse_log(str(log))["total"] == 1692


@pytest.mark.parametrize("cut_at", ["Finish training", "* accuracy", "epoch [2/100]"])
def test_interrupted_training_log_has_no_result(tmp_path, cut_at):
    run = read_run(str(write_log(tmp_path / "seed1", 80.0, cut_at=cut_at)))
    assert run.status == "interrupted" and run.reason == "stopped before its first checkpoint"


def test_validation_results_before_finish_training_do_not_count(tmp_path):
    text = TRAIN_LOG.read_text()
    val_block = "Evaluate on the *val* set\n=> result\n* total: 96\n* accuracy: 99.0%\n"
    head, tail = text.split("Checkpoint saved to", 1)
    (tmp_path / "log.txt").write_text(head + val_block + "Checkpoint saved to" + tail)
    assert parse_log(str(tmp_path / "log.txt"))["accuracy"] == 80.1
    unfinished = head + val_block  # killed before "Finish training"
    (tmp_path / "log.txt").write_text(unfinished)
    assert parse_log(str(tmp_path / "log.txt")) is None


def test_metrics_json_is_preferred_over_the_log(tmp_path):
    run_dir = write_log(tmp_path / "seed1", 80.1)
    write_metrics(run_dir, 80.1234)
    run = read_run(str(run_dir))
    assert run.finished and run.accuracy == 80.1234 and run.source.endswith("metrics.json")
    assert run.metrics["error"] == pytest.approx(100 - 80.1234)


def test_a_run_resumed_by_dassl_is_read_from_its_newer_log(tmp_path):
    run_dir = write_log(tmp_path / "seed1", 80.0, cut_at="Finish training")
    old = time.time() - 100
    os.utime(run_dir / "log.txt", (old, old))
    write_log(run_dir, 77.7, name="log.txt-2024-01-01-10-00-00")
    run = read_run(str(run_dir))
    assert run.finished and run.accuracy == 77.7


def test_missing_and_empty_folders(tmp_path):
    assert read_run(str(tmp_path / "nope")).status == "missing"
    (tmp_path / "seed1").mkdir()
    assert read_run(str(tmp_path / "seed1")).status == "not-started"


def test_last_checkpoint_epoch(tmp_path):
    assert run_folder.last_checkpoint_epoch(str(tmp_path)) is None
    for epoch in (5, 10, 100):
        (tmp_path / "model").mkdir(exist_ok=True)
        (tmp_path / "model" / f"model.pth.tar-{epoch}").write_bytes(b"")
    (tmp_path / "model" / "model-best.pth.tar").write_bytes(b"")
    assert run_folder.last_checkpoint_epoch(str(tmp_path)) == 100


def test_last_progress_reads_epoch_and_eta():
    assert results.last_progress(str(TRAIN_LOG)) == "epoch 100/100, eta 0:00:00"


def test_classify_layouts():
    k = classify("/o/base2new/test_new/dtd/shots_16/KgCoOp/vit_b16_ep100_ctxv1/seed2")
    assert (k.setting, k.role, k.dataset, k.shots, k.trainer, k.seed) == (
        "base2new", "new", "dtd", 16, "KgCoOp", 2)
    assert classify("/o/base2new/train_base/dtd/shots_16_alpha0/ClipFit/c/seed1").shots == 16
    assert classify("/o/fewshot/dtd/shots_4/CLIPFit/vit_b16/seed1").role == "test"
    k = classify("/o/xd/test/eurosat/shots_16/CLIPFit/vit_b16_ep10/seed3")
    assert (k.setting, k.role, k.dataset) == ("xd", "target", "eurosat")
    assert classify("/o/xd/train/imagenet/shots_16/CLIPFit/c/seed1").role == "source"
    assert classify("/o/dg/test/imagenet_r/shots_16/CLIPFit/c/seed1").role == "target"
    assert classify("/o/dtd/CoOp/vit_b16_16shots/seed1") is None


# --- CoOp's interface -------------------------------------------------------------------

def test_coop_single_experiment_output(tmp_path):
    exp = tmp_path / "exp"
    accs = [80.1, 81.3, 79.6]
    for seed, acc in enumerate(accs, 1):
        write_log(exp / f"seed{seed}", acc)
    write_log(exp / "seed4", 50.0, cut_at="Finish training")
    out = run_cli(str(exp))
    assert f"Parsing files in {exp}" in out
    assert f"file: {exp / 'seed2' / 'log.txt'}. accuracy: 81.30%. " in out
    assert f"* accuracy: {np.mean(accs):.2f}% +- {np.std(accs):.2f}%" in out
    assert "Skipped (not averaged):" in out and "seed4" in out
    ci = 1.96 * np.std(accs) / np.sqrt(3)
    assert f"+- {ci:.2f}%" in run_cli(str(exp), "--ci95")


def test_coop_test_log_keyword_and_multi_exp(tmp_path):
    for exp, accs in (("a", [56.2, 58.0]), ("b", [60.0, 62.0])):
        for seed, acc in enumerate(accs, 1):
            write_log(tmp_path / exp / f"seed{seed}", acc, sample=TEST_LOG)
    out = run_cli(str(tmp_path / "a"), "--test-log", "--keyword", "macro_f1")
    assert "* macro_f1: 54.90% +- 0.00%" in out
    out = run_cli(str(tmp_path), "--multi-exp", "--test-log")
    assert "Average performance" in out and f"* accuracy: {np.mean([57.1, 61.0]):.2f}%" in out


def test_coop_mode_reads_full_precision_metrics_json(tmp_path):
    write_metrics(tmp_path / "seed1", 80.123)
    write_metrics(tmp_path / "seed2", 80.456)
    out = run_cli(str(tmp_path))
    assert "* accuracy: 80.29% +- 0.17%" in out and "metrics.json" in out


# --- tables -----------------------------------------------------------------------------

def _b2n(root: Path, role: str, dataset: str, trainer: str, cfg: str, seed: int) -> Path:
    part = {"base": "train_base", "new": "test_new"}[role]
    return root / "base2new" / part / dataset / "shots_16" / trainer / cfg / f"seed{seed}"


@pytest.fixture
def base2new_root(tmp_path):
    """CLIPFit (metrics.json) and KgCoOp (logs only) on dtd and eurosat, with gaps."""
    rng = np.random.default_rng(0)
    for dataset in ("eurosat", "dtd"):
        for seed in (1, 2, 3):
            for role, level in (("base", 80.0), ("new", 60.0)):
                write_metrics(_b2n(tmp_path, role, dataset, "CLIPFit", "vit_b16", seed),
                              level + rng.uniform(0, 5))
                write_log(_b2n(tmp_path, role, dataset, "KgCoOp", "vit_b16_ep100_ctxv1", seed),
                          level - 2 + seed, sample=TRAIN_LOG if role == "base" else TEST_LOG)
    # gaps: CLIPFit dtd new seed3 missing; KgCoOp eurosat base seed2 interrupted
    import shutil
    shutil.rmtree(_b2n(tmp_path, "new", "dtd", "CLIPFit", "vit_b16", 3))
    write_log(_b2n(tmp_path, "base", "eurosat", "KgCoOp", "vit_b16_ep100_ctxv1", 2), 1.0,
              cut_at="Finish training")
    (_b2n(tmp_path, "base", "eurosat", "KgCoOp", "vit_b16_ep100_ctxv1", 2) /
     "metrics.json").unlink(missing_ok=True)
    return tmp_path


def _records(root, setting="base2new", **kw):
    tables = build_tables(setting, find_runs(str(root)), **kw)
    return tables, {(r["method"], r["dataset"], r["metric"]): r for t in tables for r in t.records}


def test_base2new_table_means_std_hm_and_gaps(base2new_root):
    tables, rec = _records(base2new_root)
    assert len(tables) == 1
    runs = find_runs(str(base2new_root))
    base = [r.accuracy for k, r in runs.items()
            if (k.trainer, k.dataset, k.role) == ("CLIPFit", "dtd", "base")]
    assert rec[("CLIPFit", "dtd", "base")]["mean"] == pytest.approx(np.mean(base))
    assert rec[("CLIPFit", "dtd", "base")]["std"] == pytest.approx(np.std(base))
    assert rec[("CLIPFit", "dtd", "new")]["n"] == 2  # seed 3 missing
    for trainer in ("CLIPFit", "KgCoOp"):
        for dataset in ("dtd", "eurosat", "average"):
            b, n = (rec[(trainer, dataset, m)]["mean"] for m in ("base", "new"))
            assert rec[(trainer, dataset, "hm")]["mean"] == pytest.approx(2 * b * n / (b + n))
    avg = rec[("CLIPFit", "average", "base")]["mean"]
    assert avg == pytest.approx(np.mean([rec[("CLIPFit", d, "base")]["mean"]
                                         for d in ("dtd", "eurosat")]))
    # the interrupted KgCoOp run is not averaged in
    assert rec[("KgCoOp", "eurosat", "base")]["values"] == [79.0, 81.0]
    incomplete = "\n".join(tables[0].incomplete)
    assert "CLIPFit DTD new seed 3: missing" in incomplete
    assert "KgCoOp EuroSAT base seed 2: interrupted, stopped before its first checkpoint" in incomplete


def test_base2new_text_table_has_trainer_groups_and_printed_hm(base2new_root):
    out = run_cli("--base2new", str(base2new_root / "base2new"))
    lines = out.splitlines()
    header = next(ln for ln in lines if ln.lstrip().startswith("Dataset"))
    assert header.split() == ["Dataset", "Method", "Base", "New", "HM"]  # a row per method: fits 100 columns
    dtd = next(i for i, ln in enumerate(lines) if ln.startswith("DTD"))
    assert lines[dtd].split()[1] == "KgCoOp" and lines[dtd + 1].split()[0] == "CLIPFit"  # the paper's order
    assert lines[dtd + 1].count("[2]") == 1 and "[2]" not in lines[dtd]  # CLIPFit's New: 2 seeds only
    assert "Incomplete runs (2, not in the means)" in out
    assert "over seeds 1, 2, 3" in out


def test_printed_hm_equals_hm_of_printed_means(base2new_root):
    out = run_cli("--base2new", str(base2new_root), "--format", "markdown")
    for line in out.splitlines():
        if line.startswith("| DTD") or line.startswith("| Average"):
            cells = [c.strip() for c in line.strip("|").split("|")][1:]
            for base, new, hm in zip(cells[0::3], cells[1::3], cells[2::3]):
                b, n, h = (float(c.split()[0]) for c in (base, new, hm))
                assert h == pytest.approx(harmonic_mean(b, n), abs=0.011)


def test_csv_and_json_formats(base2new_root):
    out = run_cli("--base2new", str(base2new_root), "--format", "csv")
    header, *rows = out.strip().splitlines()
    assert header.startswith("setting,shots,method,trainer,cfg,dataset,role,metric,mean,std")
    assert any(r.startswith("base2new,16,CLIPFit,CLIPFit,vit_b16,dtd,,base,") for r in rows)
    data = json.loads(run_cli("--base2new", str(base2new_root), "--format", "json"))
    assert data[0]["setting"] == "base2new" and len(data[0]["incomplete"]) == 2


def test_compare_paper_shows_the_papers_numbers(base2new_root):
    out = run_cli("--base2new", str(base2new_root), "--compare-paper", "--format", "csv")
    assert "base2new,16,CLIPFit (paper),CLIPFit,,dtd,,hm,71.56" in out
    assert "base2new,16,KgCoOp (paper),KgCoOp,,average,,base,80.73" in out


def test_fewshot_xd_and_dg_tables(tmp_path):
    def run(*parts):
        return tmp_path.joinpath(*parts[:-1], f"seed{parts[-1]}")

    for seed in (1, 2):
        for shots in (1, 16):
            for d in ("dtd", "eurosat"):
                write_metrics(run("fewshot", d, f"shots_{shots}", "CLIPFit", "vit_b16", seed),
                              50.0 + shots + seed)
        # ImageNet source models: CLIPFit's beta-8 one for xd, its beta-2 one for dg;
        # CoOp's one model serves both
        for trainer, cfg, acc in (("CLIPFit", "ep10", 70.0), ("CLIPFit", "ep10_beta2", 72.0),
                                  ("CoOp", "c", 71.0)):
            write_metrics(run("xd", "train", "imagenet", "shots_16", trainer, cfg, seed), acc + seed)
        write_metrics(run("xd", "test", "eurosat", "shots_16", "CLIPFit", "ep10", seed), 40.0 + seed)
        write_metrics(run("xd", "test", "eurosat", "shots_16", "CoOp", "c", seed), 30.0)
        for d, acc in (("imagenetv2", 60.0), ("imagenet_sketch", 50.0)):
            write_metrics(run("dg", "test", d, "shots_16", "CLIPFit", "ep10_beta2", seed), acc + seed)
        write_metrics(run("dg", "test", "imagenetv2", "shots_16", "CoOp", "c", seed), 64.0)
    _, rec = _records(tmp_path, "fewshot")
    few = [r for r in build_tables("fewshot", find_runs(str(tmp_path)))[0].records
           if r["dataset"] == "average"]
    assert sorted(r["mean"] for r in few) == [52.5, 67.5]
    tables, rec = _records(tmp_path, "xd")
    assert rec[("CLIPFit", "imagenet", "accuracy")]["mean"] == 71.5  # not the beta-2 source
    assert rec[("CLIPFit", "average", "accuracy")]["mean"] == 41.5  # targets only
    assert rec[("CoOp", "imagenet", "accuracy")]["mean"] == 72.5
    tables, rec = _records(tmp_path, "dg")
    assert rec[("CLIPFit", "imagenet", "accuracy")]["mean"] == 73.5  # the beta-2 source
    assert rec[("CLIPFit", "average", "accuracy")]["mean"] == pytest.approx((73.5 + 61.5 + 51.5) / 3)
    assert rec[("CoOp", "imagenet", "accuracy")]["mean"] == 72.5
    assert "ImageNet-Sketch" in render(tables, "table")
    out = run_cli("--dg", str(tmp_path / "dg"))  # finds the sources under the sibling xd/
    assert re.search(r"CoOp\s+72\.50 ± 0\.50\s+64\.00 ± 0\.00", out)


def test_no_runs_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "parse_test_res.py"), "--base2new",
                           str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode != 0 and "No base2new runs under" in proc.stderr


def test_compare_paper_gives_the_difference_beside_each_number(base2new_root):
    from clipfit.experiments.paper import lookup

    _, rec = _records(base2new_root, paper=PaperReference())
    for dataset, key in (("dtd", "dtd"), ("average", "Average")):
        for metric in ("base", "new", "hm"):
            ours = rec[("CLIPFit", dataset, metric)]["mean"]
            paper = rec[("CLIPFit (paper)", dataset, metric)]
            assert paper["mean"] == lookup("CLIPFit", "base2new", key, metric)
            if dataset == "dtd":
                assert paper["delta"] == pytest.approx(ours - paper["mean"])
            else:  # the paper's Average is over 11 datasets, ours over fewer: shown, not compared
                assert paper["delta"] is None
    out = run_cli("--base2new", str(base2new_root), "--compare-paper")
    lines = out.splitlines()
    dtd = next(i for i, line in enumerate(lines) if line.startswith("DTD"))
    paper_row = next(line for line in lines[dtd:] if "CLIPFit (paper)" in line)
    delta = rec[("CLIPFit", "dtd", "hm")]["mean"] - 71.56
    assert f"71.56 ({delta:+.2f})" in paper_row
    assert "yours minus the paper's" in out and "no difference is shown for it" in out


def _record(run_dir: Path, **settings) -> None:
    """run.json as train.py writes it, with the identity ``settings``."""
    (run_dir / "run.json").write_text(json.dumps({
        "format": run_folder.RECORD_FORMAT, "kind": "train", "state": "finished",
        "settings": {"DATASET.NAME": "DescribableTextures", "OPTIM.MAX_EPOCH": 10, **settings}}))


def test_seeds_with_other_settings_and_runs_found_twice_are_kept_out_of_the_means(tmp_path):
    """Issue 25: seed 1 trained with OPTIM.MAX_EPOCH 40 is not averaged with seeds 2-3 at 10; a
    root one folder too high finds the demo's run beside the user's and says so."""
    accs = {1: 90.0, 2: 60.0, 3: 62.0}
    for seed, acc in accs.items():
        for role in ("base", "new"):
            _record(write_metrics(_b2n(tmp_path / "mine", role, "dtd", "CLIPFit", "vit_b16", seed), acc),
                    SEED=seed, **({"OPTIM.MAX_EPOCH": 40} if seed == 1 else {}))
    kept, left_out = results.screen_runs(results.find_all_runs(str(tmp_path / "mine")))
    assert sorted(k.seed for k in kept if k.role == "base") == [2, 3]
    assert [k.seed for k in left_out] == [1, 1]
    assert all("OPTIM.MAX_EPOCH 40 (the others: 10)" in why for why in left_out.values())
    out = run_cli("--base2new", str(tmp_path / "mine"), "--format", "markdown")
    row = next(ln for ln in out.splitlines() if ln.startswith("| DTD"))
    assert f"{np.mean([60.0, 62.0]):.2f} ± {np.std([60.0, 62.0]):.2f}" in row  # seed 1 not in the mean
    assert "Left out of the means: CLIPFit/vit_b16 dtd seed 1 (base2new base): other settings than the " \
           "other seeds: OPTIM.MAX_EPOCH 40 (the others: 10)" in out
    coop = run_cli(str(tmp_path / "mine" / "base2new" / "train_base" / "dtd" / "shots_16" / "CLIPFit" / "vit_b16"))
    assert f"* accuracy: {np.mean([60.0, 62.0]):.2f}%" in coop and "seed1: other settings" in coop

    write_metrics(_b2n(tmp_path / "demo", "base", "dtd", "CLIPFit", "vit_b16", 2), 30.0)  # a second root
    out = run_cli("--base2new", str(tmp_path), "--format", "markdown")
    assert "Left out of the means: CLIPFit/vit_b16 dtd seed 2 (base2new base): found 2 times: " \
           f"{_b2n(tmp_path / 'demo', 'base', 'dtd', 'CLIPFit', 'vit_b16', 2)}" in out
    assert "dtd seed 1 (base2new base): no settings shared by most seeds: OPTIM.MAX_EPOCH 40" in out
    assert "dtd seed 3 (base2new base): no settings shared by most seeds: OPTIM.MAX_EPOCH 10" in out
    row = next(ln for ln in out.splitlines() if ln.startswith("| DTD"))
    assert "90.00" not in row and "62.00" not in row  # base: seed 2 twice, seeds 1 and 3 disagree
