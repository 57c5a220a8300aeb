"""Residual U-Nets: the CNN backbones for mitochondria, neurons and MS-Con pretraining.

:class:`ResUNet3D` is the 3D network for near-isotropic volumes; :class:`ResUNet2D` is the same
design with 2D convolutions, for stacks of unrelated micrographs and strongly anisotropic serial
sections, where a 3D network pays for z-context that is noise (given a volume it runs slice by
slice, z folded into the batch).

Stages are MONAI :class:`~monai.networks.blocks.ResidualUnit` s; a stage down-samples with a
strided convolution inside its first unit (as MONAI's ``UNet``). Serial-section EM has coarse z,
so the first ``anisotropic_levels`` down-samplings halve only y and x; the later ones halve all
three axes. The decoder mirrors the encoder with transposed convolutions and, unless
``use_skips=False`` (MS-Con pretraining removes skips so the decoder cannot copy its input),
concatenates the encoder feature of the same level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.blocks import ResidualUnit
from monai.networks.blocks.dynunet_block import get_conv_layer
from torch import nn

from .common import check_input, check_widths, norm_name, slicewise

__all__ = ["ResUNet3D", "ResUNet2D", "ResUNetEncoder", "ResUNetDecoder", "resunet_strides"]


def resunet_strides(levels: int, anisotropic_levels: int) -> tuple[tuple[int, int, int], ...]:
    """Down-sampling strides between ``levels`` stages: ``(1, 2, 2)`` for the first
    ``anisotropic_levels`` ones, ``(2, 2, 2)`` after."""
    return tuple((1, 2, 2) if i < anisotropic_levels else (2, 2, 2) for i in range(levels - 1))


class ResUNetEncoder(nn.Module):
    """Stages of residual units; ``forward`` returns the feature of every stage, fine to coarse."""

    def __init__(self, in_channels: int, widths: Sequence[int], strides: Sequence[Sequence[int]],
                 subunits: int = 2, norm: str = "instance", dropout: float = 0.0, spatial_dims: int = 3) -> None:
        super().__init__()
        chans = [in_channels, *widths]
        steps = [(1,) * spatial_dims, *strides]
        self.stages = nn.ModuleList(
            ResidualUnit(spatial_dims, chans[i], chans[i + 1], strides=steps[i], kernel_size=3,
                         subunits=subunits, norm=norm_name(norm), dropout=dropout or None)
            for i in range(len(widths))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class ResUNetDecoder(nn.Module):
    """Up-sampling path; ``forward(feats)`` returns the finest feature and every stage's output,
    coarse to fine (the bottleneck first)."""

    def __init__(self, widths: Sequence[int], strides: Sequence[Sequence[int]], use_skips: bool = True,
                 subunits: int = 2, norm: str = "instance", dropout: float = 0.0, spatial_dims: int = 3) -> None:
        super().__init__()
        self.use_skips = use_skips
        n = norm_name(norm)
        ups, blocks = [], []
        for i in range(len(widths) - 1, 0, -1):
            ups.append(get_conv_layer(spatial_dims, widths[i], widths[i - 1], kernel_size=strides[i - 1],
                                      stride=strides[i - 1], is_transposed=True, norm=n, act="PRELU"))
            cin = widths[i - 1] * (2 if use_skips else 1)
            blocks.append(ResidualUnit(spatial_dims, cin, widths[i - 1], strides=1, kernel_size=3, subunits=subunits,
                                       norm=n, dropout=dropout or None))
        self.ups = nn.ModuleList(ups)
        self.blocks = nn.ModuleList(blocks)

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = feats[-1]
        outs = [x]
        for k, (up, block) in enumerate(zip(self.ups, self.blocks)):
            x = up(x)
            if self.use_skips:
                x = torch.cat([x, feats[-2 - k]], dim=1)
            x = block(x)
            outs.append(x)
        return x, outs


class _ResUNet(nn.Module):
    """What :class:`ResUNet3D` and :class:`ResUNet2D` share: encoder, decoder and 1x1 head over
    the given down-sampling ``strides``, in :attr:`spatial_dims` dimensions."""

    spatial_dims: int

    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int],
                 strides: tuple[tuple[int, ...], ...], use_skips: bool, subunits: int, norm: str,
                 dropout: float) -> None:
        super().__init__()
        check_widths(widths)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.strides = strides
        dims = self.spatial_dims
        self.encoder = ResUNetEncoder(in_channels, widths, strides, subunits, norm, dropout, spatial_dims=dims)
        self.decoder = ResUNetDecoder(widths, strides, use_skips, subunits, norm, dropout, spatial_dims=dims)
        self.head = (nn.Conv3d if dims == 3 else nn.Conv2d)(widths[0], out_channels, kernel_size=1)

    def _run(self, x: torch.Tensor, return_features: bool, multiple: Sequence[int], name: str):
        """Check ``x``, then logits or ``(logits, features)`` (see :meth:`ResUNet3D.forward`)."""
        check_input(x, in_channels=self.in_channels, multiple=multiple, name=name)
        out, feats = self.decoder(self.encoder(x))
        logits = self.head(out)
        return (logits, feats) if return_features else logits


class ResUNet3D(_ResUNet):
    """Residual U-Net ``(B, C, Z, Y, X) -> (B, out_channels, Z, Y, X)``.

    Parameters
    ----------
    in_channels, out_channels
        Input channels; output channels (the head, sized by task).
    widths
        Channels per stage, fine to coarse; ``len(widths) - 1`` down-samplings.
    anisotropic_levels
        How many of the first down-samplings keep z (``(1, 2, 2)``).
    use_skips
        Concatenate encoder features in the decoder (``False`` for MS-Con pretraining).
    subunits
        Convolutions per residual unit.
    norm, dropout
        Normalisation (``"instance"`` or ``"batch"``) and dropout inside the units.
    """

    spatial_dims = 3

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        anisotropic_levels: int = 2,
        use_skips: bool = True,
        subunits: int = 2,
        norm: str = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_channels, out_channels, widths, resunet_strides(len(widths), anisotropic_levels),
                         use_skips, subunits, norm, dropout)

    @property
    def input_multiple(self) -> tuple[int, int, int]:
        """``(z, y, x)``: the product of the down-sampling strides per axis."""
        return tuple(math.prod(s[a] for s in self.strides) for a in range(3))  # type: ignore[return-value]

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Logits, or ``(logits, features)`` with the decoder's features coarse to fine
        (``[bottleneck, ..., finest]``, one per stage) when ``return_features``."""
        return self._run(x, return_features, self.input_multiple, "ResUNet3D")


class ResUNet2D(_ResUNet):
    """Residual 2D U-Net ``(B, C, Y, X) -> (B, out_channels, Y, X)``; a volume
    ``(B, C, Z, Y, X)`` runs slice by slice.

    Same stages as :class:`ResUNet3D` (MONAI residual units, strided down-sampling, transposed
    up-sampling, skips), every down-sampling halving y and x. Parameters as :class:`ResUNet3D`
    (``anisotropic_levels`` does not apply).
    """

    spatial_dims = 2

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        use_skips: bool = True,
        subunits: int = 2,
        norm: str = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(in_channels, out_channels, widths, ((2, 2),) * (len(widths) - 1), use_skips, subunits,
                         norm, dropout)

    @property
    def input_multiple(self) -> tuple[int, int, int]:
        """``(z, y, x)``; z is free (slice-wise), y and x multiples of the down-sampling."""
        f = 2 ** len(self.strides)
        return (1, f, f)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """Logits (or ``(logits, features)`` as :meth:`ResUNet3D.forward`)."""
        if x.ndim == 5:  # a volume: slice by slice (features stay per slice)
            feats: list = []

            def fwd(s: torch.Tensor) -> torch.Tensor:
                logits, f = self.forward(s, True)
                feats.extend(f)
                return logits

            logits = slicewise(fwd, x)
            return (logits, feats) if return_features else logits
        return self._run(x, return_features, self.input_multiple[1:], "ResUNet2D")
