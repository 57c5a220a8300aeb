"""TransUNet-2D (Chen et al. 2021) as used by RETINA (Xing et al. 2025).

A residual CNN stem extracts features at full, 1/2, 1/4 ... resolution; a transformer (a 2D
:class:`~.vit3d.ViT` with 1x1 patches, fixed sin-cos positions) runs over the stem's coarsest
feature map; a U-Net decoder up-samples the tokens with the stem's finer features as skips; a
1x1 head makes the output (one channel for RETINA's reconstruction pretraining, a task's
channels when fine-tuning).

Module paths: ``encoder.stem`` (CNN), ``encoder.transformer`` (with ``.blocks``: RETINA
transfers and freezes exactly these), ``decoder``, ``head``. The network is 2D (``(B, C, Y, X)``);
given a volume ``(B, C, Z, Y, X)`` it runs slice by slice (z folded into the batch).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import UnetrBasicBlock, UnetrUpBlock
from torch import nn

from .common import check_input, check_widths, norm_name, slicewise
from .resunet import ResUNetEncoder
from .vit3d import ViT

__all__ = ["TransUNet2D", "TransUNetEncoder"]


class TransUNetEncoder(nn.Module):
    """CNN stem + transformer. ``forward(x) -> (tokens, grid, skips)`` where ``skips`` are the
    stem's features fine to coarse, without the coarsest one (which the transformer consumed)."""

    def __init__(self, in_channels: int, widths: Sequence[int], embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, dropout: float = 0.0, norm: str = "instance",
                 subunits: int = 2) -> None:
        super().__init__()
        strides = [(2, 2)] * (len(widths) - 1)
        self.stem = ResUNetEncoder(in_channels, widths, strides, subunits, norm, dropout, spatial_dims=2)
        self.transformer = ViT(widths[-1], (1, 1), embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                               mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, dropout=dropout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], list[torch.Tensor]]:
        feats = self.stem(x)
        grid = tuple(int(s) for s in feats[-1].shape[2:])
        tokens, _ = self.transformer(feats[-1])
        return tokens, grid, feats[:-1]  # type: ignore[return-value]


class TransUNet2D(nn.Module):
    """Hybrid CNN-transformer U-Net ``(B, C, Y, X) -> (B, out_channels, Y, X)``.

    Parameters
    ----------
    in_channels, out_channels
        Input channels; output channels (1 for reconstruction, else sized by task).
    widths
        Stem channels per stage, fine to coarse; ``len(widths) - 1`` halvings before the
        transformer (5 stages: tokens at 1/16, as TransUNet's R50 hybrid).
    embed_dim, depth, num_heads, mlp_ratio, qkv_bias, dropout
        The transformer.
    norm, subunits
        Normalisation and convolutions per residual unit in stem and decoder.
    """

    spatial_dims = 2

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        dropout: float = 0.0,
        norm: str = "instance",
        subunits: int = 2,
    ) -> None:
        super().__init__()
        check_widths(widths)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.encoder = TransUNetEncoder(in_channels, widths, embed_dim, depth, num_heads, mlp_ratio, qkv_bias,
                                        dropout, norm, subunits)
        n = norm_name(norm)
        self.decoder = nn.ModuleDict({
            "bridge": UnetrBasicBlock(2, embed_dim, widths[-1], kernel_size=3, stride=1, norm_name=n, res_block=True),
            "ups": nn.ModuleList(
                UnetrUpBlock(2, widths[i], widths[i - 1], 3, 2, n, res_block=True)
                for i in range(len(widths) - 1, 0, -1)
            ),
        })
        self.head = nn.Conv2d(widths[0], out_channels, kernel_size=1)
        self._factor = 2 ** (len(widths) - 1)

    @property
    def input_multiple(self) -> tuple[int, int, int]:
        """``(z, y, x)``; z is free (slice-wise), y and x multiples of the stem's down-sampling."""
        return (1, self._factor, self._factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 5:  # a volume: slice by slice
            return slicewise(self.forward, x)
        check_input(x, in_channels=self.in_channels, multiple=self.input_multiple[1:], name="TransUNet2D")
        tokens, grid, skips = self.encoder(x)
        h = self.decoder["bridge"](self.encoder.transformer.tokens_to_map(tokens, grid))
        for up, skip in zip(self.decoder["ups"], reversed(skips)):
            h = up(h, skip)
        return self.head(h)
