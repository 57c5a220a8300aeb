"""Masked-patch inpainting: self-supervised pretraining of the whole plain 2D U-Net on EM slices.

The network the 2D recipe fine-tunes (``unet2d``, MONAI ``BasicUNet``) has no separate encoder:
fine-tuning continues all of it. So this method trains all of it, on what a CNN U-Net is known
to learn from without labels (Models Genesis, Zhou et al. 2019; SimMIM-style masked image
modelling for CNNs): each slice ``x`` gets a random flip / rotation ``g``, then a random
``mask_ratio`` of the cells of a ``mask_patch`` grid is replaced by noise, and mild intensity
changes and noise are applied to the rest. The network must return ``g(x)``. The loss is the
mean squared error on the masked pixels plus ``visible_weight`` x the error on the others (where
a U-Net's skips could copy the input, so they count little: what teaches is filling in the
masked cells from their context). The exported network is the whole U-Net with a 1-channel head;
fine-tuning loads every tensor but the head (:func:`~napari_emseg.models.registry.model_for_encoder`).

It is the cheapest of the methods per step: one plain 2D U-Net forward and backward per slice,
no second view, no transformer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..config import Config
from ..data.augment import AugmentConfig, random_geometry, random_intensity
from ..data.sampler import SamplerConfig
from ..models.build import ModelConfig
from .reconstruction import SliceReconstruction, check_slices
from .trainer import TrainConfig

__all__ = ["Masked2DConfig", "Masked2DJob", "Masked2D", "MaskedViews", "build_objective", "make_transform",
           "grid_mask"]


@dataclass(frozen=True)
class Masked2DConfig(Config):
    """The objective: the 2D U-Net to pretrain, the masking and the loss weights."""

    backbone: ModelConfig = ModelConfig(arch="unet2d", out_channels=1)
    mask_ratio: float = 0.5
    mask_patch: int = 16
    visible_weight: float = 0.1


@dataclass(frozen=True)
class Masked2DJob(Config):
    """Everything a masked-inpainting pretraining run needs besides the data paths."""

    method: Literal["masked2d"] = "masked2d"
    model: Masked2DConfig = Masked2DConfig()
    geometry: AugmentConfig = AugmentConfig(flip=0.5, rotate90=0.5)
    corrupt: AugmentConfig = AugmentConfig(flip=0.0, rotate90=0.0, brightness=0.5, contrast=0.5, noise=0.5)
    data: SamplerConfig = SamplerConfig(patch=(1, 128, 128), batch_size=8)
    train: TrainConfig = TrainConfig(optimizer="adamw", lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4,
                                     warmup_fraction=0.02, max_steps=20_000, checkpoint_every=500,
                                     preview_every=1000)


def grid_mask(shape: tuple[int, int], patch: int, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean ``(Y, X)`` mask: ``round(ratio x cells)`` of the ``patch``-sized grid cells are True
    (the last row and column of cells may be cut by the edge)."""
    gy, gx = -(-shape[0] // patch), -(-shape[1] // patch)
    n = int(round(ratio * gy * gx))
    cells = np.zeros(gy * gx, bool)
    cells[rng.choice(gy * gx, size=n, replace=False)] = True
    grid = cells.reshape(gy, gx).repeat(patch, 0).repeat(patch, 1)
    return grid[: shape[0], : shape[1]]


class MaskedViews:
    """Sampler transform: ``{"input", "target", "mask"}`` ``(B, 1, Y, X)`` from ``(B, 1, Y, X)``
    patches (a class, not a closure, so DataLoader workers started with ``spawn`` can pickle it)."""

    def __init__(self, cfg: Masked2DConfig, geometry: AugmentConfig, corrupt: AugmentConfig) -> None:
        self.cfg, self.geometry, self.corrupt = cfg, geometry, corrupt

    def __call__(self, patches: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        check_slices(patches, "masked2d")
        targets, inputs, masks = [], [], []
        for p in patches:
            g = np.asarray(random_geometry([p], rng, self.geometry)[0], np.float32)
            mask = grid_mask(g.shape[-2:], self.cfg.mask_patch, self.cfg.mask_ratio, rng)
            x = np.array(random_intensity(g, rng, self.corrupt), np.float32, copy=True)  # never g itself
            x[:, mask] = rng.uniform(0.0, 1.0, (x.shape[0], int(mask.sum()))).astype(np.float32)
            targets.append(g)
            inputs.append(x)
            masks.append(mask[None])
        return {"input": np.stack(inputs).astype(np.float32), "target": np.stack(targets).astype(np.float32),
                "mask": np.stack(masks).astype(np.float32)}


class Masked2D(SliceReconstruction):
    """The plain 2D U-Net inpainting masked cells; ``forward(batch) -> (loss, metrics)``.

    ``batch`` holds ``"input"``, ``"target"`` and ``"mask"`` (1 = masked), ``(B, 1, Y, X)``.
    ``export_model()`` is the whole U-Net (fine-tuning loads all of it but the head).
    """

    arch = "unet2d"
    cfg: Masked2DConfig

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        rec = self.net(batch["input"]).float()
        err = (rec - batch["target"]) ** 2
        m = batch["mask"]
        masked = (err * m).sum() / m.sum().clamp_min(1.0)
        visible = (err * (1 - m)).sum() / (1 - m).sum().clamp_min(1.0)
        loss = masked + self.cfg.visible_weight * visible
        with torch.no_grad():  # what filling the masked cells with the patch mean would score
            mean = (batch["target"] * (1 - m)).sum((-2, -1), keepdim=True) / (1 - m).sum((-2, -1), keepdim=True).clamp_min(1)
            base = (((mean - batch["target"]) ** 2) * m).sum() / m.sum().clamp_min(1.0)
        return loss, {"masked_mse": float(masked.detach()), "visible_mse": float(visible.detach()),
                      "mean_fill_mse": float(base)}

    def card(self) -> dict[str, object]:
        return {"masked2d": {"mask_ratio": self.cfg.mask_ratio, "mask_patch": self.cfg.mask_patch,
                             "visible_weight": self.cfg.visible_weight}}


def build_objective(job: Masked2DJob) -> Masked2D:
    return Masked2D(job.model)


def make_transform(job: Masked2DJob) -> MaskedViews:
    return MaskedViews(job.model, job.geometry, job.corrupt)
