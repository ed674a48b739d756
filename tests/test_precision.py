"""PREC bf16 and TRAIN.COMPILE for every trainer (clipfit.training.precision), on a fabricated DTD
with a tiny random CLIP (32 px). Which parity holds in which mode: docs/precision.md."""
from __future__ import annotations

import math
import shutil

import pytest
import torch

from clipfit import engine
from clipfit.training import precision as P
from clipfit.training.base_trainer import CLIPTrainer
from clipfit.training.cli import build_parser, import_plugins, setup_cfg
from clipfit.training.config import cfg_value
from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import build_tiny_clip, save_tiny_clip
from _helpers import tiny_train_argv

U = 2.0 ** -8  # bf16 keeps 8 significant bits (7 stored + the implicit one): unit roundoff 2^-8
TRAINING_FREE = {"ZeroshotCLIP", "TipAdapter"}
BACKEND = "eager"  # dynamo's graph capture with eager kernels: every trainer's graphs, cheaply
EXTRA_OPTS = {"MaPLe": ("TRAINER.MAPLE.PROMPT_DEPTH", "2")}  # the tiny CLIP has 2 layers


def _project_trainers():
    import_plugins()
    return sorted(n for n in engine.TRAINER_REGISTRY.registered_names()
                  if issubclass(engine.TRAINER_REGISTRY.get(n), CLIPTrainer))


TRAINERS = _project_trainers()


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("precision")
    make_dataset("dtd", str(root / "data"), n_classes=4, per_class=10)
    return {"root": str(root / "data"), "clip": save_tiny_clip(str(root / "tiny.pt"))}


def _trainer(assets, out, name, prec, *opts, flags=(), epochs=1):
    key = engine.TRAINER_REGISTRY.get(name).prec_key
    argv = tiny_train_argv(assets, name, "", out, key, prec, *EXTRA_OPTS.get(name, ()), *opts,
                           flags=flags, epochs=epochs)
    cfg = setup_cfg(build_parser().parse_args(argv))
    engine.set_random_seed(cfg.SEED)
    return engine.build_trainer(cfg)


def _on_a_gpu(monkeypatch):
    """Let fp16 and amp run on the CPU: the precision fallback of CPU-only machines is off."""
    monkeypatch.setattr(CLIPTrainer, "_resolve_precision", lambda self: cfg_value(self.cfg, self.prec_key))


def _cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: fpu sse avx2 {' '.join(flags)}\n\nprocessor\t: 1\n")
    return str(path)


# Which precision runs ------------------------------------------------------------------------
@pytest.mark.parametrize("flags", [("avx512_bf16",), ("amx_bf16", "avx512_bf16")])
def test_bf16_on_a_cpu_with_bf16_instructions_runs_silently(tmp_path, capsys, flags):
    assert P.resolve("K.PREC", "bf16", torch.device("cpu"), _cpuinfo(tmp_path, flags)) == "bf16"
    assert capsys.readouterr().out == ""


def test_bf16_on_a_cpu_without_bf16_instructions_runs_with_one_warning(tmp_path, capsys):
    assert P.resolve("K.PREC", "bf16", torch.device("cpu"), _cpuinfo(tmp_path, ["avx512f"])) == "bf16"
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("WARNING: K.PREC bf16")
    assert "avx512_bf16 or amx_bf16" in out[0] and "emulates" in out[0] and "K.PREC fp32" in out[0]
    assert P.resolve("K.PREC", "bf16", torch.device("cpu"), str(tmp_path / "missing")) == "bf16"
    assert "cannot read" in capsys.readouterr().out


def test_fp16_and_amp_still_fall_back_to_fp32_without_a_gpu(capsys):
    for requested in ("fp16", "amp"):
        assert P.resolve("K.PREC", requested, torch.device("cpu")) == "fp32"
        assert f"K.PREC {requested} needs a CUDA GPU" in capsys.readouterr().out
    with pytest.raises(ValueError, match="choose one of fp16, amp, bf16, fp32"):
        P.resolve("K.PREC", "bfloat16", torch.device("cpu"))


@pytest.mark.parametrize("native, emulated", [(False, False), (False, True), (True, True)])
def test_bf16_on_a_gpu_is_refused_where_it_cannot_run_and_warned_where_emulated(monkeypatch, capsys, native, emulated):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True:
                        emulated if including_emulation else native)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    device = torch.device("cuda")
    if not emulated:
        with pytest.raises(P.PrecisionError, match="the GPU Tesla V100 cannot run bf16. Set K.PREC amp"):
            P.resolve("K.PREC", "bf16", device)
        return
    assert P.resolve("K.PREC", "bf16", device) == "bf16"
    out = capsys.readouterr().out
    assert ("emulates it" in out and "7.0" in out) == (not native)
    with pytest.raises(P.PrecisionError, match="not on mps"):
        P.resolve("K.PREC", "bf16", torch.device("mps"))


# bf16 in every trainer -------------------------------------------------------------------------
@pytest.mark.parametrize("name", TRAINERS)
def test_bf16_trains_every_trainer_under_autocast_with_fp32_tensors_and_optimiser_state(assets, tmp_path, name):
    trainer = _trainer(assets, tmp_path, name, "bf16")
    assert trainer.precision == "bf16" and trainer.scaler is None  # bf16 needs no loss scaling
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    batch = next(iter(trainer.train_loader_x))
    image, _ = trainer.parse_batch_train(batch)
    with trainer.autocast():
        assert trainer.model.clip.encode_image(image).dtype == torch.bfloat16  # the encoders run in bf16
    if name in TRAINING_FREE:
        return
    learned = trainer.model.learned_parameters()
    before = {n: p.detach().clone() for n, p in learned.items()}
    trainer.num_batches, trainer.epoch, trainer.batch_idx = 2, 0, 1
    summary = trainer.forward_backward(batch)
    assert math.isfinite(summary.get("loss", summary.get("xe_loss")))
    assert any(not torch.equal(p, before[n]) for n, p in learned.items())
    assert all(p.dtype == torch.float32 for p in learned.values())
    states = [t for s in trainer.optim.state.values() for t in s.values() if torch.is_tensor(t) and t.dim() > 0]
    assert states and all(t.dtype == torch.float32 for t in states)  # fp32 optimiser state


def test_bf16_checkpoint_records_its_precision_and_evaluates_in_every_precision(assets, tmp_path, monkeypatch, capsys):
    out = tmp_path / "bf16"
    trainer = _trainer(assets, out, "CLIPFit", "bf16", "OPTIM.LR", "0.05")
    trainer.train()
    path = out / "clipfit" / "model.pth.tar-1"
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert saved["meta"]["info"]["precision"] == "bf16"
    assert all(t.dtype == torch.float32 for t in saved["state_dict"].values())
    _on_a_gpu(monkeypatch)  # fp16 and amp evaluation as on a GPU
    flags = ["--eval-only", "--model-dir", str(out), "--load-epoch", "1"]
    for prec in ("fp32", "bf16", "fp16", "amp"):
        capsys.readouterr()
        evaluator = _trainer(assets, tmp_path / f"eval_{prec}", "CLIPFit", prec, flags=flags)
        evaluator.load_model(str(out), epoch=1)
        assert ("trained in bf16" in capsys.readouterr().out) == (prec != "bf16")
        for n, p in evaluator.model.learned_parameters().items():  # every tensor, cast to the evaluating dtype
            assert torch.equal(p.detach(), saved["state_dict"][n].to(p.dtype)), (prec, n)
        accuracy = evaluator.test()
        assert 0.0 <= accuracy <= 100.0


def test_bf16_per_batch_losses_stay_within_the_mantissa_tolerance(assets, tmp_path):
    """Per batch of a bf16 CLIPFit run, the bf16 loss against the fp32 loss at the same weights.

    Tolerance from the 8-bit mantissa (u = 2^-8). Autocast rounds both inputs of every matmul
    and convolution to bf16 and accumulates in fp32, so each such stage adds a relative error of
    rms u * sqrt(2/3) (two operands, each rounded with an error uniform in +-u). Errors of the D
    stages along the deepest path are independent, so the features carry a relative error of
    rms e = u * sqrt(2D/3); the tiny ViT has D = 1 (patch conv) + 6 per block (qkv, QK^T, AV,
    out, fc, proj) * 2 blocks + 1 (projection) = 14. A cosine between two unit features of width d
    moves by the error's component along the other feature: rms e * sqrt(2/d) (both features).
    The logits are s * cos (s = exp(logit_scale)), and the cross-entropy moves by (p - y) . dz,
    with |p - y|_2 <= sqrt(2): rms sqrt(2) * s * e * sqrt(2/d). The KD term is a mean of
    cosines: at most e * sqrt(2/d) times BETA. The bound is four standard deviations of that sum.
    Counting every stage as an independent full-size error is conservative (a residual block's
    error is relative to its own output, not to the stream): measured gaps are about 1/50 of it.
    """
    trainer = _trainer(assets, tmp_path, "CLIPFit", "bf16", "OPTIM.LR", "0.05", epochs=3)
    model, clip = trainer.model, trainer.model.clip
    depth = 1 + 6 * len(clip.visual.transformer.resblocks) + 1
    width = clip.text_projection.shape[1]
    scale = clip.logit_scale.exp().item()
    e = U * math.sqrt(2 * depth / 3)
    dcos = e * math.sqrt(2 / width)
    tol = 4 * (math.sqrt(2) * scale * dcos + trainer.cfg.TRAINER.CLIPFIT.BETA * dcos)
    trainer.num_batches, gaps = len(trainer.train_loader_x), []
    for trainer.epoch in range(3):
        for trainer.batch_idx, batch in enumerate(trainer.train_loader_x):
            image, label = trainer.parse_batch_train(batch)
            with torch.no_grad():
                fp32_loss = model.loss(image, label)[0].item()  # no autocast: fp32 at the same weights
            bf16_loss = trainer.forward_backward(batch)["loss"]
            gaps.append(abs(bf16_loss - fp32_loss))
    assert max(gaps) <= tol, (max(gaps), tol)
    assert max(gaps) > 0  # bf16 really ran: its losses are not the fp32 ones


# TRAIN.COMPILE ---------------------------------------------------------------------------------
def _losses(trainer, batches):
    trainer.num_batches, trainer.epoch = len(batches), 0
    out = []
    for trainer.batch_idx, batch in enumerate(batches):
        summary = trainer.forward_backward(batch)
        out.append(summary.get("loss", summary.get("xe_loss")))
    return out


def _test_logits(trainer, batch):
    trainer.model.eval()
    image, _ = trainer.parse_batch_test(batch)
    with torch.no_grad():
        trainer._test_text_features = trainer.model.class_text_features()
        logits = trainer.model_inference(image)
    trainer._test_text_features = None
    return logits


@pytest.mark.parametrize("name", TRAINERS)
def test_compiled_trainer_matches_eager_and_saves_the_same_checkpoint(assets, tmp_path, name, capsys):
    """Dynamo captures each trainer's encoder graphs as it does for inductor (graph breaks, guards,
    recompiles on eval); run by eager kernels they must give eager's numbers (1e-5 relative).
    Inductor's own arithmetic is checked on one model below."""
    eager = _trainer(assets, tmp_path / "eager", name, "fp32")
    compiled = _trainer(assets, tmp_path / "compiled", name, "fp32", "TRAIN.COMPILE", "True",
                        "TRAIN.COMPILE_BACKEND", BACKEND)
    assert compiled.compiler.active and "compiling" in capsys.readouterr().out
    assert list(compiled.model.state_dict()) == list(eager.model.state_dict())  # no _orig_mod. prefixes
    batches = list(eager.train_loader_x)[:2]
    if name not in TRAINING_FREE:
        assert _losses(compiled, batches) == pytest.approx(_losses(eager, batches), rel=1e-5)
        for n, p in compiled.model.learned_parameters().items():
            torch.testing.assert_close(p, eager.model.learned_parameters()[n], rtol=1e-5, atol=1e-6)
        compiled.save_model(0, str(tmp_path / "compiled"))
        eager.save_model(0, str(tmp_path / "eager"))
        a, b = (torch.load(tmp_path / d / compiled.model_name / "model.pth.tar-1", weights_only=True)
                for d in ("compiled", "eager"))
        assert list(a["state_dict"]) == list(b["state_dict"]) and a["meta"] == b["meta"]
        resumed = _trainer(assets, tmp_path / "compiled", name, "fp32", "TRAIN.COMPILE", "True",
                           "TRAIN.COMPILE_BACKEND", BACKEND)
        assert resumed.resume_model_if_exist(str(tmp_path / "compiled")) == 1
        for n, p in resumed.model.learned_parameters().items():
            assert torch.equal(p, compiled.model.learned_parameters()[n]), n
    torch.testing.assert_close(_test_logits(compiled, batches[0]), _test_logits(eager, batches[0]),
                               rtol=1e-5, atol=1e-5)
    assert compiled.compiler.active  # nothing fell back


@pytest.fixture(scope="module")
def failing_backends():
    """Backends that fail when compiling the forward graph, or only the backward graph."""
    from torch._dynamo import register_backend
    from torch._dynamo.backends.common import aot_autograd

    def broken(gm, example_inputs):
        raise RuntimeError("no compiler here (test)")

    register_backend(name="test_broken_forward")(broken)
    register_backend(name="test_broken_backward")(aot_autograd(fw_compiler=lambda gm, _: gm, bw_compiler=broken))
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["no_such_backend", "test_broken_forward", "test_broken_backward"])
def test_a_failed_compile_falls_back_to_eager_with_one_line(assets, tmp_path, capsys, failing_backends, backend):
    eager = _trainer(assets, tmp_path / "eager", "CLIPFit", "fp32")
    capsys.readouterr()
    compiled = _trainer(assets, tmp_path / "compiled", "CLIPFit", "fp32", "TRAIN.COMPILE", "True",
                        "TRAIN.COMPILE_BACKEND", backend)
    batches = list(eager.train_loader_x)[:2]
    assert _losses(compiled, batches) == _losses(eager, batches)  # eager after the fall-back: identical
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "TRAIN.COMPILE True, but compiling failed" in warnings[0]
    assert ("no_such_backend" in warnings[0]) if backend == "no_such_backend" else "no compiler here" in warnings[0]
    assert not compiled.compiler.active and "image_features" not in vars(compiled.model)


def _cxx_compiler() -> bool:
    return any(shutil.which(c) for c in ("g++", "clang++", "c++"))


@pytest.mark.skipif(not _cxx_compiler(), reason="inductor on the CPU needs a C++ compiler (g++ or clang++)")
def test_inductor_fp32_equals_eager_fp32_within_reordering():
    """The encoder of a one-block tiny CLIP through inductor (forward and backward). Inductor
    fuses and reorders fp32 sums: results agree to a few ulps times the sum length (1e-5 rel)."""
    from clipfit.methods.clipfit import CLIPFitModel

    torch.manual_seed(0)
    model = CLIPFitModel(build_tiny_clip(layers=1, text_layers=1), ["cat", "dog", "car"], "a photo of a {}.")
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    text = model.class_text_features().detach()

    def run():
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.logits(images, text), labels)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.learned_parameters().items() if p.grad is not None}

    eager_loss, eager_grads = run()
    compiler = P.EncoderCompiler(True, "inductor")
    model.encoder_methods = ("image_features",)  # the image encoder only: keeps the compile short
    compiler.apply(model)
    loss, grads = run()
    assert compiler.active, compiler.failure
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=0)
    assert grads.keys() == eager_grads.keys() and grads
    for n in grads:
        torch.testing.assert_close(grads[n], eager_grads[n], rtol=1e-4, atol=1e-6 * eager_grads[n].abs().max().item())


def test_toy_precision_verdict_names_the_cells_a_roundoff_sized_control_also_leaves(load_bench):
    """bf16's mean is judged against the fp32 seeds' min-max range; a cell is listed as shared
    only when bf16 and one of the lr controls are both outside it."""
    bench = load_bench("toy_precision")
    fp32 = [(40.0, 40.0), (42.0, 41.0), (44.0, 42.0)]  # Base 40-44, New 40-42
    results = {}
    for trainer in bench.TRAINERS:
        results[(trainer, "fp32")] = fp32
        results[(trainer, "bf16")] = [(41.0, 41.0), (42.0, 41.0), (43.0, 41.0)]
        results[(trainer, "fp32_lr_up")] = fp32
        results[(trainer, "fp32_lr_down")] = fp32
    variants = (bench.FP32, bench.BF16, *bench.CONTROLS)
    text, ok, shared = bench.table(results, variants)
    assert ok and shared == [] and "NO" not in text

    results[("CoOp", "bf16")] = [(41.0, 41.0), (42.0, 42.0), (43.0, 47.0)]  # New mean 43.3 > 42
    text, ok, shared = bench.table(results, variants)
    assert not ok and shared == [] and "New NO (+2.3)" in text

    results[("CoOp", "fp32_lr_up")] = [(41.0, 42.0), (42.0, 43.0), (43.0, 49.0)]
    text, ok, shared = bench.table(results, variants)
    assert not ok and shared == ["CoOp New"]
    assert bench.CONTROLS[0].lr_factor == 1 + 2.0 ** -8 and bench.CONTROLS[1].lr_factor == 1 - 2.0 ** -8


def test_gpu_speed_dry_run_measures_every_requested_mode_and_refuses_to_write_cpu_figures(load_bench, monkeypatch, capsys):
    """``bench/gpu_speed.py --tiny --device cpu`` walks the GPU script's whole path on the tiny CLIP."""
    bench = load_bench("gpu_speed")
    monkeypatch.chdir(bench.os.path.dirname(bench.os.path.dirname(bench.__file__)))  # configs/ are read from the repo
    assert bench.main(["--tiny", "--device", "cpu", "--methods", "CoOp", "--modes", "fp32", "bf16"]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| CoOp")]
    assert [r[2].strip() for r in rows] == ["fp32", "bf16"]
    for row in rows:
        train_ms, paper_ms, test_ms = float(row[3]), float(row[4]), float(row[6])
        assert train_ms > 0 and test_ms > 0 and paper_ms == bench.PAPER_TABLE7_MS["CoOp"]
    with pytest.raises(SystemExit, match="CUDA device without --tiny"):
        bench.main(["--tiny", "--device", "cpu", "--page", "unused.md"])
