"""Live previews while fine-tuning: the model's maps of one slice every ``preview_every`` steps."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.normalize import normalize

__all__ = ["with_previews", "predict_slice"]


def with_previews(job, model: nn.Module, image, lo: float, hi: float, cfg: Any):
    """Forward the trainer's events, adding a prediction of slice ``preview_z`` now and then."""
    from dataclasses import replace

    from ..progress import relay

    def add_preview(event):
        if cfg.preview_every and cfg.preview_z is not None and event.step and event.step % cfg.preview_every == 0:
            return replace(event, preview=predict_slice(model, image, cfg.preview_z, lo, hi))
        return event

    return (yield from relay(job, add_preview))


def predict_slice(model: nn.Module, image, z: int, lo: float, hi: float, max_side: int = 384) -> dict[str, Any]:
    """The model's maps on (a centred window of) slice ``z``, for live display."""
    from ..models.info import apply_activation

    info = model.info
    nz, ny, nx = image.shape
    dz = info.tile[0] if info.spatial_dims == 3 else 1
    mult = info.input_multiple
    hy, hx = (min(n, max_side) // m * m for n, m in zip((ny, nx), mult[1:]))
    y0, x0 = (ny - hy) // 2, (nx - hx) // 2
    z0 = int(np.clip(z - dz // 2, 0, max(0, nz - dz)))
    block = image[z0 : z0 + dz, y0 : y0 + hy, x0 : x0 + hx]
    block = normalize(np.asarray(block.compute() if hasattr(block, "compute") else block), lo, hi, info.norm.invert)
    if block.shape[0] < dz:
        block = np.pad(block, ((0, dz - block.shape[0]), (0, 0), (0, 0)), mode="edge")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        x = torch.from_numpy(block)[None, None].to(device)
        if info.spatial_dims == 2:
            x = x[:, :, min(z - z0, dz - 1)]
            maps = apply_activation(model(x), info)[0]
        else:
            maps = apply_activation(model(x), info)[0][:, min(z - z0, dz - 1)]
    model.train(was_training)
    return {"z": int(z), "offset": (int(y0), int(x0)), "maps": maps.float().cpu().numpy(),
            "channel_names": tuple(info.channel_names)}
