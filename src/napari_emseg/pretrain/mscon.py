"""MS-Con: multiscale-consistency pretraining with a Siamese network (Chen et al. 2024, ISBI).

Each patch ``x`` gets a random *weak* geometric transform ``g`` (flips, 90-degree rotations,
small translation and scaling); ``g(x)`` is the reconstruction target and the weak view. The
strong view adds elastic deformation, zoom, Gaussian noise, gamma/brightness/contrast changes,
cropped (cut-out) patches, a spliced block and large-block masking on top of ``g(x)``, so both
views stay roughly aligned token for token. Both views go through the same backbone (shared
weights): a ResUNet-3D **without skip connections** (so the decoder cannot copy its input) or a
ViT-3D with a linear voxel head. Its multiscale features ``w^1..w^L`` (weak) and ``s^1..s^L``
(strong) feed the three losses (Eq. 1-4), total ``a1*L_r + a2*L_cross + a3*L_sim`` with
``a = (1, 0.1, 0.1)``:

``L_r``
    Both views reconstruct the original: ``(MSE(rec(w), g(x)) + MSE(rec(s), g(x))) / 2``.
``L_cross``
    Every level is average-pooled to a small token grid (``cross_grid``), projected by a
    per-level linear layer to ``embed_dim`` and the levels' tokens concatenated. Bidirectional
    cross-attention with shared ``Q, K, V``: ``m = softmax(Q w (K s)^T / sqrt d) V s`` and
    ``n = softmax(Q s (K w)^T / sqrt d) V w``. InfoNCE (temperature 0.07) on the
    L2-normalised ``m, n``: token ``j``'s positive is ``n_j``, its negatives the other tokens
    of the same sample.
``L_sim``
    For every level one random channel (the same for both views), adaptive-average-pooled to
    ``sim_pool`` and flattened; the levels are concatenated; an MLP on the strong branch only
    (asymmetry against collapse); symmetric negative cosine
    ``-(cos(w, mlp(s)) + cos(mlp(s), w)) / 2``, averaged over the batch (so ``L_sim`` lies in
    [-1, 1] and the total loss can be negative).

Paper settings: Adam (0.9, 0.999), lr 1e-4 (the schedule is not stated; cosine with a short
warmup here), datasets sampled with equal probability for each batch, batch 16 on 8 GPUs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..data.augment import AugmentConfig, augment, random_geometry
from ..data.sampler import SamplerConfig
from ..models.build import ModelConfig, build_model
from ..models.heads import head_info
from .mae3d import unpatchify
from .trainer import TrainConfig

__all__ = ["MSConConfig", "MSConJob", "MSCon", "info_nce", "build_objective", "make_transform",
           "MSConViews"]


@dataclass(frozen=True)
class MSConConfig(Config):
    """The MS-Con objective.

    Attributes
    ----------
    backbone
        ``arch="resunet"`` (skips are switched off) or ``arch="vit3d"``.
    alpha
        Weights of ``(L_r, L_cross, L_sim)``.
    tau
        InfoNCE temperature.
    embed_dim
        Width of the cross-attention token embeddings.
    cross_grid
        Token grid ``(z, y, x)`` each level is pooled to for ``L_cross``.
    sim_pool, sim_hidden
        Pooled size of each level's random channel for ``L_sim`` (paper: 16^3; thinner in z
        here, as EM patches are) and the hidden width of the strong branch's MLP.
    vit_levels
        ViT backbone: the blocks (1-based) whose outputs form the "pyramid".
    """

    backbone: ModelConfig = ModelConfig(arch="resunet", out_channels=1, use_skips=False)
    alpha: tuple[float, float, float] = (1.0, 0.1, 0.1)
    tau: float = 0.07
    embed_dim: int = 128
    cross_grid: tuple[int, int, int] = (2, 4, 4)
    sim_pool: tuple[int, int, int] = (4, 16, 16)
    sim_hidden: int = 512
    vit_levels: tuple[int, ...] = (3, 6, 9, 12)


@dataclass(frozen=True)
class MSConJob(Config):
    """Everything an MS-Con pretraining run needs besides the data paths."""

    method: Literal["mscon"] = "mscon"
    model: MSConConfig = MSConConfig()
    weak: AugmentConfig = AugmentConfig(flip=0.5, rotate90=0.5, affine=0.5, translate=0.05, scale=0.1)
    strong: AugmentConfig = AugmentConfig(
        flip=0.0, rotate90=0.0, affine=0.3, translate=0.0, scale=0.1, elastic=0.5, brightness=0.5,
        contrast=0.5, gamma=0.5, noise=0.8, cutout=0.5, cutout_count=(1, 8), splice=0.3, block=0.3,
        block_fraction=(0.2, 0.4))
    data: SamplerConfig = SamplerConfig(patch=(16, 128, 128), batch_size=4)
    train: TrainConfig = TrainConfig(optimizer="adam", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.0,
                                     warmup_fraction=0.01, max_steps=500_000, checkpoint_every=5000,
                                     preview_every=1000)


class _ViTBackbone(nn.Module):
    """ViT-3D + linear voxel head: ``x -> (reconstruction, [hidden maps of vit_levels])``."""

    def __init__(self, cfg: ModelConfig, levels: tuple[int, ...]) -> None:
        super().__init__()
        self.encoder = build_model(cfg.replace(arch="vit3d"), head_info("features"))
        bad = [lv for lv in levels if not 1 <= lv <= self.encoder.depth]
        if bad:
            raise ValueError(f"vit_levels {levels}: blocks are 1..{self.encoder.depth}")
        self.levels = levels
        self.head = nn.Linear(self.encoder.embed_dim, math.prod(self.encoder.patch_size) * self.encoder.in_channels)
        self.channels = [self.encoder.embed_dim] * len(levels)
        self.input_multiple = self.encoder.input_multiple

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        tokens, hidden = self.encoder(x)
        grid = self.encoder.grid_shape(x.shape[2:])
        rec = unpatchify(self.head(tokens), self.encoder.patch_size, grid, self.encoder.in_channels)
        return rec, [self.encoder.tokens_to_map(hidden[lv - 1], grid) for lv in self.levels]


class _ResUNetBackbone(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.net = build_model(cfg.replace(arch="resunet", use_skips=False, out_channels=1),
                               head_info("reconstruction"))
        self.channels = list(reversed(cfg.widths))  # decoder features, coarse to fine
        self.input_multiple = self.net.input_multiple

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.net(x, return_features=True)


def info_nce(m: torch.Tensor, n: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE of Eq. 2: ``(B, T, d)`` pairs ``m_j <-> n_j``, negatives ``n_k`` (k != j) of the same sample."""
    m, n = F.normalize(m.float(), dim=-1), F.normalize(n.float(), dim=-1)
    logits = m @ n.transpose(1, 2) / tau
    b, t, _ = logits.shape
    labels = torch.arange(t, device=logits.device).repeat(b)
    return F.cross_entropy(logits.reshape(b * t, t), labels)


class MSCon(nn.Module):
    """Siamese backbone + cross-attention and similarity heads; ``forward(batch) -> (loss, metrics)``.

    ``batch`` holds ``"weak"``, ``"strong"`` and ``"target"`` ``(B, 1, Z, Y, X)``.
    """

    def __init__(self, cfg: MSConConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.backbone.arch == "vit3d":
            self.backbone: nn.Module = _ViTBackbone(cfg.backbone, tuple(cfg.vit_levels))
        elif cfg.backbone.arch == "resunet":
            self.backbone = _ResUNetBackbone(cfg.backbone)
        else:
            raise ValueError(f"MS-Con backbone {cfg.backbone.arch!r}: use 'resunet' or 'vit3d'")
        d = cfg.embed_dim
        self.proj = nn.ModuleList(nn.Linear(c, d) for c in self.backbone.channels)
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        dim = len(self.backbone.channels) * math.prod(cfg.sim_pool)
        self.sim_mlp = nn.Sequential(nn.Linear(dim, cfg.sim_hidden), nn.LayerNorm(cfg.sim_hidden), nn.ReLU(),
                                     nn.Linear(cfg.sim_hidden, dim))

    @property
    def input_multiple(self) -> tuple[int, ...]:
        return tuple(self.backbone.input_multiple)

    def _tokens(self, feats: list[torch.Tensor]) -> torch.Tensor:
        out = [p(F.adaptive_avg_pool3d(f, self.cfg.cross_grid).flatten(2).transpose(1, 2))
               for p, f in zip(self.proj, feats)]
        return torch.cat(out, dim=1)

    def cross_loss(self, fw: list[torch.Tensor], fs: list[torch.Tensor]) -> torch.Tensor:
        w, s = self._tokens(fw), self._tokens(fs)
        scale = 1.0 / math.sqrt(w.shape[-1])
        m = torch.softmax(self.q(w) @ self.k(s).transpose(1, 2) * scale, dim=-1) @ self.v(s)
        n = torch.softmax(self.q(s) @ self.k(w).transpose(1, 2) * scale, dim=-1) @ self.v(w)
        return info_nce(m, n, self.cfg.tau)

    def sim_loss(self, fw: list[torch.Tensor], fs: list[torch.Tensor]) -> torch.Tensor:
        vw, vs = [], []
        for f_w, f_s in zip(fw, fs):
            c = int(torch.randint(f_w.shape[1], (1,)))
            vw.append(F.adaptive_avg_pool3d(f_w[:, c:c + 1], self.cfg.sim_pool).flatten(1))
            vs.append(F.adaptive_avg_pool3d(f_s[:, c:c + 1], self.cfg.sim_pool).flatten(1))
        w, p = torch.cat(vw, 1).float(), self.sim_mlp(torch.cat(vs, 1)).float()
        return -0.5 * (F.cosine_similarity(w, p, dim=1) + F.cosine_similarity(p, w, dim=1)).mean()

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        w, s, x = batch["weak"], batch["strong"], batch["target"]
        b = w.shape[0]
        rec, feats = self.backbone(torch.cat([w, s]))  # one pass, shared weights
        rec_w, rec_s = rec[:b].float(), rec[b:].float()
        l_r = 0.5 * (F.mse_loss(rec_w, x) + F.mse_loss(rec_s, x))
        fw, fs = [f[:b] for f in feats], [f[b:] for f in feats]
        l_cross, l_sim = self.cross_loss(fw, fs), self.sim_loss(fw, fs)
        a1, a2, a3 = self.cfg.alpha
        loss = a1 * l_r + a2 * l_cross + a3 * l_sim
        return loss, {"l_r": float(l_r.detach()), "l_cross": float(l_cross.detach()), "l_sim": float(l_sim.detach())}

    def preview(self, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Middle section of the first sample: weak, strong, reconstruction of the strong view, target."""
        s = batch["strong"][:1]
        rec, _ = self.backbone(s)
        z = s.shape[2] // 2
        pick = (lambda t: t[0, 0, z].detach().float().cpu().numpy())  # noqa: E731
        return {"weak": pick(batch["weak"]), "strong": pick(s), "reconstruction": pick(rec),
                "target": pick(batch["target"])}

    def export_model(self) -> nn.Module:
        """What fine-tuning starts from: the ResUNet (its ``encoder`` transfers) or the ViT."""
        return self.backbone.net if isinstance(self.backbone, _ResUNetBackbone) else self.backbone.encoder


def build_objective(job: MSConJob) -> MSCon:
    return MSCon(job.model)


class MSConViews:
    """Sampler transform: ``{"target", "weak", "strong"}`` views, each ``(B, 1, Z, Y, X)``
    (a class, not a closure, so DataLoader workers started with ``spawn`` can pickle it)."""

    def __init__(self, weak: AugmentConfig, strong: AugmentConfig) -> None:
        self.weak, self.strong = weak, strong
        # the weak config's non-geometric part, if any, makes the weak view from g(x)
        self.weak_rest = weak.replace(flip=0.0, flip_z=0.0, rotate90=0.0, affine=0.0, elastic=0.0, misalign=0.0)

    def __call__(self, patches: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        target, weak, strong = [], [], []
        for p in patches:
            g = random_geometry([p], rng, self.weak)[0]
            target.append(g)
            weak.append(augment(g, [], rng, self.weak_rest)[0])
            strong.append(augment(g, [], rng, self.strong)[0])
        return {k: np.stack(v)[:, None].astype(np.float32)
                for k, v in (("target", target), ("weak", weak), ("strong", strong))}


def make_transform(job: MSConJob) -> MSConViews:
    return MSConViews(job.weak, job.strong)
