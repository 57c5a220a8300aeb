"""The trainer's optimiser and learning-rate schedule (:mod:`.trainer` uses them; so may tests)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import EmsegError

if TYPE_CHECKING:
    from .trainer import TrainConfig

__all__ = ["TrainingError", "build_optimizer", "lr_factor"]


class TrainingError(EmsegError, RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says what to try."""


def lr_factor(step: int, cfg: TrainConfig, time_fraction: float = 0.0) -> float:
    """Learning-rate multiplier at ``step``: linear warmup, then cosine (or constant).

    ``time_fraction`` (elapsed / ``time_limit_min``) moves the cosine on when the time limit,
    not ``max_steps``, will end the run: a run cut by its time limit ends at the low rate, as a
    run of ``max_steps`` does, instead of stopping at a high one.
    """
    warm = cfg.warmup
    if warm > 0 and step < warm:
        return (step + 1) / warm
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.max_steps - warm)
    t = min(1.0, max((step - warm) / span, time_fraction))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def build_optimizer(model: nn.Module, cfg: TrainConfig,
                    param_groups: Sequence[Mapping[str, Any]] | None = None) -> torch.optim.Optimizer:
    """The optimiser of ``cfg`` over ``param_groups`` (or all trainable parameters)."""
    if param_groups is None:
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    else:
        groups = []
        for g in param_groups:
            g = dict(g)
            g["params"] = [p for p in g["params"] if p.requires_grad]
            groups.append(g)
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise TrainingError("nothing to train: every parameter is frozen (requires_grad=False)")
    if cfg.optimizer in ("adamw", "adam"):
        cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        kwargs = dict(lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        try:  # the fused kernel (CUDA, and CPU in recent torch) is ~2x faster than the default
            return cls(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            return cls(groups, **kwargs)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
