"""Where calibration predicts: the painted slices in slabs with the context the model needs
(see :mod:`.calibrate`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def _prediction_depth(info: Any, axis: int) -> int:
    """Slices along ``axis`` the model needs to predict one painted slice as a full segmentation does."""
    if info.spatial_dims == 2 and axis == 0:
        return 1
    return int(info.tile[axis])


def _plan_slabs(n: int, slices: Sequence[int], need: int, context: int):
    """``(p0, p1, q0, q1, members)``: predicted range ``[p0, p1)`` (``need`` deep, at least the
    post-processed range) and post-processed range ``[q0, q1)`` (``context`` each side) of
    groups of painted slices; overlapping ranges are merged."""
    groups: list[list[int]] = []
    for s in sorted(slices):
        q0, q1 = max(0, s - context), min(n, s + context + 1)
        if groups and q0 <= groups[-1][3] + 1:  # touching or overlapping: one slab
            g = groups[-1]
            g[3] = q1
            g[4].append(s)
        else:
            groups.append([0, 0, q0, q1, [s]])
    out = []
    for g in groups:
        q0, q1, members = g[2], g[3], g[4]
        depth = min(n, max(need, q1 - q0))
        mid = (q0 + q1) // 2
        p0 = int(np.clip(mid - depth // 2, 0, n - depth))
        p0, p1 = min(p0, q0), max(p0 + depth, q1)
        out.append((p0, p1, q0, q1, members))
    return out


def _window(shape, plane, slabs, n_slices: int, max_side: int, max_voxels: int | None) -> tuple[int, int]:
    """The in-plane window: at most ``max_side``; with ``max_voxels`` (on the CPU), a square small
    enough that the slabs predict at most that many voxels and at most a fifth of it is painted
    area, which every grid setting is built and scored on (never under 128)."""
    side = int(max_side)
    if max_voxels:
        depth = sum(p1 - p0 for p0, p1, *_ in slabs)
        area = min(max_voxels / max(1, depth), max_voxels / (5 * n_slices))
        side = min(side, max(128, int(math.sqrt(area)) // 32 * 32))
    return tuple(min(side, shape[a]) for a in plane)


def _centre(lab: np.ndarray, axis: int, members: Sequence[int], plane: Sequence[int], shape) -> list[int]:
    """The centre (in-plane) of the painted voxels of ``members``: where the window goes."""
    sub = np.moveaxis(np.take(lab, list(members), axis=axis), axis, 0) != 0
    out = []
    for i, a in enumerate(plane):
        other = tuple(j for j in (0, 1, 2) if j != i + 1)
        hits = np.flatnonzero(sub.any(axis=other))
        out.append(int((hits[0] + hits[-1]) // 2) if hits.size else shape[a] // 2)
    return out


def _separator(pred: np.ndarray, axis: int, target: str) -> np.ndarray:
    """One slice of maps with no object and no affinity: nothing grows or merges across it."""
    shape = list(pred.shape)
    shape[1 + axis] = 1
    sep = np.zeros(shape, np.float32)
    if target == "boundaries":
        sep[:] = 1.0  # all boundary
    elif target == "bcd":
        sep[1] = 1.0  # contour everywhere, no foreground
    return sep


def _default_inference() -> Any:
    from ..inference.config import InferenceConfig

    return InferenceConfig()


def _device_of(model: Any) -> Any:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return "cpu"
