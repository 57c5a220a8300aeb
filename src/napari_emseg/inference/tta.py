"""Test-time augmentation: predict every flip of a tile, flip back, average.

Flipping the input along an axis and the output back gives the same map for flip-symmetric
targets (boundaries, BCD, classes). An affinity is not: after flipping back, channel ``c``
(offset ``o``) holds the affinity between ``p`` and ``p - o``, which is the true channel at
``p - o``; it is shifted by ``o`` along each flipped axis to land on its voxel again (the
``|o|`` voxels at the tile edge the shift vacates keep the unshifted value: inside a volume they
carry little blending weight; at the volume's edge they are affinities to outside the volume).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch

from ..models.info import ModelInfo

__all__ = ["flip_sets", "unflip", "predict_tta"]


def flip_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
    """All subsets of ``axes`` (spatial axes 0=z, 1=y, 2=x), the empty one (identity) first."""
    return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


def _shift(y: torch.Tensor, dim: int, d: int) -> torch.Tensor:
    """``out[p] = y[p + d]`` along ``dim``; where ``p + d`` falls outside, ``out[p] = y[p]``."""
    if d == 0 or abs(d) >= y.shape[dim]:
        return y
    out = y.clone()
    n = y.shape[dim]
    if d > 0:
        out.narrow(dim, 0, n - d).copy_(y.narrow(dim, d, n - d))
    else:
        out.narrow(dim, -d, n + d).copy_(y.narrow(dim, 0, n + d))
    return out


def unflip(y: torch.Tensor, axes: tuple[int, ...], info: ModelInfo) -> torch.Tensor:
    """Undo a flip of spatial ``axes`` on a prediction ``(B, C, Z, Y, X)``."""
    if not axes:
        return y
    y = torch.flip(y, dims=[2 + a for a in axes])
    if info.target != "affinities" or len(info.offsets) != y.shape[1]:
        return y
    channels = []
    for c, offset in enumerate(info.offsets):
        yc = y[:, c : c + 1]
        for a in axes:
            yc = _shift(yc, 2 + a, int(offset[a]))
        channels.append(yc)
    return torch.cat(channels, dim=1)


def predict_tta(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    axes: Sequence[int],
    info: ModelInfo,
) -> torch.Tensor:
    """Mean of ``unflip(fn(flip(x)))`` over all flips of ``axes``; ``x`` is ``(B, 1, Z, Y, X)``."""
    sets = flip_sets(axes)
    total: torch.Tensor | None = None
    for s in sets:
        xs = torch.flip(x, dims=[2 + a for a in s]) if s else x
        y = unflip(fn(xs), s, info)
        total = y if total is None else total.add_(y)
    assert total is not None
    return total.div_(len(sets))
