"""npe2 reader: open EM volumes and everything napari-emseg writes as napari layers.

No Qt here: napari calls :func:`get_reader` with a path and shows the layer data it returns.

* a zarr array (``seg.zarr/labels``, ``seg.zarr:labels``), TIFF, HDF5, N5, ``.npy`` or a folder
  of TIFF/PNG slices: one layer;
* an OME-Zarr multiscale image (``seg.ome.zarr/labels``, any NGFF 0.4 image): one multiscale
  layer, its levels read lazily;
* a container (``seg.zarr``, ``seg.ome.zarr``): a layer for each array or multiscale image in it;
  ``(C, Z, Y, X)`` probability maps become one image per channel, named after the channels.

Labels layers: NGFF ``image-label`` images, integer arrays napari-emseg wrote as labels, and any
32/64-bit integer volume; everything else is an Image. Every layer carries its voxel size (nm)
as its scale, so layers line up.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .io import _SLICE_SUFFIXES as _SLICES  # the slice files open_volume reads from a folder
from .io import VolumeError, open_volume, split_uri

logger = logging.getLogger(__name__)

LayerData = tuple[Any, dict[str, Any], str]
_SUFFIXES = {".zarr", ".n5", ".h5", ".hdf5", ".hdf", ".tif", ".tiff", ".npy"}
_ZARR_META = (".zarray", ".zgroup", "zarr.json")
_MAX_DEPTH = 3


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return :func:`read_volumes` if napari-emseg can read ``path``, else ``None``."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return read_volumes if paths and all(_readable(str(p)) for p in paths) else None


def _readable(path: str) -> bool:
    p = Path(split_uri(path)[0].rstrip("/"))
    if p.suffix.lower() in _SUFFIXES:
        return True
    if not p.is_dir():
        return False
    if any((p / m).exists() for m in (*_ZARR_META, "attributes.json")):
        return True
    return any(f.suffix.lower() in _SLICES for f in p.iterdir())


def read_volumes(path: str | list[str]) -> list[LayerData]:
    """Read each path lazily into its layers (see the module docstring); images come first."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        try:
            layers.extend(_layers(str(p)))
        except VolumeError as err:
            # napari reports reader errors to the user; keep the message, drop the traceback
            raise VolumeError(str(err)) from None
    return sorted(layers, key=lambda layer: layer[2] == "labels")


def _layers(uri: str) -> list[LayerData]:
    base, key = split_uri(uri)
    root = Path(base.rstrip("/"))
    short = root.name[: -len(".ome.zarr")] if root.name.lower().endswith(".ome.zarr") else root.stem
    stem = f"{short}/{key}" if key else short
    node = _zarr_node(root, key)
    if node is None:  # files, slice folders, HDF5, N5: one volume
        return [_volume_layer(uri, stem)]
    import zarr

    if isinstance(node, zarr.Group):
        if _multiscales(node):
            return [_multiscale_layer(node, stem, uri)]
        found = _container_layers(node, f"{root}", key or "", short, 1)
        if not key:  # labels written as TIFF beside the maps (segment --labels-format tif)
            found += [_volume_layer(str(f), f"{short}/{f.stem}") for f in sorted(root.glob("*.tif*"))]
        if not found:
            raise VolumeError(f"{uri}: a zarr group without arrays or OME-Zarr images")
        return found
    return [_array_layer(node, uri, stem)]


def _zarr_node(root: Path, key: str | None) -> Any:
    """The zarr array or group at ``root[:key]`` (``None`` when it is not zarr, or N5)."""
    if not root.is_dir() or (root / "attributes.json").exists() and not any((root / m).exists() for m in _ZARR_META):
        return None
    import zarr

    try:
        return zarr.open(store=str(root), mode="r", path=key or "")
    except KeyError as err:
        raise VolumeError(f"{root}:{key}: no such array or group ({err})") from None
    except Exception:  # noqa: BLE001 - not zarr after all: open_volume says why
        return None


def _container_layers(group: Any, root: str, prefix: str, stem: str, depth: int) -> list[LayerData]:
    import zarr

    layers: list[LayerData] = []
    with warnings.catch_warnings():  # files beside the arrays (provenance.json) are no zarr nodes
        warnings.simplefilter("ignore")
        members = sorted(group.members(), key=lambda m: m[0])
    for name, child in members:
        if name.startswith("."):  # unfinished writes and scratch folders
            continue
        rel = f"{prefix}/{name}".strip("/")
        label = f"{stem}/{rel}"
        if isinstance(child, zarr.Array):
            layers.append(_array_layer(child, f"{root}/{rel}", label))
        elif _multiscales(child):
            layers.append(_multiscale_layer(child, label, f"{root}/{rel}"))
        elif depth < _MAX_DEPTH:
            layers.extend(_container_layers(child, root, rel, stem, depth + 1))
    return layers


def _multiscales(group: Any) -> list[Any]:
    attrs = group.attrs
    return list(attrs.get("multiscales") or (attrs.get("ome") or {}).get("multiscales") or [])


def _is_labels(dtype: Any, attrs: Mapping[str, Any]) -> bool:
    if dtype.kind not in "ui":
        return False
    layer = attrs.get("napari-emseg") if isinstance(attrs.get("napari-emseg"), Mapping) else {}
    return (dtype.itemsize >= 4 or "postprocess" in attrs or "n_objects" in attrs
            or layer.get("layer_type") == "labels")


def _volume_layer(uri: str, name: str) -> LayerData:
    from ._outputs import is_ours

    vol = open_volume(uri)
    meta = {"name": name, "scale": vol.voxel_size, "metadata": {"path": uri, "unit": "nm"}}
    # napari-emseg's TIFF outputs are labels (16-bit so that ImageJ reads them)
    ours = Path(uri).suffix.lower() in (".tif", ".tiff") and is_ours(uri)
    kind = "labels" if ours or _is_labels(vol.data.dtype, {}) else "image"
    if vol.extents:  # a folder of slices of different sizes: the segment widget cuts results back to them
        meta["metadata"]["extents"] = [list(e) for e in vol.extents]
        if kind == "labels":  # unlabelled around the smaller slices
            vol = open_volume(uri, fill=0)
    return vol.data, meta, kind


def _array_layer(arr: Any, uri: str, name: str) -> LayerData:
    attrs = dict(arr.attrs)
    if arr.ndim != 4 and "channel_names" not in attrs:
        vol = open_volume(uri)
        meta = {"name": name, "scale": vol.voxel_size, "metadata": {"path": uri, "unit": "nm"}}
        return vol.data, meta, "labels" if _is_labels(vol.data.dtype, attrs) else "image"
    import dask.array as da

    from ._formats import zarr_voxel_size

    vs = zarr_voxel_size([attrs]) or (1.0,) * (arr.ndim - 1)
    return _channels(da.from_zarr(arr), attrs, name, tuple(vs), uri, multiscale=False)


def _multiscale_layer(group: Any, name: str, uri: str) -> LayerData:
    from .ngff import open_multiscale

    levels, axes, vs, attrs = open_multiscale(group)
    level0 = dict(group[_multiscales(group)[0]["datasets"][0]["path"]].attrs)
    scale = tuple(vs) if vs is not None else (1.0,) * len(axes)
    data: Any = levels if len(levels) > 1 else levels[0]
    if "c" in axes:
        c = axes.index("c")
        return _channels(data, level0, name, scale[:c] + scale[c + 1:], uri, multiscale=len(levels) > 1, axis=c)
    labels = "image-label" in attrs or "image-label" in (attrs.get("ome") or {}) or _is_labels(levels[0].dtype, level0)
    meta = {"name": name, "scale": scale, "multiscale": len(levels) > 1,
            "metadata": {"path": uri, "unit": "nm", "levels": [tuple(lv.shape) for lv in levels]}}
    return data, meta, "labels" if labels else "image"


def _channels(data: Any, attrs: Mapping[str, Any], name: str, scale: tuple[float, ...], uri: str, *,
              multiscale: bool, axis: int = 0) -> LayerData:
    """One image per channel of ``(C, Z, Y, X)`` maps, named ``NAME channel``, in [0, 1] (or 0-255)."""
    first = data[0] if multiscale else data
    n = int(first.shape[axis])
    channels = [str(c) for c in attrs.get("channel_names") or []]
    names = [f"{name} {c}" for c in channels] if len(channels) == n else [f"{name} [{i}]" for i in range(n)]
    top = float(attrs.get("scale", 1.0)) if first.dtype.kind in "ui" else 1.0
    meta = {"name": names, "scale": scale, "channel_axis": axis, "multiscale": multiscale,
            "contrast_limits": [[0.0, top]] * n, "blending": "additive",
            "metadata": {"path": uri, "unit": "nm"}}
    return data, meta, "image"
