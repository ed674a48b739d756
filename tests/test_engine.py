"""The built-in engine reproduces Dassl's behaviour: sampling, loaders, transforms, LR, checkpoints."""
from __future__ import annotations

import math
import re
import os
import random
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from PIL import Image

from clipfit.training.config import get_cfg
from clipfit.engine import builtin as E


def _images(root, n_classes=3, per_class=5, size=12):
    items = []
    for c in range(n_classes):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            p = d / f"{i}.png"
            Image.new("RGB", (size + i, size), color=(40 * c, 10 * i, 90)).save(p)
            items.append(E.Datum(impath=str(p), label=c, classname=f"class{c}"))
    return items


def test_fewshot_sampling_matches_dassl_random_calls(tmp_path):
    items = _images(tmp_path, n_classes=4, per_class=6)
    random.shuffle(items)  # labels appear in a non-sorted order
    base = E.DatasetBase(train_x=items, val=items, test=items)
    random.seed(3)
    got = base.generate_fewshot_dataset(items, num_shots=2)
    # independent replay: group by label in order of first appearance, random.sample per group
    random.seed(3)
    groups = OrderedDict()
    for it in items:
        groups.setdefault(it.label, []).append(it)
    want = [x for g in groups.values() for x in random.sample(g, 2)]
    assert [d.impath for d in got] == [d.impath for d in want]
    # more shots than items: all items of the class, no error
    assert len(base.generate_fewshot_dataset(items, num_shots=100)) == len(items)
    # two sources return two lists; num_shots < 1 returns the source unchanged
    a, b = base.generate_fewshot_dataset(items, items, num_shots=1)
    assert len(a) == len(b) == 4
    assert base.generate_fewshot_dataset(items, num_shots=-1) is items


def test_label_space_and_missing_image(tmp_path):
    items = _images(tmp_path, n_classes=3, per_class=1)
    ds = E.DatasetBase(train_x=items, test=items)
    assert ds.num_classes == 3 and ds.classnames == ["class0", "class1", "class2"]
    with pytest.raises(FileNotFoundError, match="missing.png"):
        E.Datum(impath=str(tmp_path / "missing.png"))


def _cfg(**opts):
    cfg = get_cfg()
    cfg.INPUT.SIZE = (16, 16)
    cfg.INPUT.TRANSFORMS = ["random_resized_crop", "random_flip", "normalize"]
    cfg.INPUT.INTERPOLATION = "bicubic"
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.USE_CUDA = False
    for k, v in opts.items():
        node = cfg
        *path, leaf = k.split("__")
        for p in path:
            node = node[p]
        node[leaf] = v
    return cfg


def test_loaders_samplers_and_drop_last(tmp_path):
    items = _images(tmp_path, n_classes=2, per_class=5)  # 10 items
    cfg = _cfg()
    tfm = E.build_transform(cfg, is_train=True)
    train = E.build_data_loader(cfg, "RandomSampler", items, batch_size=4, tfm=tfm, is_train=True)
    assert isinstance(train.sampler, torch.utils.data.RandomSampler) and train.drop_last
    assert len(train) == 2  # 10 // 4, the last partial batch dropped
    small = E.build_data_loader(cfg, "RandomSampler", items, batch_size=32, tfm=tfm, is_train=True)
    assert not small.drop_last and len(small) == 1  # fewer items than a batch: keep them
    test = E.build_data_loader(cfg, "SequentialSampler", items, batch_size=4,
                               tfm=E.build_transform(cfg, is_train=False), is_train=False)
    assert isinstance(test.sampler, torch.utils.data.SequentialSampler) and not test.drop_last
    batch = next(iter(test))
    assert set(batch) >= {"img", "label", "impath", "index", "domain"}
    assert batch["img"].shape == (4, 3, 16, 16)
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["impath"] == [d.impath for d in items[:4]]


def test_transform_shapes_and_test_pipeline(tmp_path):
    cfg = _cfg()
    img = Image.new("RGB", (40, 20), color=(255, 0, 0))
    assert E.build_transform(cfg, is_train=True)(img).shape == (3, 16, 16)
    test_tfm = E.build_transform(cfg, is_train=False)
    names = [type(t).__name__ for t in test_tfm.transforms]
    assert names == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    assert test_tfm.transforms[0].size == 16  # short side to max(INPUT.SIZE)
    assert test_tfm(img).shape == (3, 16, 16)
    with pytest.raises(ValueError, match="Supported"):
        E.build_transform(_cfg(INPUT__TRANSFORMS=["warp_drive"]), is_train=True)


@pytest.mark.parametrize("max_epoch", [5, 10])
def test_cosine_with_constant_warmup_lr_every_epoch(max_epoch):
    cfg = _cfg(OPTIM__NAME="sgd", OPTIM__LR=0.002, OPTIM__MAX_EPOCH=max_epoch,
               OPTIM__LR_SCHEDULER="cosine", OPTIM__WARMUP_EPOCH=1,
               OPTIM__WARMUP_TYPE="constant", OPTIM__WARMUP_CONS_LR=1e-5)
    p = nn.Parameter(torch.zeros(1))
    opt = E.build_optimizer([p], cfg.OPTIM)
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["weight_decay"] == 5e-4
    sched = E.build_lr_scheduler(opt, cfg.OPTIM)
    lrs = []
    for _ in range(max_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # Dassl: epoch 0 at the warm-up LR, then cosine restarted from the base LR
    want = [1e-5] + [0.5 * 0.002 * (1 + math.cos(math.pi * (k - 1) / max_epoch)) for k in range(1, max_epoch)]
    assert lrs == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_scheduler_state_round_trip_and_weights_only(tmp_path):
    cfg = _cfg(OPTIM__NAME="sgd", OPTIM__LR_SCHEDULER="cosine", OPTIM__WARMUP_EPOCH=1,
               OPTIM__WARMUP_TYPE="constant", OPTIM__MAX_EPOCH=6)
    p = nn.Parameter(torch.zeros(1))
    opt = E.build_optimizer([p], cfg.OPTIM)
    sched = E.build_lr_scheduler(opt, cfg.OPTIM)
    for _ in range(3):
        opt.step()
        sched.step()
    path = tmp_path / "s.pt"
    torch.save({"optim": opt.state_dict(), "sched": sched.state_dict(),
                "rng": E.capture_rng_state()}, path)
    state = torch.load(path, weights_only=True)  # no pickled objects inside
    opt2 = E.build_optimizer([nn.Parameter(torch.zeros(1))], cfg.OPTIM)
    sched2 = E.build_lr_scheduler(opt2, cfg.OPTIM)
    opt2.load_state_dict(state["optim"])
    sched2.load_state_dict(state["sched"])
    for _ in range(2):
        sched.step()
        sched2.step()
        assert sched.get_last_lr() == pytest.approx(sched2.get_last_lr())


@E.DATASET_REGISTRY.register(force=True)
class _ToyEngineData(E.DatasetBase):
    def __init__(self, cfg):
        items = _images(__import__("pathlib").Path(cfg.DATASET.ROOT), n_classes=3, per_class=6)
        super().__init__(train_x=items, val=items[:3], test=items)


@E.TRAINER_REGISTRY.register(force=True)
class _ToyTrainer(E.TrainerX):
    stop_after_epoch = None

    def build_model(self):
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, self.num_classes))
        self.optim = E.build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = E.build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("model", self.model, self.optim, self.sched)

    def forward_backward(self, batch):
        x, y, _ = self.parse_batch_train(batch)
        loss = nn.functional.cross_entropy(self.model(x), y)
        self.model_backward_and_update(loss)
        if self.batch_idx + 1 == self.num_batches:
            self.update_lr()
        return {"loss": loss.item()}

    def after_epoch(self):
        super().after_epoch()
        if self.stop_after_epoch is not None and self.epoch + 1 == self.stop_after_epoch:
            raise KeyboardInterrupt  # simulate a run killed after a checkpoint


def _toy_cfg(tmp_path, out):
    cfg = _cfg(OPTIM__NAME="sgd", OPTIM__LR=0.05, OPTIM__MAX_EPOCH=4, OPTIM__LR_SCHEDULER="cosine",
               OPTIM__WARMUP_EPOCH=1, OPTIM__WARMUP_TYPE="constant", TRAIN__CHECKPOINT_FREQ=1,
               TRAIN__PRINT_FREQ=1)
    cfg.DATASET.ROOT = str(tmp_path / "data")
    cfg.DATASET.NAME = "_ToyEngineData"
    cfg.TRAINER.NAME = "_ToyTrainer"
    cfg.DATALOADER.TRAIN_X.BATCH_SIZE = 4
    cfg.OUTPUT_DIR = str(out)
    cfg.SEED = 1
    return cfg


def _run(cfg, stop=None):
    E.set_random_seed(cfg.SEED)
    trainer = E.build_trainer(cfg)
    trainer.stop_after_epoch = stop
    try:
        trainer.train()
    except KeyboardInterrupt:
        pass
    return trainer


def test_checkpoint_names_and_resume_matches_uninterrupted_run(tmp_path, capsys):
    full = _run(_toy_cfg(tmp_path, tmp_path / "full"))
    out = capsys.readouterr().out
    assert "epoch [1/4] batch [1/4]" in out and "lr 1.0000e-05" in out and "eta " in out
    assert "=> result" in out and "* accuracy:" in out and "Elapsed:" in out
    files = sorted(os.listdir(tmp_path / "full" / "model"))
    assert files == ["checkpoint"] + [f"model.pth.tar-{e}" for e in range(1, 5)]
    assert (tmp_path / "full" / "model" / "checkpoint").read_text().strip() == "model.pth.tar-4"

    _run(_toy_cfg(tmp_path, tmp_path / "cut"), stop=2)
    assert (tmp_path / "cut" / "model" / "checkpoint").read_text().strip() == "model.pth.tar-2"
    capsys.readouterr()
    resumed = _run(_toy_cfg(tmp_path, tmp_path / "cut"))
    assert "Previous epoch: 2" in capsys.readouterr().out
    for (n, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), n


def test_unknown_names_list_known_ones(tmp_path):
    cfg = _toy_cfg(tmp_path, tmp_path / "x")
    cfg.TRAINER.NAME = "_ToyTrainr"
    with pytest.raises(KeyError, match="Known names:.*_ToyTrainer.*Did you mean"):
        E.build_trainer(cfg)
    cfg.DATASET.NAME = "NoSuchData"
    with pytest.raises(KeyError, match="_ToyEngineData"):
        E.build_dataset(cfg)


def test_read_image_names_corrupt_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(OSError, match="bad.jpg"):
        E.read_image(str(bad))


def test_load_checkpoint_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "obj": _ToyTrainer}, path)
    with pytest.raises(RuntimeError, match="evil.pth.tar"):
        E.load_checkpoint(str(path))


def test_corrupt_image_inside_a_loader_worker_names_its_path(tmp_path):
    items = _images(tmp_path, n_classes=2, per_class=2)
    with open(items[1].impath, "wb") as f:
        f.write(b"truncated")  # the file exists but is no image
    cfg = _cfg()
    cfg.DATALOADER.NUM_WORKERS = 1
    loader = E.build_data_loader(cfg, "SequentialSampler", items, batch_size=2,
                                 tfm=E.build_transform(cfg, is_train=False), is_train=False)
    with pytest.raises(OSError, match=re.escape(items[1].impath)):
        next(iter(loader))
