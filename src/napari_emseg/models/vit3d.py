"""Vision transformer encoders on anisotropic patches with fixed sin-cos position embeddings.

:class:`ViT3D` is the MAE-3D encoder (Cheng et al. 2023): a volume ``(B, C, Z, Y, X)`` is cut
into non-overlapping patches (default ``1 x 16 x 16``: no down-sampling along the coarse z axis
of serial-section EM), each patch is linearly embedded, a 3D sin-cos position embedding is
added, and a stack of MONAI :class:`~monai.networks.blocks.TransformerBlock` s follows.

The position embedding is not a parameter: it is computed for whatever token grid the input
gives (and cached), so one encoder runs on any input whose size is a multiple of the patch,
and pretraining, fine-tuning and inference may use different tile sizes. A 3D encoder inflated
from a 2D one (:mod:`.inflate`) uses ``pos_embed="inplane"``: the 2D encoder's in-plane table,
the same in every section, plus a 1D sin-cos table of z scaled by a learnt gate that starts at
0, so at first it computes exactly what the 2D encoder computed section by section.

:class:`ViT` is the same encoder for ``spatial_dims=2`` too; the TransUNet-2D transformer is a
2D :class:`ViT` over a CNN feature map.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from monai.networks.blocks import TransformerBlock
from monai.networks.blocks.pos_embed_utils import build_sincos_position_embedding
from torch import nn

from .common import check_input

__all__ = ["VIT_SIZES", "PatchEmbed", "ViT", "ViT3D", "vit3d"]

#: name -> (embed_dim, depth, num_heads)
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "micro": (96, 4, 3),
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
}


class PatchEmbed(nn.Module):
    """Linear embedding of non-overlapping patches: ``(B, C, *S) -> (B, N, D)``, no position.

    A strided convolution (MONAI's ``PatchEmbeddingBlock`` does the same but owns a position
    embedding of one fixed grid, which this encoder must not have).
    """

    def __init__(self, in_channels: int, embed_dim: int, patch_size: Sequence[int]) -> None:
        super().__init__()
        conv = nn.Conv3d if len(patch_size) == 3 else nn.Conv2d
        self.proj = conv(in_channels, embed_dim, kernel_size=tuple(patch_size), stride=tuple(patch_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class ViT(nn.Module):
    """A plain ViT encoder (2D or 3D) with fixed sin-cos position embeddings.

    Parameters
    ----------
    in_channels
        Input channels.
    patch_size
        Patch shape, one entry per spatial axis (``(z, y, x)`` or ``(y, x)``).
    embed_dim, depth, num_heads
        Token width, number of transformer blocks, attention heads.
    mlp_ratio
        Width of each block's MLP relative to ``embed_dim``.
    qkv_bias
        Bias in the attention projections (as in MAE).
    dropout
        Dropout inside the blocks.
    pos_embed
        ``"sincos"`` (a table over every axis) or, 3D only, ``"inplane"`` (the 2D in-plane table
        in every section plus ``z_pos_gate`` times a z table; see the module docstring).

    Attributes
    ----------
    patch_embed : PatchEmbed
        ``patch_embed(x) -> (B, N, D)`` tokens without position.
    blocks : nn.ModuleList
        MONAI ``TransformerBlock`` s.
    norm : nn.LayerNorm
        Final normalisation of the tokens.
    """

    def __init__(
        self,
        in_channels: int = 1,
        patch_size: Sequence[int] = (1, 16, 16),
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        pos_embed: str = "sincos",
    ) -> None:
        super().__init__()
        self.spatial_dims = len(patch_size)
        if pos_embed not in ("sincos", "inplane") or (pos_embed == "inplane" and self.spatial_dims != 3):
            raise ValueError(f"pos_embed {pos_embed!r}: 'sincos', or 'inplane' for a 3D encoder")
        self.pos_mode = pos_embed
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"patch_size {tuple(patch_size)}: give 2 or 3 sizes")
        step = 6 if self.spatial_dims == 3 else 4
        if embed_dim % step or embed_dim % num_heads:
            raise ValueError(
                f"embed_dim {embed_dim} must be divisible by {step} (sin-cos embedding in "
                f"{self.spatial_dims}D) and by num_heads {num_heads}"
            )
        self.in_channels = int(in_channels)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.embed_dim = int(embed_dim)
        self.depth = int(depth)
        self.num_heads = int(num_heads)
        self.patch_embed = PatchEmbed(in_channels, embed_dim, self.patch_size)
        mlp_dim = int(round(embed_dim * mlp_ratio))
        self.blocks = nn.ModuleList(
            TransformerBlock(embed_dim, mlp_dim, num_heads, dropout_rate=dropout, qkv_bias=qkv_bias,
                             use_flash_attention=True)
            for _ in range(depth)
        )
        for blk in self.blocks:  # MONAI builds this norm even without cross-attention: an unused
            blk.norm_cross_attn = nn.Identity()  # parameter would break DistributedDataParallel
        self.norm = nn.LayerNorm(embed_dim)
        if pos_embed == "inplane":
            self.z_pos_gate = nn.Parameter(torch.zeros(1))
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        self._init_weights()

    # -- geometry --------------------------------------------------------------------------------
    @property
    def input_multiple(self) -> tuple[int, ...]:
        """Each spatial input size must be a multiple of this (the patch size)."""
        return self.patch_size

    def grid_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """Token grid for an input of ``spatial_shape``; raises ``InputShapeError`` if the
        shape is not a multiple of the patch."""
        shape = tuple(int(s) for s in spatial_shape)
        probe = torch.empty((1, self.in_channels, *shape), device="meta")
        check_input(probe, in_channels=self.in_channels, multiple=self.patch_size, name=type(self).__name__)
        return tuple(s // p for s, p in zip(shape, self.patch_size))

    def pos_embed(self, grid: Sequence[int]) -> torch.Tensor:
        """Fixed sin-cos position embedding ``(1, N, D)`` for a token grid (cached per grid,
        device and dtype)."""
        grid = tuple(int(g) for g in grid)
        ref = self.patch_embed.proj.weight
        key = (grid, ref.device, ref.dtype)
        pos = self._pos_cache.get(key)
        if pos is None:
            if self.pos_mode == "inplane":  # the 2D table per section; a z table for the gate
                plane = _sincos(grid[1:], self.embed_dim).repeat(1, grid[0], 1)
                z = _sincos_1d(grid[0], self.embed_dim).repeat_interleave(grid[1] * grid[2], dim=1)
                pos = torch.cat([plane, z]).to(device=ref.device, dtype=ref.dtype)
            else:
                pos = _sincos(grid, self.embed_dim).to(device=ref.device, dtype=ref.dtype)
            self._pos_cache[key] = pos
        if self.pos_mode == "inplane":
            return pos[:1] + self.z_pos_gate.to(pos.dtype) * pos[1:]
        return pos

    # -- forward ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode ``x``.

        Returns
        -------
        tokens
            ``(B, N, D)`` after the final norm, in ``grid_shape`` raster order (z slowest).
        hidden_states
            The output of every block (before the final norm), ``depth`` tensors ``(B, N, D)``.
        """
        check_input(x, in_channels=self.in_channels, multiple=self.patch_size, name=type(self).__name__)
        grid = tuple(int(s) // p for s, p in zip(x.shape[2:], self.patch_size))
        tokens = self.patch_embed(x) + self.pos_embed(grid)
        hidden: list[torch.Tensor] = []
        for blk in self.blocks:
            tokens = blk(tokens)
            hidden.append(tokens)
        return self.norm(tokens), hidden

    def tokens_to_map(self, tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """``(B, N, D)`` tokens as a feature map ``(B, D, *grid)``."""
        b, n, d = tokens.shape
        if n != math.prod(grid):
            raise ValueError(f"{n} tokens do not fill a grid {tuple(grid)}")
        return tokens.transpose(1, 2).reshape(b, d, *grid)

    def _init_weights(self) -> None:
        # as MAE: xavier-uniform linear layers (the patch projection seen as one), unit norms
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _apply(self, fn, recurse: bool = True):  # .to()/.cuda()/.half(): drop cached tables
        self._pos_cache = {}
        return super()._apply(fn, recurse)


def _sincos(grid: Sequence[int], dim: int) -> torch.Tensor:
    """MONAI's fixed sin-cos table ``(1, N, dim)`` over a 2D or 3D grid."""
    with warnings.catch_warnings():  # torch.meshgrid indexing notice inside MONAI
        warnings.simplefilter("ignore", UserWarning)
        return build_sincos_position_embedding(list(grid), dim, len(grid)).detach()


def _sincos_1d(n: int, dim: int) -> torch.Tensor:
    """A 1D sin-cos table ``(1, n, dim)`` (sines then cosines, as MONAI's per-axis parts)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32) / max(1, dim // 2))
    out = torch.arange(n, dtype=torch.float32)[:, None] * omega[None]
    table = torch.cat([torch.sin(out), torch.cos(out)], dim=1)
    return torch.nn.functional.pad(table, (0, dim - table.shape[1]))[None]


class ViT3D(ViT):
    """The 3D encoder: patches ``(1, 16, 16)`` (MAE-3D), ``(4, 16, 16)`` or ``(16, 16, 16)``;
    input ``(B, C, Z, Y, X)``. See :class:`ViT` for the parameters and :func:`vit3d` for sizes."""

    def __init__(self, in_channels: int = 1, patch_size: Sequence[int] = (1, 16, 16), **kwargs) -> None:
        if len(patch_size) != 3:
            raise ValueError(f"ViT3D needs a 3D patch size (z, y, x), got {tuple(patch_size)}")
        super().__init__(in_channels, patch_size, **kwargs)


def vit3d(size: str = "tiny", *, in_channels: int = 1, patch_size: Sequence[int] = (1, 16, 16),
          **kwargs) -> ViT3D:
    """A :class:`ViT3D` of a named size: ``micro`` (96/4/3), ``tiny`` (192/12/3),
    ``small`` (384/12/6) or ``base`` (768/12/12) as embed_dim/depth/heads."""
    if size not in VIT_SIZES:
        raise ValueError(f"ViT size {size!r}: choose one of {sorted(VIT_SIZES)}")
    dim, depth, heads = VIT_SIZES[size]
    return ViT3D(in_channels, patch_size, embed_dim=dim, depth=depth, num_heads=heads, **kwargs)
