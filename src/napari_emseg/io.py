"""Open any EM volume lazily, and write volumes to zarr chunk by chunk.

:func:`open_volume` reads multi-page TIFF, folders of TIFF/PNG slices, zarr (v2 and v3),
OME-Zarr (level 0, scale from its metadata), N5, HDF5 and ``.npy`` into a lazy
:class:`dask.array.Array` of shape ``(z, y, x)`` plus the voxel size in nanometres. Nothing is
read but metadata until a block is computed. A dataset inside a container is named after a
colon (``file.h5:raw``, ``volume.zarr:volumes/raw``) or as a path (``volume.zarr/volumes/raw``).
A folder of slices of different sizes (separate micrographs) becomes one stack on a canvas as
large as the largest slice, each slice at the top left (:attr:`Volume.extents`); results on it
are cut back to each slice with :func:`cut_to_extents`.

:func:`write_volume` streams a (dask, numpy, zarr) array into a zarr array one chunk at a time
and publishes it atomically (written beside the target, then renamed), so a crash never leaves
a half-written output where a good one was.

Voxel sizes are ``(z, y, x)`` in nanometres throughout the package.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ._extents import check_extents, cut_to_extents, extents_of, stacked_extents
from ._formats import (
    H5Array,
    SliceStack,
    find_h5_datasets,
    h5_voxel_size,
    open_zarr_node,
    tiff_voxel_size,
    zarr_voxel_size,
)
from .errors import EmsegError

__all__ = ["Volume", "VolumeError", "open_volume", "write_volume", "split_uri", "cut_to_extents", "extents_of", "check_extents",
           "DEFAULT_VOXEL_SIZE"]

logger = logging.getLogger(__name__)

DEFAULT_VOXEL_SIZE: tuple[float, float, float] = (1.0, 1.0, 1.0)
"""Used when a file says nothing about its voxel size (reported in :attr:`Volume.voxel_size_known`)."""

_PLAIN_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
"""Single 2D images read whole (imageio); also the slices of a folder, as TIFFs."""
_SLICE_SUFFIXES = {".tif", ".tiff", *_PLAIN_IMAGE_SUFFIXES}
_H5_SUFFIXES = {".h5", ".hdf5", ".hdf"}


class VolumeError(EmsegError, ValueError):
    """A volume cannot be opened or is not a grayscale 2D/3D image; the message says why."""


class Volume(NamedTuple):
    """A lazily opened volume: ``data, voxel_size = open_volume(path)``."""

    data: Any  # dask.array.Array, (z, y, x)
    voxel_size: tuple[float, float, float]
    path: str = ""
    voxel_size_known: bool = False
    #: ``(height, width)`` of each slice of a folder of slices of different sizes, placed at the
    #: top left of ``data`` (``None``: every slice fills it)
    extents: tuple[tuple[int, int], ...] | None = None


def split_uri(uri: str | os.PathLike) -> tuple[str, str | None]:
    """Split ``"file.h5:raw"`` into ``("file.h5", "raw")``; a plain path gives ``(path, None)``."""
    text = os.fspath(uri)
    # a colon after a container suffix separates the dataset; Windows drive letters are kept.
    m = re.match(r"^(.*?\.(?:h5|hdf5|hdf|zarr|n5|zarr/?))[:](.+)$", text, flags=re.IGNORECASE)
    if m:
        return m.group(1).rstrip("/"), m.group(2).strip("/")
    return text, None


def open_volume(
    path: str | os.PathLike,
    *,
    channel: int | None = None,
    voxel_size: Sequence[float] | None = None,
    axes: str | None = None,
    fill: float | str = "median",
) -> Volume:
    """Open a grayscale volume lazily.

    Parameters
    ----------
    path
        A file, folder or container URI. See the module docstring for the formats.
    channel
        For multi-channel or RGB data, which channel to take; an error on data without a
        channel axis.
    axes
        The stored array's axes, one letter each from ``tczyx`` (``"zyx"``, ``"cyx"``,
        ``"czyx"``, ``"yx"`` ...), for files whose layout is ambiguous; ``None``: the rules of
        :mod:`napari_emseg._axes` (a 3- or 4-slice TIFF is z-slices, axes of length 1 are
        never channels).
    voxel_size
        ``(z, y, x)`` in nm, overriding what the file says (or supplying it when it says nothing).
    fill
        What surrounds the smaller slices of a folder of slices of different sizes: ``"median"``
        (each slice's median: images) or a number (``0`` for painted labels: unlabelled).

    Returns
    -------
    Volume
        ``(data, voxel_size, path, voxel_size_known)`` where ``data`` is a 3D dask array.

    Raises
    ------
    VolumeError
        Missing file or dataset, non-numeric or empty data, or more than one channel without
        ``channel``; the message names the path and what to do.
    """
    import dask.array as da

    text = os.fspath(path)
    base, key = split_uri(text)
    p = Path(base)
    if not p.exists():
        hint = ""
        if p.parent.exists():
            near = sorted(x.name for x in p.parent.iterdir() if x.name.startswith(p.name[:3]))[:5]
            if near:
                hint = f"; similar names there: {near}"
        raise VolumeError(f"{text}: no such file or folder{hint}")

    suffix = p.suffix.lower()
    found_vs: tuple[float, ...] | None = None
    extents: tuple[tuple[int, int], ...] | None = None
    try:
        if p.is_dir() and suffix not in {".zarr", ".n5"} and not _is_zarr_dir(p) and key is None:
            files = sorted(
                (f for f in p.iterdir() if f.suffix.lower() in _SLICE_SUFFIXES), key=_natural_key
            )
            if not files:
                raise VolumeError(
                    f"{text}: folder holds no {'/'.join(sorted(_SLICE_SUFFIXES))} slices and is not a zarr/N5 container"
                )
            stack = SliceStack([str(f) for f in files], fill=fill)
            extents = stack.extents
            arr = da.from_array(stack, chunks=(1, *stack.shape[1:]), name=f"slices-{uuid.uuid4().hex}")
            found_vs = tiff_voxel_size(str(files[0])) if files[0].suffix.lower() in {".tif", ".tiff"} else None
            axes_hint = stack.axes
        elif suffix in {".tif", ".tiff"}:
            stack = SliceStack.from_tiff(str(p))
            arr = da.from_array(stack, chunks=stack.chunks, name=f"tiff-{uuid.uuid4().hex}")
            found_vs = tiff_voxel_size(str(p))
            axes_hint = stack.axes
        elif suffix in _PLAIN_IMAGE_SUFFIXES:
            stack = SliceStack([str(p)])
            arr = da.from_array(stack, chunks=stack.shape, name=f"image-{uuid.uuid4().hex}")
            axes_hint = stack.axes
        elif suffix == ".npy":
            mm = np.load(str(p), mmap_mode="r", allow_pickle=False)
            arr = da.from_array(mm, chunks="auto")
            axes_hint = None
        elif suffix in _H5_SUFFIXES:
            if key is None:
                names = find_h5_datasets(str(p))
                if len(names) != 1:
                    raise VolumeError(
                        f"{text}: holds {len(names)} datasets {names[:10]}; name one as "
                        f"'{base}:DATASET'"
                    )
                key = names[0]
            h5 = H5Array(str(p), key)
            arr = da.from_array(h5, chunks=h5.chunks or "auto")
            found_vs = h5_voxel_size(str(p), key)
            axes_hint = None
        else:
            node, chain, is_n5 = open_zarr_node(str(p), key)
            arr = da.from_array(node, chunks=node.chunks)
            if is_n5:  # N5 lists axes x-first
                arr = arr.transpose()
            found_vs = zarr_voxel_size(chain, xyz_order=is_n5)
            axes_hint = None
    except VolumeError:
        raise
    except KeyError as err:
        raise VolumeError(f"{text}: {err.args[0] if err.args else err}") from None
    except (OSError, ValueError, TypeError) as err:
        raise VolumeError(f"{text}: cannot read it ({type(err).__name__}: {err})") from err

    arr = _to_grayscale_3d(arr, text, channel, axes_hint, axes)
    if extents is not None:
        extents = stacked_extents(extents, arr.shape, text, fill)
    if voxel_size is not None:
        vs = _check_voxel_size(voxel_size, text)
        known = True
    elif found_vs is not None:
        vs, known = _check_voxel_size(found_vs, text), True
    else:
        vs, known = DEFAULT_VOXEL_SIZE, False
    return Volume(arr, vs, text, known, extents)


def _is_zarr_dir(p: Path) -> bool:
    return any((p / n).exists() for n in (".zarray", ".zgroup", "zarr.json", "attributes.json"))


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _check_voxel_size(vs: Sequence[float], where: str) -> tuple[float, float, float]:
    vals = [float(v) for v in vs]
    if len(vals) == 2:
        vals = [1.0, *vals]
    if len(vals) != 3 or not all(np.isfinite(v) and v > 0 for v in vals):
        raise VolumeError(f"{where}: voxel size must be three positive numbers (z, y, x) in nm, got {vs}")
    return (vals[0], vals[1], vals[2])


def _to_grayscale_3d(arr: Any, where: str, channel: int | None, hint: str | None, axes: str | None = None) -> Any:
    """Check dtype and size, pick a channel, name the axes z, y, x (rules: :mod:`napari_emseg._axes`)."""
    from ._axes import to_zyx

    return to_zyx(arr, where, channel=channel, axes=axes, hint=hint)


# ---------------------------------------------------------------------------------------------
def write_volume(
    path: str | os.PathLike,
    data: Any,
    *,
    voxel_size: Sequence[float] | None = None,
    chunks: Sequence[int] | None = None,
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = True,
    zarr_format: int = 2,
) -> str:
    """Write ``data`` to a zarr array at ``path``, one chunk at a time, atomically.

    Parameters
    ----------
    path
        Target, e.g. ``"out.zarr"`` or ``"out.zarr/labels"`` (a group is created as needed).
    data
        Any array-like (numpy, dask, zarr, h5py dataset). Never materialised as a whole.
    voxel_size
        ``(z, y, x)`` in nm, stored as ``resolution`` (and read back by :func:`open_volume`).
    chunks
        Chunk shape; default ``(min(z, 32), 256, 256)``-like, clipped to the shape.
    attrs
        Extra JSON-serialisable attributes (model card, channel names, provenance).
    overwrite
        Replace an existing array at ``path`` that napari-emseg wrote (anything else is never
        replaced: :class:`~napari_emseg._outputs.UnsafeOutputError`); the old one stays until
        the new one is complete.
    zarr_format
        2 (default, read by every EM tool) or 3.

    Returns
    -------
    str
        The path written.
    """
    import dask.array as da

    from ._outputs import guard_foreign, owner_attrs

    target = Path(os.fspath(path))
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: exists; pass overwrite=True to replace it")
    guard_foreign(target, option="output")
    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks=chunks or "auto")
    if chunks is None:
        chunks = default_chunks(data.shape)
    chunks = tuple(int(min(c, s)) for c, s in zip(chunks, data.shape))
    data = data.rechunk(chunks)

    ensure_parent_groups(target, zarr_format)
    tmp = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        meta: dict[str, Any] = {**owner_attrs(), **dict(attrs or {})}
        if voxel_size is not None:
            meta["resolution"] = [float(v) for v in voxel_size]
            meta["unit"] = "nm"
        store_array(tmp, data, meta, zarr_format)
        _replace_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def store_array(path: str | os.PathLike, data: Any, attrs: Mapping[str, Any], zarr_format: int = 2) -> Any:
    """Create a zarr array at ``path`` shaped and chunked like the dask array ``data`` and store
    ``data`` into it chunk by chunk (no atomic publishing: the caller writes to a hidden place)."""
    import dask.array as da
    import zarr

    chunks = tuple(int(c[0]) for c in data.chunks)
    arr = zarr.create_array(store=os.fspath(path), shape=data.shape, chunks=chunks, dtype=data.dtype,
                            zarr_format=zarr_format, fill_value=0)
    if attrs:
        arr.attrs.update(jsonable(dict(attrs)))
    da.store(data, arr, lock=False, compute=True)
    return arr


def default_chunks(shape: Sequence[int]) -> tuple[int, ...]:
    """Chunks of about 2-8 MB suited to EM volumes: thin in z, wide in x/y."""
    target = [32, 256, 256][-len(shape):] if len(shape) <= 3 else [1] * (len(shape) - 3) + [32, 256, 256]
    return tuple(int(max(1, min(t, s))) for t, s in zip(target, shape))


def ensure_parent_groups(target: Path, zarr_format: int) -> None:
    """Create zarr groups for ``a.zarr/b/c`` style targets inside a container.

    In an OME-Zarr output (:mod:`napari_emseg.ngff`) the groups made here become multiscale
    images: they get napari-emseg's mark when created, and another tool's group on the way is
    refused before anything is written into it."""
    import zarr

    from ._outputs import guard_foreign, owner_attrs
    from .ngff import in_ome

    parts = target.parts
    for i, part in enumerate(parts[:-1]):
        if part.lower().endswith(".zarr"):
            root = Path(*parts[: i + 1])
            group = zarr.open_group(str(root), mode="a", zarr_format=existing_format(root, zarr_format))
            for j, sub in enumerate(parts[i + 1 : -1], start=i + 1):
                here = Path(*parts[: j + 1])
                fresh = not any((here / m).exists() for m in (".zgroup", "zarr.json"))
                if in_ome(here) and not fresh and dict(zarr.open_group(str(here), mode="r").attrs):
                    guard_foreign(here, option="output")  # an empty group is fair game, a described one is not
                group = group.require_group(sub)
                if fresh and in_ome(here):
                    group.attrs.update(owner_attrs())
            return


def existing_format(root: Path, default: int) -> int:
    if (root / "zarr.json").exists():
        return 3
    if (root / ".zgroup").exists() or (root / ".zarray").exists():
        return 2
    return default


def _replace_dir(tmp: Path, target: Path) -> None:
    """Publish ``tmp`` at ``target``: the old target is moved aside first, removed last."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


def jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
