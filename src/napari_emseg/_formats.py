"""Format-specific readers behind :func:`napari_emseg.io.open_volume`.

Each reader is a small picklable array-like (``shape``, ``dtype``, ``ndim``, ``__getitem__``)
that opens its file on first access in the process that uses it, so dask (also
``dask.distributed`` workers) can read blocks lazily without an open handle being pickled.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

NM_PER_UNIT = {
    "nm": 1.0, "nanometer": 1.0, "nanometre": 1.0,
    "um": 1e3, "µm": 1e3, "micron": 1e3, "micrometer": 1e3, "micrometre": 1e3, "\\u00B5m": 1e3,
    "mm": 1e6, "millimeter": 1e6, "millimetre": 1e6,
    "pm": 1e-3, "angstrom": 0.1, "å": 0.1,
}


class _LazyHandle:
    """Base: keeps an open handle per process; pickles without it."""

    _handle: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"] = None
        return state

    @property
    def ndim(self) -> int:
        return len(self.shape)  # type: ignore[attr-defined]


class SliceStack(_LazyHandle):
    """A z-stack read one 2D slice (file or TIFF page) at a time.

    Built either from a list of 2D image files (a folder of slices) or, with
    :meth:`from_tiff`, from a multi-page TIFF read through tifffile's zarr view.

    Files of different sizes (separate micrographs) are placed at the top left of a canvas as
    large as the largest in each direction; the rest is filled with ``fill``: ``"median"``
    (each slice's median, for images) or a number (0 for labels: unpainted). ``extents`` then
    holds each slice's ``(height, width)``; it is ``None`` when every slice fills the canvas.
    """

    def __init__(self, files: Sequence[str], *, tiff: str | None = None,
                 shape: tuple[int, ...] | None = None, dtype: Any = None, axes: str | None = None,
                 fill: float | str = "median"):
        self.files = list(files)
        self.tiff = tiff
        self.fill = fill
        self.extents: tuple[tuple[int, int], ...] | None = None
        if shape is None:
            first = _read_image(self.files[0])
            sizes = slice_sizes(self.files, tuple(first.shape))
            canvas = (max(h for h, _ in sizes), max(w for _, w in sizes))
            shape = (len(self.files), *canvas, *first.shape[2:])
            dtype = first.dtype
            axes = "Z" + ("YXS" if first.ndim == 3 else "YX")
            if any(s != canvas for s in sizes):
                self.extents = tuple(sizes)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.axes = axes
        self.chunks: tuple[int, ...] = (1, *self.shape[1:])

    @classmethod
    def from_tiff(cls, path: str) -> SliceStack:
        import tifffile

        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            stack = cls([], tiff=path, shape=tuple(series.shape), dtype=series.dtype, axes=series.axes)
        stack.chunks = tuple(int(c) for c in stack._zarr().chunks)
        return stack

    def _zarr(self) -> Any:
        if self._handle is None:
            import tifffile
            import zarr

            self._handle = zarr.open(tifffile.imread(self.tiff, aszarr=True), mode="r")
        return self._handle

    def __getitem__(self, key: Any) -> np.ndarray:
        if self.tiff is not None:
            return np.asarray(self._zarr()[key])
        key = key if isinstance(key, tuple) else (key,)
        zkey, rest = key[0], key[1:]
        if isinstance(zkey, (int, np.integer)):
            return self._slice(int(zkey))[rest]
        idx = range(len(self.files))[zkey]
        if len(idx) == 0:
            return np.zeros((0, *self.shape[1:]), self.dtype)[(slice(None), *rest)]
        return np.stack([self._slice(i)[rest] for i in idx])

    def _slice(self, i: int) -> np.ndarray:
        img = _read_image(self.files[i])
        want = (*self.extents[i], *self.shape[3:]) if self.extents else self.shape[1:]
        if img.shape != want:  # changed since the folder was opened, or a header that lied
            from .io import VolumeError

            raise VolumeError(f"{self.files[i]}: slice of shape {img.shape}, but its header said {want} when the "
                              "folder was opened; every slice of a folder must have the same channels, and the "
                              "files must not change while they are read")
        if self.extents is None:
            return img
        h, w = self.extents[i]
        if self.fill == "median":
            value = np.median(img.reshape(h * w, -1), axis=0).astype(self.dtype)
        else:
            value = np.asarray(self.fill, self.dtype)
        out = np.empty(self.shape[1:], self.dtype)
        out[...] = value
        out[:h, :w] = img
        return out


def slice_sizes(files: Sequence[str], shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Each slice's ``(height, width)`` (read from each file's header only; the first slice's
    ``shape`` where a header is unreadable). Every slice must have the first one's channels."""
    from .io import VolumeError

    sizes = [(int(shape[0]), int(shape[1]))]
    for f in files[1:]:
        other = _image_shape(f)
        if other is None:
            sizes.append(sizes[0])
            continue
        if other[2:] != (None,) and tuple(other[2:]) != tuple(shape[2:]):  # None: channels not in the header
            raise VolumeError(
                f"{f}: slice of shape {tuple(other)}, but {Path(files[0]).name} (the first slice) has shape "
                f"{tuple(shape)}; every slice of a folder must have the same channels: convert the odd one")
        sizes.append((int(other[0]), int(other[1])))
    return sizes


def _image_shape(path: str) -> tuple[Any, ...] | None:
    """A 2D image file's ``(height, width, ...)`` from its header (``None`` when unreadable;
    ``(height, width, None)`` when the header does not say how the file reads as channels)."""
    try:
        if path.lower().endswith((".tif", ".tiff")):
            import tifffile

            with tifffile.TiffFile(path) as tf:
                return tuple(int(s) for s in tf.series[0].shape)
        from PIL import Image

        with Image.open(path) as im:
            channels = {"L": (), "I": (), "I;16": (), "F": (), "1": (), "RGB": (3,), "RGBA": (4,)}
            return (im.height, im.width, *channels[im.mode]) if im.mode in channels else (im.height, im.width, None)
    except Exception:  # noqa: BLE001 - unreadable here: the read itself will say why
        return None


def _read_image(path: str) -> np.ndarray:
    if path.lower().endswith((".tif", ".tiff")):
        import tifffile

        return np.asarray(tifffile.imread(path))
    import imageio.v3 as iio

    return np.asarray(iio.imread(path))


class H5Array(_LazyHandle):
    """An HDF5 dataset opened read-only on first access."""

    def __init__(self, path: str, key: str):
        import h5py

        self.path, self.key = path, key
        with h5py.File(path, "r") as f:
            if key not in f:
                names = find_h5_datasets(path)
                raise KeyError(f"no dataset {key!r}; datasets in the file: {names[:20]}")
            ds = f[key]
            if not isinstance(ds, h5py.Dataset):
                inner = [n for n in find_h5_datasets(path) if n.startswith(key.strip("/") + "/")]
                raise KeyError(f"{key!r} is a group, not a dataset; datasets in it: {inner[:20]}")
            self.shape, self.dtype, self.chunks = ds.shape, ds.dtype, ds.chunks

    def __getitem__(self, key: Any) -> np.ndarray:
        if self._handle is None:
            import h5py

            self._handle = h5py.File(self.path, "r")[self.key]
        return self._handle[key]


def find_h5_datasets(path: str) -> list[str]:
    import h5py

    names: list[str] = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def h5_voxel_size(path: str, key: str) -> tuple[float, ...] | None:
    import h5py

    with h5py.File(path, "r") as f:
        attrs = dict(f[key].attrs)
    if "element_size_um" in attrs:  # ImageJ / ilastik convention, zyx in micrometres
        return tuple(float(v) * 1e3 for v in np.ravel(attrs["element_size_um"]))
    return _vs_from_attrs(attrs)


def tiff_voxel_size(path: str) -> tuple[float, ...] | None:
    """(z, y, x) nm from ImageJ metadata / resolution tags, or ``None`` when absent."""
    import tifffile

    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        ij = tf.imagej_metadata or {}
        unit = str(ij.get("unit", "")).lower().replace("\\u00b5", "µ").replace("micron", "um")
        tags = page.tags
        if "XResolution" not in tags or "YResolution" not in tags:
            return None
        xr, yr = tags["XResolution"].value, tags["YResolution"].value
        px = [r[1] / r[0] if r[0] else 0.0 for r in (yr, xr)]
        if not unit:
            res_unit = tags["ResolutionUnit"].value if "ResolutionUnit" in tags else 1
            unit = {2: "inch", 3: "cm"}.get(int(res_unit), "")
        scale = NM_PER_UNIT.get(unit) or {"cm": 1e7}.get(unit)
        if scale is None or px[0] <= 0 or px[0] == 1.0 and not ij:
            return None  # no physical unit: the resolution tag is meaningless for EM
        z = float(ij.get("spacing", px[0])) * scale
        return (z, px[0] * scale, px[1] * scale)


def open_zarr_node(path: str, key: str | None) -> tuple[Any, list[Mapping[str, Any]], bool]:
    """Open a zarr/N5 array (or OME-Zarr level 0) and the attributes from root to it.

    The third value is true for N5, whose axes (and ``resolution``) are listed x-first: the
    caller transposes the array to z-first.
    """
    import zarr

    store: Any = path
    is_n5 = path.lower().rstrip("/").endswith(".n5") or (Path(path) / "attributes.json").exists()
    if is_n5 and not (Path(path) / "zarr.json").exists() and not (Path(path) / ".zgroup").exists():
        import zarr_n5
        from zarr.storage import LocalStore

        store = zarr_n5.ImplicitGroupWrapperStore(zarr_n5.N5WrapperStore(LocalStore(path, read_only=True)))
    is_n5 = store is not path
    node = zarr.open(store=store, mode="r", path=key or "")
    chain: list[Mapping[str, Any]] = [dict(node.attrs)]
    if isinstance(node, zarr.Array):
        if key:
            root = zarr.open(store=store, mode="r")
            chain.insert(0, dict(root.attrs))
        return node, chain, is_n5
    # a group: OME-Zarr multiscales -> level 0; else its only array
    attrs = dict(node.attrs)
    ms = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if ms:
        level0 = ms[0]["datasets"][0]
        return node[level0["path"]], [{"_ome": ms[0], "_ome_level": level0}], is_n5
    arrays = [name for name, _ in node.arrays()]
    if len(arrays) == 1:
        arr = node[arrays[0]]
        return arr, [attrs, dict(arr.attrs)], is_n5
    members = sorted(name for name, _ in node.members(max_depth=None))
    raise KeyError(
        f"a group with {len(arrays)} arrays at its top; name the dataset as "
        f"'{path}:NAME' (members: {members[:15]})"
    )


def zarr_voxel_size(chain: Sequence[Mapping[str, Any]], xyz_order: bool = False) -> tuple[float, ...] | None:
    """Voxel size (z, y, x) from the innermost attributes that define one (OME, resolution, N5)."""
    for attrs in reversed(chain):
        if "_ome" in attrs:
            return _ome_voxel_size(attrs["_ome"], attrs["_ome_level"])
        vs = _vs_from_attrs(attrs, xyz_order)
        if vs is not None:
            return vs
    return None


def _ome_voxel_size(ms: Mapping[str, Any], level: Mapping[str, Any]) -> tuple[float, ...] | None:
    axes = ms.get("axes") or []
    names = [a["name"] if isinstance(a, Mapping) else str(a) for a in axes]
    units = [a.get("unit", "") if isinstance(a, Mapping) else "" for a in axes]
    scale = None
    for tr in list(ms.get("coordinateTransformations", [])) + list(level.get("coordinateTransformations", [])):
        if tr.get("type") == "scale":
            s = np.asarray(tr["scale"], dtype=float)
            scale = s if scale is None else scale * s
    if scale is None:
        return None
    if not names:
        names = ["t", "c", "z", "y", "x"][-len(scale):]
        units = [""] * len(scale)
    out = []
    for ax in ("z", "y", "x"):
        if ax in names:
            i = names.index(ax)
            out.append(float(scale[i]) * NM_PER_UNIT.get(str(units[i]).lower(), 1.0))
    return tuple(out) if len(out) >= 2 else None


def _vs_from_attrs(attrs: Mapping[str, Any], xyz_order: bool = False) -> tuple[float, ...] | None:
    """``resolution`` / ``voxel_size`` (zyx, nm; xyz in N5) or N5 ``pixelResolution`` (xyz)."""
    for key in ("resolution", "voxel_size", "voxelSize"):
        if key in attrs:
            val = attrs[key]
            if isinstance(val, Mapping):
                continue
            vals = [float(v) for v in np.ravel(val)]
            unit = str(attrs.get("unit", "nm")).lower()
            vals = vals[::-1] if xyz_order else vals
            return tuple(v * NM_PER_UNIT.get(unit, 1.0) for v in vals)
    pr = attrs.get("pixelResolution")
    if isinstance(pr, Mapping) and "dimensions" in pr:  # N5 viewer convention, x-y-z order
        unit = str(pr.get("unit", "nm")).lower()
        return tuple(float(v) * NM_PER_UNIT.get(unit, 1.0) for v in reversed(pr["dimensions"]))
    if isinstance(attrs.get("_n5"), Mapping):
        return _vs_from_attrs(attrs["_n5"], True)
    return None


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
