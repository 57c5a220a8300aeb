"""OME-Zarr (NGFF 0.4) multiscale outputs: level 0 as written today, then a pyramid.

An output folder whose name ends in ``.ome.zarr`` holds each result as an NGFF multiscale image
instead of a plain array::

    seg.ome.zarr/predictions/   group: "multiscales" (axes c, z, y, x; nm), levels 0, 1, ...
    seg.ome.zarr/labels/        group: "multiscales" (axes z, y, x; nm) + "image-label", levels 0, 1, ...

Level ``0`` is exactly the array napari-emseg writes elsewhere (same chunks, attributes and
resume record, written by the same code); the coarser levels are made from it once it is
complete, each from the one before, block by block: labels by nearest neighbour (every second
voxel, so no new ids appear), probability maps by the mean. An axis is halved while its voxel
size is under twice the finest one (anisotropic EM keeps z until x/y catch up), until the
largest in-plane side is at most ``min_size``.

The metadata is written by hand from the NGFF 0.4 specification (ngff.openmicroscopy.org/0.4;
for zarr v3 arrays the 0.5 form: the same keys under ``"ome"``)
because the maintained library, ome-zarr-py, would add dependencies and writes an image and its
pyramid in one call, whereas these levels are streamed, resumable, atomic per level and carry
napari-emseg's ownership mark like every other output (:mod:`napari_emseg._outputs`).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OME_SUFFIX", "in_ome", "array_path", "build_pyramid", "write_multiscale", "pyramid_factors",
           "multiscales_of", "open_multiscale"]

logger = logging.getLogger(__name__)

OME_SUFFIX = ".ome.zarr"
VERSION = "0.4"
LEVEL0 = "0"
PYRAMID_KEY = "napari_emseg_pyramid"
"""Group attribute: the level-0 run the pyramid was made from (a resumed run that finds it skips)."""
_DEFAULT_MIN_SIZE = 64
_MAX_LEVELS = 10


def in_ome(path: str | os.PathLike) -> bool:
    """Whether ``path`` is, or lies inside, a ``*.ome.zarr`` folder."""
    return any(part.lower().endswith(OME_SUFFIX) for part in Path(os.fspath(path)).parts)


def array_path(out: str | os.PathLike, name: str) -> Path:
    """Where the level-0 array of result ``name`` goes in ``out``: ``out/name/0`` in an OME-Zarr
    output, ``out/name`` in a plain zarr container."""
    base = Path(os.fspath(out)) / name
    return base / LEVEL0 if in_ome(out) else base


def multiscale_group(level0: str | os.PathLike) -> Path | None:
    """The multiscale group of a level-0 path from :func:`array_path` (``None`` for plain zarr)."""
    p = Path(os.fspath(level0))
    return p.parent if p.name == LEVEL0 and in_ome(p) else None


# ---------------------------------------------------------------------------------------------
def pyramid_factors(shape: Sequence[int], voxel_size: Sequence[float] | None = None, *,
                    min_size: int = _DEFAULT_MIN_SIZE, max_levels: int = _MAX_LEVELS) -> list[tuple[int, int, int]]:
    """Downsampling factors ``(z, y, x)`` of each level relative to the one before it."""
    zyx = [int(s) for s in shape[-3:]]
    vs = [float(v) for v in (voxel_size or (1.0, 1.0, 1.0))]
    out: list[tuple[int, int, int]] = []
    while max(zyx[1:]) > min_size and len(out) + 1 < max_levels:
        finest = min(v for v, s in zip(vs, zyx) if s > 1)
        f = tuple(2 if s > 1 and v < 2 * finest else 1 for v, s in zip(vs, zyx))
        out.append(f)  # type: ignore[arg-type]
        zyx = [-(-s // k) for s, k in zip(zyx, f)]
        vs = [v * k for v, k in zip(vs, f)]
    return out


def _downsample(arr: Any, factors: Sequence[int], kind: str) -> Any:
    """One level coarser: ``kind="labels"`` every ``f``-th voxel, else the mean of ``f``-blocks
    (the edge repeated to a whole block), in the input's dtype."""
    import dask.array as da

    lead = arr.ndim - 3
    full = (1,) * lead + tuple(int(f) for f in factors)
    if kind == "labels":
        return arr[tuple(slice(None, None, f) for f in full)]
    pad = [(0, (-s) % f) for s, f in zip(arr.shape, full)]
    if any(p[1] for p in pad):
        arr = da.pad(arr, pad, mode="edge")
    from .io import default_chunks

    base = default_chunks(arr.shape)
    arr = arr.rechunk(tuple(max(f, (c // f) * f) for c, f in zip(base, full)))
    mean = da.coarsen(np.mean, arr.astype(np.float32), dict(enumerate(full)))
    if np.dtype(arr.dtype).kind in "ui":
        info = np.iinfo(arr.dtype)
        mean = da.clip(da.round(mean), info.min, info.max)
    return mean.astype(arr.dtype)


def multiscales_of(ndim: int, name: str, factors: Sequence[Sequence[int]], voxel_size: Sequence[float] | None,
                   kind: str) -> dict[str, Any]:
    """The ``multiscales`` entry (NGFF 0.4) of ``len(factors) + 1`` levels of an ``ndim``-D array."""
    space = [{"name": a, "type": "space", **({"unit": "nanometer"} if voxel_size else {})} for a in "zyx"]
    axes = [{"name": "c", "type": "channel"}] * (ndim == 4) + space
    vs = np.asarray([float(v) for v in (voxel_size or (1.0, 1.0, 1.0))])
    lead = [1.0] * (ndim - 3)
    datasets, total, shift = [], np.ones(3), np.zeros(3)
    for level in range(len(factors) + 1):
        if level:
            f = np.asarray(factors[level - 1], dtype=float)
            if kind != "labels":  # a mean's voxel centre lies between the voxels it averages
                shift = shift + (f - 1) / 2 * total * vs
            total = total * f
        trans: list[dict[str, Any]] = [{"type": "scale", "scale": lead + [float(v) for v in total * vs]}]
        if shift.any():
            trans.append({"type": "translation", "translation": [0.0] * len(lead) + [float(v) for v in shift]})
        datasets.append({"path": str(level), "coordinateTransformations": trans})
    method = "nearest (every 2nd voxel)" if kind == "labels" else "mean of 2x2(x2) blocks"
    return {"version": VERSION, "name": name, "axes": axes, "datasets": datasets,
            "type": "nearest" if kind == "labels" else "mean",
            "metadata": {"method": method, "software": "napari-emseg"}}


# ---------------------------------------------------------------------------------------------
def build_pyramid(group: str | os.PathLike, *, kind: str, voxel_size: Sequence[float] | None = None,
                  min_size: int = _DEFAULT_MIN_SIZE, zarr_format: int = 2) -> list[str]:
    """Make the coarser levels of the multiscale ``group`` from its complete level ``0``, then
    write the group's NGFF metadata (and napari-emseg's mark) last.

    Each level is published atomically (:func:`napari_emseg.io.write_volume`); levels left over
    from an earlier, larger pyramid are removed. ``kind`` is ``"labels"`` (nearest,
    ``image-label`` metadata) or ``"maps"`` (mean). ``voxel_size``: ``(z, y, x)`` nm of level
    0 (default: its ``resolution`` attribute). Returns the paths of all levels.
    """
    import dask.array as da
    import zarr

    from ._outputs import UnsafeOutputError, guard_foreign, is_ours, owner_attrs
    from .io import existing_format, write_volume

    g = Path(os.fspath(group))
    level0 = g / LEVEL0
    if not is_ours(g) and not is_ours(level0):
        guard_foreign(g, option="output")
        raise UnsafeOutputError(f"output {g}: holds no level 0 napari-emseg wrote; nothing to build a pyramid from")
    base = zarr.open_array(str(level0), mode="r")
    attrs = dict(base.attrs)
    if voxel_size is None and attrs.get("resolution"):
        voxel_size = tuple(float(v) for v in attrs["resolution"])
    factors = pyramid_factors(base.shape, voxel_size, min_size=min_size)
    made_from = _run_fingerprint(attrs, factors, voxel_size)
    if made_from and dict(zarr.open_group(str(g), mode="r").attrs).get(PYRAMID_KEY) == made_from \
            and all((g / str(level)).is_dir() for level in range(1, len(factors) + 1)):
        logger.info("%s: pyramid already made from this level 0", g)
        return [str(g / str(level)) for level in range(len(factors) + 1)]
    zarr_format = existing_format(g, zarr_format)  # levels in the format of their group
    root = zarr.open_group(str(g), mode="a", zarr_format=zarr_format)
    for key in ("multiscales", "image-label", "ome", PYRAMID_KEY):  # no reader sees half a new pyramid as whole
        if key in root.attrs:
            del root.attrs[key]
    paths, prev = [str(level0)], base
    for level, f in enumerate(factors, start=1):
        coarse = _downsample(da.from_zarr(prev), f, kind)
        paths.append(write_volume(g / str(level), coarse, zarr_format=zarr_format,
                                  attrs={"level": level, "downsampled_from": str(level - 1)}))
        prev = zarr.open_array(paths[-1], mode="r")
    for stale in sorted(g.glob("[0-9]*")):
        if stale.is_dir() and stale.name.isdigit() and int(stale.name) > len(factors) and is_ours(stale):
            shutil.rmtree(stale, ignore_errors=True)
    ms = multiscales_of(base.ndim, g.name, factors, voxel_size, kind)
    ngff: dict[str, Any] = {"multiscales": [ms], **({"image-label": {"version": VERSION}} if kind == "labels" else {})}
    if zarr_format == 3:  # zarr v3 arrays: NGFF 0.5, the same keys nested under "ome"
        ms.pop("version")
        ngff = {"ome": {"version": "0.5", **ngff, **({"image-label": {}} if kind == "labels" else {})}}
    meta: dict[str, Any] = {**owner_attrs(), **ngff, PYRAMID_KEY: made_from}
    root.attrs.update(meta)
    logger.info("%s: NGFF pyramid of %d levels (%s)", g, len(paths), kind)
    return paths


def _run_fingerprint(level0_attrs: Mapping[str, Any], factors: Any, voxel_size: Any) -> str | None:
    """What identifies level 0's content without reading it: the resumable run's fingerprint
    (tiled or blockwise) with the pyramid's shape; ``None`` (always rebuild) for other arrays."""
    from .inference.output import RECORD_KEY

    run = (level0_attrs.get(RECORD_KEY) or {}).get("fingerprint") or (level0_attrs.get("blockwise") or {}).get("fingerprint")
    if not run or not level0_attrs.get("complete", True):
        return None
    return f"{run}:{[list(f) for f in factors]}:{list(voxel_size or [])}"


def write_multiscale(path: str | os.PathLike, data: Any, *, kind: str = "labels",
                     voxel_size: Sequence[float] | None = None, attrs: Mapping[str, Any] | None = None,
                     overwrite: bool = True, zarr_format: int = 2) -> str:
    """Write ``data`` as an NGFF multiscale image at ``path`` (a group), atomically.

    Level 0 holds ``data`` with ``attrs`` and the voxel size as :func:`~napari_emseg.io.write_volume`
    writes it; :func:`build_pyramid` adds the rest. The group is assembled beside ``path`` and
    renamed into place, so a crash never leaves half a pyramid where a good one was; an existing
    ``path`` napari-emseg did not write is never replaced. Returns ``path``.
    """
    import dask.array as da
    import zarr

    from ._outputs import guard_foreign, owner_attrs
    from .io import _replace_dir, default_chunks, ensure_parent_groups, existing_format, store_array

    target = Path(os.fspath(path))
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target}: exists; pass overwrite=True to replace it")
    guard_foreign(target, option="output")
    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks="auto")
    data = data.rechunk(default_chunks(data.shape))
    ensure_parent_groups(target, zarr_format)
    if target.parent.exists():
        zarr_format = existing_format(target.parent, zarr_format)
    tmp = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format).attrs.update(owner_attrs())
        meta: dict[str, Any] = {**owner_attrs(), **dict(attrs or {})}
        if voxel_size is not None:
            meta.update(resolution=[float(v) for v in voxel_size], unit="nm")
        store_array(tmp / LEVEL0, data, meta, zarr_format)
        build_pyramid(tmp, kind=kind, voxel_size=voxel_size, zarr_format=zarr_format)
        _name_group(tmp, target.name)
        _replace_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _name_group(group: Path, name: str) -> None:
    """Give the multiscales the name the group is published under (not the hidden temporary one)."""
    import zarr

    node = zarr.open_group(str(group), mode="r+")
    if "ome" in node.attrs:
        ome = dict(node.attrs["ome"])
        node.attrs.update({"ome": dict(ome, multiscales=[dict(m, name=name) for m in ome["multiscales"]])})
    else:
        node.attrs.update({"multiscales": [dict(m, name=name) for m in node.attrs["multiscales"]]})


# ---------------------------------------------------------------------------------------------
def open_multiscale(group: Any) -> tuple[list[Any], list[str], tuple[float, ...] | None, dict[str, Any]]:
    """The levels (lazy dask arrays, finest first), axis names, level-0 voxel size per axis
    (nm; ``None`` when not given) and attributes of an NGFF multiscale zarr ``group``."""
    import dask.array as da

    from ._formats import NM_PER_UNIT

    attrs = dict(group.attrs)
    ms = (attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales"))[0]
    levels = [da.from_zarr(group[d["path"]]) for d in ms["datasets"]]
    axes = ms.get("axes") or [{"name": a} for a in "tczyx"[-levels[0].ndim:]]
    names = [a["name"] if isinstance(a, Mapping) else str(a) for a in axes]
    scale = None
    for tr in list(ms.get("coordinateTransformations", [])) + list(ms["datasets"][0].get("coordinateTransformations", [])):
        if tr.get("type") == "scale":
            s = np.asarray(tr["scale"], dtype=float)
            scale = s if scale is None else scale * s
    vs = None
    if scale is not None:
        units = [str(a.get("unit", "")).lower() if isinstance(a, Mapping) else "" for a in axes]
        vs = tuple(float(v) * NM_PER_UNIT.get(u, 1.0) for v, u in zip(scale, units))
    return levels, names, vs, attrs
