"""UNETR (Hatamizadeh et al. 2022) on a :class:`~.vit3d.ViT3D` encoder with anisotropic patches.

MONAI's ``UNETR`` assumes 16^3 patches (four 2x up-samplings per axis). Here the same design is
composed from MONAI's blocks with *per-axis* up-sampling factors, so a ``1 x 16 x 16`` patch
up-samples y/x four times and z never, and ``4 x 16 x 16`` up-samples z in the two finest steps.

Skip features come from the encoder's blocks at 1/4, 2/4 and 3/4 of its depth (3, 6, 9 of 12;
1, 2, 3 of 4) and from its normalised output; a convolutional stem sees the raw input at full
resolution. The encoder is the submodule ``encoder``, so pretrained encoder weights load by the
``encoder.`` prefix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetrUpBlock
from monai.networks.blocks.dynunet_block import UnetResBlock, get_conv_layer
from torch import nn

from .common import check_input, norm_name
from .vit3d import ViT3D

__all__ = ["UNETR", "upsample_factors", "skip_blocks"]


def upsample_factors(patch_size: Sequence[int], steps: int = 4) -> list[tuple[int, ...]]:
    """Per-step, per-axis up-sampling factors from the token grid to full resolution.

    Step 0 is the coarsest (token grid -> next level); an axis with patch ``2**k`` up-samples by 2
    in the ``k`` finest steps and by 1 in the others.
    """
    ks = []
    for p in patch_size:
        k = int(p).bit_length() - 1
        if p < 1 or 2**k != p or k > steps:
            raise ValueError(f"UNETR patch sizes must be powers of two up to {2**steps}, got {tuple(patch_size)}")
        ks.append(k)
    return [tuple(2 if steps - 1 - j < k else 1 for k in ks) for j in range(steps)]


def skip_blocks(depth: int) -> tuple[int, int, int]:
    """0-based indices of the blocks whose outputs feed the skips: 1/4, 2/4, 3/4 of ``depth``."""
    return tuple(max(0, (depth * q) // 4 - 1) for q in (1, 2, 3))  # type: ignore[return-value]


class _ProgressiveUp(nn.Module):
    """MONAI's ``UnetrPrUpBlock`` with a factor per step: a transposed convolution, then
    ``len(factors) - 1`` (transposed convolution + residual block) pairs."""

    def __init__(self, in_channels: int, out_channels: int, factors: Sequence[Sequence[int]], norm) -> None:
        super().__init__()
        self.transp_conv_init = get_conv_layer(3, in_channels, out_channels, kernel_size=factors[0],
                                               stride=factors[0], conv_only=True, is_transposed=True)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                get_conv_layer(3, out_channels, out_channels, kernel_size=f, stride=f,
                               conv_only=True, is_transposed=True),
                UnetResBlock(3, out_channels, out_channels, kernel_size=3, stride=1, norm_name=norm),
            )
            for f in factors[1:]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transp_conv_init(x)
        for blk in self.blocks:
            x = blk(x)
        return x


class UNETR(nn.Module):
    """UNETR segmentation network ``(B, C, Z, Y, X) -> (B, out_channels, Z, Y, X)``.

    Parameters
    ----------
    in_channels, out_channels
        Input channels; output channels (the head, sized by task).
    patch_size
        Encoder patch ``(z, y, x)``, powers of two up to 16 per axis.
    embed_dim, depth, num_heads, mlp_ratio, qkv_bias, dropout
        The :class:`ViT3D` encoder.
    feature_size
        Width of the full-resolution decoder stage (doubled at each coarser one, as in UNETR).
    norm
        ``"instance"`` or ``"batch"`` in the convolutional decoder.
    pos_embed
        The encoder's position embedding (``"inplane"`` for one inflated from 2D).
    """

    spatial_dims = 3

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 3,
        patch_size: Sequence[int] = (1, 16, 16),
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        feature_size: int = 16,
        norm: str = "instance",
        pos_embed: str = "sincos",
    ) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        factors = upsample_factors(patch_size)
        self.encoder = ViT3D(in_channels, patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                             mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, dropout=dropout, pos_embed=pos_embed)
        self.skip_blocks = skip_blocks(depth)
        fs, n = feature_size, norm_name(norm)
        self.encoder1 = UnetrBasicBlock(3, in_channels, fs, kernel_size=3, stride=1, norm_name=n, res_block=True)
        self.encoder2 = _ProgressiveUp(embed_dim, fs * 2, factors[0:3], n)
        self.encoder3 = _ProgressiveUp(embed_dim, fs * 4, factors[0:2], n)
        self.encoder4 = _ProgressiveUp(embed_dim, fs * 8, factors[0:1], n)
        self.decoder5 = UnetrUpBlock(3, embed_dim, fs * 8, 3, factors[0], n, res_block=True)
        self.decoder4 = UnetrUpBlock(3, fs * 8, fs * 4, 3, factors[1], n, res_block=True)
        self.decoder3 = UnetrUpBlock(3, fs * 4, fs * 2, 3, factors[2], n, res_block=True)
        self.decoder2 = UnetrUpBlock(3, fs * 2, fs, 3, factors[3], n, res_block=True)
        self.head = UnetOutBlock(3, fs, out_channels)

    @property
    def input_multiple(self) -> tuple[int, int, int]:
        """``(z, y, x)``: input sizes must be multiples of the patch."""
        return self.encoder.patch_size  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, in_channels=self.in_channels, multiple=self.input_multiple, name="UNETR")
        grid = self.encoder.grid_shape(x.shape[2:])
        tokens, hidden = self.encoder(x)
        to_map = self.encoder.tokens_to_map
        enc1 = self.encoder1(x)
        enc2 = self.encoder2(to_map(hidden[self.skip_blocks[0]], grid))
        enc3 = self.encoder3(to_map(hidden[self.skip_blocks[1]], grid))
        enc4 = self.encoder4(to_map(hidden[self.skip_blocks[2]], grid))
        dec = self.decoder5(to_map(tokens, grid), enc4)
        dec = self.decoder4(dec, enc3)
        dec = self.decoder3(dec, enc2)
        dec = self.decoder2(dec, enc1)
        return self.head(dec)
