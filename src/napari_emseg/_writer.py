"""npe2 writer: save a Labels layer to zarr or OME-Zarr (chunked, atomic, with its voxel size)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .io import write_volume
from .ngff import OME_SUFFIX, write_multiscale


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer's data to ``path`` with its scale as voxel size.

    ``*.ome.zarr``: an NGFF multiscale label image (level 0 and a nearest-neighbour pyramid,
    :mod:`napari_emseg.ngff`); any other name: a zarr array (``.zarr`` is added when missing).
    """
    text = str(path).rstrip("/")
    if isinstance(data, Sequence):  # a multiscale layer (e.g. opened from OME-Zarr): save its finest level
        data = data[0]
    scale = meta.get("scale")
    voxel_size = tuple(float(s) for s in scale[-3:]) if scale is not None and len(scale) >= 3 else None
    attrs = {"napari-emseg": {"layer": meta.get("name", "labels"), "layer_type": "labels"}}
    if text.lower().endswith(OME_SUFFIX):
        return [write_multiscale(text, data, kind="labels", voxel_size=voxel_size, attrs=attrs)]
    if not text.lower().endswith(".zarr"):
        text = f"{text}.zarr"
    return [write_volume(text, data, voxel_size=voxel_size, attrs=attrs)]
