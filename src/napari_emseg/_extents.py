"""Micrographs of different sizes stacked on one canvas: each slice's extent, the check that
painted labels match it, and the cut that clears results outside each slice
(:attr:`napari_emseg.io.Volume.extents`). Re-exported by :mod:`napari_emseg.io`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger("napari_emseg.io")  # its warnings are part of opening a volume


def stacked_extents(extents: tuple[tuple[int, int], ...], shape: tuple[int, ...], where: str,
                    fill: float | str) -> tuple[tuple[int, int], ...] | None:
    """The slices' extents when the stack kept the folder's axes (``None`` and a warning when
    ``axes`` reordered them), with a warning that says what was done."""
    heights, widths = [h for h, _ in extents], [w for _, w in extents]
    if tuple(shape) != (len(extents), max(heights), max(widths)):
        logger.warning("%s: slices of different sizes, reordered by the axes given: the filled canvas "
                       "is kept as it is", where)
        return None
    what = "each slice's median" if fill == "median" else f"{fill:g}"
    logger.warning("%s: %d slices of different sizes (%d-%d x %d-%d pixels) are stacked at the top left of a "
                   "%d x %d canvas, the margin filled with %s (docs/io.md, micrographs of different sizes)",
                   where, len(extents), min(heights), max(heights), min(widths), max(widths),
                   shape[1], shape[2], what)
    return tuple(extents)


def extents_of(image: Any) -> tuple[tuple[int, int], ...] | None:
    """The slice extents of a :class:`~napari_emseg.io.Volume` (``None`` for anything else)."""
    from .io import Volume

    return getattr(image, "extents", None) if isinstance(image, Volume) else None


def check_extents(image: Any, labels: Any, image_name: str, labels_name: str) -> None:
    """Painted labels from a folder of slices of different sizes must match the image's slices
    one for one (a labels stack as large as the image's canvas needs no extents)."""
    if labels.extents is None or labels.extents == image.extents:
        return
    from .io import VolumeError

    mine = image.extents or [tuple(image.data.shape[1:])] * len(labels.extents)
    for z, (a, b) in enumerate(zip(mine, labels.extents)):
        if tuple(a) != tuple(b):
            raise VolumeError(f"{labels_name}: slice {z} is {b[0]} x {b[1]} pixels, but slice {z} of {image_name} is "
                              f"{a[0]} x {a[1]}; paint each label image on its own micrograph, in the same order")


def cut_to_extents(array: Any, extents: Sequence[Sequence[int]] | None) -> Any:
    """Set everything outside each slice's ``(height, width)`` to 0, in place, in a writable
    ``(..., z, y, x)`` array (numpy or zarr): results on a canvas of slices of different
    sizes (:attr:`napari_emseg.io.Volume.extents`) then hold nothing where no image was. Returns ``array``."""
    if not extents:
        return array
    if array.shape[-3] != len(extents):
        from .io import VolumeError

        raise VolumeError(f"{len(extents)} slice extents for an array of {array.shape[-3]} slices")
    for z, (h, w) in enumerate(extents):
        if h < array.shape[-2]:
            array[..., z, int(h):, :] = 0
        if w < array.shape[-1]:
            array[..., z, :int(h), int(w):] = 0
    return array
