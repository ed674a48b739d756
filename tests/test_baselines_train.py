"""CoOp, KgCoOp and CLIP_Adapter through the trainer and ``train.py``'s entry point.

A fabricated DTD (4 classes) and a tiny random CLIP (32 px) stand in for the real ones.
"""
import json

import pytest
import torch

from clipfit import engine
from clipfit.training.cli import build_parser, import_plugins, setup_cfg
from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import save_tiny_clip
from _helpers import tiny_train_argv

CONFIGS = {
    "CoOp": "configs/trainers/CoOp/vit_b16_ctxv1.yaml",
    "KgCoOp": "configs/trainers/KgCoOp/vit_b16_ep100_ctxv1.yaml",
    "CLIP_Adapter": "configs/trainers/CLIP_Adapter/vit_b16.yaml",
}
MODEL_DIRS = {"CoOp": "prompt_learner", "KgCoOp": "prompt_learner", "CLIP_Adapter": "clip_adapter"}
# the added tensors under the state-dict keys of each reference's own checkpoints
ADDED = {"CoOp": {"ctx"}, "KgCoOp": {"ctx"}, "CLIP_Adapter": {"fc.0.weight", "fc.2.weight"}}
TINY_IMAGE_LN = 2 * (2 * 2 + 2)  # ln_pre, ln_post and two per block (2 blocks), gain and bias


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines")
    make_dataset("dtd", str(root / "data"), n_classes=4, per_class=10)
    return {"root": str(root / "data"), "clip": save_tiny_clip(str(root / "tiny.pt"))}


def argv(assets, trainer, out, *opts, flags=(), epochs=2):
    return tiny_train_argv(assets, trainer, CONFIGS[trainer], out, *opts, flags=flags, epochs=epochs)




def mean_train_loss(trainer):
    """Mean training loss over the whole (few-shot) training set, without updating anything."""
    losses = []
    with torch.no_grad():
        for batch in trainer.train_loader_x:
            image, label = trainer.parse_batch_train(batch)
            losses.append(trainer.model.loss(image, label)[0].item())
    return sum(losses) / len(losses)


@pytest.mark.parametrize("trainer_name, ul, lr, epochs", [("CoOp", True, 0.005, 4), ("KgCoOp", False, 0.005, 12),
                                                          ("CLIP_Adapter", False, 0.05, 4)])
def test_short_run_lowers_training_loss_and_changes_only_learned_tensors(assets, tmp_path, trainer_name, ul, lr, epochs):
    import_plugins()
    args = build_parser().parse_args(argv(
        assets, trainer_name, tmp_path, "INPUT.TRANSFORMS", '["normalize"]',  # no random augmentation
        "OPTIM.LR", str(lr), "OPTIM.WARMUP_EPOCH", "0", "TRAINER.UPDATE_IMAGE_LN", str(ul), epochs=epochs,
    ))
    cfg = setup_cfg(args)
    engine.set_random_seed(cfg.SEED)
    trainer = engine.build_trainer(cfg)
    original = {n: p.detach().clone() for n, p in trainer.model.clip.named_parameters()}
    before = mean_train_loss(trainer)
    trainer.train()
    after = mean_train_loss(trainer)
    assert after < 0.8 * before, (before, after)

    learned = {id(p) for p in trainer.model.learned_parameters().values()}
    changed = {n for n, p in trainer.model.clip.named_parameters() if not torch.equal(p, original[n])}
    tuned = {n for n, p in trainer.model.clip.named_parameters() if id(p) in learned}
    assert changed == tuned and len(tuned) == (TINY_IMAGE_LN if ul else 0)
    assert set(trainer.get_model_names()) == {MODEL_DIRS[trainer_name]}


@pytest.mark.parametrize("trainer_name, ul", [("CoOp", False), ("KgCoOp", True), ("CLIP_Adapter", True)])
def test_eval_only_from_checkpoint_reproduces_test_accuracy(assets, tmp_path, run_main, trainer_name, ul):
    ul_opt = ["TRAINER.UPDATE_IMAGE_LN", str(ul)]
    base = ["DATASET.SUBSAMPLE_CLASSES", "base"]  # train on base classes, as the base-to-new scripts do
    run_main(argv(assets, trainer_name, tmp_path / "train", *ul_opt, *base))
    trained = json.loads((tmp_path / "train" / "metrics.json").read_text())

    ckpt_path = tmp_path / "train" / MODEL_DIRS[trainer_name] / "model.pth.tar-2"
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    expected = set(ADDED[trainer_name])
    image_ln = set(state) - expected  # only the learned tensors, by the names CLIP gives them
    assert expected <= set(state) and len(image_ln) == (TINY_IMAGE_LN if ul else 0)
    assert all(k.startswith("visual.") and ".ln_" in f".{k}" for k in image_ln)

    eval_flags = ["--eval-only", "--model-dir", str(tmp_path / "train"), "--load-epoch", "2"]
    run_main(argv(assets, trainer_name, tmp_path / "eval", *ul_opt, *base, flags=eval_flags))
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("accuracy", "macro_f1", "correct", "total", "epoch"):
        assert evaluated[key] == trained[key], key

    if trainer_name != "CoOp":
        return  # the generic context also serves unseen classes (base-to-new "new" split)
    new_opts = [*ul_opt, "DATASET.SUBSAMPLE_CLASSES", "new"]
    run_main(argv(assets, trainer_name, tmp_path / "new", *new_opts, flags=eval_flags))
    new = json.loads((tmp_path / "new" / "metrics.json").read_text())
    assert new["subsample"] == "new" and new["total"] > 0
