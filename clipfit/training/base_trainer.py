"""The shared base of every CLIP trainer (zero-shot CLIP, CLIPFit, CoOp-style baselines).

A subclass sets :attr:`CLIPTrainer.prec_key` and implements
:meth:`CLIPTrainer.build_classifier`, returning a
:class:`clipfit.methods.classifier.CLIPClassifier`. The base does the rest, with Dassl's
public behaviour on either engine:

- loads CLIP (:func:`clipfit.methods.clip_loader.load_clip`), checks ``INPUT.SIZE``, moves it to
  the device and sets the precision (fp16, amp, bf16 or fp32, see
  :mod:`clipfit.training.precision`); with ``TRAIN.COMPILE`` it compiles the encoders;
- builds the optimiser and scheduler over the learned tensors only (frozen ones get
  neither gradients nor optimiser state) and steps the scheduler once per epoch (per batch
  with ``lr_per_batch``). Hooks: :meth:`CLIPTrainer.build_optimizer` (another optimiser or
  schedule) and :meth:`CLIPTrainer.compute_gradients` (gradients other than ``loss.backward()``);
  the optimiser step around them, with amp's loss scaling, stays in the base;
- stops on a non-finite loss with a message naming epoch, batch and precision;
- ``test()`` encodes the class prompts once per call, prints Dassl's result block and,
  for the test split, writes ``<OUTPUT_DIR>/metrics.json``;
- checkpoints hold only the learned tensors and what is needed to check them
  (:mod:`clipfit.training.tuned_checkpoint`), under Dassl's file names, so ``--resume``,
  ``--eval-only --model-dir DIR --load-epoch N`` and ``TEST.FINAL_MODEL best_val`` work.
"""
from __future__ import annotations

import os.path as osp
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from clipfit.checkpoint_files import checkpoint_file, has_checkpoint, load_newest
from clipfit.training import foreign_checkpoint, precision as prec, preemption, tuned_checkpoint as ckpt_io
from clipfit.training.config import cfg_value
from clipfit.fileio import write_json
from clipfit.methods.classifier import CLIPClassifier, LossParts
from clipfit.methods.clip_loader import architecture, load_clip, resolve_weights, weights_fingerprint
from clipfit.methods.backbone import backbone
from clipfit.engine import (TrainerX, build_lr_scheduler, build_optimizer, capture_rng_state,
                     compute_accuracy, restore_rng_state)
from clipfit.engine.builtin.checkpoint import save_checkpoint  # atomic on either engine
from clipfit.errors import ConfigValueError, UserError

METRICS_FILE = "metrics.json"


def check_preprocessing(cfg, preprocess: Dict[str, Any]) -> None:
    """Refuse ``INPUT.PIXEL_MEAN/PIXEL_STD/INTERPOLATION`` other than the backbone's, naming the opts
    that fix them; say when its resize mode is not the one Dassl's test transform applies."""
    wanted = {"INPUT.PIXEL_MEAN": [round(float(v), 8) for v in preprocess["mean"]],
              "INPUT.PIXEL_STD": [round(float(v), 8) for v in preprocess["std"]],
              "INPUT.INTERPOLATION": preprocess["interpolation"]}
    given = {"INPUT.PIXEL_MEAN": [round(float(v), 8) for v in cfg.INPUT.PIXEL_MEAN],
             "INPUT.PIXEL_STD": [round(float(v), 8) for v in cfg.INPUT.PIXEL_STD],
             "INPUT.INTERPOLATION": cfg.INPUT.INTERPOLATION}
    wrong = [k for k in wanted if wanted[k] != given[k]]
    if wrong:
        opts = " ".join(f"{k} \"{wanted[k]}\"" if isinstance(wanted[k], list) else f"{k} {wanted[k]}" for k in wrong)
        raise ConfigValueError(
            f"{cfg.MODEL.BACKBONE.NAME} was trained with other preprocessing than this config's ("
            + ", ".join(f"{k} {given[k]} vs {wanted[k]}" for k in wrong) + f"). Add: {opts}")
    if preprocess.get("resize_mode", "shortest") != "shortest":
        print(f"Note: {cfg.MODEL.BACKBONE.NAME} was trained with resize mode '{preprocess['resize_mode']}'; the test "
              "transform resizes the short side and crops the centre (identical for square images)")


class TrainingDivergedError(UserError, FloatingPointError):
    """A non-finite training loss, with the setting to change."""


class CLIPTrainer(TrainerX):
    """Base trainer over a :class:`CLIPClassifier` (see the module docstring)."""

    prec_key: str = ""  # dotted config key of the precision, e.g. "TRAINER.CLIPFIT.PREC"
    model_name: str = "model"  # registered model name = checkpoint sub-directory
    lr_per_batch: bool = False  # step the scheduler after every batch (else once per epoch)
    reference_prefix: str = ""  # removed from learned names to give the reference's checkpoint keys

    # Subclass hook -------------------------------------------------------------------
    def build_classifier(self, clip_model: torch.nn.Module, classnames: Sequence[str]) -> CLIPClassifier:
        """The classifier around ``clip_model`` (already on the device, in its precision)."""
        raise NotImplementedError

    # Config and precision ---------------------------------------------------------------
    def check_cfg(self, cfg) -> None:
        prec.check_choice(self.prec_key, cfg_value(cfg, self.prec_key))

    def _resolve_precision(self) -> str:
        return prec.resolve(self.prec_key, cfg_value(self.cfg, self.prec_key), self.device)

    def autocast(self):
        """The forward-pass context of the precision (autocast for amp and bf16, else nothing)."""
        return prec.autocast(self.precision, self.device)

    # Model ----------------------------------------------------------------------------
    def build_model(self) -> None:
        cfg = self.cfg
        clip_model = load_clip(cfg)
        self.weights_record = {  # the pre-trained weights, recorded in every checkpoint's meta
            "fingerprint": weights_fingerprint(clip_model),
            "source": resolve_weights(cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PATH),
        }
        bb = backbone(clip_model)
        res = bb.input_size
        if tuple(cfg.INPUT.SIZE) != (res, res):
            raise ConfigValueError(
                f"INPUT.SIZE is {tuple(cfg.INPUT.SIZE)} but the CLIP image encoder of "
                f"{cfg.MODEL.BACKBONE.NAME} takes {res}x{res} images: set INPUT.SIZE ({res}, {res})."
            )
        if bb.family != "openai":
            check_preprocessing(cfg, bb.preprocess)
        self.precision = self._resolve_precision()
        clip_model.to(self.device)
        if self.precision == "fp16":
            bb.to_half()
        print(f"Precision: {self.precision} ({self.prec_key})")
        with self.autocast():
            self.model = self.build_classifier(clip_model, self.dm.dataset.classnames)
        self.model.to(self.device)
        train = cfg.TRAIN
        self.compiler = prec.EncoderCompiler(train.COMPILE, train.COMPILE_BACKEND, train.COMPILE_MODE)
        self.compiler.apply(self.model)
        for line in self.model.describe():
            print(line)
        if cfg.MODEL.INIT_WEIGHTS:  # as CoOp: learned tensors start from a checkpoint
            checkpoint, _ = foreign_checkpoint.read_any(
                cfg.MODEL.INIT_WEIGHTS, self.model.learned_parameters(), self.reference_prefix)
            ckpt_io.restore(self.model.learned_parameters(), checkpoint["state_dict"])
            print(f"Initialised {len(checkpoint['state_dict'])} learned tensor(s) from {cfg.MODEL.INIT_WEIGHTS} "
                  "(MODEL.INIT_WEIGHTS)")
        self.weights_epoch = 0  # epochs of training the current weights have seen
        self._test_text_features: Optional[torch.Tensor] = None  # set while test() runs
        learned = self.model.learned_parameters()
        self.scaler = None
        if learned:
            self.optim, self.sched = self.build_optimizer()
            self.register_model(self.model_name, self.model, self.optim, self.sched)
            if prec.needs_loss_scaling(self.precision):
                self.scaler = torch.amp.GradScaler(self.device.type)

    def build_optimizer(self) -> Tuple[torch.optim.Optimizer, Any]:
        """Hook: the optimiser and learning-rate scheduler over the learned tensors (Dassl's, from
        ``OPTIM.*``); called once by :meth:`build_model`, which registers them for checkpoints."""
        optim = build_optimizer(list(self.model.learned_parameters().values()), self.cfg.OPTIM)
        return optim, build_lr_scheduler(optim, self.cfg.OPTIM)

    # Training -------------------------------------------------------------------------
    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def detect_anomaly(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss).all():
            advice = prec.anomaly_advice(self.prec_key, self.precision)
            raise TrainingDivergedError(
                f"Training stopped: the loss is {loss.item()} at epoch {self.epoch + 1}/{self.max_epoch}, "
                f"batch {self.batch_idx + 1}/{self.num_batches}, with {self.prec_key} {self.precision}. "
                f"Try again with {advice}."
            )

    def after_backward(self) -> None:
        """Hook between backward and optimiser step (gradients are unscaled under amp)."""

    def scaled(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` as the gradients are computed from it: scaled by the amp loss scaler, if any."""
        return loss if self.scaler is None else self.scaler.scale(loss)

    def compute_gradients(self, loss: torch.Tensor, parts: LossParts) -> None:
        """Hook: set the ``.grad`` of the learned tensors from this batch's ``loss`` and ``parts``
        (:meth:`CLIPClassifier.loss`), scaled alike through :meth:`scaled`; default: backward."""
        self.scaled(loss).backward()

    def gradient_step(self) -> None:
        """After :meth:`compute_gradients`: :meth:`after_backward` (on unscaled gradients), then the
        optimiser step (through the loss scaler under amp)."""
        if self.scaler is None:
            self.after_backward()
            self.model_update()
        else:
            self.scaler.unscale_(self.optim)
            self.after_backward()
            self.scaler.step(self.optim)
            self.scaler.update()

    def forward_backward(self, batch) -> Dict[str, float]:
        image, label = self.parse_batch_train(batch)

        def step():  # repeatable up to the optimiser step: run again eagerly if compiling fails
            with self.autocast():
                loss, parts = self.model.loss(image, label)
            self.model_zero_grad()
            self.compute_gradients(loss, parts)
            return loss, parts

        loss, parts = self.compiler.run_step(step)
        self.detect_anomaly(loss)
        self.gradient_step()
        summary = {"loss": loss.item(), "acc": compute_accuracy(parts["logits"], label)[0].item()}
        summary.update({k: v.item() for k, v in parts.items() if k != "logits"})
        if self.lr_per_batch or (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return summary

    def after_epoch(self) -> None:
        self.weights_epoch = self.epoch + 1
        super().after_epoch()
        preemption.after_epoch(self)  # under SLURM: a checkpoint per epoch

    # Evaluation -----------------------------------------------------------------------
    def model_inference(self, input: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.model.logits(input, self._test_text_features)

    @torch.no_grad()
    def test(self, split: Optional[str] = None) -> float:
        """Dassl's test loop, with the class features computed once for the whole split."""
        self.set_model_mode("eval")
        self.model.eval()
        self.evaluator.reset()
        split = split or self.cfg.TEST.SPLIT
        if split == "val" and self.val_loader is not None:
            data_loader = self.val_loader
        else:
            split, data_loader = "test", self.test_loader
        print(f"Evaluate on the *{split}* set")
        self.compiler.start_first()
        with self.autocast():
            self._test_text_features = self.model.class_text_features()
        correct = total = 0
        try:
            for batch in tqdm(data_loader):
                input, label = self.parse_batch_test(batch)
                output = self.model_inference(input)
                self.compiler.end_first("test batch (class features included)")
                self.evaluator.process(output, label)
                correct += int((output.argmax(dim=1) == label).sum())
                total += label.numel()
        finally:
            self._test_text_features = None
        results = self.evaluator.evaluate()
        for k, v in results.items():
            self.write_scalar(f"{split}/{k}", v, self.epoch)
        if split == "test":
            self.write_metrics(results, correct, total)
        return list(results.values())[0]

    def write_metrics(self, results: Dict[str, float], correct: int, total: int) -> None:
        """``<OUTPUT_DIR>/metrics.json`` with full-precision results and the run's identity."""
        cfg = self.cfg
        write_json(
            osp.join(cfg.OUTPUT_DIR, METRICS_FILE),
            {
                "split": "test",
                "accuracy": float(results["accuracy"]),
                "error_rate": float(results["error_rate"]),
                "macro_f1": float(results["macro_f1"]),
                "total": total,
                "correct": correct,
                "trainer": cfg.TRAINER.NAME,
                "dataset": cfg.DATASET.NAME,
                "subsample": cfg.DATASET.SUBSAMPLE_CLASSES,
                "shots": int(cfg.DATASET.NUM_SHOTS),
                "seed": int(cfg.SEED),
                "backbone": cfg.MODEL.BACKBONE.NAME,
                "epoch": int(self.weights_epoch),
            },
            indent=2,
        )

    # Checkpoints ------------------------------------------------------------------------
    def checkpoint_meta(self) -> Dict[str, Any]:
        """What a checkpoint of the current model records and must match to be loaded."""
        meta = ckpt_io.make_meta(
            self.cfg.MODEL.BACKBONE.NAME,
            architecture(self.model.clip),
            self.model.learned_parameters(),
            self.model.checkpoint_settings(),
            info={"trainer": self.cfg.TRAINER.NAME, "precision": self.precision},
        )
        meta["weights"] = dict(self.weights_record)
        return meta

    def save_model(self, epoch: int, directory: str, is_best: bool = False, val_result=None,
                   model_name: str = "") -> None:
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            state = {
                "state_dict": foreign_checkpoint.to_reference_keys(
                    ckpt_io.learned_state(self._models[name].learned_parameters()), self.reference_prefix),
                "epoch": epoch + 1,
                "optimizer": optim.state_dict() if optim is not None else None,
                "scheduler": sched.state_dict() if sched is not None else None,
                "val_result": val_result,
                "rng_state": capture_rng_state(),
                "meta": self.checkpoint_meta(),
            }
            if self.scaler is not None:
                state["scaler"] = self.scaler.state_dict()
            save_checkpoint(state, osp.join(directory, name), is_best=is_best, model_name=model_name)

    def _load_learned(self, name: str, path: str) -> Dict[str, Any]:
        """Read, check and restore one checkpoint into model ``name``; returns the checkpoint."""
        learned = self._models[name].learned_parameters()
        checkpoint, ours = foreign_checkpoint.read_any(path, learned, self.reference_prefix)
        if ours:
            ckpt_io.check_compatible(checkpoint, self.checkpoint_meta(), path)
            if self.cfg.MODEL.CHECK_WEIGHTS_FINGERPRINT:
                ckpt_io.check_weights(checkpoint, self.weights_record["fingerprint"], self.weights_record["source"], path)
            trained_in = checkpoint["meta"].get("info", {}).get("precision")
            if trained_in and trained_in != self.precision:
                print(f"Note: {path} was trained in {trained_in}; its learned tensors are used in {self.precision}")
        ckpt_io.restore(learned, checkpoint["state_dict"])
        self.weights_epoch = int(checkpoint["epoch"])
        return checkpoint

    def load_model(self, directory: str, epoch: Optional[int] = None) -> None:
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given "
                  "(ignore this if it's done on purpose)")
            return
        for name in self.get_model_names():
            path = osp.join(directory, name, checkpoint_file(epoch))
            checkpoint = self._load_learned(name, path)
            val = checkpoint.get("val_result")
            shown = f"{val:.1f}" if isinstance(val, (int, float)) else val
            print(f"Load {path} to {name} (epoch={checkpoint['epoch']}, val_result={shown})")

    def resume_model_if_exist(self, directory: str) -> int:
        """Resume from each model's newest checkpoint that loads (damaged ones are skipped, and said)."""
        names = self.get_model_names()
        if not names or not all(has_checkpoint(osp.join(directory, n)) for n in names):
            print("No checkpoint found, train from scratch")
            return 0
        print(f"Found checkpoint at {directory} (will resume training)")
        start_epoch = 0
        for name in names:
            def load(path: str, name: str = name) -> Dict[str, Any]:
                print(f'Loading checkpoint from "{path}"')
                return self._load_learned(name, path)

            _, checkpoint = load_newest(osp.join(directory, name), load)
            if self._optims[name] is not None and checkpoint.get("optimizer") is not None:
                self._optims[name].load_state_dict(checkpoint["optimizer"])
            if self._scheds[name] is not None and checkpoint.get("scheduler") is not None:
                self._scheds[name].load_state_dict(checkpoint["scheduler"])
            if self.scaler is not None and checkpoint.get("scaler") is not None:
                self.scaler.load_state_dict(checkpoint["scaler"])
            restore_rng_state(checkpoint.get("rng_state"))
            start_epoch = int(checkpoint["epoch"])
            print(f"Previous epoch: {start_epoch}")
        return start_epoch
