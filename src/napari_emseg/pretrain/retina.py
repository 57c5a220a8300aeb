"""RETINA: reconstruction pretraining of a 2D TransUNet on EM slices (Xing, Xie, Bader 2025).

A 2D slice ``x`` (a ``(1, Y, X)`` patch) first gets a random geometric transform ``g``
(flip and rotation, each with probability 0.5). The network input is ``g(x)`` further altered
by brightness and contrast changes, Gaussian noise, Gaussian blur and 1 to 32 cropped (blanked)
square patches; the TransUNet (CNN stem, transformer on the stem's coarsest map, U-Net decoder
with skips, a 1-channel reconstruction head) must return the original, and the loss is the
mean squared error against ``g(x)`` -- the original under the *same* geometric transform as its
input. Fine-tuning later transfers the transformer layers (``encoder.transformer``) and freezes
them.

The paper's exact augmentation parameters (its S1 Table) and optimiser settings (S2 Table) are
not in the text at hand; the defaults here (flip/rotate p=0.5, brightness/contrast/noise/blur
p=0.5 each, always 1-32 cut-outs of 8-32 px, AdamW lr 1e-4 with a cosine schedule, 224 x 224
slices as in CEM500K) follow the paper's description and the other two methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config
from ..data.augment import AugmentConfig, augment, random_geometry
from ..data.sampler import SamplerConfig
from ..models.build import ModelConfig
from .reconstruction import SliceReconstruction, check_slices
from .trainer import TrainConfig

__all__ = ["RetinaConfig", "RetinaJob", "Retina", "RetinaViews", "build_objective", "make_transform"]


@dataclass(frozen=True)
class RetinaConfig(Config):
    """The RETINA objective: the TransUNet-2D to pretrain (``arch="transunet2d"``)."""

    backbone: ModelConfig = ModelConfig(arch="transunet2d", out_channels=1, vit_size="base")


@dataclass(frozen=True)
class RetinaJob(Config):
    """Everything a RETINA pretraining run needs besides the data paths."""

    method: Literal["retina"] = "retina"
    model: RetinaConfig = RetinaConfig()
    geometry: AugmentConfig = AugmentConfig(flip=0.5, rotate90=0.5)
    corrupt: AugmentConfig = AugmentConfig(
        flip=0.0, rotate90=0.0, brightness=0.5, contrast=0.5, noise=0.5, blur=0.5, cutout=1.0,
        cutout_count=(1, 32), cutout_size=(8, 32))
    data: SamplerConfig = SamplerConfig(patch=(1, 224, 224), batch_size=16)
    train: TrainConfig = TrainConfig(optimizer="adamw", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01,
                                     warmup_fraction=0.05, max_steps=100_000, checkpoint_every=5000,
                                     preview_every=1000)


class Retina(SliceReconstruction):
    """TransUNet-2D reconstructing corrupted slices; ``forward(batch) -> (loss, metrics)``.

    ``batch`` holds ``"input"`` and ``"target"``, ``(B, 1, Y, X)``. ``export_model()`` is the
    whole TransUNet (fine-tuning transfers ``encoder.transformer``).
    """

    arch = "transunet2d"
    cfg: RetinaConfig

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        rec = self.net(batch["input"]).float()
        loss = F.mse_loss(rec, batch["target"])
        return loss, {"input_mse": float(F.mse_loss(batch["input"], batch["target"]).detach())}


def build_objective(job: RetinaJob) -> Retina:
    return Retina(job.model)


class RetinaViews:
    """Sampler transform: ``{"input", "target"}`` slices ``(B, 1, Y, X)`` from ``(B, 1, Y, X)``
    patches (a class, not a closure, so DataLoader workers started with ``spawn`` can pickle it)."""

    def __init__(self, geometry: AugmentConfig, corrupt: AugmentConfig) -> None:
        self.geometry, self.corrupt = geometry, corrupt

    def __call__(self, patches: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        check_slices(patches, "RETINA")
        targets, inputs = [], []
        for p in patches:
            g = random_geometry([p], rng, self.geometry)[0]
            targets.append(g)
            inputs.append(augment(g, [], rng, self.corrupt)[0])
        return {"input": np.stack(inputs).astype(np.float32), "target": np.stack(targets).astype(np.float32)}


def make_transform(job: RetinaJob) -> RetinaViews:
    return RetinaViews(job.geometry, job.corrupt)
