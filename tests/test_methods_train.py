"""CoCoOp, MaPLe, ProGrad, TipAdapter and TipAdapterF through the trainer and ``train.py``.

A fabricated DTD (4 classes) and a tiny random CLIP (32 px) stand in for the real ones. One
training run per trainer: it must lower the training loss, change only the learned tensors,
and leave a checkpoint of those tensors only from which ``--eval-only`` gives the same result.
"""
import json

import pytest
import torch

from clipfit import engine
from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import save_tiny_clip
from _helpers import tiny_train_argv
from clipfit.training.cli import build_parser, import_plugins, setup_cfg

CONFIGS = {
    "CoCoOp": "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml",
    "MaPLe": "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml",
    "ProGrad": "configs/trainers/ProGrad/vit_b16_ep50.yaml",
    "TipAdapter": "configs/trainers/TipAdapter/vit_b16_dtd.yaml",
    "TipAdapterF": "configs/trainers/TipAdapterF/vit_b16_dtd.yaml",
}
# model (checkpoint) folder and the learned tensors' names
LEARNED = {
    "CoCoOp": ("prompt_learner", {"prompt_learner.ctx", "prompt_learner.meta_net.linear1.weight",
                                  "prompt_learner.meta_net.linear1.bias", "prompt_learner.meta_net.linear2.weight",
                                  "prompt_learner.meta_net.linear2.bias"}),
    "MaPLe": ("MultiModalPromptLearner", {"prompt_learner.ctx", "prompt_learner.proj.weight", "prompt_learner.proj.bias",
                                          "prompt_learner.compound_prompts_text.0",
                                          "prompt_learner.compound_prompt_projections.0.weight",
                                          "prompt_learner.compound_prompt_projections.0.bias"}),
    "ProGrad": ("prompt_learner", {"prompt_learner.ctx"}),
    "TipAdapterF": ("tip_adapter_f", {"cache_keys"}),
}
# learning rates and batch sizes for the tiny world (trainer options as shipped otherwise)
OPTS = {
    "CoCoOp": ["OPTIM.LR", "0.02", "DATALOADER.TRAIN_X.BATCH_SIZE", "1", "DATASET.NUM_SHOTS", "1"],
    "MaPLe": ["OPTIM.LR", "0.05", "TRAINER.MAPLE.PROMPT_DEPTH", "2"],
    "ProGrad": ["OPTIM.LR", "0.05"],
    "TipAdapter": ["TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", "2", "TRAINER.TIP_ADAPTER.SEARCH_STEP", "[20, 5]"],
    "TipAdapterF": ["OPTIM.LR", "0.01", "TRAINER.TIP_ADAPTER.AUGMENT_EPOCH", "2",
                    "TRAINER.TIP_ADAPTER.SEARCH_STEP", "[20, 5]"],
}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    make_dataset("dtd", str(root / "data"), n_classes=4, per_class=6)
    return {"root": str(root / "data"), "clip": save_tiny_clip(str(root / "tiny.pt"))}


def argv(assets, trainer, out, *opts, flags=(), epochs=2):
    return tiny_train_argv(assets, trainer, CONFIGS[trainer], out, "INPUT.TRANSFORMS", '["normalize"]',
                           "OPTIM.WARMUP_EPOCH", "0", "DATALOADER.TEST.BATCH_SIZE", "50", *OPTS[trainer],
                           *opts, flags=flags, epochs=epochs)


def mean_train_loss(trainer):
    """Mean cross-entropy over the few-shot training set, without updating anything."""
    with torch.no_grad():
        losses = [trainer.model.loss(*trainer.parse_batch_train(b))[0].item() for b in trainer.train_loader_x]
    return sum(losses) / len(losses)


@pytest.mark.parametrize("name", ["CoCoOp", "MaPLe", "ProGrad", "TipAdapterF"])
def test_training_lowers_loss_changes_only_learned_tensors_and_eval_only_reproduces(assets, tmp_path, run_main, name):
    import_plugins()
    cfg = setup_cfg(build_parser().parse_args(argv(assets, name, tmp_path / "train")))
    engine.set_random_seed(cfg.SEED)
    trainer = engine.build_trainer(cfg)
    model_dir, names = LEARNED[name]
    assert set(trainer.model.learned_parameters()) == names and trainer.get_model_names() == [model_dir]
    before_all = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    before = mean_train_loss(trainer)
    trainer.train()
    after = mean_train_loss(trainer)
    assert after < 0.9 * before, (before, after)
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before_all[n])}
    assert changed == names  # every learned tensor moved, nothing else did

    ckpt = tmp_path / "train" / model_dir / "model.pth.tar-2"
    prefix = trainer.reference_prefix  # saved under the reference's keys (ProGrad: CoOp's "ctx")
    assert set(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]) == {
        n[len(prefix):] if prefix and n.startswith(prefix) else n for n in names}
    trained = json.loads((tmp_path / "train" / "metrics.json").read_text())
    eval_flags = ["--eval-only", "--model-dir", str(tmp_path / "train"), "--load-epoch", "2"]
    run_main(argv(assets, name, tmp_path / "eval", flags=eval_flags))
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "correct", "total", "epoch"):
        assert evaluated[key] == trained[key], key


def test_tip_adapter_is_evaluated_without_training_and_reproducibly(assets, tmp_path, run_main, capsys):
    for out, flag in (("a", "--no-train"), ("b", "--eval-only")):  # nothing to load: the same cache and search
        run_main(argv(assets, "TipAdapter", tmp_path / out, flags=[flag]))
    a, b = (json.loads((tmp_path / o / "metrics.json").read_text()) for o in ("a", "b"))
    assert a["total"] > 0 and a["accuracy"] == b["accuracy"] and a["correct"] == b["correct"]
    log = (tmp_path / "a" / "log.txt").read_text()
    assert "Searched on val" in log and "x 4 classes" in log
    with pytest.raises(SystemExit) as stop:  # a user error: the message alone, exit status 2
        run_main(argv(assets, "TipAdapter", tmp_path / "d", "DATASET.SUBSAMPLE_CLASSES", "new", flags=["--no-train"]))
    assert stop.value.code == 2
    assert "SUBSAMPLE_CLASSES" in capsys.readouterr().err
