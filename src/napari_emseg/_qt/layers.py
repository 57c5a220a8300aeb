"""What the widgets read off napari layers."""

from __future__ import annotations

from typing import Any


def layer_voxel_size(layer: Any) -> tuple[float, float, float] | None:
    """A layer's (z, y, x) scale as a voxel size, or ``None`` when napari's default (all 1) says nothing."""
    scale = tuple(float(s) for s in layer.scale[-3:])
    if len(scale) < 3 or all(abs(s - 1.0) < 1e-9 for s in scale):
        return None
    return scale  # type: ignore[return-value]
