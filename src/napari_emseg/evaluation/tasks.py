"""Score a prediction against ground truth the way the field does, per task.

* ``neurons``: VOI split/merge and adapted Rand error over ground-truth-labelled voxels.
* ``mitochondria``: AP at IoU 0.5 / 0.75 (and 0.50:0.95), AP-75 by object size (MitoEM
  protocol), plus voxel IoU/F1/precision/recall of the foreground.
* ``semantic``: IoU, F1, precision, recall per class and their means over foreground classes.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from .instances import SIZE_BINS, average_precision
from .neurons import neuron_metrics
from .semantic import binary_scores, class_scores
from .table import EvaluationError, as_labels, contingency

__all__ = ["EvalTask", "evaluate", "format_results"]

EvalTask = Literal["neurons", "mitochondria", "semantic"]


def evaluate(
    pred: Any,
    gt: Any,
    task: EvalTask,
    *,
    n_classes: int | None = None,
    size_bins: tuple[int, int] = SIZE_BINS,
) -> dict[str, Any]:
    """All metrics of ``task`` for ``pred`` against ``gt`` (label volumes of one shape).

    Returns
    -------
    dict
        neurons: ``voi_split``, ``voi_merge``, ``voi``, ``arand``, ``rand_precision``,
        ``rand_recall``, ``n_gt``, ``n_pred``. mitochondria: ``ap``, ``ap50``, ``ap75``,
        ``ap50_small|medium|large``, ``ap75_small|medium|large``, ``iou``, ``f1``,
        ``precision``, ``recall`` (foreground voxels), ``tp75``, ``fp75``, ``fn75``,
        ``n_gt``, ``n_gt_small|medium|large``, ``n_pred``. semantic: ``iou``, ``f1``,
        ``precision``, ``recall`` (means over classes >= 1) and ``per_class``. NaN = undefined.
    """
    pred = as_labels(pred, "prediction")
    gt = as_labels(gt, "ground truth")
    if pred.shape != gt.shape:
        raise EvaluationError(
            f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape; "
            "evaluate the same region"
        )
    if task == "neurons":
        return neuron_metrics(pred, gt)
    if task == "mitochondria":
        return _mitochondria(pred, gt, size_bins)
    if task == "semantic":
        return _semantic(pred, gt, n_classes)
    raise EvaluationError(f"unknown task {task!r}; choose neurons, mitochondria or semantic")


def _mitochondria(pred: np.ndarray, gt: np.ndarray, size_bins: tuple[int, int]) -> dict[str, Any]:
    res = average_precision(table=contingency(gt, pred), size_bins=size_bins)
    fg = binary_scores(pred, gt)
    out: dict[str, Any] = {
        "ap": res.mean_ap,
        "ap50": res.ap[0.5],
        "ap75": res.ap[0.75],
    }
    for iou, tag in ((0.5, "ap50"), (0.75, "ap75")):
        for name in ("small", "medium", "large"):
            out[f"{tag}_{name}"] = res.ap_by_size[name][iou]
    out.update(iou=fg.iou, f1=fg.f1, precision=fg.precision, recall=fg.recall)
    tp, fp, fn = res.matches[0.75]
    out.update(tp75=tp, fp75=fp, fn75=fn, n_gt=res.n_gt["all"], n_pred=res.n_pred)
    for name in ("small", "medium", "large"):
        out[f"n_gt_{name}"] = res.n_gt[name]
    return out


def _semantic(pred: np.ndarray, gt: np.ndarray, n_classes: int | None) -> dict[str, Any]:
    scores = class_scores(pred, gt, n_classes)
    fg = [s for k, s in scores.items() if k > 0]

    def mean(attr: str) -> float:
        vals = [getattr(s, attr) for s in fg if not math.isnan(getattr(s, attr))]
        return float(np.mean(vals)) if vals else float("nan")

    return {
        "iou": mean("iou"),
        "f1": mean("f1"),
        "precision": mean("precision"),
        "recall": mean("recall"),
        "per_class": {
            str(k): {"iou": s.iou, "f1": s.f1, "precision": s.precision, "recall": s.recall, "support": s.support}
            for k, s in scores.items()
        },
    }


def format_results(results: dict[str, Any]) -> str:
    """A two-column text table (nested per-class results as one row per class)."""
    lines = []
    for key, value in results.items():
        if key == "per_class":
            lines.append(f"{'class':>16}  {'iou':>7} {'f1':>7} {'prec':>7} {'recall':>7} {'voxels':>10}")
            for k, s in value.items():
                lines.append(
                    f"{k:>16}  {_fmt(s['iou']):>7} {_fmt(s['f1']):>7} {_fmt(s['precision']):>7} "
                    f"{_fmt(s['recall']):>7} {s['support']:>10}"
                )
        else:
            lines.append(f"{key:>16}: {_fmt(value)}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4f}"
    return str(value)
