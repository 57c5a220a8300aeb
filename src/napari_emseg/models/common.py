"""Small pieces shared by the architectures: input and width checks, normalisation names."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import InputShapeError


def check_input(
    x: torch.Tensor,
    *,
    in_channels: int,
    multiple: Sequence[int],
    name: str,
) -> None:
    """Raise :class:`InputShapeError` unless ``x`` is ``(B, C, *spatial)`` with ``C == in_channels``
    and every spatial size a positive multiple of ``multiple`` (one entry per spatial axis)."""
    nd = len(multiple)
    if x.ndim != nd + 2:
        axes = "(B, C, Z, Y, X)" if nd == 3 else "(B, C, Y, X)"
        raise InputShapeError(f"{name}: expected a {nd + 2}-D tensor {axes}, got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise InputShapeError(
            f"{name}: built for {in_channels} input channel(s), got {x.shape[1]} "
            f"(tensor shape {tuple(x.shape)}); give the model data with {in_channels} channel(s)"
        )
    spatial = tuple(int(s) for s in x.shape[2:])
    if any(s <= 0 or s % m for s, m in zip(spatial, multiple)):
        fixed = tuple(max(m, -(-s // m) * m) for s, m in zip(spatial, multiple))
        raise InputShapeError(
            f"{name}: spatial size {spatial} is not a multiple of {tuple(multiple)}; "
            f"pad or crop the input, e.g. to {fixed}"
        )


def check_widths(widths: Sequence[int]) -> None:
    """Raise unless ``widths`` (channels per stage, fine to coarse) gives at least two stages."""
    if len(widths) < 2:
        raise ValueError(f"widths {tuple(widths)}: give at least two stages")


def norm_name(norm: str) -> str | tuple:
    """MONAI's name for a normalisation layer: ``"instance"`` (affine) or ``"batch"``."""
    if norm == "instance":
        return ("instance", {"affine": True})
    if norm == "batch":
        return "batch"
    raise ValueError(f"norm {norm!r}: choose 'instance' or 'batch'")


def slicewise(forward, x: torch.Tensor) -> torch.Tensor:
    """Run a 2D ``forward`` over a volume ``(B, C, Z, Y, X)`` slice by slice (z folded into the
    batch) and give ``(B, C_out, Z, Y, X)`` back."""
    b, c, z, y, xx = x.shape
    out = forward(x.permute(0, 2, 1, 3, 4).reshape(b * z, c, y, xx))
    return out.reshape(b, z, -1, y, xx).permute(0, 2, 1, 3, 4)
