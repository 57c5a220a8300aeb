"""The held-out painted slice: split it off the training annotations and score it.

With two or more painted slices, fine-tuning holds the last one out; :func:`holdout_validator`
scores the masked loss on fixed patches that lie on it, for the trainer's early stopping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .dataset import AnnotatedPatches

__all__ = ["split_holdout", "holdout_validator"]

logger = logging.getLogger(__name__)


def split_holdout(ann: Any, holdout: bool = True) -> tuple[Any, Any]:
    """Hold out the last painted slice for validation when there are two or more."""
    from dataclasses import replace

    if not holdout or ann.axis is None or len(ann.slices) < 2:
        return ann, None
    held = ann.slices[-1]
    local = held - ann.box[ann.axis].start
    index: list[Any] = [slice(None)] * 3
    index[ann.axis] = local
    train_mask = ann.mask.copy()
    train_mask[tuple(index)] = False
    val_mask = np.zeros_like(ann.mask)
    val_mask[tuple(index)] = ann.mask[tuple(index)]
    return (replace(ann, mask=train_mask, slices=ann.slices[:-1]),
            replace(ann, mask=val_mask, slices=(held,)))


def holdout_validator(img: np.ndarray, val_ann: Any, kind: str, patch: Any, model: nn.Module,
                      target_kwargs: dict[str, Any]) -> Callable[[nn.Module, int], dict[str, float]] | None:
    """Masked loss on fixed patches tiling the held-out slice (``None`` when none has a target).

    Patch centres snap to a grid in the slice's plane and stay on the slice itself along the
    painted axis, so every patch scores the held-out labels.
    """
    val = AnnotatedPatches(img, val_ann, kind, patch, batch_size=1, augmentation=None,
                           spatial_dims=model.info.spatial_dims, target_kwargs=target_kwargs)
    centres = val.centres
    grid = [np.unique(np.clip(np.arange(p // 2, s, p), 0, s - 1)) if p // 2 < s else np.array([s // 2])
            for p, s in zip(patch, img.shape)]
    chosen = []
    for c in centres[np.linspace(0, len(centres) - 1, min(len(centres), 64)).astype(int)]:
        snapped = tuple(int(v) if ax == val_ann.axis else int(g[np.argmin(np.abs(g - v))])
                        for ax, (g, v) in enumerate(zip(grid, c)))
        if snapped not in chosen:
            chosen.append(snapped)
    samples = [val.sample(np.random.default_rng(0), centre=np.array(c)) for c in chosen]
    samples = [s for s in samples if s["mask"].any()][:8]  # a loss over no voxel would be 0
    if not samples:
        logger.warning("the held-out slice gives no patch with targets; training without early stopping")
        return None

    def validate(objective: nn.Module, step: int) -> dict[str, float]:
        device = next(objective.parameters()).device
        losses = []
        for s in samples:
            batch = {k: torch.from_numpy(v[None]).to(device) for k, v in s.items()}
            loss, _ = objective(batch)
            losses.append(float(loss))
        return {"val_loss": float(np.mean(losses))}

    return validate
