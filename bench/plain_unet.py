"""The plain baseline of bench/few_slices.py: MONAI ``BasicUNet`` (2D) from scratch, as the issue wrote it.

Features (16, 32, 64, 128, 256, 16), its default instance norm and LeakyReLU, 1 output channel;
Adam at a constant 1e-3 on batches of 8 random 192 x 192 crops of the painted sections (flips,
90-degree rotations, brightness +-0.2 sd, contrast x0.8-1.2), BCE + Dice, until the wall-clock
budget is spent; prediction by MONAI's ``sliding_window_inference`` (Gaussian blending).
With ``classes`` > 1 (semantic classes): one output channel per class, cross-entropy + Dice
on the softmax (MONAI ``DiceLoss(softmax=True, to_onehot_y=True)``), softmax out.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

FEATURES = (16, 32, 64, 128, 256, 16)  # BasicUNet, the reference baseline


def _augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flips, a 90-degree rotation, brightness and contrast (image only) of one square crop."""
    if rng.random() < 0.5:
        x, y = x[::-1], y[::-1]
    if rng.random() < 0.5:
        x, y = x[:, ::-1], y[:, ::-1]
    k = int(rng.integers(4))
    x, y = np.rot90(x, k), np.rot90(y, k)
    m = x.mean()
    x = (x - m) * rng.uniform(0.8, 1.2) + m + rng.uniform(-0.2, 0.2)
    return x, y


def sample_batch(img: np.ndarray, target: np.ndarray, sections: tuple[int, ...], crop: int, batch: int,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random augmented ``crop x crop`` crops of random painted sections, ``(B, 1, c, c)``."""
    _, h, w = img.shape
    xs, ys = [], []
    for _ in range(batch):
        z = sections[int(rng.integers(len(sections)))]
        y0, x0 = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        x, y = _augment(img[z, y0:y0 + crop, x0:x0 + crop], target[z, y0:y0 + crop, x0:x0 + crop], rng)
        xs.append(np.ascontiguousarray(x))
        ys.append(np.ascontiguousarray(y))
    return torch.from_numpy(np.stack(xs)[:, None]).float(), torch.from_numpy(np.stack(ys)[:, None]).float()


def train_baseline(img: np.ndarray, target: np.ndarray, sections: tuple[int, ...], seconds: float, seed: int,
                   crop: int = 192, batch: int = 8, lr: float = 1e-3, device: str = "cpu",
                   classes: int = 1) -> dict[str, Any]:
    """BasicUNet from scratch on the painted sections of ``img`` (standardised float32) for ``seconds``;
    ``target`` is a 0/1 mask, or class ids ``0..classes-1`` when ``classes`` > 1."""
    from monai.losses import DiceLoss
    from monai.networks.nets import BasicUNet

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    crop = max(16, min(crop, img.shape[1], img.shape[2]) // 16 * 16)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=classes, features=FEATURES).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    if classes > 1:
        dice, ce = DiceLoss(softmax=True, to_onehot_y=True), torch.nn.CrossEntropyLoss()

        def bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # cross-entropy on the class ids
            return ce(logits, y[:, 0].long())
    else:
        dice, bce = DiceLoss(sigmoid=True), torch.nn.BCEWithLogitsLoss()
    steps, losses = 0, []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x, y = sample_batch(img, target, sections, crop, batch, rng)
        x, y = x.to(device), y.to(device)
        logits = net(x)
        loss = bce(logits, y) + dice(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        losses.append(float(loss.detach()))
    return {"model": net.eval(), "steps": steps, "train_s": time.perf_counter() - t0,
            "loss": float(np.mean(losses[-20:])) if losses else float("nan")}


@torch.no_grad()
def predict_baseline(net: torch.nn.Module, img: np.ndarray, sections: tuple[int, ...], device: str = "cpu",
                     window: int = 512) -> np.ndarray:
    """Sigmoid of the BasicUNet over each of ``sections`` (sliding window, Gaussian blending), ``(n, Y, X)``;
    for a network of several classes the softmax, ``(C, n, Y, X)``."""
    from monai.inferers import sliding_window_inference

    h, w = img.shape[1:]
    roi = (min(window, -(-h // 16) * 16), min(window, -(-w // 16) * 16))
    classes = int(net.final_conv.out_channels)
    out = np.zeros((classes, len(sections), h, w), np.float32)
    for i, z in enumerate(sections):
        x = torch.from_numpy(np.ascontiguousarray(img[z]))[None, None].float().to(device)
        logits = sliding_window_inference(x, roi, 4, net, overlap=0.25, mode="gaussian")
        prob = torch.softmax(logits, 1) if classes > 1 else torch.sigmoid(logits)
        out[:, i] = prob[0].cpu().numpy()
    return out if classes > 1 else out[0]
