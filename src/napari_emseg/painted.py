"""Painted slices as a reference, and labels scored on them (what threshold tuning maximises).

:func:`painted_reference` turns a painted label volume into reference objects per painted slice;
:func:`slice_score` scores labels on those slices: ARAND or VOI per slice (neurons), AP of the
2D objects or foreground IoU (mitochondria).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .config import ConfigError

__all__ = ["painted_reference", "slice_score", "score_stack"]


def painted_reference(
    labels: Any,
    shape: Sequence[int],
    task: str,
    *,
    mode: str = "dense",
    background_label: int = 1,
    axis: int | None = None,
) -> tuple[int, tuple[int, ...], np.ndarray]:
    """The painted slices as reference objects: ``(axis, slices, stack (n, h, w) int64)``.

    Dense labels: the painted axis and slices as fine-tuning finds them; 0 is background
    (mitochondria) or membrane (neurons, ignored by ARAND). Scribbles (neurons only): the
    z-slices holding any scribble; unscribbled voxels and ``background_label`` are ignored.
    Mitochondria painted with one value are split into objects per slice (connected components).
    """
    from .finetune.annotations import AnnotationError, find_annotations

    lab = np.asarray(labels.compute() if hasattr(labels, "compute") else labels)
    ann = find_annotations(lab, tuple(shape), mode=mode, background_label=background_label, axis=axis)  # type: ignore[arg-type]
    if task == "mitochondria" and mode != "dense":
        raise AnnotationError("tuning for mitochondria needs dense slices: paint every mitochondrion in each painted slice")
    ax = ann.axis if ann.axis is not None else (axis or 0)
    slices = ann.slices if ann.axis is not None else tuple(
        int(i) for i in np.flatnonzero((lab != 0).any(axis=tuple(a for a in range(3) if a != ax))))
    ref = np.moveaxis(np.take(lab, slices, axis=ax), ax, 0).astype(np.int64)
    if mode == "scribbles":
        ref[ref == background_label] = 0
    if task == "mitochondria" and len(np.unique(ref[ref > 0])) <= 1:
        ref = np.stack([ndi.label(s > 0)[0] for s in ref]).astype(np.int64)
    return int(ax), tuple(int(s) for s in slices), ref


def slice_score(pred: Any, reference: np.ndarray, slices: Sequence[int], *, axis: int = 0,
                metric: str = "arand") -> float:
    """Score labels ``pred`` ``(Z, Y, X)`` on ``slices`` (along ``axis``) against ``reference`` ``(n, h, w)``.

    ``arand``/``voi``: mean over slices of the 2D error (reference 0 ignored); ``ap``, ``ap50``,
    ``ap75``: AP of the 2D objects of all slices together; ``iou``: foreground IoU.
    """
    stack = np.moveaxis(np.take(np.asarray(pred), list(slices), axis=axis), axis, 0)
    return score_stack(stack, reference, metric)


def score_stack(pred: np.ndarray, ref: np.ndarray, metric: str) -> float:
    """:func:`slice_score` on labels already cut to the painted slices ``(n, h, w)``."""
    from .evaluation.instances import DEFAULT_IOUS, average_precision
    from .evaluation.neurons import adapted_rand, voi
    from .evaluation.semantic import binary_scores

    if metric in ("arand", "voi"):
        vals = []
        for p, r in zip(pred, ref):
            if np.count_nonzero(r) < 2:
                continue
            vals.append(adapted_rand(p, r).error if metric == "arand" else voi(p, r).total)
        return float(np.mean(vals)) if vals else float("nan")
    if metric == "iou":
        return float(binary_scores(pred > 0, ref > 0).iou)
    ious = {"ap": DEFAULT_IOUS, "ap50": (0.5,), "ap75": (0.75,)}.get(metric)
    if ious is None:
        raise ConfigError(f"unknown metric {metric!r}; choose arand, voi, ap, ap50, ap75 or iou")
    res = average_precision(_per_slice_ids(pred), _per_slice_ids(ref), iou_thresholds=ious)
    return res.mean_ap


def _per_slice_ids(stack: np.ndarray) -> np.ndarray:
    """Ids made unique per slice, so one object seen in two slices counts as two 2D objects."""
    out = np.zeros(stack.shape, np.int64)
    offset = 0
    for i, s in enumerate(stack):
        ids, inv = np.unique(s, return_inverse=True)
        codes = inv.reshape(s.shape) + (0 if ids[0] == 0 else 1)
        out[i] = np.where(codes > 0, codes + offset, 0)
        offset += len(ids)
    return out
