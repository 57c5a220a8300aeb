"""Per-object measurements in physical units: volume, surface, box, centroid, skeleton, intensity.

:func:`measure` takes instance labels ``(z, y, x)`` and their voxel size ``(z, y, x)`` in nm and
returns a table: a dict of equally long numpy columns, one row per object, in label order (see
:data:`COLUMNS` for names and units). It finds every object's bounding box once
(:func:`scipy.ndimage.find_objects`) and works on each object's crop only, so the cost grows
with the objects' sizes, not with their number times the volume.

* **volume**: voxel count times the voxel volume.
* **surface**: marching cubes (:func:`skimage.measure.marching_cubes` with the voxel spacing,
  :func:`skimage.measure.mesh_surface_area`) on the object's padded mask, by default first
  smoothed by a Gaussian of ``surface_sigma`` times the finest voxel size (in nm, so anisotropic
  voxels are smoothed alike in space) and cut at the level that keeps the voxel count (so
  smoothing does not shrink small objects). On the staircase of a raw mask (``surface="binary"``)
  marching cubes overestimates smooth surfaces by 9-16 %; the smoothed estimate is within 2-4 %
  for ellipsoids of a few hundred voxels and more (``docs/morphometrics.md``).
* **skeleton**: :func:`skimage.morphology.skeletonize` in 3D on the mask; the skeleton's
  26-neighbour graph, edges weighted by their length in nm (anisotropic spacing), reduced to its
  minimum spanning tree (so the small triangles of a digital skeleton count once) gives
  ``skeleton_length_nm``; ``length_nm`` adds the inscribed radius at each end point (a
  capsule's tip-to-tip length; a round object's diameter). End points have one skeleton
  neighbour; branch points are clusters of touching skeleton voxels with more than two.

Objects cut by the volume's border are measured as they are inside it (their surface includes
the cut face). The labels are read into memory once; an image is read per object crop.
"""

from __future__ import annotations

import csv
import io as _io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .config import Config
from .errors import EmsegError
from .progress import Job, Progress

__all__ = ["MeasureConfig", "COLUMNS", "measure", "measure_job", "remeasure_job", "write_csv", "napari_features", "table_rows",
           "csv_text", "surface_area", "skeleton_measures", "MeasureError"]

COLUMNS: dict[str, str] = {
    "label": "object id",
    "volume_voxels": "voxels",
    "volume_um3": "volume, cubic micrometres",
    "surface_um2": "surface area, square micrometres",
    "centroid_z": "centroid, voxels (z)", "centroid_y": "centroid, voxels (y)", "centroid_x": "centroid, voxels (x)",
    "centroid_z_nm": "centroid, nm (z)", "centroid_y_nm": "centroid, nm (y)", "centroid_x_nm": "centroid, nm (x)",
    "bbox_z0": "box start, voxels (z)", "bbox_y0": "box start, voxels (y)", "bbox_x0": "box start, voxels (x)",
    "bbox_z1": "box end (exclusive), voxels (z)", "bbox_y1": "box end (exclusive), voxels (y)",
    "bbox_x1": "box end (exclusive), voxels (x)",
    "extent_z_nm": "box size, nm (z)", "extent_y_nm": "box size, nm (y)", "extent_x_nm": "box size, nm (x)",
    "skeleton_length_nm": "length along the skeleton, nm",
    "length_nm": "tip-to-tip length (skeleton plus end radii), nm",
    "branch_points": "skeleton junctions",
    "end_points": "skeleton ends",
    "mean_intensity": "mean image intensity inside the object",
}
"""Column name -> meaning and unit, in table order (skeleton and intensity columns only when asked)."""

_SKELETON = ("skeleton_length_nm", "length_nm", "branch_points", "end_points")
_INT_COLUMNS = {"label", "volume_voxels", "branch_points", "end_points", *(f"bbox_{a}{e}" for a in "zyx" for e in "01")}


class MeasureError(EmsegError, ValueError):
    """Labels, image or voxel size cannot be measured; the message says why."""


@dataclass(frozen=True)
class MeasureConfig(Config):
    """What :func:`measure` computes.

    Attributes
    ----------
    surface
        ``"smooth"`` (volume-preserving smoothed mask, the default), ``"binary"`` (raw mask) or
        ``"none"``.
    surface_sigma
        Smoothing for ``"smooth"``, in units of the finest voxel size.
    skeleton
        Compute the skeleton columns (the slowest part for large objects such as neurons).
    """

    surface: Literal["smooth", "binary", "none"] = "smooth"
    surface_sigma: float = 1.0
    skeleton: bool = True


def measure(labels: Any, voxel_size: Sequence[float], image: Any = None,
            config: MeasureConfig = MeasureConfig()) -> dict[str, np.ndarray]:
    """Measure every object of ``labels``; see the module docstring and :data:`COLUMNS`.

    Parameters
    ----------
    labels
        ``(z, y, x)`` (or ``(y, x)``) integer instance labels, 0 = background: numpy, dask, zarr.
    voxel_size
        ``(z, y, x)`` nm (two values for 2D: ``(y, x)``).
    image
        Optional image of the same shape: adds ``mean_intensity``.
    config
        :class:`MeasureConfig`.

    Returns
    -------
    dict[str, numpy.ndarray]
        Columns of equal length, one row per object present, by increasing label.
    """
    from .progress import drain

    return drain(measure_job(labels, voxel_size, image, config), show=False)


def measure_job(labels: Any, voxel_size: Sequence[float], image: Any = None,
                config: MeasureConfig = MeasureConfig()) -> Job[dict[str, np.ndarray]]:
    """:func:`measure` as a generator job (``stage="measure"`` progress every few objects)."""
    from scipy.ndimage import find_objects

    lab = _as_labels(labels)
    vs = _voxel_size(voxel_size, lab)
    img = _as_image(image, lab.shape)
    boxes = find_objects(lab)
    ids = [i + 1 for i, b in enumerate(boxes) if b is not None]
    cols = [c for c in COLUMNS if (config.skeleton or c not in _SKELETON) and (img is not None or c != "mean_intensity")
            and (config.surface != "none" or c != "surface_um2")]
    table = {c: np.zeros(len(ids), np.int64 if c in _INT_COLUMNS else np.float64) for c in cols}
    yield Progress(0, len(ids), "measure", f"{len(ids)} objects")
    for row, label in enumerate(ids):
        box = boxes[label - 1]
        mask = lab[box] == label
        values = _object_row(mask, box, vs, config)
        values["label"] = label
        if img is not None:
            crop = img[box]
            crop = np.asarray(crop.compute() if hasattr(crop, "compute") else crop)
            values["mean_intensity"] = float(crop[mask].mean())
        for c in cols:
            table[c][row] = values[c]
        if row % 50 == 49 or row == len(ids) - 1:
            yield Progress(row + 1, len(ids), "measure", f"object {label}")
    return table


def remeasure_job(table: dict[str, np.ndarray], labels: Any, ids: Sequence[int], voxel_size: Sequence[float],
                  image: Any = None, config: MeasureConfig = MeasureConfig()) -> Job[dict[str, np.ndarray]]:
    """``table`` with the rows of objects ``ids`` measured again (after an edit; a generator job).

    Only those objects' bounding boxes are read; objects no longer present lose their row, new
    ones get one, in label order. The rows equal what :func:`measure` gives for the whole labels.
    """
    from .proofread import _read, object_boxes

    ids = sorted({int(i) for i in ids if int(i)})
    keep = ~np.isin(table["label"], ids)
    out = {c: v[keep] for c, v in table.items()}
    vs = _voxel_size(voxel_size, labels)
    boxes = object_boxes(labels, ids)
    for n, (i, box) in enumerate(sorted(boxes.items())):
        crop = _read(labels, box)
        sub = np.where(crop == i, i, 0).astype(np.uint32).reshape((1,) * (3 - crop.ndim) + crop.shape)
        img = None
        if image is not None:
            img = _read(image.data if hasattr(image, "voxel_size") else image, box).reshape(sub.shape)
        row = measure(sub, voxel_size, img, config)
        box3 = ((slice(0, 1),) * (3 - len(box)) + tuple(box))[-3:]
        for a, ax in enumerate("zyx"):
            start = box3[a].start
            row[f"centroid_{ax}"] = row[f"centroid_{ax}"] + start
            row[f"centroid_{ax}_nm"] = row[f"centroid_{ax}_nm"] + start * vs[a]
            row[f"bbox_{ax}0"], row[f"bbox_{ax}1"] = row[f"bbox_{ax}0"] + start, row[f"bbox_{ax}1"] + start
        out = {c: np.concatenate([out[c], row[c].astype(out[c].dtype)]) for c in out}
        yield Progress(n + 1, len(boxes), "measure", f"object {i}")
    order = np.argsort(out["label"], kind="stable")
    return {c: v[order] for c, v in out.items()}


def _object_row(mask: np.ndarray, box: tuple[slice, ...], vs: np.ndarray, config: MeasureConfig) -> dict[str, Any]:
    n = int(mask.sum())
    start = np.array([s.start for s in box])
    centroid = np.array([c.mean() for c in np.nonzero(mask)]) + start
    out: dict[str, Any] = {"volume_voxels": n, "volume_um3": n * float(np.prod(vs)) / 1e9}
    for a, ax in enumerate("zyx"):
        out[f"centroid_{ax}"] = centroid[a]
        out[f"centroid_{ax}_nm"] = centroid[a] * vs[a]
        out[f"bbox_{ax}0"], out[f"bbox_{ax}1"] = box[a].start, box[a].stop
        out[f"extent_{ax}_nm"] = (box[a].stop - box[a].start) * vs[a]
    if config.surface != "none":
        out["surface_um2"] = surface_area(mask, vs, sigma=config.surface_sigma if config.surface == "smooth" else 0.0) / 1e6
    if config.skeleton:
        out.update(skeleton_measures(mask, vs))
    return out


def surface_area(mask: np.ndarray, voxel_size: Sequence[float], sigma: float = 1.0) -> float:
    """Surface area in nm² of a binary mask (see the module docstring); ``sigma=0``: raw mask."""
    from scipy.ndimage import gaussian_filter
    from skimage.measure import marching_cubes, mesh_surface_area

    vs = np.asarray(voxel_size, float)
    pad = 1 + int(np.ceil(4 * sigma))
    vol = np.pad(mask, pad).astype(np.float32)
    level = 0.5
    if sigma > 0:
        vol = gaussian_filter(vol, [sigma * vs.min() / v for v in vs])
        n = int(mask.sum())
        flat = vol.ravel()
        k = flat.size - n  # the level between the n-th and (n+1)-th largest values keeps n voxels inside
        part = np.partition(flat, [k - 1, k])
        level = float(0.5 * (part[k - 1] + part[k]))
    verts, faces, _, _ = marching_cubes(vol, level, spacing=tuple(float(v) for v in vs))
    return float(mesh_surface_area(verts, faces))


def skeleton_measures(mask: np.ndarray, voxel_size: Sequence[float]) -> dict[str, float | int]:
    """Skeleton length (nm), tip-to-tip length (nm), branch points and end points of a mask."""
    from scipy.ndimage import convolve, distance_transform_edt, label
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree
    vs = np.asarray(voxel_size, float)
    padded, sk = _skeleton(np.pad(mask, 1))
    neighbours = convolve(sk.astype(np.uint8), np.ones((3, 3, 3), np.uint8), mode="constant") - 1
    ends = sk & (neighbours == 1)
    junctions = sk & (neighbours > 2)
    n_branch = int(label(junctions, structure=np.ones((3, 3, 3)))[1])
    index = np.full(sk.shape, -1, np.int64)
    index[sk] = np.arange(int(sk.sum()))
    rows, cols, weights = [], [], []
    for d in product((-1, 0, 1), repeat=3):
        if d <= (0, 0, 0):  # each undirected edge once: the 13 "positive" offsets
            continue
        a = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(d, sk.shape))
        b = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(d, sk.shape))
        both = sk[a] & sk[b]
        rows.append(index[a][both])
        cols.append(index[b][both])
        weights.append(np.full(int(both.sum()), float(np.linalg.norm(np.asarray(d) * vs))))
    n = int(sk.sum())
    graph = coo_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    length = float(minimum_spanning_tree(graph.tocsr()).sum())
    radius = distance_transform_edt(padded, sampling=vs)
    tips = float(radius[ends].sum()) if ends.any() else (2.0 * float(radius[sk].max()) if n == 1 else 0.0)
    return {"skeleton_length_nm": length, "length_nm": length + tips, "branch_points": n_branch,
            "end_points": int(ends.sum())}


def _skeleton(padded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``skeletonize`` in 3D, working around its empty results on some shapes of even thickness
    (scikit-image issue 3757): the mask is thickened by one voxel along one axis, then two, until
    thinning leaves something; the mask actually thinned is returned with its skeleton."""
    from skimage.morphology import skeletonize

    for axes in ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2)):
        m = padded.copy()
        for ax in axes:
            a = tuple(slice(1, None) if i == ax else slice(None) for i in range(3))
            b = tuple(slice(None, -1) if i == ax else slice(None) for i in range(3))
            m[a] |= m[b]
        sk = skeletonize(m).astype(bool)
        if sk.any():
            return m, sk
    sk = np.zeros_like(padded)  # a blob thinned to nothing: its centre stands in
    sk[tuple(int(round(c.mean())) for c in np.nonzero(padded))] = True
    return padded, sk


# ---------------------------------------------------------------------------------------------
def _as_labels(labels: Any) -> np.ndarray:
    lab = labels.compute() if hasattr(labels, "compute") else labels
    lab = np.asarray(lab[...] if not isinstance(lab, np.ndarray) else lab)
    if lab.ndim == 2:
        lab = lab[None]
    if lab.ndim != 3 or lab.dtype.kind not in "iub":
        raise MeasureError(f"labels must be a 2D or 3D integer array, got {lab.ndim}D {lab.dtype}")
    if lab.dtype.kind == "i" and lab.size and lab.min() < 0:
        raise MeasureError("labels must not be negative")
    if lab.size and int(lab.max()) > 50_000_000:
        raise MeasureError(f"label ids go up to {int(lab.max())}: renumber them first "
                           "(skimage.segmentation.relabel_sequential)")
    return lab


def _voxel_size(voxel_size: Sequence[float] | None, lab: np.ndarray) -> np.ndarray:
    if voxel_size is None:
        raise MeasureError("measurements in physical units need the voxel size (z, y, x) in nm")
    vs = [float(v) for v in voxel_size]
    if len(vs) == 2:
        vs = [1.0, *vs]
    if len(vs) != 3 or not all(np.isfinite(v) and v > 0 for v in vs):
        raise MeasureError(f"voxel size must be three positive numbers (z, y, x) in nm, got {voxel_size}")
    return np.asarray(vs)


def _as_image(image: Any, shape: tuple[int, ...]) -> Any:
    if image is None:
        return None
    from .io import Volume

    img = image.data if isinstance(image, Volume) else image
    if len(img.shape) == 2:
        img = np.asarray(img)[None]
    if tuple(img.shape) != tuple(shape):
        raise MeasureError(f"the image has shape {tuple(img.shape)}, the labels {tuple(shape)}: they must match")
    if getattr(img, "nbytes", 0) <= 2 * 1024**3:  # small enough: read once, not per object
        img = np.asarray(img.compute() if hasattr(img, "compute") else img[...])
    return img


# ---------------------------------------------------------------------------------------------
def table_rows(table: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """The table as a list of dicts (one per object), with plain Python numbers."""
    names = list(table)
    return [dict(zip(names, (v.item() for v in values))) for values in zip(*(table[n] for n in names))]


def napari_features(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Columns for a napari Labels layer's ``features`` (an ``index`` column holds the label ids)."""
    return {"index": table["label"], **{k: v for k, v in table.items() if k != "label"}}


def csv_text(table: dict[str, np.ndarray]) -> str:
    """The table as CSV text: a header of column names, floats with 6 significant digits."""
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(table))
    for row in table_rows(table):
        writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row.values()])
    return buf.getvalue()


def write_csv(table: dict[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write :func:`csv_text` to ``path`` atomically (a file that is not such a table is never replaced)."""
    from ._atomic import atomic_write_text
    from ._outputs import guard_foreign

    path = Path(path)
    guard_foreign(path, option="--csv")
    atomic_write_text(path, csv_text(table))
    return path
