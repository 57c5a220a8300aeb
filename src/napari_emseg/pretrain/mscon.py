"""MS-Con: multiscale-consistency pretraining with a Siamese network (Chen et al. 2024, ISBI).

Each patch ``x`` gets a random *weak* geometric transform ``g`` (flips, 90-degree rotations,
small translation and scaling): the weak view is ``g(x)``. The strong view adds elastic
deformation, zoom, Gaussian noise, gamma/brightness/contrast changes, cropped (cut-out) patches,
a spliced block and large-block masking on top of ``g(x)``, so both views stay roughly aligned
token for token. Both views go through the same backbone (shared weights): a ResUNet-3D
**without skip connections** (so the decoder cannot copy its input; its decoder stages are the
pyramid) or a ViT-3D with a linear voxel head and a simple feature pyramid (below). Its
multiscale features ``w^1..w^L`` (weak) and ``s^1..s^L`` (strong) feed the three losses (Eq. 1-4),
total ``a1*L_r + a2*L_cross + a3*L_sim`` with ``a = (1, 0.1, 0.1)``:

``L_r``
    Both views reconstruct the **original** patch (Eq. 1): ``(MSE(rec(w), x) + MSE(rec(s), x)) / 2``,
    so the weak branch has to undo ``g`` and is no plain auto-encoder
    (``recon_target="weak"`` reconstructs ``g(x)`` instead, as this module did before).
``L_cross``
    Every level is average-pooled to one token grid (``cross_grid``, the paper's 16^3), the
    levels' features are concatenated per grid position and an MLP embeds them to
    ``embed_dim`` (the paper's ``W^e = mlp(w^1..w^N)``): ``prod(cross_grid)`` tokens per view.
    Bidirectional cross-attention with shared ``Q, K, V``: ``m = softmax(Q w (K s)^T / sqrt d) V s``
    and ``n = softmax(Q s (K w)^T / sqrt d) V w`` (memory-efficient attention). InfoNCE
    (temperature 0.07) on the L2-normalised ``m, n``: token ``j``'s positive is ``n_j``, its
    negatives the other tokens of the same sample.
``L_sim``
    For every level one random channel (the same for both views), adaptive-average-pooled to
    ``sim_pool``, centred over its pooled positions and flattened; the levels are concatenated;
    an MLP on the strong branch only (asymmetry against collapse); both vectors centred over the
    batch (``sim_center="batch"``); symmetric negative cosine
    ``-(cos(w, mlp(s)) + cos(mlp(s), w)) / 2``, averaged over the batch. Uncentred, the pooled
    channels of unrelated EM patches are nearly parallel (what every patch shares dominates:
    cosine 0.94-0.99 on ISBI through the bundled encoder), so the loss said little; centred over
    positions and batch, unrelated pairs score about 0 and matching views about 0.7
    (docs/pretraining.md).

ViT pyramid (``vit_pyramid``): the outputs of the blocks ``vit_levels`` are turned into maps at
strides 2, 4, 8 and 16 of the input plane (finest for the earliest block, as UNETR's skips and
ViTDet's simple pyramid do) by transposed convolutions, widths ``D/8, D/4, D/2, D``.

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
from ..models.unetr import upsample_factors
from .mae3d import unpatchify
from .state import CheckpointError
from .trainer import TrainConfig

__all__ = ["MSConConfig", "MSConJob", "MSCon", "info_nce", "build_objective", "make_transform",
           "MSConViews", "sim_vectors"]


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
        Token grid ``(z, y, x)`` the levels are pooled to for ``L_cross`` (paper: 16^3 = 4096
        tokens per view; attention and InfoNCE hold ``B x 4096^2`` scores per direction).
    sim_pool, sim_hidden
        Pooled size of each level's random channel for ``L_sim`` (paper: 16^3; thinner in z
        here, as EM patches are) and the hidden width of the strong branch's MLP.
    sim_center
        ``"batch"``: centre each pooled channel over its positions, then the vectors over the batch
        (a batch of one: positions only); ``"sample"``: positions only; ``"none"``: the paper's
        plain cosine (see the module docstring).
    recon_target
        ``"original"`` (the paper: both views reconstruct ``x``) or ``"weak"`` (``g(x)``).
    vit_levels, vit_pyramid
        ViT backbone: the blocks (1-based) whose outputs form the pyramid, and whether they are
        up-sampled to strides 2/4/8/16 (else all stay at the token grid).
    """

    backbone: ModelConfig = ModelConfig(arch="resunet", out_channels=1, use_skips=False)
    alpha: tuple[float, float, float] = (1.0, 0.1, 0.1)
    tau: float = 0.07
    embed_dim: int = 128
    cross_grid: tuple[int, int, int] = (16, 16, 16)
    sim_pool: tuple[int, int, int] = (4, 16, 16)
    sim_hidden: int = 512
    sim_center: Literal["none", "sample", "batch"] = "batch"
    recon_target: Literal["original", "weak"] = "original"
    vit_levels: tuple[int, ...] = (3, 6, 9, 12)
    vit_pyramid: bool = True


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


class _Up(nn.Module):
    """Transposed convolutions by ``factors`` (one per 2x step), halving the width each step."""

    def __init__(self, channels: int, factors: list[tuple[int, ...]]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        for i, f in enumerate(factors):
            out = max(8, c // 2)
            layers.append(nn.ConvTranspose3d(c, out, kernel_size=f, stride=f))
            if i < len(factors) - 1:
                layers += [nn.InstanceNorm3d(out, affine=True), nn.GELU()]
            c = out
        self.net = nn.Sequential(*layers) if layers else nn.Identity()
        self.out_channels = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _ViTBackbone(nn.Module):
    """ViT-3D + linear voxel head: ``x -> (reconstruction, [pyramid maps of vit_levels])``."""

    def __init__(self, cfg: ModelConfig, levels: tuple[int, ...], pyramid: bool = True) -> None:
        super().__init__()
        self.encoder = build_model(cfg.replace(arch="vit3d"), head_info("features"))
        bad = [lv for lv in levels if not 1 <= lv <= self.encoder.depth]
        if bad:
            raise ValueError(f"vit_levels {levels}: blocks are 1..{self.encoder.depth}")
        self.levels = levels
        self.head = nn.Linear(self.encoder.embed_dim, math.prod(self.encoder.patch_size) * self.encoder.in_channels)
        d = self.encoder.embed_dim
        factors = upsample_factors(self.encoder.patch_size)
        steps = [len(levels) - 1 - i if pyramid else 0 for i in range(len(levels))]  # earliest block: finest
        if any(k > len(factors) for k in steps):
            raise ValueError(f"vit_levels {levels}: at most {len(factors) + 1} pyramid levels")
        self.necks = nn.ModuleList(_Up(d, factors[:k]) for k in steps)
        self.channels = [n.out_channels for n in self.necks][::-1]  # coarse to fine, as forward returns
        self.input_multiple = self.encoder.input_multiple

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        tokens, hidden = self.encoder(x)
        grid = self.encoder.grid_shape(x.shape[2:])
        rec = unpatchify(self.head(tokens), self.encoder.patch_size, grid, self.encoder.in_channels)
        maps = [neck(self.encoder.tokens_to_map(hidden[lv - 1], grid)) for neck, lv in zip(self.necks, self.levels)]
        return rec, maps[::-1]  # coarse to fine, as the ResUNet's


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


def sim_vectors(feats: list[torch.Tensor], channels: list[int], pool: tuple[int, int, int],
                center: bool = True) -> torch.Tensor:
    """``L_sim``'s vector per sample: channel ``channels[i]`` of level ``i``, pooled to ``pool``,
    centred (``center``), flattened, the levels concatenated: ``(B, L * prod(pool))``."""
    out = []
    for f, c in zip(feats, channels):
        v = F.adaptive_avg_pool3d(f[:, c:c + 1].float(), pool).flatten(1)
        out.append(v - v.mean(1, keepdim=True) if center else v)
    return torch.cat(out, 1)


class MSCon(nn.Module):
    """Siamese backbone + cross-attention and similarity heads; ``forward(batch) -> (loss, metrics)``.

    ``batch`` holds ``"weak"``, ``"strong"`` and ``"target"`` ``(B, 1, Z, Y, X)``.
    """

    def __init__(self, cfg: MSConConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.backbone.arch == "vit3d":
            self.backbone: nn.Module = _ViTBackbone(cfg.backbone, tuple(cfg.vit_levels), cfg.vit_pyramid)
        elif cfg.backbone.arch == "resunet":
            self.backbone = _ResUNetBackbone(cfg.backbone)
        else:
            raise ValueError(f"MS-Con backbone {cfg.backbone.arch!r}: use 'resunet' or 'vit3d'")
        d = cfg.embed_dim
        self.embed = nn.Sequential(nn.Linear(sum(self.backbone.channels), d), nn.GELU(), nn.Linear(d, d))
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        dim = len(self.backbone.channels) * math.prod(cfg.sim_pool)
        self.sim_mlp = nn.Sequential(nn.Linear(dim, cfg.sim_hidden), nn.LayerNorm(cfg.sim_hidden), nn.ReLU(),
                                     nn.Linear(cfg.sim_hidden, dim))

    @property
    def input_multiple(self) -> tuple[int, ...]:
        return tuple(self.backbone.input_multiple)

    @property
    def cross_tokens(self) -> int:
        """Tokens per view in ``L_cross``."""
        return math.prod(self.cfg.cross_grid)

    def card(self) -> dict:
        """What the exported encoder's model card records about this objective."""
        c = self.cfg
        return {"mscon": {"cross_grid": list(c.cross_grid), "cross_tokens": self.cross_tokens,
                          "sim_pool": list(c.sim_pool), "sim_center": c.sim_center,
                          "recon_target": c.recon_target, "pyramid_channels": list(self.backbone.channels)}}

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        if any(k.startswith("proj.") for k in state):
            raise CheckpointError(
                "this MS-Con training checkpoint was written by an older napari-emseg (per-level token "
                "projections, 2x4x4 pooling) and cannot be resumed with the paper-faithful objective; its "
                "exported encoder still loads for fine-tuning; start a new run in another --out folder")
        return super().load_state_dict(state, strict=strict, assign=assign)

    def _tokens(self, feats: list[torch.Tensor]) -> torch.Tensor:
        pooled = torch.cat([F.adaptive_avg_pool3d(f, self.cfg.cross_grid) for f in feats], dim=1)
        return self.embed(pooled.flatten(2).transpose(1, 2))  # (B, T, sum of channels) -> (B, T, d)

    def cross_loss(self, fw: list[torch.Tensor], fs: list[torch.Tensor]) -> torch.Tensor:
        w, s = self._tokens(fw), self._tokens(fs)
        m = F.scaled_dot_product_attention(self.q(w), self.k(s), self.v(s))
        n = F.scaled_dot_product_attention(self.q(s), self.k(w), self.v(w))
        return info_nce(m, n, self.cfg.tau)

    def sim_loss(self, fw: list[torch.Tensor], fs: list[torch.Tensor]) -> torch.Tensor:
        chans = [int(torch.randint(f.shape[1], (1,))) for f in fw]
        center = self.cfg.sim_center != "none"
        w = sim_vectors(fw, chans, self.cfg.sim_pool, center)
        p = self.sim_mlp(sim_vectors(fs, chans, self.cfg.sim_pool, center)).float()
        if self.cfg.sim_center == "batch" and w.shape[0] > 1:  # what every patch shares carries no match
            w, p = w - w.mean(0, keepdim=True), p - p.mean(0, keepdim=True)
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
    (a class, not a closure, so DataLoader workers started with ``spawn`` can pickle it).

    ``target`` is the patch as cut (``recon_target="original"``) or the weak view's geometry
    ``g(x)`` (``"weak"``)."""

    def __init__(self, weak: AugmentConfig, strong: AugmentConfig, recon_target: str = "original") -> None:
        self.weak, self.strong, self.recon_target = weak, strong, recon_target
        # the weak config's non-geometric part, if any, makes the weak view from g(x)
        self.weak_rest = weak.replace(flip=0.0, flip_z=0.0, rotate90=0.0, affine=0.0, elastic=0.0, misalign=0.0)

    def __call__(self, patches: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        target, weak, strong = [], [], []
        for p in patches:
            g = random_geometry([p], rng, self.weak)[0]
            target.append(p if self.recon_target == "original" else g)
            weak.append(augment(g, [], rng, self.weak_rest)[0])
            strong.append(augment(g, [], rng, self.strong)[0])
        return {k: np.stack(v)[:, None].astype(np.float32)
                for k, v in (("target", target), ("weak", weak), ("strong", strong))}


def make_transform(job: MSConJob) -> MSConViews:
    return MSConViews(job.weak, job.strong, job.model.recon_target)
