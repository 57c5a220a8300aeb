"""npe2 reader: open EM volumes (zarr, OME-Zarr, N5, HDF5, TIFF, .npy) as napari layers.

No Qt here: napari calls :func:`get_reader` with a path and shows the layer data it returns.
Integer volumes of 32/64 bits open as Labels layers (segmentations), everything else as
Image layers; both carry the file's voxel size as their scale so layers line up in nm.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .io import VolumeError, open_volume, split_uri

logger = logging.getLogger(__name__)

LayerData = tuple[Any, dict[str, Any], str]
_SUFFIXES = {".zarr", ".n5", ".h5", ".hdf5", ".hdf", ".tif", ".tiff", ".npy"}
_LABEL_KINDS = {"u", "i"}


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return :func:`read_volumes` if napari-emseg can read ``path``, else ``None``."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    for p in paths:
        base, _ = split_uri(str(p))
        if Path(base.rstrip("/")).suffix.lower() not in _SUFFIXES:
            return None
    return read_volumes


def read_volumes(path: str | list[str]) -> list[LayerData]:
    """Read each path lazily into one layer (Labels for 32/64-bit integers, else Image)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        try:
            vol = open_volume(p)
        except VolumeError as err:
            # napari reports reader errors to the user; keep the message, drop the traceback
            raise VolumeError(str(err)) from None
        name = Path(split_uri(str(p))[0].rstrip("/")).stem
        meta = {"name": name, "scale": vol.voxel_size, "metadata": {"path": str(p), "unit": "nm"}}
        is_labels = vol.data.dtype.kind in _LABEL_KINDS and vol.data.dtype.itemsize >= 4
        layers.append((vol.data, meta, "labels" if is_labels else "image"))
    return layers
