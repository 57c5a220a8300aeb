"""What the user painted: which voxels are annotated, along which axis, and where.

Two ways to paint a napari Labels layer (0 = unlabelled):

* **dense slices** (``mode="dense"``): every slice that holds any label is fully annotated,
  so 0 inside it means background. The painted axis is detected (:func:`dense_axis`) unless
  given: painting z-slices 5 and 40 labels 2 of the z-planes but every y-row, so the axis with
  the fewest labelled slices is the painted one; a stack whose every z-slice holds labels (three
  fully painted micrographs, or a densely painted volume) is a stack of painted z-slices.
  To paint only a region of a slice, use scribbles: fill the region, background included.
* **scribbles** (``mode="scribbles"``): 0 is unknown everywhere; ``background_label`` marks
  background (for neurons: membranes), every other value marks an object or class.

:func:`find_annotations` turns labels into an :class:`Annotations` record (mask, painted slices,
bounding box) and raises :class:`AnnotationError` with what to paint when nothing usable is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ..errors import EmsegError

Mode = Literal["dense", "scribbles"]


class AnnotationError(EmsegError, ValueError):
    """The painted labels cannot train the chosen task; the message says what to paint."""


@dataclass(frozen=True)
class Annotations:
    """Painted labels, cropped to where they are.

    Attributes
    ----------
    labels
        The label values inside ``box`` (``int64``; 0 = unlabelled or background, see ``mode``).
    mask
        ``True`` where a voxel's label is known (annotated), same shape as ``labels``.
    box
        ``(z, y, x)`` slices of the crop in the full volume.
    axis
        The painted axis (0 = z, 1 = y, 2 = x; a densely painted volume is a stack of painted
        z-slices), or ``None`` for scribble annotations.
    slices
        Indices (in the full volume, along ``axis``) of the painted slices.
    mode, background_label
        As given.
    """

    labels: np.ndarray
    mask: np.ndarray
    box: tuple[slice, slice, slice]
    axis: int | None
    slices: tuple[int, ...]
    mode: Mode
    background_label: int

    @property
    def n_annotated(self) -> int:
        return int(self.mask.sum())

    @property
    def isolated_slices(self) -> bool:
        """True when no two painted slices are adjacent: no affinity across them is known."""
        if self.axis is None:
            return False
        s = np.sort(np.asarray(self.slices))
        return len(s) > 0 and bool(np.all(np.diff(s) > 1))


def find_annotations(
    labels: Any,
    image_shape: tuple[int, ...],
    *,
    mode: Mode = "dense",
    background_label: int = 1,
    axis: int | None = None,
    context: tuple[int, int, int] = (0, 0, 0),
) -> Annotations:
    """Locate the annotated voxels of ``labels`` and crop to them plus ``context``.

    Parameters
    ----------
    labels
        Array-like ``(z, y, x)`` (napari Labels data, 0 = unlabelled); a 2D array is one slice.
    image_shape
        Shape of the image the labels belong to; must match.
    mode
        ``"dense"`` or ``"scribbles"`` (see the module docstring).
    background_label
        In scribbles mode, the value that marks background.
    axis
        Force the painted axis in dense mode (default: detected).
    context
        Voxels of context to keep around the annotated bounding box, per axis.
    """
    lab = np.asarray(labels)
    if lab.ndim == 2:
        lab = lab[None]
    if tuple(lab.shape) != tuple(image_shape):
        raise AnnotationError(
            f"the labels have shape {tuple(lab.shape)} but the image has shape {tuple(image_shape)}; "
            "paint in a Labels layer made for this image (same shape)"
        )
    if lab.dtype.kind not in "iub":
        raise AnnotationError(f"labels must be integers, got {lab.dtype}")
    if mode not in ("dense", "scribbles"):
        raise AnnotationError(f"mode must be 'dense' or 'scribbles', got {mode!r}")
    if not (lab != 0).any():
        raise AnnotationError(
            "no annotations: the labels are all 0. Paint the objects on two or three slices "
            "(every object in each painted slice), or scribble with the background label"
        )
    if (lab < 0).any():
        raise AnnotationError("labels must not be negative")

    painted_axis: int | None = None
    slices: tuple[int, ...] = ()
    if mode == "dense":
        counts = [np.flatnonzero((lab != 0).any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
        painted_axis = int(axis) if axis is not None else dense_axis([len(c) for c in counts], lab.shape)
        slices = tuple(int(i) for i in counts[painted_axis])
        mask = np.zeros(lab.shape, bool)
        index: list[Any] = [slice(None)] * 3
        index[painted_axis] = list(slices)
        mask[tuple(index)] = True
    else:
        mask = lab != 0
        if not (lab == background_label).any():
            raise AnnotationError(
                f"scribble mode needs background: paint some background (membranes for neurons) "
                f"with label {background_label}, and objects with other labels"
            )
        if not ((lab != 0) & (lab != background_label)).any():
            raise AnnotationError(
                f"scribble mode needs objects: only the background label {background_label} was painted; "
                "paint some objects with other labels"
            )

    box = _bounding_box(mask, context, lab.shape)
    return Annotations(
        labels=lab[box].astype(np.int64),
        mask=mask[box],
        box=box,
        axis=painted_axis,
        slices=slices,
        mode=mode,
        background_label=int(background_label),
    )


def dense_axis(counts: list[int] | tuple[int, ...], shape: tuple[int, ...]) -> int:
    """The painted axis of dense labels from the number of labelled slices along each axis.

    napari paints in the z view, so z is the painted axis unless another axis has at most half
    as large a fraction of labelled slices as z and at most half of its own slices labelled
    (slices painted along x or y after rolling the axes). Most or all z-slices labelled is no
    exception: 2 of 3 micrographs, every image of a stack, every section of a volume; a sparse
    object class leaves some x- or y-rows empty, which says nothing about how it was painted.
    """
    fractions = [c / n for c, n in zip(counts, shape)]
    other = 1 + int(np.argmin(fractions[1:]))
    return other if fractions[other] <= 0.5 and fractions[other] < 0.5 * fractions[0] else 0


def _bounding_box(mask: np.ndarray, context: tuple[int, int, int], shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
    out = []
    for ax in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax)))
        lo = max(0, int(idx[0]) - int(context[ax]))
        hi = min(shape[ax], int(idx[-1]) + 1 + int(context[ax]))
        out.append(slice(lo, hi))
    return tuple(out)  # type: ignore[return-value]
