"""What the 2D reconstruction objectives share (:mod:`.retina`, :mod:`.masked2d`).

Both train a whole 2D network with a 1-channel reconstruction head to return a slice from an
altered copy of it: the network (``self.net``, exported whole), its input multiple, the preview
(input, reconstruction, target of the first sample) and the check that the sampler gives 2D
slices. They differ in the network, the alteration and the loss.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..models.build import build_model
from ..models.heads import head_info

__all__ = ["SliceReconstruction", "check_slices"]


def check_slices(patches: np.ndarray, method: str) -> None:
    """Raise unless the sampler's ``(B, Z, Y, X)`` patches are single slices (``Z == 1``)."""
    if patches.shape[1] != 1:
        raise ValueError(f"{method} works on 2D slices: the patch must be (1, Y, X), got {patches.shape[1:]}")


class SliceReconstruction(nn.Module):
    """A network of architecture :attr:`arch` (whatever ``cfg.backbone.arch`` says) with a
    1-channel reconstruction head, as ``self.net``; subclasses give ``forward(batch) -> (loss,
    metrics)``. ``batch`` holds ``"input"`` and ``"target"``, ``(B, 1, Y, X)``."""

    arch: str

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = build_model(cfg.backbone.replace(arch=self.arch, out_channels=1), head_info("reconstruction"))

    @property
    def input_multiple(self) -> tuple[int, ...]:
        return tuple(self.net.input_multiple)

    def preview(self, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """First sample: altered input, reconstruction, target."""
        x = batch["input"][:1]
        rec = self.net(x)
        pick = (lambda t: t[0, 0].detach().float().cpu().numpy())  # noqa: E731
        return {"input": pick(x), "reconstruction": pick(rec), "target": pick(batch["target"])}

    def export_model(self) -> nn.Module:
        """The whole network (what fine-tuning loads of it: see the objective's module)."""
        return self.net
