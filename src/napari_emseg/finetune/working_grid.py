"""The grid a 2D network trains on: coarser than the image's when the painted objects are wide.

A 2D U-Net learns mitochondria best at a scale where they are about ``object_px`` pixels
across (25 by default): the network's receptive field and the 192-pixel training patch then hold
whole objects with their surroundings. Painted at 4.6 nm, Gerhard VNC mitochondria are ~52
pixels across; trained on this grid (10.3 nm), the same 3 painted sections and 10 CPU-minutes
gave foreground IoU 0.79 instead of 0.64 (mean of two seeds; docs/benchmarks.md).

The working grid is chosen here, in :func:`fine_tune`, only where nothing better says what the
model should see: an encoder that records its voxel size, on an image whose voxel size is known,
is matched by voxel size (:func:`napari_emseg.resample.plan_voxel_match`). Otherwise the zoom
is the painted objects' median diameter over ``object_px``, in the painted plane only, when it
exceeds the voxel-size tolerance (objects are never enlarged). The model records it:
``ModelInfo.voxel_size`` (nm, when the image's is known) and ``ModelInfo.input_zoom`` (for
images of unknown voxel size), so ``segment`` shows new images to it at the same scale.

:func:`voxel_plan` (the voxel-size match) and :func:`resample_crop` (the painted crop on the
plan's grid) are shared by :func:`fine_tune` and live training.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..resample import VoxelPlan, plan_zoom
from .annotations import Annotations, find_annotations
from .targets import instance_ids

logger = logging.getLogger(__name__)

#: the largest working-grid zoom (a shrink by 4 in y and x)
MAX_SHRINK = 4.0
#: at most this many painted planes (evenly spaced) are measured
MAX_PLANES = 16


def painted_object_diameter(ann: Annotations) -> float | None:
    """The median equivalent diameter (pixels, in the painted plane) of the painted objects that
    are whole (touch neither an unpainted voxel nor the edge of the crop), or ``None`` when
    there is none."""
    ids = instance_ids(ann)
    axis = ann.axis if ann.axis is not None else 0
    planes = [i for i in range(ids.shape[axis]) if np.take(ann.mask, i, axis=axis).any()]
    diameters: list[float] = []
    for i in planes[:: max(1, -(-len(planes) // MAX_PLANES))]:
        known = np.take(ann.mask, i, axis=axis)
        plane = np.where(known, np.take(ids, i, axis=axis), 0)
        values, index = np.unique(plane, return_inverse=True)
        index = index.reshape(plane.shape) + (0 if values[0] == 0 else 1)  # 0 = background
        unknown_near = ndi.binary_dilation(~known, border_value=1)  # the crop's edge cuts objects too
        for k, box in enumerate(ndi.find_objects(index), start=1):
            if box is None:
                continue
            parts, n = ndi.label(index[box] == k)
            for j in range(1, n + 1):
                obj = parts == j
                if (unknown_near[box] & obj).any():
                    continue  # cut by the painted region's edge: its size is unknown
                diameters.append(float(np.sqrt(4.0 * obj.sum() / np.pi)))
    return float(np.median(diameters)) if diameters else None


def working_plan(plan: VoxelPlan, ann: Annotations, *, kind: str, dims: int, object_px: float | None,
                 tolerance: float, image_voxel_size: Any) -> VoxelPlan:
    """``plan`` (the voxel-size match), or a coarser in-plane grid from the painted objects' size.

    Applies to instance masks (``kind="bcd"``) trained by a 2D network on z-slices, when the
    voxel-size match could not decide (the encoder's or the image's size unknown).
    """
    decided = plan.resample or (plan.model_voxel_size is not None and plan.image_voxel_size is not None)
    if object_px is None or decided or kind != "bcd" or dims != 2 or ann.axis not in (0, None):
        return plan
    diameter = painted_object_diameter(ann)
    if diameter is None:
        return plan
    shrink = min(MAX_SHRINK, diameter / float(object_px))
    if shrink <= 1.0 + tolerance:
        logger.info("painted objects are %.0f px across: training on the image's grid", diameter)
        return plan
    shrink = round(shrink, 2)
    reason = f"painted objects are {diameter:.0f} px across (working size {object_px:g} px)"
    new = plan_zoom((1.0, 1.0 / shrink, 1.0 / shrink), image_voxel_size, reason=reason)
    logger.info("working grid: %s", new.reason)
    return new


def voxel_plan(encoder: Any, voxel_size: Any, cfg: Any, ann: Annotations) -> VoxelPlan:
    """Whether to resample the painted crop to the encoder's voxel size (never along painted slices)."""
    from ..resample import log_plan, plan_voxel_match, voxel_size_of, zoom_of

    keep = (ann.axis,) if ann.axis is not None else ()
    plan = plan_voxel_match(voxel_size_of(encoder), voxel_size, cfg.voxel_match, keep_axes=keep,
                            model_zoom=zoom_of(encoder))
    log_plan(plan, "the checkpoint records the grid it was trained on")
    return plan


def resample_crop(crop: np.ndarray, ann: Annotations, plan: VoxelPlan, antialias: bool):
    """The crop (linear) and its annotations (nearest) on the plan's grid, re-read from the labels."""
    from ..resample import resample, resample_labels

    img = resample(crop, plan.image_voxel_size, plan.target_voxel_size, antialias=antialias)
    lab = resample_labels(ann.labels, plan.image_voxel_size, plan.target_voxel_size, shape=img.shape)
    new = find_annotations(lab, img.shape, mode=ann.mode, background_label=ann.background_label,
                           axis=ann.axis, context=img.shape)
    logger.info("fine-tuning on the crop resampled from %s to %s voxels", crop.shape, img.shape)
    return img, new
