"""An exponential moving average of the weights (Polyak averaging), kept beside training.

With a constant learning rate the weights after the last step sit wherever the last few batches
pushed them; their average over the last hundred or so steps is a smoother model (Polyak and
Juditsky 1992; the "EMA" or "mean teacher" weights of many segmentation recipes). The trainer
updates it after every optimiser step when ``TrainConfig.ema_decay`` is set, validates it instead
of the raw weights, and returns it (``TrainResult.ema_state``). docs/finetuning.md gives what it
was measured to be worth.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """``module``'s weights averaged over training: ``avg = d * avg + (1 - d) * current``.

    The decay ``d`` is ``min(decay, (1 + n) / (10 + n))`` at the ``n``-th update, so the first
    updates forget the initial weights quickly (a short run is not pulled back to them) and the
    average settles to a horizon of about ``1 / (1 - decay)`` steps. Floating-point buffers
    (batch-norm statistics) are averaged like weights; integer ones are copied.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            from ..config import ConfigError

            raise ConfigError(f"ema_decay {decay}: use a number between 0 and 1, e.g. 0.99 (or none to turn it off)")
        self.decay, self.n = float(decay), 0
        self.module = copy.deepcopy(module).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Fold ``module``'s current weights into the average."""
        self.n += 1
        d = min(self.decay, (1.0 + self.n) / (10.0 + self.n))
        current = module.state_dict()
        for name, avg in self.module.state_dict().items():
            new = current[name].detach()
            if avg.is_floating_point():
                avg.lerp_(new.to(avg.dtype), 1.0 - d)
            else:
                avg.copy_(new)

    def state(self) -> dict[str, torch.Tensor]:
        """A CPU copy of the averaged ``state_dict`` (keys as the trained module's)."""
        return {k: t.detach().to("cpu", copy=True) for k, t in self.module.state_dict().items()}

    def dump(self) -> dict[str, Any]:
        """For a training checkpoint: the update count and the averaged weights."""
        return {"n": self.n, "state": self.module.state_dict()}

    def load(self, d: Mapping[str, Any]) -> None:
        """Restore what :meth:`dump` wrote (a resumed run continues the same average)."""
        self.n = int(d.get("n", 0))
        if "state" in d:
            self.module.load_state_dict(d["state"])
