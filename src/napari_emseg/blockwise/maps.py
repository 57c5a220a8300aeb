"""Reading prediction maps by region for per-block tasks."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..postprocess.affinities import affinities_from_boundaries
from ..postprocess.maps import map_scale

__all__ = ["open_map", "read_map_region", "region_affinities"]


def open_map(path: str) -> Any:
    """The ``(C, Z, Y, X)`` zarr array at ``path``, read-only."""
    import zarr

    return zarr.open_array(str(path), mode="r")


def read_map_region(probs: Any, region: tuple[slice, ...]) -> np.ndarray:
    """All channels over ``region``, in the stored type when post-processing reads that type
    (float, or uint8 with scale 255), else as float32 in ``[0, 1]``."""
    part = np.asarray(probs[(slice(None), *region)])
    scale = map_scale(probs)
    if part.dtype.kind == "f" or (part.dtype == np.uint8 and scale == 255.0):
        return part
    return np.multiply(part, np.float32(1.0 / scale), dtype=np.float32)


def region_affinities(probs: Any, target: str, region: tuple[slice, ...]) -> np.ndarray:
    """float32 nearest-neighbour affinities ``(3, ...)`` over ``region``, exactly as for the whole
    volume: channel ``c`` at voxel ``p`` joins ``p`` and ``p - e_c`` (its partner may lie just
    outside the region; boundary maps are read one voxel beyond the region's start for that)."""
    scale = np.float32(1.0 / map_scale(probs))
    if target != "boundaries":
        part = np.asarray(probs[(slice(0, 3), *region)])
        return np.multiply(part, scale, dtype=np.float32)
    grown = tuple(slice(max(0, s.start - 1), s.stop) for s in region)
    b = np.multiply(np.asarray(probs[(0, *grown)]), scale, dtype=np.float32)
    affs = affinities_from_boundaries(b)
    crop = tuple(slice(s.start - g.start, None) for s, g in zip(region, grown))
    return np.ascontiguousarray(affs[(slice(None), *crop)])
