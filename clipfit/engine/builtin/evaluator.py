"""Dassl's classification evaluator: accuracy, error and macro-F1, printed in Dassl's format."""
from __future__ import annotations

import os.path as osp
from collections import OrderedDict, defaultdict
from typing import Dict, Optional

import numpy as np
import torch
from .registry import EVALUATOR_REGISTRY


class EvaluatorBase:
    def __init__(self, cfg):
        self.cfg = cfg

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, mo: torch.Tensor, gt: torch.Tensor) -> None:
        raise NotImplementedError

    def evaluate(self) -> Dict[str, float]:
        raise NotImplementedError


@EVALUATOR_REGISTRY.register()
class Classification(EvaluatorBase):
    """Accumulates predictions; ``evaluate`` prints the ``=> result`` block CoOp's parser reads."""

    def __init__(self, cfg, lab2cname: Optional[Dict[int, str]] = None, **kwargs):
        super().__init__(cfg)
        self._lab2cname = lab2cname
        self._per_class = cfg.TEST.PER_CLASS_RESULT
        if self._per_class and lab2cname is None:
            raise ValueError("TEST.PER_CLASS_RESULT needs lab2cname")
        self.reset()

    def reset(self) -> None:
        self._correct = 0
        self._total = 0
        self._y_true: list = []
        self._y_pred: list = []
        self._per_class_res = defaultdict(list) if self._per_class else None

    def process(self, mo: torch.Tensor, gt: torch.Tensor) -> None:
        pred = mo.max(1)[1]
        matches = pred.eq(gt).float()
        self._correct += int(matches.sum().item())
        self._total += gt.shape[0]
        self._y_true.extend(gt.data.cpu().numpy().tolist())
        self._y_pred.extend(pred.data.cpu().numpy().tolist())
        if self._per_class_res is not None:
            for i, label in enumerate(gt):
                self._per_class_res[label.item()].append(int(matches[i].item()))

    def evaluate(self) -> Dict[str, float]:
        from sklearn.metrics import f1_score  # imported here: sklearn is slow to import

        results = OrderedDict()
        acc = 100.0 * self._correct / self._total
        err = 100.0 - acc
        macro_f1 = 100.0 * f1_score(self._y_true, self._y_pred, average="macro",
                                    labels=np.unique(self._y_true))
        results["accuracy"] = acc
        results["error_rate"] = err
        results["macro_f1"] = macro_f1
        print(
            "=> result\n"
            f"* total: {self._total:,}\n"
            f"* correct: {self._correct:,}\n"
            f"* accuracy: {acc:.1f}%\n"
            f"* error: {err:.1f}%\n"
            f"* macro_f1: {macro_f1:.1f}%"
        )
        if self._per_class_res is not None:
            print("=> per-class result")
            accs = []
            for label in sorted(self._per_class_res):
                res = self._per_class_res[label]
                acc_c = 100.0 * sum(res) / len(res)
                accs.append(acc_c)
                print(f"* class: {label} ({self._lab2cname[label]})\ttotal: {len(res):,}\t"
                      f"correct: {sum(res):,}\tacc: {acc_c:.1f}%")
            mean_acc = float(np.mean(accs))
            print(f"* average: {mean_acc:.1f}%")
            results["perclass_accuracy"] = mean_acc
        if self.cfg.TEST.COMPUTE_CMAT:
            from sklearn.metrics import confusion_matrix

            cmat = confusion_matrix(self._y_true, self._y_pred, normalize="true")
            save_path = osp.join(self.cfg.OUTPUT_DIR, "cmat.pt")
            torch.save(torch.from_numpy(cmat), save_path)
            print(f"Confusion matrix is saved to {save_path}")
        return results
