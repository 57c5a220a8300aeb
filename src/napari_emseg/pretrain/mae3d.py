"""MAE-3D: masked-autoencoder pretraining of a 3D ViT on serial-section EM (Cheng et al. 2023).

A patch ``(B, 1, Z, Y, X)`` is cut into ``1 x 16 x 16`` tokens (no down-sampling along the coarse
z axis) and embedded by the :class:`~napari_emseg.models.vit3d.ViT3D` encoder with its 3D
sin-cos positions. A large share of the tokens is masked (90 % by default) and the encoder runs
on the **visible tokens only**. A light decoder (depth 4, width 512, its own fixed 3D sin-cos
position embedding) receives the encoded visible tokens and a shared learnt mask token at every
masked position, and predicts every token's voxels. The loss is the mean squared error on
**per-patch normalised voxels** (each target patch minus its mean, over its standard
deviation), averaged over the **masked tokens only**.

Masking strategies (the paper's Fig. 2 / Table 1) on a token grid ``(gz, gy, gx)``:

``random``
    ``floor(N * (1 - ratio))`` tokens stay visible, drawn independently of structure
    (6x96x96 input, 216 tokens, ratio 0.9: 21 visible).
``space``
    ``floor(gy * gx * (1 - ratio))`` in-plane positions stay visible in *every* section, all
    other positions are masked through the whole stack (the paper kept 4 x 6 = 24 of 216, 89 %:
    ratio 0.88 here).
``section``
    ``floor(gz * (1 - ratio))`` whole sections stay visible (at least one: 1 of 6 = 83 %).
``dbmim``
    as many visible tokens as ``random``, chosen by a learned policy that is rewarded for masks
    that are hard to reconstruct (dbMiM, Chen et al. 2023; :mod:`.dbmim`).

Paper defaults (Table 6): AdamW, betas (0.9, 0.95), weight decay 0.005, lr 1e-4, cosine decay
after 50k of 400k warmup steps, input 6x96x96, ViT-B.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from monai.networks.blocks import TransformerBlock
from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding
from torch import nn

from ..config import Config
from ..data.augment import AugmentConfig, random_geometry
from ..data.sampler import SamplerConfig
from ..models.build import ModelConfig, build_model
from ..models.heads import head_info
from .trainer import TrainConfig

__all__ = ["MAE3DConfig", "MAE3DJob", "MAE3D", "make_mask", "n_visible", "patchify", "unpatchify",
           "sincos_3d", "GeometryTransform", "build_objective", "make_transform"]

Strategy = Literal["random", "space", "section", "dbmim"]


@dataclass(frozen=True)
class MAE3DConfig(Config):
    """The MAE-3D objective.

    Attributes
    ----------
    encoder
        The ViT encoder (``arch="vit3d"``; ``vit_size`` and ``patch_size`` matter).
    mask_ratio, mask_strategy
        Share of masked tokens and how they are chosen (module docstring).
    decoder_depth, decoder_width, decoder_heads, decoder_mlp_ratio
        The light decoder (paper: depth 4, width 512).
    norm_pix_loss
        Normalise every target patch by its own mean and standard deviation.
    policy_hidden, policy_entropy, policy_value, policy_weight
        ``dbmim``: the policy's width, its entropy bonus and critic weight, and the weight of its
        loss in the total (it shares no parameters with the MAE).
    """

    encoder: ModelConfig = ModelConfig(arch="vit3d", vit_size="base", patch_size=(1, 16, 16))
    mask_ratio: float = 0.9
    mask_strategy: Strategy = "random"
    decoder_depth: int = 4
    decoder_width: int = 512
    decoder_heads: int = 16
    decoder_mlp_ratio: float = 4.0
    norm_pix_loss: bool = True
    policy_hidden: int = 128
    policy_entropy: float = 0.01
    policy_value: float = 0.5
    policy_weight: float = 1.0


@dataclass(frozen=True)
class MAE3DJob(Config):
    """Everything a MAE-3D pretraining run needs besides the data paths (paper defaults)."""

    method: Literal["mae3d"] = "mae3d"
    model: MAE3DConfig = MAE3DConfig()
    augment: AugmentConfig = AugmentConfig(flip=0.5, rotate90=0.5)
    data: SamplerConfig = SamplerConfig(patch=(6, 96, 96), batch_size=8)
    train: TrainConfig = TrainConfig(optimizer="adamw", lr=1e-4, betas=(0.9, 0.95), weight_decay=0.005,
                                     warmup_fraction=0.125, max_steps=400_000, checkpoint_every=5000,
                                     preview_every=1000)


# -- masking ------------------------------------------------------------------------------------
def n_visible(grid: tuple[int, int, int], ratio: float, strategy: Strategy = "random") -> int:
    """How many tokens stay visible for ``grid`` (see the module docstring)."""
    gz, gy, gx = grid
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    units = {"random": gz * gy * gx, "dbmim": gz * gy * gx, "space": gy * gx, "section": gz}[strategy]
    keep = max(1, math.floor(units * (1.0 - ratio) + 1e-6))
    per_unit = {"random": 1, "dbmim": 1, "space": gz, "section": gy * gx}[strategy]
    return keep * per_unit


def make_mask(grid: tuple[int, int, int], ratio: float, strategy: Strategy, batch: int,
              device: Any = "cpu", generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean mask ``(batch, N)``, ``True`` = masked, tokens in raster order (z slowest).

    Every sample keeps the same number of visible tokens (:func:`n_visible`).
    """
    gz, gy, gx = grid
    keep_tokens = n_visible(grid, ratio, strategy)
    if strategy in ("random", "dbmim"):  # dbmim without its policy: random
        units, per = gz * gy * gx, 1
    elif strategy == "space":
        units, per = gy * gx, gz
    elif strategy == "section":
        units, per = gz, gy * gx
    else:
        raise ValueError(f"mask strategy {strategy!r}: choose random, space or section")
    keep = keep_tokens // per
    noise = torch.rand(batch, units, generator=generator)  # on the CPU: one RNG stream to save/restore
    order = noise.argsort(dim=1)
    unit_masked = torch.ones(batch, units, dtype=torch.bool)
    unit_masked.scatter_(1, order[:, :keep], False)
    if strategy in ("random", "dbmim"):
        mask = unit_masked
    elif strategy == "space":
        mask = unit_masked[:, None, :].expand(batch, gz, gy * gx).reshape(batch, -1)
    else:
        mask = unit_masked[:, :, None].expand(batch, gz, gy * gx).reshape(batch, -1)
    return mask.to(device)


# -- patches ------------------------------------------------------------------------------------
def patchify(x: torch.Tensor, patch: tuple[int, int, int]) -> torch.Tensor:
    """``(B, C, Z, Y, X) -> (B, N, pz*py*px*C)`` in the encoder's token order."""
    b, c, z, y, xx = x.shape
    pz, py, px = patch
    t = x.reshape(b, c, z // pz, pz, y // py, py, xx // px, px)
    return t.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(b, (z // pz) * (y // py) * (xx // px), pz * py * px * c)


def unpatchify(t: torch.Tensor, patch: tuple[int, int, int], grid: tuple[int, int, int], c: int = 1) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    b = t.shape[0]
    gz, gy, gx = grid
    pz, py, px = patch
    x = t.reshape(b, gz, gy, gx, pz, py, px, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, c, gz * pz, gy * py, gx * px)


def sincos_3d(grid: tuple[int, int, int], dim: int) -> torch.Tensor:
    """Fixed 3D sin-cos embedding ``(1, N, dim)`` (MONAI's; zero-padded when ``dim % 6``)."""
    base = dim - dim % 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        table = build_sincos_position_embedding(list(grid), base, 3).detach()
    if base < dim:
        table = torch.cat([table, table.new_zeros(1, table.shape[1], dim - base)], dim=2)
    return table


# -- the objective ------------------------------------------------------------------------------
class MAE3D(nn.Module):
    """Encoder (visible tokens only) + light decoder; ``forward(batch) -> (loss, metrics)``.

    ``batch["image"]`` is ``(B, 1, Z, Y, X)``. ``self.encoder`` is the ViT to export.
    """

    def __init__(self, cfg: MAE3DConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = build_model(cfg.encoder.replace(arch="vit3d"), head_info("features"))
        d, w = self.encoder.embed_dim, cfg.decoder_width
        self.patch = tuple(self.encoder.patch_size)
        voxels = int(np.prod(self.patch)) * self.encoder.in_channels
        self.decoder_embed = nn.Linear(d, w)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, w))
        self.decoder_blocks = nn.ModuleList(
            TransformerBlock(w, int(w * cfg.decoder_mlp_ratio), cfg.decoder_heads, qkv_bias=True)
            for _ in range(cfg.decoder_depth))
        for blk in self.decoder_blocks:  # MONAI builds this norm even without cross-attention;
            blk.norm_cross_attn = nn.Identity()  # an unused parameter would break DDP
        self.decoder_norm = nn.LayerNorm(w)
        self.decoder_pred = nn.Linear(w, voxels)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self._dec_pos: dict[tuple, torch.Tensor] = {}
        if cfg.mask_strategy == "dbmim":
            from .dbmim import MaskPolicy

            self.policy = MaskPolicy(d, cfg.policy_hidden, cfg.policy_entropy, cfg.policy_value)

    def decoder_pos(self, grid: tuple[int, int, int], ref: torch.Tensor) -> torch.Tensor:
        key = (grid, ref.device, ref.dtype)
        if key not in self._dec_pos:
            self._dec_pos[key] = sincos_3d(grid, self.cfg.decoder_width).to(ref.device, ref.dtype)
        return self._dec_pos[key]

    def _apply(self, fn, recurse: bool = True):
        self._dec_pos = {}
        return super()._apply(fn, recurse)

    def run(self, x: torch.Tensor, mask: torch.Tensor | None = None,
            decision: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, tuple]:
        """Predicted token voxels ``(B, N, P)``, the mask ``(B, N)`` and the token grid.

        Without ``mask``, ``dbmim`` asks its policy (what it decided goes into ``decision``)."""
        enc = self.encoder
        grid = enc.grid_shape(x.shape[2:])
        tokens = enc.patch_embed(x) + enc.pos_embed(grid)
        b, n, d = tokens.shape
        if mask is None and hasattr(self, "policy"):
            mask, chosen = self.policy(tokens, n_visible(grid, self.cfg.mask_ratio, "dbmim"))
            if decision is not None:
                decision.update(chosen)
        elif mask is None:
            mask = make_mask(grid, self.cfg.mask_ratio, self.cfg.mask_strategy, b, device=x.device)
        keep = int((~mask[0]).sum())
        ids = mask.to(torch.uint8).argsort(dim=1, stable=True)[:, :keep]  # visible, in raster order
        vis = torch.gather(tokens, 1, ids[..., None].expand(-1, -1, d))
        for blk in enc.blocks:
            vis = blk(vis)
        vis = self.decoder_embed(enc.norm(vis))
        w = vis.shape[-1]
        full = self.mask_token.to(vis.dtype).expand(b, n, w)
        full = full.scatter(1, ids[..., None].expand(-1, -1, w), vis)
        full = full + self.decoder_pos(grid, full)
        for blk in self.decoder_blocks:
            full = blk(full)
        return self.decoder_pred(self.decoder_norm(full)), mask, grid

    def target(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-token targets (normalised if ``norm_pix_loss``), their means and stds."""
        t = patchify(x, self.patch)
        mean, std = t.mean(-1, keepdim=True), (t.var(-1, keepdim=True) + 1e-6).sqrt()
        if self.cfg.norm_pix_loss:
            return (t - mean) / std, mean, std
        return t, torch.zeros_like(mean), torch.ones_like(std)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x = batch["image"]
        decision: dict = {}
        pred, mask, _ = self.run(x, decision=decision)
        target, _, _ = self.target(x)
        per_token = ((pred.float() - target.float()) ** 2).mean(-1)
        m = mask.float()
        loss = (per_token * m).sum() / m.sum()
        metrics = {"mask_ratio": float(m.mean())}
        if decision:  # dbMiM: the policy is rewarded with each sample's reconstruction loss
            reward = (per_token * m).sum(1) / m.sum(1)
            policy_loss = self.policy.loss(decision, reward)
            metrics.update(rec_loss=float(loss.detach()), policy_loss=float(policy_loss.detach()),
                           policy_entropy=float(decision["entropy"].mean().detach()))
            loss = loss + self.cfg.policy_weight * policy_loss
        return loss, metrics

    def preview(self, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """Middle section of the first sample: input, masked input and reconstruction."""
        x = batch["image"][:1]
        pred, mask, grid = self.run(x)
        _, mean, std = self.target(x)
        recon = unpatchify(pred.float() * std + mean, self.patch, grid)
        keep = unpatchify((~mask[..., None]).float().expand(-1, -1, pred.shape[-1]), self.patch, grid)
        z = x.shape[2] // 2
        pick = (lambda t: t[0, 0, z].detach().float().cpu().numpy())  # noqa: E731
        return {"input": pick(x), "masked": pick(x * keep), "reconstruction": pick(recon * (1 - keep) + x * keep)}

    def export_model(self) -> nn.Module:
        """The encoder to save for fine-tuning (a ``vit3d`` with ``.config`` and ``.info``)."""
        return self.encoder


def build_objective(job: MAE3DJob) -> MAE3D:
    return MAE3D(job.model)


class GeometryTransform:
    """Sampler transform: a random geometric augmentation of each patch, ``{"image": (B,1,Z,Y,X)}``.

    A class, not a closure, so DataLoader workers started with ``spawn`` can pickle it.
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg

    def __call__(self, patches: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        out = np.stack([random_geometry([p], rng, self.cfg)[0] for p in patches])
        return {"image": out[:, None].astype(np.float32)}


def make_transform(job: MAE3DJob) -> GeometryTransform:
    return GeometryTransform(job.augment)
