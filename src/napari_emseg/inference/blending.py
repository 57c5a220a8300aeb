"""Blending weights for overlapping tiles, separable per axis (pure numpy).

A tile's weight is the outer product of one 1D window per axis, so the sum of the weights of
all tiles on a grid is the outer product of per-axis sums: a block is normalised by dividing
by three 1D arrays broadcast together, never by a full-size weight volume. Every window is
strictly positive, so every voxel covered by a tile has a positive weight sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["window_1d", "axis_windows", "weight_sum_1d", "outer"]

MIN_WEIGHT = 1e-3
"""Smallest weight of a 1D window (as MONAI's importance map), so tile edges still count."""


def window_1d(
    length: int,
    overlap: int,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    flat_before: bool = False,
    flat_after: bool = False,
) -> np.ndarray:
    """Blending window of one axis of a tile.

    Parameters
    ----------
    length
        Tile length along the axis.
    overlap
        Overlap in voxels between neighbouring tiles; with 0 the window is constant (tiles that
        do not overlap need no blending, e.g. the z axis of slice-wise 2D inference).
    mode
        ``"gaussian"``: ``exp(-x^2 / 2 sigma^2)`` with ``sigma = sigma_scale * length``, centred,
        clamped below at ``MIN_WEIGHT``; ``"linear"``: ramps over the ``overlap`` voxels at each
        end, 1 in between; ``"constant"``: ones.
    flat_before, flat_after
        Hold the peak weight from the centre to the first / last voxel: for a tile whose edge is
        the volume's edge, where no neighbour blends in and the tile sees what any would see.
    """
    if mode == "constant" or overlap <= 0 or length <= 1:
        return np.ones(length, np.float32)
    if mode == "gaussian":
        x = np.arange(length, dtype=np.float64) - (length - 1) / 2.0
        sigma = max(sigma_scale * length, 1e-6)
        w = np.maximum(np.exp(-(x**2) / (2.0 * sigma**2)), MIN_WEIGHT)
    elif mode == "linear":
        i = np.arange(length, dtype=np.float64)
        w = np.clip(np.minimum(i + 1, length - i) / (overlap + 1.0), MIN_WEIGHT, 1.0)
    else:
        raise ValueError(f"unknown blending mode {mode!r}; use gaussian, linear or constant")
    half = length // 2
    if flat_before:
        w[:half] = w.max()
    if flat_after:
        w[length - half :] = w.max()
    return w.astype(np.float32)


def axis_windows(
    length: int,
    starts: Sequence[int],
    tile: int,
    overlap: int,
    mode: str = "gaussian",
    sigma_scale: float = 0.125,
    border_before: bool = False,
    border_after: bool = False,
) -> list[np.ndarray]:
    """The window of each tile along one axis of a region of ``length`` voxels.

    Tiles flush with a region edge that is also the volume's edge (``border_before`` /
    ``border_after``) hold their peak weight up to that edge (see :func:`window_1d`).
    """
    return [
        window_1d(
            tile, overlap, mode, sigma_scale,
            flat_before=border_before and int(s) == 0,
            flat_after=border_after and int(s) + tile == length,
        )
        for s in starts
    ]


def weight_sum_1d(length: int, starts: Sequence[int], windows: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Sum over tiles of each tile's window placed at its start, over ``[0, length)`` (float64).

    ``windows`` is one window per start, or one window shared by all.
    """
    if isinstance(windows, np.ndarray):
        windows = [windows] * len(starts)
    total = np.zeros(length, np.float64)
    for s, w in zip(starts, windows):
        total[int(s) : int(s) + len(w)] += w
    return total


def outer(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Outer product of 1D arrays: ``outer([a, b, c])[i, j, k] = a[i] * b[j] * c[k]``."""
    out = np.asarray(vectors[0])
    for v in vectors[1:]:
        out = np.multiply.outer(out, np.asarray(v))
    return out
