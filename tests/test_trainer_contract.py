"""The contract every trainer of ``trainers/`` meets, run for each one registered in TRAINER_REGISTRY.

As timm's tests iterate ``list_models`` and PEFT's a ``TEST_CASES`` matrix: each registered trainer
has a row in :data:`CONTRACT`, and a trainer registered without one fails
:func:`test_every_registered_trainer_has_a_contract_row`. A trainer that learns trains a few
steps on a fabricated DTD (4 classes) with a tiny random CLIP (32 px), then must have: a lower
training loss, changed exactly its learned tensors, saved only those (under its reference's
keys), and an ``--eval-only`` reload that evaluates the same. A trainer that learns nothing gives
the same result with ``--no-train`` and ``--eval-only`` and refuses ``train()`` as a user error.
Every trainer's precision key exists and its method's options read back their defaults.
"""
from __future__ import annotations

import json
from typing import Dict, List, NamedTuple, Optional, Set

import pytest
import torch

from clipfit import engine
from clipfit.errors import UserError
from clipfit.methods.options import NODE_OPTIONS
from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import save_tiny_clip
from clipfit.training.cli import build_parser, import_plugins, setup_cfg
from clipfit.training.config import cfg_value, project_keys
from _helpers import tiny_train_argv

LOSS_DROP = 0.9  # after training, the mean training loss is below this share of the initial one
EPOCHS = 2
UL = ["TRAINER.UPDATE_IMAGE_LN", "True"]  # +UL: the image LayerNorms are learned too
PLAIN = ["INPUT.TRANSFORMS", '["normalize"]', "OPTIM.WARMUP_EPOCH", "0", "DATALOADER.TEST.BATCH_SIZE", "50"]
TIP = ["TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", "2", "TRAINER.TIP_ADAPTER.SEARCH_STEP", "[20, 5]"]
TEXT_BIASES = {f"transformer.resblocks.{i}.mlp.c_proj.bias" for i in range(2)}  # the tiny CLIP's 2 text blocks


class Row(NamedTuple):
    """What a trainer is run with and what it must learn."""

    config: str  # its config file (the shipped one)
    node: str  # the TRAINER.<NODE> of its method's options
    model_dir: Optional[str]  # checkpoint sub-directory; None: learns nothing
    added: Set[str]  # learned tensors outside CLIP (names as learned_parameters gives them)
    clip_learned: Set[str]  # learned CLIP tensors besides the image LayerNorms
    image_ln: bool  # the image LayerNorms are learned
    opts: List[str]  # for the tiny world (learning rate, batch size, ...)


CONTRACT: Dict[str, Row] = {
    "CLIPFit": Row("configs/trainers/CLIPFit/vit_b16.yaml", "CLIPFIT", "clipfit", set(), TEXT_BIASES, True,
                   ["OPTIM.LR", "0.05", "TRAINER.CLIPFIT.PREC", "fp32"]),
    "ClipFit": Row("configs/trainers/ClipFit/vit_b16_ep10_ctxv1.yaml", "CLIPFIT", "prompt_learner", set(),
                   TEXT_BIASES, True, ["OPTIM.LR", "0.05"]),
    "CoOp": Row("configs/trainers/CoOp/vit_b16_ctxv1.yaml", "COOP", "prompt_learner", {"prompt_learner.ctx"},
                set(), True, ["OPTIM.LR", "0.01", *UL]),
    "KgCoOp": Row("configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml", "COOP", "prompt_learner",
                  {"prompt_learner.ctx"}, set(), False, ["OPTIM.LR", "0.002"]),
    "ProGrad": Row("configs/trainers/ProGrad/vit_b16_ep50.yaml", "PROGRAD", "prompt_learner",
                   {"prompt_learner.ctx"}, set(), False, ["OPTIM.LR", "0.002"]),
    "CoCoOp": Row("configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml", "COCOOP", "prompt_learner",
                  {"prompt_learner.ctx", "prompt_learner.meta_net.linear1.weight", "prompt_learner.meta_net.linear1.bias",
                   "prompt_learner.meta_net.linear2.weight", "prompt_learner.meta_net.linear2.bias"}, set(), False,
                  ["OPTIM.LR", "0.02", "DATALOADER.TRAIN_X.BATCH_SIZE", "1", "DATASET.NUM_SHOTS", "1"]),
    "MaPLe": Row("configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml", "MAPLE",
                 "MultiModalPromptLearner",
                 {"prompt_learner.ctx", "prompt_learner.proj.weight", "prompt_learner.proj.bias",
                  "prompt_learner.compound_prompts_text.0", "prompt_learner.compound_prompt_projections.0.weight",
                  "prompt_learner.compound_prompt_projections.0.bias"}, set(), False,
                 ["OPTIM.LR", "0.05", "TRAINER.MAPLE.PROMPT_DEPTH", "2"]),
    "CLIP_Adapter": Row("configs/trainers/CLIP_Adapter/vit_b16.yaml", "CLIP_ADAPTER", "clip_adapter",
                        {"adapter.fc.0.weight", "adapter.fc.2.weight"}, set(), True, ["OPTIM.LR", "0.05", *UL]),
    "TipAdapterF": Row("configs/trainers/TipAdapterF/vit_b16_dtd.yaml", "TIP_ADAPTER", "tip_adapter_f",
                       {"cache_keys"}, set(), False, ["OPTIM.LR", "0.03", *TIP]),
    "TipAdapter": Row("configs/trainers/TipAdapter/vit_b16_dtd.yaml", "TIP_ADAPTER", None, set(), set(), False, TIP),
    "ZeroshotCLIP": Row("configs/trainers/ZeroshotCLIP/vit_b16.yaml", "COOP", None, set(), set(), False, []),
}
LEARNING = sorted(name for name, row in CONTRACT.items() if row.model_dir)
EVAL_ONLY = sorted(name for name, row in CONTRACT.items() if not row.model_dir)
METRICS = ("accuracy", "macro_f1", "correct", "total", "epoch")


def our_trainers() -> Set[str]:
    """The trainers of this repository's ``trainers/`` in TRAINER_REGISTRY (under Dassl it holds Dassl's too)."""
    import_plugins()
    registry = engine.TRAINER_REGISTRY
    return {n for n in registry.registered_names() if registry.get(n).__module__.startswith("trainers.")}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    make_dataset("dtd", str(root / "data"), n_classes=4, per_class=8)
    return {"root": str(root / "data"), "clip": save_tiny_clip(str(root / "tiny.pt"))}


def argv(assets, name: str, out, *opts: str, flags=()) -> List[str]:
    row = CONTRACT[name]
    return tiny_train_argv(assets, name, row.config, out, *PLAIN, *row.opts, *opts, flags=flags, epochs=EPOCHS)


def build(assets, name: str, out):
    import_plugins()
    cfg = setup_cfg(build_parser().parse_args(argv(assets, name, out)))
    engine.set_random_seed(cfg.SEED)
    return engine.build_trainer(cfg)


def mean_train_loss(trainer) -> float:
    """Mean training loss over the few-shot set, without updating anything."""
    with torch.no_grad():
        losses = [trainer.model.loss(*trainer.parse_batch_train(b))[0].item() for b in trainer.train_loader_x]
    return sum(losses) / len(losses)


def image_layernorms(clip: torch.nn.Module) -> Set[str]:
    return {n for n, _ in clip.named_parameters() if n.startswith("visual.") and ".ln_" in f".{n}"}


def test_every_registered_trainer_has_a_contract_row():
    assert our_trainers() == set(CONTRACT), "add a row to CONTRACT for each trainer (and remove stale ones)"


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_precision_key_and_option_defaults(name):
    import_plugins()
    trainer_class = engine.TRAINER_REGISTRY.get(name)
    keys = project_keys()
    assert cfg_value(keys, trainer_class.prec_key) == "fp16"  # every trainer's precision key, CoOp's default
    node = CONTRACT[name].node
    for cls in NODE_OPTIONS[node]:
        assert cls.from_cfg(keys.TRAINER[node]) == cls(), cls.__name__


@pytest.mark.parametrize("name", LEARNING)
def test_training_changes_only_learned_tensors_and_a_reload_evaluates_the_same(assets, tmp_path, run_main, name):
    row = CONTRACT[name]
    trainer = build(assets, name, tmp_path / "train")
    learned = trainer.model.learned_parameters()
    clip_names = row.clip_learned | (image_layernorms(trainer.model.clip) if row.image_ln else set())
    assert set(learned) == row.added | clip_names
    assert trainer.get_model_names() == [row.model_dir]

    before_all = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    before = mean_train_loss(trainer)
    trainer.train()
    after = mean_train_loss(trainer)
    assert after < LOSS_DROP * before, (before, after)
    learned_ids = {id(p) for p in learned.values()}
    changed = {id(p) for n, p in trainer.model.named_parameters() if not torch.equal(p, before_all[n])}
    assert changed == learned_ids  # every learned tensor moved, nothing else did

    checkpoint = tmp_path / "train" / row.model_dir / f"model.pth.tar-{EPOCHS}"
    prefix = trainer.reference_prefix  # saved under the reference's keys (CoOp's "ctx")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert set(saved) == {n[len(prefix):] if prefix and n.startswith(prefix) else n for n in learned}

    trained = json.loads((tmp_path / "train" / "metrics.json").read_text())
    eval_flags = ["--eval-only", "--model-dir", str(tmp_path / "train"), "--load-epoch", str(EPOCHS)]
    run_main(argv(assets, name, tmp_path / "eval", flags=eval_flags))
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert {k: evaluated[k] for k in METRICS} == {k: trained[k] for k in METRICS}


@pytest.mark.parametrize("name", EVAL_ONLY)
def test_evaluation_only_trainers_learn_nothing_and_evaluate_reproducibly(assets, tmp_path, run_main, name):
    trainer = build(assets, name, tmp_path / "built")
    assert trainer.model.learned_parameters() == {} and trainer.get_model_names() == []
    with pytest.raises(UserError, match="--eval-only or --no-train"):
        trainer.train()
    for out, flag in (("a", "--no-train"), ("b", "--eval-only")):  # nothing to load: the same result
        run_main(argv(assets, name, tmp_path / out, flags=[flag]))
    a, b = (json.loads((tmp_path / o / "metrics.json").read_text()) for o in ("a", "b"))
    assert a["total"] > 0 and {k: a[k] for k in METRICS} == {k: b[k] for k in METRICS}


def test_coop_context_trained_on_base_classes_serves_new_ones(assets, tmp_path, run_main):
    """Base-to-new: the generic context of a base-trained CoOp evaluates the new classes."""
    run_main(argv(assets, "CoOp", tmp_path / "train", "DATASET.SUBSAMPLE_CLASSES", "base"))
    eval_flags = ["--eval-only", "--model-dir", str(tmp_path / "train"), "--load-epoch", str(EPOCHS)]
    run_main(argv(assets, "CoOp", tmp_path / "new", "DATASET.SUBSAMPLE_CLASSES", "new", flags=eval_flags))
    new = json.loads((tmp_path / "new" / "metrics.json").read_text())
    assert new["subsample"] == "new" and new["total"] > 0


def test_tip_adapter_searches_on_val_and_refuses_new_classes(assets, tmp_path, run_main, capsys):
    run_main(argv(assets, "TipAdapter", tmp_path / "a", flags=["--no-train"]))
    log = (tmp_path / "a" / "log.txt").read_text()
    assert "Searched on val" in log and "x 4 classes" in log
    with pytest.raises(SystemExit) as stop:  # a user error: the message alone, exit status 2
        run_main(argv(assets, "TipAdapter", tmp_path / "d", "DATASET.SUBSAMPLE_CLASSES", "new", flags=["--no-train"]))
    assert stop.value.code == 2
    assert "SUBSAMPLE_CLASSES" in capsys.readouterr().err
