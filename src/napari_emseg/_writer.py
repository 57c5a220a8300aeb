"""npe2 writer: save a Labels layer to zarr (chunked, atomic, with its voxel size)."""

from __future__ import annotations

from typing import Any

from .io import write_volume


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer's data to ``path`` (a ``.zarr`` folder) with its scale as voxel size."""
    if not str(path).lower().rstrip("/").endswith(".zarr"):
        path = f"{path}.zarr"
    scale = meta.get("scale")
    voxel_size = tuple(float(s) for s in scale[-3:]) if scale is not None and len(scale) >= 3 else None
    attrs = {"napari-emseg": {"layer": meta.get("name", "labels"), "layer_type": "labels"}}
    return [write_volume(path, data, voxel_size=voxel_size, attrs=attrs)]
