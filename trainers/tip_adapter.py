"""Tip-Adapter (training-free) and Tip-Adapter-F (learned cache keys); method in
:mod:`clipfit.methods.tip_adapter`."""
from __future__ import annotations

from typing import Any, Iterator, List, Sequence, Tuple

import torch

from clipfit.engine import TRAINER_REGISTRY, build_data_loader, build_transform
from clipfit.methods.backbone import backbone
from clipfit.methods.templates import resolve_template
from clipfit.methods.tip_adapter import CFG_PREFIX, TipAdapterModel, TipSettings, build_cache, tip_templates
from clipfit.training.base_trainer import CLIPTrainer
from clipfit.errors import ConfigValueError, UserError


class TipAdapterTrainer(CLIPTrainer):
    """What Tip-Adapter and Tip-Adapter-F share (not registered): the cache built from the
    few-shot set, and alpha/beta searched on the validation set before the test."""

    prec_key = CFG_PREFIX + "PREC"
    learn_keys: bool = False  # Tip-Adapter-F learns the cache keys

    def check_cfg(self, cfg) -> None:
        super().check_cfg(cfg)
        TipSettings.from_cfg(cfg.TRAINER.TIP_ADAPTER).check()
        if cfg.DATASET.SUBSAMPLE_CLASSES == "new":
            raise ConfigValueError(
                "DATASET.SUBSAMPLE_CLASSES is 'new', but Tip-Adapter's cache needs labelled shots of every "
                "class it predicts and base-to-new gives none of the new classes: use 'all' or 'base'."
            )

    def cache_views(self, clip_model: torch.nn.Module) -> Iterator[List[Tuple[torch.Tensor, torch.Tensor]]]:
        """Per augmentation epoch, the few-shot set in a fixed order under the training transform."""
        cfg = self.cfg
        loader = build_data_loader(
            cfg, sampler_type="SequentialSampler", data_source=self.dm.dataset.train_x,
            batch_size=cfg.DATALOADER.TRAIN_X.BATCH_SIZE, tfm=build_transform(cfg, is_train=True), is_train=False,
        )
        for _ in range(int(cfg.TRAINER.TIP_ADAPTER.AUGMENT_EPOCH)):
            yield [(b["img"].to(self.device), b["label"].to(self.device)) for b in loader]

    def build_classifier(self, clip_model: torch.nn.Module, classnames: Sequence[str]) -> TipAdapterModel:
        cfg = self.cfg
        settings = TipSettings.from_cfg(cfg.TRAINER.TIP_ADAPTER)
        templates = [cfg.DATASET.TEMPLATE] if cfg.DATASET.TEMPLATE else tip_templates(
            cfg.DATASET.NAME, resolve_template(cfg))
        keys, labels = build_cache(self.cache_views(clip_model), backbone(clip_model).image.encode)
        return TipAdapterModel(clip_model, classnames, templates, keys, labels, settings, self.learn_keys)

    @torch.no_grad()
    def search_on_val(self) -> None:
        """Tip-Adapter's alpha/beta search on the validation set (skipped when SEARCH is off)."""
        if not self.model.settings.search:
            print(f"alpha {self.model.alpha}, beta {self.model.beta} ({CFG_PREFIX}SEARCH False)")
            return
        if self.val_loader is None:
            raise ConfigValueError(f"{CFG_PREFIX}SEARCH needs a validation split, and {self.cfg.DATASET.NAME} "
                                   f"has none here: set {CFG_PREFIX}SEARCH False to keep INIT_ALPHA and INIT_BETA.")
        self.model.eval()
        feats, labels = [], []
        for batch in self.val_loader:
            image, label = self.parse_batch_test(batch)
            with self.autocast():
                feats.append(self.model.normalized_image_features(image))
            labels.append(label)
        beta, alpha, acc = self.model.search(torch.cat(feats), torch.cat(labels))
        n_val = sum(int(t.numel()) for t in labels)
        print(f"Searched on val ({n_val} images): beta {beta:.4f}, "
              f"alpha {alpha:.4f}, val accuracy {acc:.2f}%")

    def test(self, split=None) -> float:
        if (split or self.cfg.TEST.SPLIT) == "test":
            self.search_on_val()
        return super().test(split)


@TRAINER_REGISTRY.register()
class TipAdapter(TipAdapterTrainer):
    """Tip-Adapter (Zhang et al., ECCV 2022): a cache of the few-shot training set, alpha and
    beta searched on the validation set; nothing is trained, so run it with ``--eval-only``
    or ``--no-train``. Options: ``TRAINER.TIP_ADAPTER.*``."""

    model_name = "tip_adapter"

    def train(self) -> None:
        raise UserError("TipAdapter is training-free: run train.py with --eval-only or --no-train "
                        "(TipAdapterF fine-tunes the cache keys).")


@TRAINER_REGISTRY.register()
class TipAdapterF(TipAdapterTrainer):
    """Tip-Adapter-F: the cache keys fine-tuned with AdamW (epsilon ``TRAINER.TIP_ADAPTER.ADAMW_EPS``),
    cosine learning rate stepped per batch, last batch kept, then alpha/beta searched on val."""

    model_name = "tip_adapter_f"
    learn_keys = True
    lr_per_batch = True

    def build_data_loader(self) -> None:
        super().build_data_loader()
        cfg = self.cfg  # Tip-Adapter-F shuffles and keeps the last, smaller batch
        self.train_loader_x = self.dm.train_loader_x = build_data_loader(
            cfg, sampler_type="RandomSampler", data_source=self.dm.dataset.train_x,
            batch_size=cfg.DATALOADER.TRAIN_X.BATCH_SIZE, tfm=build_transform(cfg, is_train=True), is_train=False,
        )

    def build_optimizer(self) -> Tuple[torch.optim.Optimizer, Any]:
        """Tip-Adapter-F's AdamW over the cache keys, cosine over every batch of ``OPTIM.MAX_EPOCH``."""
        o = self.cfg.OPTIM
        optim = torch.optim.AdamW([self.model.cache_keys], lr=o.LR, weight_decay=o.WEIGHT_DECAY,
                                  betas=(o.ADAM_BETA1, o.ADAM_BETA2), eps=float(self.cfg.TRAINER.TIP_ADAPTER.ADAMW_EPS))
        return optim, torch.optim.lr_scheduler.CosineAnnealingLR(optim, o.MAX_EPOCH * len(self.train_loader_x))
