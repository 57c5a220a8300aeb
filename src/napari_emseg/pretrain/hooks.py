"""Hooks the training loop calls: previews, validation and early stopping (rank 0 only).

Both run the model in ``eval`` mode under ``torch.no_grad`` and inside ``torch.random.fork_rng``,
so they never change the random stream of training (a resumed run stays exact).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._atomic import atomic_path
from ..config import ConfigError
from .tracking import Tracker

__all__ = ["EarlyStopping", "run_preview", "run_validation"]


def _devices() -> list[int]:
    return [torch.cuda.current_device()] if torch.cuda.is_available() else []


def run_preview(objective: nn.Module, batch: Any, device: torch.device) -> dict[str, np.ndarray] | None:
    """``objective.preview(batch)``: named 2D images (input, masked input, reconstruction ...)."""
    was = objective.training
    objective.eval()
    try:
        with torch.random.fork_rng(devices=_devices()), torch.no_grad():
            return objective.preview(batch)  # type: ignore[operator]
    finally:
        objective.train(was)


class EarlyStopping:
    """Early-stopping bookkeeping: the best metric, its step and a CPU copy of the weights."""

    def __init__(self, metric: str | None, mode: str = "min", patience: int | None = None) -> None:
        self.metric, self.mode, self.patience = metric, mode, patience
        self.value: float | None = None
        self.step: int | None = None
        self.state: dict[str, torch.Tensor] | None = None
        self.bad = 0

    def update(self, model: nn.Module, metrics: Mapping[str, float], step: int) -> bool:
        """Record a validation; True when patience is exhausted."""
        name = self.metric
        if name is None:
            return False
        if name not in metrics:
            raise ConfigError(f"train.early_stop_metric {name!r} is not among the validation metrics "
                              f"{sorted(metrics)}")
        v = float(metrics[name])
        better = self.value is None or (v < self.value if self.mode == "min" else v > self.value)
        if better:
            self.value, self.step, self.bad = v, step, 0
            self.state = {k: t.detach().to("cpu", copy=True) for k, t in model.state_dict().items()}
        else:
            self.bad += 1
        return self.patience is not None and self.bad >= self.patience

    def dump(self) -> dict[str, Any]:
        return {"value": self.value, "step": self.step, "bad": self.bad}

    def load(self, d: Mapping[str, Any]) -> None:
        self.value, self.step, self.bad = d.get("value"), d.get("step"), int(d.get("bad", 0))


def run_validation(objective: nn.Module, validate: Callable, step: int, best: EarlyStopping,
                    validations: list[dict[str, float]], tracker: Tracker, out: Path | None) -> bool:
    """Call ``validate(model, step)``, log it, update ``best`` (saving ``out/best_state.pt``);
    True when early stopping says stop."""
    was = objective.training
    objective.eval()
    try:
        with torch.random.fork_rng(devices=_devices()), torch.no_grad():
            res = {k: float(v) for k, v in dict(validate(objective, step)).items()}
    finally:
        objective.train(was)
    validations.append({"step": step, **res})
    tracker.scalars({f"val/{k}": v for k, v in res.items()}, step)
    prev = best.step
    stop = best.update(objective, res, step)
    if out is not None and best.state is not None and best.step != prev:
        with atomic_path(out / "best_state.pt") as tmp:
            torch.save({"step": best.step, "metric": best.value, "state": best.state}, tmp)
    return stop

