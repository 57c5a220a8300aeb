"""Training targets built from painted labels, each with a mask of where it is known.

Every builder takes the cropped label array and annotation mask of
:class:`~napari_emseg.finetune.annotations.Annotations` and returns a :class:`Targets`:
``target`` and ``mask`` of shape ``(C, Z, Y, X)`` in the channel layout of
:mod:`napari_emseg.models.info`. A voxel (or, for affinities, a voxel pair) whose value depends
on an unlabelled voxel is masked out, so a masked loss learns only from what was painted.

* neurons, ``affinities``: 1 where both voxels carry the same non-zero id, 0 where they differ
  or one is background; known where both are annotated.
* neurons, ``boundaries``: 1 on background (membrane) and where an in-plane neighbour has
  another id; affinities are later derived as ``1 - max(b(p), b(p + offset))``. This is the
  target that trains from isolated slices (see docs/science.md).
* mitochondria, ``bcd``: foreground, instance contour and the per-instance normalised distance
  transform (1 at an object's centre), computed per slice in the painted plane (PyTC / MitoEM).
* ``semantic``: one class index per voxel, class 0 background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from ..models.info import NN_OFFSETS
from .annotations import AnnotationError, Annotations

TargetKind = Literal["affinities", "boundaries", "bcd", "semantic"]


@dataclass(frozen=True)
class Targets:
    """``target`` and ``mask`` ``(C, Z, Y, X)`` float32 (semantic: ``target`` is ``(1, Z, Y, X)`` class ids)."""

    target: np.ndarray
    mask: np.ndarray
    kind: TargetKind
    channel_names: tuple[str, ...]


def instance_ids(ann: Annotations) -> np.ndarray:
    """Object ids with 0 = background: scribble background becomes 0."""
    lab = ann.labels.copy()
    if ann.mode == "scribbles":
        lab[lab == ann.background_label] = 0
    return lab


def affinity_targets(ann: Annotations, offsets: tuple[tuple[int, int, int], ...] = NN_OFFSETS,
                     lenient: bool = False) -> Targets:
    """Affinities for ``offsets``: channel c at p relates p and p + offsets[c].

    ``lenient`` skips the checks that the annotations can train anything (for patches).
    """
    ids = instance_ids(ann)
    if not lenient:
        _require_two_kinds(ids, ann.mask, "neurons")
    c = len(offsets)
    target = np.zeros((c, *ids.shape), np.float32)
    mask = np.zeros((c, *ids.shape), np.float32)
    for ch, off in enumerate(offsets):
        a, b = pair_slices(ids.shape, off)
        same = (ids[a] == ids[b]) & (ids[a] != 0)
        known = ann.mask[a] & ann.mask[b]
        target[ch][a] = same
        mask[ch][a] = known
    return Targets(target, mask, "affinities", tuple(_aff_name(o) for o in offsets))


def boundary_targets(ann: Annotations, width: int = 1, lenient: bool = False) -> Targets:
    """In-plane boundaries: background voxels and voxels next to another id in their plane.

    The plane is the painted one (``ann.axis``), or y-x for 3D and scribble annotations.
    ``width`` widens the boundary by that many voxels in-plane on each side.
    """
    ids = instance_ids(ann)
    if not lenient:
        _require_two_kinds(ids, ann.mask, "neurons")
    known = ann.mask
    plane_axes = [a for a in range(3) if a != (ann.axis if ann.axis is not None else 0)]
    edge = np.zeros(ids.shape, bool)
    for ax in plane_axes:
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        lo_t, hi_t = tuple(lo), tuple(hi)
        diff = (ids[lo_t] != ids[hi_t]) & known[lo_t] & known[hi_t]
        edge[lo_t] |= diff
        edge[hi_t] |= diff
    boundary = edge | ((ids == 0) & known)
    if width > 1:
        structure = np.zeros((3, 3, 3), bool)
        center = [1, 1, 1]
        structure[tuple(center)] = True
        for ax in plane_axes:
            for d in (0, 2):
                idx = list(center)
                idx[ax] = d
                structure[tuple(idx)] = True
        boundary = ndi.binary_dilation(boundary, structure, iterations=width - 1) & known
    return Targets(boundary[None].astype(np.float32), known[None].astype(np.float32), "boundaries", ("boundary",))


def bcd_targets(ann: Annotations, contour_width: int = 1, lenient: bool = False) -> Targets:
    """Foreground, contour and normalised distance, per slice in the painted plane.

    Binary labels (one value) are split into objects by 2D connected components; instance
    labels keep their ids. Scribbles (a painted region of a slice: the background label and
    the objects in it) train the foreground wherever painted; contour and distance are known
    on the painted background and on objects that do not touch an unpainted voxel in their
    plane (a stroke across a mitochondrion, or one cut by the region's edge, shows no shape).
    """
    ids = instance_ids(ann)
    known = ann.mask
    if not lenient and not (ids[known] > 0).any():
        raise AnnotationError("no mitochondria painted: paint every mitochondrion in the painted slices")
    if not lenient and not (ids[known] == 0).any():
        raise AnnotationError("the painted slices hold no background: paint objects only, leave the rest 0")
    axis = ann.axis if ann.axis is not None else 0
    fg = (ids > 0).astype(np.float32)
    contour = np.zeros(ids.shape, np.float32)
    dist = np.zeros(ids.shape, np.float32)
    shape_known = known.copy()
    binary = len(np.unique(ids[ids > 0])) == 1
    for i in range(ids.shape[axis]):
        index = [slice(None)] * 3
        index[axis] = i
        sl = tuple(index)
        if not known[sl].any():
            continue
        plane = np.where(known[sl], ids[sl], 0)
        if binary:
            plane = ndi.label(plane > 0)[0]
        contour[sl], dist[sl] = contour_and_distance(plane, contour_width)
        if ann.mode == "scribbles" and not known[sl].all():
            cut = np.unique(plane[ndi.binary_dilation(~known[sl]) & (plane > 0)])
            shape_known[sl] &= ~np.isin(plane, cut)
    target = np.stack([fg, contour, dist])
    mask = np.stack([known, shape_known, shape_known]).astype(np.float32)
    return Targets(target, mask, "bcd", ("foreground", "contour", "distance"))


def semantic_targets(ann: Annotations, n_classes: int | None = None, lenient: bool = False) -> Targets:
    """Class indices (label values; scribble background becomes class 0)."""
    cls = instance_ids(ann)
    present = np.unique(cls[ann.mask]) if ann.mask.any() else np.zeros(1, np.int64)
    if not lenient and len(present) < 2:
        raise AnnotationError(
            f"semantic training needs at least two classes in the painted voxels, found {present.tolist()}; "
            "paint background (0 in dense slices, or the background label) and at least one class"
        )
    if n_classes is not None and present.max() >= n_classes:  # also for patches: a real error
        raise AnnotationError(f"label {int(present.max())} exceeds the model's {n_classes} classes")
    return Targets(cls[None].astype(np.float32), ann.mask[None].astype(np.float32), "semantic",
                   tuple(f"class_{i}" for i in range(int(n_classes or present.max() + 1))))


def build_targets(ann: Annotations, kind: TargetKind, **kwargs) -> Targets:
    """Dispatch to the builder for ``kind``."""
    builders = {"affinities": affinity_targets, "boundaries": boundary_targets,
                "bcd": bcd_targets, "semantic": semantic_targets}
    if kind not in builders:
        raise AnnotationError(f"unknown target {kind!r}; choose from {sorted(builders)}")
    return builders[kind](ann, **kwargs)


# ---------------------------------------------------------------------------------------------
def contour_and_distance(plane: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """2D instance contour (inner boundary) and per-instance distance normalised to [0, 1]."""
    contour = np.zeros(plane.shape, np.float32)
    dist = np.zeros(plane.shape, np.float32)
    for idx, box in enumerate(ndi.find_objects(plane), start=1):
        if box is None:
            continue
        box = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
        obj = plane[box] == idx
        d = ndi.distance_transform_edt(np.pad(obj, 1))[1:-1, 1:-1]
        contour[box][obj & (d <= width)] = 1.0
        dist[box][obj] = (d[obj] / d.max()).astype(np.float32)
    return contour, dist


def pair_slices(shape: tuple[int, ...], off: tuple[int, int, int]):
    """Slices ``a`` (voxel p) and ``b`` (voxel p + off) over the region where both exist."""
    a, b = [], []
    for n, o in zip(shape, off):
        if o < 0:
            a.append(slice(-o, n))
            b.append(slice(0, n + o))
        elif o > 0:
            a.append(slice(0, n - o))
            b.append(slice(o, n))
        else:
            a.append(slice(None))
            b.append(slice(None))
    return tuple(a), tuple(b)


def _aff_name(off: tuple[int, int, int]) -> str:
    nonzero = [(ax, o) for ax, o in zip("zyx", off) if o]
    if len(nonzero) == 1 and abs(nonzero[0][1]) == 1:
        return f"aff_{nonzero[0][0]}"
    return "aff_" + "_".join(f"{ax}{o}" for ax, o in nonzero)


def _require_two_kinds(ids: np.ndarray, known: np.ndarray, task: str) -> None:
    values = np.unique(ids[known])
    if len(values) < 2:
        raise AnnotationError(
            f"{task}: the painted voxels hold a single label ({values.tolist()}); paint neighbouring "
            "neurons with different labels (and membranes as 0 in dense slices) so boundaries exist"
        )
