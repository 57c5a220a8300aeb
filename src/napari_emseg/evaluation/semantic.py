"""Per-class voxel metrics: IoU, F1 (Dice), precision and recall from one confusion matrix.

For class ``k``: ``TP`` = voxels of class ``k`` in both, ``FP`` = predicted ``k`` but another
class in the ground truth, ``FN`` = ``k`` in the ground truth but predicted otherwise.
``IoU = TP / (TP + FP + FN)``, ``F1 = 2 TP / (2 TP + FP + FN)``, ``precision = TP / (TP + FP)``,
``recall = TP / (TP + FN)``; a class absent from both volumes gets NaN. Binary masks are the
two-class case (foreground = any non-zero label).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .table import EvaluationError, as_labels

__all__ = ["ClassScores", "confusion_matrix", "class_scores", "binary_scores"]


@dataclass(frozen=True)
class ClassScores:
    """Voxel scores of one class."""

    iou: float
    f1: float
    precision: float
    recall: float
    support: int  # ground-truth voxels of the class


def confusion_matrix(pred: Any, gt: Any, n_classes: int | None = None, *, ignore_label: int | None = None) -> np.ndarray:
    """int64 ``(K, K)`` matrix, rows ground truth, columns prediction; ``ignore_label`` in gt skipped."""
    g = as_labels(gt, "ground truth").ravel()
    p = as_labels(pred, "prediction").ravel()
    if g.shape != p.shape:
        raise EvaluationError(f"prediction and ground truth differ in size ({p.size} vs {g.size} voxels)")
    if ignore_label is not None:
        keep = g != ignore_label
        g, p = g[keep], p[keep]
    k = int(max(g.max(initial=0), p.max(initial=0))) + 1
    if n_classes is not None:
        if k > n_classes:
            raise EvaluationError(f"labels go up to {k - 1} but n_classes={n_classes}")
        k = n_classes
    if k > 4096:
        raise EvaluationError(
            f"{k} classes: these look like instance labels; use task 'mitochondria' or 'neurons'"
        )
    return np.bincount(g.astype(np.int64) * k + p.astype(np.int64), minlength=k * k).reshape(k, k)


def _scores(tp: float, fp: float, fn: float, support: int) -> ClassScores:
    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else float("nan")

    return ClassScores(ratio(tp, tp + fp + fn), ratio(2 * tp, 2 * tp + fp + fn), ratio(tp, tp + fp), ratio(tp, tp + fn), support)


def class_scores(
    pred: Any, gt: Any, n_classes: int | None = None, *, ignore_label: int | None = None
) -> dict[int, ClassScores]:
    """:class:`ClassScores` for every class ``0..K-1`` (class 0 = background included)."""
    cm = confusion_matrix(pred, gt, n_classes, ignore_label=ignore_label).astype(np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    return {k: _scores(tp[k], fp[k], fn[k], int(cm[k].sum())) for k in range(cm.shape[0])}


def binary_scores(pred: Any, gt: Any) -> ClassScores:
    """Foreground (non-zero) scores of two label or mask volumes."""
    g = as_labels(gt, "ground truth") > 0
    p = as_labels(pred, "prediction") > 0
    if g.shape != p.shape:
        raise EvaluationError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    tp = float(np.count_nonzero(g & p))
    fp = float(np.count_nonzero(p)) - tp
    fn = float(np.count_nonzero(g)) - tp
    return _scores(tp, fp, fn, int(np.count_nonzero(g)))
