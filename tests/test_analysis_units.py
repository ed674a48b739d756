"""The analysis pieces without a training run: layer naming, the gradient recorder, the CLI."""
from __future__ import annotations

import csv
import shutil

import pytest
import torch

from clipfit.analysis.__main__ import build_parser, main
from clipfit.analysis.changes import squared_change
from clipfit.analysis.layers import describe
from clipfit.analysis.tsne import auto_perplexity
from clipfit.methods.clip_loader import load_clip
from clipfit.training.grad_stats import GradStatsRecorder, load_grad_stats
from clipfit.methods.clipfit import CLIPFitModel
from clipfit.methods.params import select_parameters
from clipfit.testing.tiny_clip import build_vit_b16, save_tiny_clip



def test_layers_of_vit_b16_follow_the_paper():
    names = list(select_parameters(build_vit_b16("meta")).named_parameters())
    infos = describe(names)
    series = {}
    for i in infos:
        series.setdefault(i.series, []).append(i)
    assert list(series) == ["text mlp.c_proj.bias", "image LayerNorm gain", "image LayerNorm bias"]
    assert [i.label for i in series["text mlp.c_proj.bias"]] == [str(b) for b in range(12)]
    gains = series["image LayerNorm gain"]
    assert len(gains) == 26 and [g.position for g in gains] == list(range(26))
    assert gains[0].label == "ln_pre" and gains[1].label == "0.ln_1" and gains[2].label == "0.ln_2"
    assert gains[-1].label == "ln_post" and gains[-2].label == "11.ln_2"
    assert all(g.name.endswith("weight") and g.kind == "gain" for g in gains)


def test_layers_of_a_resnet_are_batchnorms(tmp_path):
    model = load_clip("RN50", save_tiny_clip(str(tmp_path / "rn.pt"), arch="rn", image_resolution=64))
    infos = describe(list(select_parameters(model).named_parameters()))
    image = [i for i in infos if i.encoder == "image"]
    assert {i.series for i in image} == {"image BatchNorm gain", "image BatchNorm bias"}
    assert image[0].label == "bn1" and any(i.label == "layer1.0.downsample.1" for i in image)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """Gradient statistics of 5 SGD steps of CLIPFit on a tiny CLIP, and the values seen by hand."""
    tmp_path = tmp_path_factory.mktemp("grad_stats")
    steps = 5
    clip_model = load_clip("ViT-B/16", save_tiny_clip(str(tmp_path / "tiny.pt")))
    model = CLIPFitModel(clip_model, ["cat", "dog", "bird"], "a photo of a {}.")
    params = model.learned_parameters()
    initial = {n: p.detach().clone() for n, p in params.items()}
    recorder = GradStatsRecorder(params)
    optim = torch.optim.SGD(params.values(), lr=0.1)
    gen = torch.Generator().manual_seed(0)
    grads, changes = [], []
    for it in range(steps):
        images, labels = torch.randn(4, 3, 32, 32, generator=gen), torch.randint(0, 3, (4,), generator=gen)
        loss, _ = model.loss(images, labels)
        optim.zero_grad()
        loss.backward()
        recorder.record(it)
        grads.append({n: float((p.grad.double() ** 2).sum()) for n, p in params.items()})
        changes.append({n: float(((p.detach().double() - initial[n].double()) ** 2).sum()) for n, p in params.items()})
        optim.step()
    recorder.save(str(tmp_path))
    return tmp_path / "grad_stats.pt", grads, changes


def _run_dir_with(stats_file, tmp_path):
    shutil.copy(stats_file, tmp_path / "grad_stats.pt")
    return tmp_path


def test_grad_stats_recorder_values(recorded):
    stats_file, grads, changes = recorded
    stats = load_grad_stats(str(stats_file.parent))  # weights_only load
    assert stats["iterations"].tolist() == list(range(5))
    for j, name in enumerate(stats["names"]):
        assert stats["grad_sq"][:, j].tolist() == pytest.approx([g[name] for g in grads], rel=1e-5)
        assert stats["change"][:, j].tolist() == pytest.approx([c[name] for c in changes], rel=1e-5, abs=1e-12)
    assert stats["change"][0].abs().sum() == 0 and (stats["change"][-1] > 0).all()


def test_grads_subcommand_plots_and_sums(recorded, tmp_path, capsys):
    stats_file, grads, _ = recorded
    _run_dir_with(stats_file, tmp_path)
    assert main(["grads", str(tmp_path)]) == 0, capsys.readouterr().err
    out = tmp_path / "analysis"
    with open(out / "grads.png", "rb") as f:
        assert f.read(4) == b"\x89PNG"
    with open(out / "grads_layers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        assert float(r["grad_sq_sum"]) == pytest.approx(sum(g[r["tensor"]] for g in grads), rel=1e-5)
        assert int(r["iterations"]) == 5
    with open(out / "grads_iterations.csv", newline="") as f:
        table = list(csv.reader(f))
    assert len(table) == 6 and table[0][0] == "iteration"


def test_grads_leaves_out_non_finite_iterations(recorded, tmp_path):
    _run_dir_with(recorded[0], tmp_path)
    stats = torch.load(tmp_path / "grad_stats.pt", weights_only=True)
    stats["grad_sq"][2, 0] = float("inf")  # an AMP step the loss scaler skipped
    torch.save(stats, tmp_path / "grad_stats.pt")
    assert main(["grads", str(tmp_path)]) == 0
    with open(tmp_path / "analysis" / "grads_layers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    expected = float(stats["grad_sq"][[0, 1, 3, 4], 0].sum())
    assert float(rows[0]["grad_sq_sum"]) == pytest.approx(expected) and rows[0]["iterations"] == "4"


def test_squared_change_in_the_precision_of_the_run():
    pre = torch.tensor([1.0001, 0.5, -2.0])
    assert squared_change(pre.half(), pre) == 0.0  # an fp16 run that never moved this tensor
    assert squared_change(torch.tensor([1.0, 0.5, 0.0]), pre) == pytest.approx(0.0001 ** 2 + 4.0, rel=1e-6)


def test_perplexity_stays_below_the_number_of_images():
    assert auto_perplexity(12) < 12 and auto_perplexity(5) < 5
    assert auto_perplexity(10_000) == 30.0


@pytest.mark.parametrize("command,words", [
    ("changes", ["CKPT_DIR", "--labels", "Figures 3, 7"]),
    ("grads", ["RUN_DIR", "LOG_GRAD_STATS"]),
    ("tsne", ["--split", "--max-images", "--perplexity"]),
    ("importance", ["--k", "--base-config", "TEXT_LAYERS", "ln_pre"]),
])
def test_every_subcommand_has_help(command, words, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([command, "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert all(w in text for w in words), text
