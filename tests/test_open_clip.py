"""open_clip backbones (``MODEL.BACKBONE.NAME open_clip:<arch>``) on tiny random models of each family.

The families are open_clip's own classes at tiny sizes (:mod:`clipfit.testing.tiny_open_clip`):
its ViT with its text transformer (GELU and QuickGELU), timm's SigLIP ViT (MAP head) with SigLIP's
bidirectional text tower (CLIP's tokenizer standing in for SigLIP's, which needs the hub), timm's
EVA02 and timm's ConvNeXt. Skipped when open_clip is not installed (``pip install "clipfit[open_clip]"``).
"""
from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch

pytest.importorskip("open_clip", reason='open_clip backbones need the extra: pip install "clipfit[open_clip]"')

from clipfit.errors import ConfigValueError, InstallError, MissingFileError, UserError  # noqa: E402
from clipfit.methods import open_clip_lib  # noqa: E402
from clipfit.methods.backbone import backbone  # noqa: E402
from clipfit.methods.classifier import ZeroShotClassifier  # noqa: E402
from clipfit.methods.clip_loader import load_clip, resolve_weights  # noqa: E402
from clipfit.methods.open_clip_loader import (OpenCLIPWeightsNotFoundError, WeightsMismatchError,  # noqa: E402
                                              fetch_command)
from clipfit.methods.params import select_parameters  # noqa: E402
from clipfit.methods.text import encode_tokens  # noqa: E402
from clipfit.testing.fake_datasets import make_dataset  # noqa: E402
from clipfit.testing.tiny_clip import save_tiny_clip  # noqa: E402
from clipfit.testing.tiny_open_clip import (make_tiny_open_clip, register_tiny_configs,  # noqa: E402
                                            save_tiny_open_clip, support)
from _helpers import tiny_train_argv  # noqa: E402

FAMILIES = ("vit", "siglip", "eva02", "convnext")
PROMPTS = ["a photo of a cat.", "a photo of a small dog, a type of pet.", "itap of a red car."]
ARCH = register_tiny_configs()


def name(family: str) -> str:
    return f"open_clip:{ARCH[family]}"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("open_clip_weights")
    return {f: save_tiny_open_clip(f, str(folder / f"{f}.pt"), seed=3) for f in (*FAMILIES, "vit-quickgelu")}


def close(ours: torch.Tensor, ref: torch.Tensor) -> bool:
    """Equal up to fp32 summation order (features of size ~1: 1e-5)."""
    return torch.allclose(ours, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def norm_parameters(model: torch.nn.Module):
    """Names of the affine parameters of every normalisation module of the image tower."""
    names = set()
    for mod_name, module in model.visual.named_modules():
        if "Norm" in type(module).__name__ and list(module.parameters(recurse=False)):
            names |= {f"visual.{mod_name}.{p}" for p, _ in module.named_parameters(recurse=False)}
    return names


# Loading: the name decides the architecture ------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_loaded_model_computes_what_open_clip_computes_with_the_file(weights, family):
    model = load_clip(name(family), weights[family])
    reference = make_tiny_open_clip(family, seed=3)  # the model whose state_dict() is the file
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = backbone(reference).spec.tokenizer(PROMPTS)
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), reference.encode_image(images))
        assert torch.equal(model.encode_text(tokens), reference.encode_text(tokens))
    assert type(model) is type(reference) and type(model.visual) is type(reference.visual)


def test_the_name_decides_the_activation_even_for_a_local_file(weights, capsys):
    gelu = load_clip(name("vit"), weights["vit"])
    quick = load_clip(name("vit-quickgelu"), weights["vit"])  # same keys and shapes: loads, builds QuickGELU
    log = capsys.readouterr().out
    assert "Activation: GELU" in log and "use open_clip:clipfit-tiny-ViT-quickgelu" in log
    assert "Activation: QuickGELU" in log
    assert type(gelu.transformer.resblocks[0].mlp.gelu).__name__ == "GELU"
    assert type(quick.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    tokens = backbone(gelu).spec.tokenizer(PROMPTS)
    with torch.no_grad():
        assert not torch.allclose(gelu.encode_text(tokens), quick.encode_text(tokens), atol=1e-4)
    # an open_clip name never goes to OpenAI's builder because a file is given
    assert type(gelu).__module__.startswith("open_clip")


@pytest.mark.parametrize("source, target", [("vit", "eva02"), ("convnext", "vit"), ("eva02", "siglip")])
def test_weights_of_another_architecture_are_refused_naming_both(weights, source, target):
    with pytest.raises(WeightsMismatchError) as err:
        load_clip(name(target), weights[source])
    assert isinstance(err.value, ConfigValueError)  # a user error: its message alone, exit 2
    msg = str(err.value)
    assert weights[source] in msg and ARCH[target] in msg and ("missing" in msg or "shapes differ" in msg)


def test_openai_weights_are_refused_by_an_open_clip_name(tmp_path):
    path = save_tiny_clip(str(tmp_path / "openai.pt"))  # OpenAI key names, other dimensions
    with pytest.raises(WeightsMismatchError, match="do not fit open_clip's clipfit-tiny-ViT"):
        load_clip(name("vit"), path)


def test_a_missing_tag_is_an_error_naming_tag_places_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(OpenCLIPWeightsNotFoundError) as err:
        resolve_weights("open_clip:ViT-B-16:laion2b_s34b_b88k")
    assert isinstance(err.value, MissingFileError)
    msg = str(err.value)
    assert "open_clip:ViT-B-16:laion2b_s34b_b88k" in msg and "models--laion--CLIP-ViT-B-16-laion2B-s34B-b88K" in msg
    assert fetch_command("ViT-B-16", "laion2b_s34b_b88k") in msg


def test_a_tag_is_found_in_open_clips_url_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cached = tmp_path / ".cache" / "clip" / "ViT-B-16.pt"  # where open_clip (and clip) download OpenAI's file
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert resolve_weights("open_clip:ViT-B-16-quickgelu:openai") == str(cached)


@pytest.mark.parametrize("bad, expected", [
    ("open_clip:ViT-B-99", "open_clip has no architecture 'ViT-B-99'"),
    ("open_clip:ViT-B-16:no_such_tag", "has no pretrained tag 'no_such_tag'"),
    ("open_clip:ViT-B-16", "names no weights"),
])
def test_bad_names_say_what_to_write(bad, expected):
    with pytest.raises(UserError, match=expected):
        resolve_weights(bad)


def test_without_open_clip_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(InstallError, match=r'pip install "clipfit\[open_clip\]"') as err:
        open_clip_lib.require()
    assert isinstance(err.value, open_clip_lib.OpenCLIPMissingError)


# Our paths equal open_clip's ------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_text_image_features_and_zero_shot_logits_equal_open_clip(family):
    model = make_tiny_open_clip(family)
    bb = backbone(model)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = encode_tokens(model, bb.text.tokenize(PROMPTS))
        ref = model.encode_text(bb.spec.tokenizer(PROMPTS))
        assert close(ours, ref)
        assert close(bb.image.encode(images), model.encode_image(images))
        classes = ["cat", "dog", "red car"]
        zs = ZeroShotClassifier(model, classes, "a photo of a {}.").logits(images)
        img = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        txt = torch.nn.functional.normalize(model.encode_text(bb.spec.tokenizer([f"a photo of a {c}." for c in classes])), dim=-1)
        expected = model.logit_scale.exp() * img @ txt.t()
        if model.logit_bias is not None:
            expected = expected + model.logit_bias
        assert close(zs, expected)
    assert (model.logit_bias is not None) == (family == "siglip")


def test_clip_bpe_towers_tokenize_as_openai_clip():
    """Prompt learners build on CLIP's tokenizer: on the towers that allow them, open_clip's gives the same ids."""
    from clipfit.methods.text import tokenize

    model = make_tiny_open_clip("vit")
    assert torch.equal(backbone(model).text.tokenize(PROMPTS).tokens, tokenize(PROMPTS).tokens)


@pytest.mark.parametrize("family", FAMILIES)
def test_clipfit_selects_text_ffn_biases_and_every_image_norm(family, capsys):
    model = make_tiny_open_clip(family)
    sel = select_parameters(model)
    prefix = backbone(model).text.prefix
    assert set(sel.groups["text"]) == {f"{prefix}transformer.resblocks.{i}.mlp.c_proj.bias" for i in range(2)}
    assert set(sel.groups["image"]) == norm_parameters(model) and sel.groups["image"]
    total = sum(p.numel() for p in sel.named_parameters().values())
    assert f"total: {total:,}" in "\n".join(sel.describe(model))


def test_image_layers_pick_blocks_of_timm_trunks():
    model = make_tiny_open_clip("eva02")
    last = select_parameters(model, text="none", image_layers=[-1]).groups["image"]
    assert last and all(n.startswith("visual.trunk.blocks.1.") for n in last)
    post = select_parameters(model, text="none", image_layers=["post"]).groups["image"]
    assert set(post) == {"visual.trunk.norm.weight", "visual.trunk.norm.bias"}


# Every trainer ----------------------------------------------------------------------------------------
CONFIGS = {
    "ZeroshotCLIP": "configs/trainers/ZeroshotCLIP/vit_b16.yaml",
    "CLIPFit": "configs/trainers/CLIPFit/vit_b16.yaml",
    "CoOp": "configs/trainers/CoOp/vit_b16.yaml",
    "CoCoOp": "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1.yaml",
    "KgCoOp": "configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml",
    "MaPLe": "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml",
    "ProGrad": "configs/trainers/ProGrad/vit_b16.yaml",
    "CLIP_Adapter": "configs/trainers/CLIP_Adapter/vit_b16.yaml",
    "TipAdapter": "configs/trainers/TipAdapter/vit_b16_dtd.yaml",
    "TipAdapterF": "configs/trainers/TipAdapterF/vit_b16_dtd.yaml",
}
TRAINING_FREE = ("ZeroshotCLIP", "TipAdapter")
# Every trainer on every family runs end to end through train.py: where it works it trains, saves,
# reloads and evaluates the same; where the support table refuses it, it exits with the reason.
CASES = [(f, t) for f in FAMILIES for t in CONFIGS]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("open_clip_data")
    make_dataset("dtd", str(root), n_classes=4, per_class=10)
    return str(root)


def _argv(data, weights, family, trainer, out, flags=()):
    return tiny_train_argv(
        {"root": data, "clip": weights[family]}, trainer, CONFIGS[trainer], out,
        "MODEL.BACKBONE.NAME", name(family), "TRAINER.MAPLE.PROMPT_DEPTH", "2",
        "TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", "1", "TRAINER.TIP_ADAPTER.SEARCH_STEP", "[4, 4]",
        "INPUT.TRANSFORMS", '["normalize"]', flags=flags, epochs=1)


@pytest.mark.parametrize("family, trainer", CASES)
def test_every_trainer_trains_saves_reloads_or_is_refused(data, weights, tmp_path, run_main, capsys, family,
                                                          trainer):
    verdict = support(family)[trainer]
    if verdict != "works":  # a user error: the reason on stderr, exit status 2
        with pytest.raises(SystemExit) as exit_:
            run_main(_argv(data, weights, family, trainer, tmp_path / "train", flags=["--no-train"]))
        assert exit_.value.code == 2 and verdict[len("refused: "):] in capsys.readouterr().err
        return
    if trainer in TRAINING_FREE:
        run_main(_argv(data, weights, family, trainer, tmp_path / "train", flags=["--no-train"]))
        assert json.loads((tmp_path / "train" / "metrics.json").read_text())["total"] > 0
        return
    run_main(_argv(data, weights, family, trainer, tmp_path / "train"))
    trained = json.loads((tmp_path / "train" / "metrics.json").read_text())
    flags = ["--eval-only", "--model-dir", str(tmp_path / "train"), "--load-epoch", "1"]
    run_main(_argv(data, weights, family, trainer, tmp_path / "eval", flags=flags))
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "correct", "total", "epoch"):
        assert evaluated[key] == trained[key], key
    assert trained["backbone"] == name(family)


def test_a_checkpoint_is_refused_by_another_backbone_or_other_weights(data, weights, tmp_path, run_main, capsys):
    run_main(_argv(data, weights, "vit", "CLIP_Adapter", tmp_path / "train"))
    flags = ["--eval-only", "--model-dir", str(tmp_path / "train"), "--load-epoch", "1"]
    with pytest.raises(SystemExit) as exit_:
        run_main(_argv(data, weights, "convnext", "CLIP_Adapter", tmp_path / "eval", flags=flags))
    assert exit_.value.code == 2  # a user error: its message, no traceback
    err = capsys.readouterr().err
    assert f"MODEL.BACKBONE.NAME: checkpoint {name('vit')}, current {name('convnext')}" in err
    assert "architecture arch: checkpoint clipfit-tiny-ViT, current clipfit-tiny-convnext" in err
    other = dict(weights, vit=save_tiny_open_clip("vit", str(tmp_path / "other.pt"), seed=4))  # same architecture
    with pytest.raises(SystemExit) as exit_:
        run_main(_argv(data, other, "vit", "CLIP_Adapter", tmp_path / "eval2", flags=flags))
    assert exit_.value.code == 2
    assert "was tuned from pre-trained weights" in capsys.readouterr().err


def test_a_tag_trained_with_the_other_activation_is_refused(weights):
    with pytest.raises(WeightsMismatchError, match="open_clip:ViT-B-16-quickgelu:openai"):
        load_clip("open_clip:ViT-B-16:openai", weights["vit"])  # OpenAI's weights: QuickGELU


def test_an_openai_torchscript_archive_is_refused_by_a_gelu_architecture(tmp_path):
    """OpenAI publishes TorchScript archives of QuickGELU models: one holding exactly this GELU
    architecture's tensors still is refused, pointing to the -quickgelu name."""
    model = make_tiny_open_clip("vit")
    example = (torch.zeros(1, 3, 32, 32), torch.zeros(1, 77, dtype=torch.long))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings
        traced = torch.jit.trace(model, example, strict=False, check_trace=False)
    path = str(tmp_path / "archive.pt")
    traced.save(path)
    with pytest.raises(WeightsMismatchError, match="TorchScript archive.*open_clip:clipfit-tiny-ViT-quickgelu"):
        load_clip(name("vit"), path)
    assert load_clip(name("vit-quickgelu"), path) is not None  # the QuickGELU name takes it


def test_preprocessing_comes_from_the_tags_and_a_config_with_other_values_is_refused(
        data, weights, tmp_path, run_main, capsys):
    from clipfit.methods.open_clip_loader import preprocess_cfg

    siglip, _ = preprocess_cfg("ViT-B-16-SigLIP", "", 224)  # every tag of the architecture agrees
    assert siglip["mean"] == [0.5, 0.5, 0.5] and siglip["resize_mode"] == "squash" and siglip["size"] == 224
    with pytest.raises(SystemExit) as exit_:
        run_main(_argv(data, weights, "vit", "ZeroshotCLIP", tmp_path, flags=["--no-train"])
                 + ["INPUT.PIXEL_MEAN", "[0.5, 0.5, 0.5]", "INPUT.INTERPOLATION", "bilinear"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert 'INPUT.PIXEL_MEAN "[0.48145466, 0.4578275, 0.40821073]"' in err and "INPUT.INTERPOLATION bicubic" in err


def test_fp16_storage_is_refused_for_open_clip_with_advice():
    with pytest.raises(ConfigValueError, match="amp"):
        backbone(make_tiny_open_clip("convnext")).to_half()


def test_the_published_support_table_is_current(load_bench):
    from pathlib import Path

    bench = load_bench("backbones")
    doc = Path(bench.DOC).read_text()
    assert bench.support_table() in doc, "run: python bench/backbones.py --table support"


@pytest.mark.parametrize("arch, reason", [("xlm-roberta-base-ViT-B-32", "Hugging Face text tower"),
                                          ("coca_ViT-B-32", "CoCa captioning model")])
def test_towers_without_open_clips_text_transformer_are_refused_saying_why(weights, arch, reason):
    with pytest.raises(ConfigValueError, match=reason):
        load_clip(f"open_clip:{arch}", weights["vit"])
