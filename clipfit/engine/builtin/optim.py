"""Optimizers and LR schedulers from ``OPTIM.*`` with Dassl's defaults and warm-up rules.

The warm-up schedulers are written for current torch: Dassl's pass ``verbose`` to torch's
``LRScheduler``, which torch 2.14 rejects. The learning rate of every epoch is Dassl's.
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, Iterable, List, Optional, Union

import torch
import torch.nn as nn
from torch.optim.lr_scheduler import LRScheduler
from clipfit.errors import ConfigValueError

AVAI_OPTIMS = ["adam", "amsgrad", "sgd", "rmsprop", "adamw"]
AVAI_SCHEDS = ["single_step", "multi_step", "cosine"]


def build_optimizer(model: Union[nn.Module, Iterable], optim_cfg, param_groups=None) -> torch.optim.Optimizer:
    """Optimizer named ``OPTIM.NAME`` over ``model``'s parameters (or ``param_groups``)."""
    name = optim_cfg.NAME
    if name not in AVAI_OPTIMS:
        raise ConfigValueError(f"OPTIM.NAME must be one of {AVAI_OPTIMS}, but got '{name}'")
    lr, wd = optim_cfg.LR, optim_cfg.WEIGHT_DECAY
    if param_groups is not None and optim_cfg.STAGED_LR:
        warnings.warn("staged_lr is ignored when param_groups are given")
    if param_groups is None:
        if optim_cfg.STAGED_LR:
            if not isinstance(model, nn.Module):
                raise TypeError("OPTIM.STAGED_LR needs an nn.Module")
            if isinstance(model, nn.DataParallel):
                model = model.module
            new_layers = optim_cfg.NEW_LAYERS
            new_layers = [new_layers] if isinstance(new_layers, str) else list(new_layers)
            base, new = [], []
            for child_name, module in model.named_children():
                (new if child_name in new_layers else base).extend(module.parameters())
            param_groups = [{"params": base, "lr": lr * optim_cfg.BASE_LR_MULT}, {"params": new}]
        else:
            param_groups = model.parameters() if isinstance(model, nn.Module) else model
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=wd, betas=betas, amsgrad=name == "amsgrad")
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                               dampening=optim_cfg.SGD_DAMPNING, nesterov=optim_cfg.SGD_NESTEROV)
    if name == "rmsprop":
        return torch.optim.RMSprop(param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                                   alpha=optim_cfg.RMSPROP_ALPHA)
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=wd, betas=betas)


class _WarmupScheduler(LRScheduler):
    """Warm-up for ``warmup_epoch`` steps, then hand over to ``successor``."""

    def __init__(self, optimizer, successor: LRScheduler, warmup_epoch: int, last_epoch: int = -1):
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        super().__init__(optimizer, last_epoch)

    def warmup_lr(self) -> List[float]:
        raise NotImplementedError

    def get_lr(self) -> List[float]:
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        return self.warmup_lr()

    def step(self, epoch: Optional[int] = None) -> None:
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step()
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step()

    def state_dict(self) -> Dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "successor")}
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        state = dict(state_dict)
        self.successor.load_state_dict(state.pop("successor"))
        self.__dict__.update(state)


class ConstantWarmupScheduler(_WarmupScheduler):
    """Constant learning rate ``cons_lr`` during warm-up."""

    def __init__(self, optimizer, successor, warmup_epoch: int, cons_lr: float, last_epoch: int = -1):
        self.cons_lr = cons_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def warmup_lr(self) -> List[float]:
        return [self.cons_lr for _ in self.base_lrs]


class LinearWarmupScheduler(_WarmupScheduler):
    """Learning rate rising linearly from ``min_lr`` during warm-up."""

    def __init__(self, optimizer, successor, warmup_epoch: int, min_lr: float, last_epoch: int = -1):
        self.min_lr = min_lr
        super().__init__(optimizer, successor, warmup_epoch, last_epoch)

    def warmup_lr(self) -> List[float]:
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim_cfg) -> LRScheduler:
    """Scheduler named ``OPTIM.LR_SCHEDULER`` (stepped once per epoch), with optional warm-up."""
    kind, stepsize, gamma = optim_cfg.LR_SCHEDULER, optim_cfg.STEPSIZE, optim_cfg.GAMMA
    if kind not in AVAI_SCHEDS:
        raise ConfigValueError(f"OPTIM.LR_SCHEDULER must be one of {AVAI_SCHEDS}, but got '{kind}'")
    if kind == "single_step":
        if isinstance(stepsize, (list, tuple)):
            stepsize = stepsize[-1]
        if not isinstance(stepsize, int):
            raise TypeError(f"For single_step, OPTIM.STEPSIZE must be an integer, got {type(stepsize)}")
        scheduler = torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=stepsize if stepsize > 0 else optim_cfg.MAX_EPOCH, gamma=gamma)
    elif kind == "multi_step":
        if not isinstance(stepsize, (list, tuple)):
            raise TypeError(f"For multi_step, OPTIM.STEPSIZE must be a list, got {type(stepsize)}")
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(stepsize), gamma=gamma)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(optim_cfg.MAX_EPOCH))

    if optim_cfg.WARMUP_EPOCH > 0:
        if not optim_cfg.WARMUP_RECOUNT:
            scheduler.last_epoch = optim_cfg.WARMUP_EPOCH
        if optim_cfg.WARMUP_TYPE == "constant":
            scheduler = ConstantWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH,
                                                optim_cfg.WARMUP_CONS_LR)
        elif optim_cfg.WARMUP_TYPE == "linear":
            scheduler = LinearWarmupScheduler(optimizer, scheduler, optim_cfg.WARMUP_EPOCH,
                                              optim_cfg.WARMUP_MIN_LR)
        else:
            raise ConfigValueError(f"OPTIM.WARMUP_TYPE must be 'constant' or 'linear', got '{optim_cfg.WARMUP_TYPE}'")
    return scheduler
