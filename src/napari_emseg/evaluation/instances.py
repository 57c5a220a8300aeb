"""Instance metrics for mitochondria: average precision by IoU and object size (MitoEM protocol).

Protocol (MitoEM, Wei et al. MICCAI 2020, whose evaluation adapts COCO's to 3D volumes):

* **Objects** are the non-zero labels of each volume, in 3D; ground-truth label 0 is background
  (predicted voxels there are false-positive voxels, they lower the IoU).
* **IoU** of a prediction ``p`` and a ground-truth object ``g`` is ``|p & g| / |p | g|`` in voxels.
* **Matching** at an IoU threshold ``t``: predictions are taken in order of decreasing score
  (default score: the prediction's size, so larger objects first); each takes the unmatched
  ground-truth object it overlaps with the highest IoU, if that IoU is ``>= t``. For ``t >= 0.5``
  this is the same as matching every pair with IoU ``>= t``, because disjoint labels cannot
  both overlap one object by more than half.
* **AP** is COCO's: precision is made monotone (running maximum from the right) and sampled at
  the 101 recall levels 0, 0.01, ..., 1; AP is their mean. No ground-truth object: NaN.
* **Size bins** are by *ground-truth* size in voxels: small ``<= 5,000``, medium
  ``5,000 < size <= 15,000``, large ``> 15,000``. In a bin, ground-truth objects of other sizes
  are ignored, and so are predictions matched to them and unmatched predictions whose own size
  lies outside the bin (COCO's area-range rule, as in MitoEM's ``VOL3Deval``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .table import Contingency, contingency

__all__ = ["SIZE_BINS", "APResult", "average_precision", "match_instances", "coco_ap"]

SIZE_BINS: tuple[int, int] = (5000, 15000)
"""Upper bounds of the small and medium bins, voxels (MitoEM)."""

DEFAULT_IOUS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@dataclass(frozen=True)
class APResult:
    """Average precision per IoU threshold, overall and per ground-truth size bin.

    Attributes
    ----------
    ap
        ``{iou: AP}`` over all objects.
    ap_by_size
        ``{"small" | "medium" | "large": {iou: AP}}`` (NaN where the bin holds no object).
    matches
        ``{iou: (tp, fp, fn)}`` over all objects.
    n_gt, n_pred
        Object counts (``n_gt`` per bin, plus ``"all"``).
    """

    ap: dict[float, float]
    ap_by_size: dict[str, dict[float, float]]
    matches: dict[float, tuple[int, int, int]]
    n_gt: dict[str, int] = field(default_factory=dict)
    n_pred: int = 0

    @property
    def mean_ap(self) -> float:
        """Mean AP over the IoU thresholds (COCO's "AP" with the default thresholds)."""
        vals = [v for v in self.ap.values() if not np.isnan(v)]
        return float(np.mean(vals)) if vals else float("nan")


def coco_ap(tp: np.ndarray, n_gt: int) -> float:
    """COCO 101-point interpolated AP of predictions in score order (``tp`` flags), ``n_gt`` objects."""
    if n_gt == 0:
        return float("nan")
    if tp.size == 0:
        return 0.0
    tps = np.cumsum(tp)
    fps = np.cumsum(~tp)
    recall = tps / n_gt
    precision = tps / np.maximum(tps + fps, 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, np.linspace(0.0, 1.0, 101), side="left")
    sampled = np.where(idx < precision.size, precision[np.minimum(idx, precision.size - 1)], 0.0)
    return float(sampled.mean())


def _ious(c: Contingency) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlapping (gt row, pred column, IoU) triples, objects only (label 0 excluded)."""
    t = c.table[1:, 1:].tocoo()
    gs, ps = c.gt_sizes[1:], c.pred_sizes[1:]
    inter = t.data.astype(np.float64)
    iou = inter / (gs[t.row] + ps[t.col] - inter)
    return t.row.astype(np.int64), t.col.astype(np.int64), iou


def match_instances(
    c: Contingency, iou_threshold: float, order: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching at ``iou_threshold``; ``order`` = prediction indices, best score first.

    Returns ``(pred_match, pred_iou)``: per prediction index (0-based over objects) the matched
    ground-truth index or -1, and the IoU of that match.
    """
    g, p, iou = _ious(c)
    n_pred = len(c.pred_ids) - 1
    match = np.full(n_pred, -1, np.int64)
    match_iou = np.zeros(n_pred)
    ok = iou >= iou_threshold
    g, p, iou = g[ok], p[ok], iou[ok]
    if iou_threshold >= 0.5:  # at most one candidate per object on both sides
        match[p] = g
        match_iou[p] = iou
        return match, match_iou
    rank = np.empty(n_pred, np.int64)
    rank[order] = np.arange(n_pred)
    taken: set[int] = set()
    for k in np.lexsort((-iou, rank[p])):  # predictions in score order, best IoU first
        if match[p[k]] < 0 and g[k] not in taken:
            match[p[k]] = g[k]
            match_iou[p[k]] = iou[k]
            taken.add(int(g[k]))
    return match, match_iou


def average_precision(
    pred: Any = None,
    gt: Any = None,
    *,
    iou_thresholds: Sequence[float] = DEFAULT_IOUS,
    size_bins: tuple[int, int] = SIZE_BINS,
    scores: Mapping[int, float] | None = None,
    table: Contingency | None = None,
) -> APResult:
    """AP at each IoU threshold, overall and for small/medium/large ground-truth objects.

    Parameters
    ----------
    pred, gt
        Instance label volumes (0 = background), same shape; or pass ``table``.
    iou_thresholds
        IoU thresholds; default 0.50, 0.55, ..., 0.95 (so the mean is COCO's AP).
    size_bins
        Upper bounds (voxels) of the small and medium bins.
    scores
        Confidence per predicted label; default its size (larger first).
    table
        A :func:`~.table.contingency` of ``gt`` and ``pred``.
    """
    c = table if table is not None else contingency(gt, pred)
    gs, ps = c.gt_sizes[1:], c.pred_sizes[1:]
    if scores is None:
        conf = ps.astype(np.float64)
    else:
        conf = np.array([float(scores.get(int(i), 0.0)) for i in c.pred_ids[1:]])
    order = np.lexsort((-ps, -conf))  # by score, ties by size
    lo, hi = size_bins
    bins = {"small": (0, lo), "medium": (lo, hi), "large": (hi, np.inf)}
    ap: dict[float, float] = {}
    by_size: dict[str, dict[float, float]] = {name: {} for name in bins}
    matches: dict[float, tuple[int, int, int]] = {}
    for t in iou_thresholds:
        t = float(t)
        match, _ = match_instances(c, t, order)
        tp = match[order] >= 0
        ap[t] = coco_ap(tp, len(gs))
        n_tp = int(tp.sum())
        matches[t] = (n_tp, int(tp.size - n_tp), int(len(gs) - n_tp))
        for name, (a, b) in bins.items():
            gt_in = (gs > a) & (gs <= b)
            m = match[order]
            pred_in = (ps[order] > a) & (ps[order] <= b)
            matched_in = np.zeros(m.size, bool)
            matched_in[m >= 0] = gt_in[m[m >= 0]]
            keep = np.where(m >= 0, matched_in, pred_in)
            by_size[name][t] = coco_ap(matched_in[keep], int(gt_in.sum()))
    n_gt = {name: int(((gs > a) & (gs <= b)).sum()) for name, (a, b) in bins.items()}
    n_gt["all"] = int(len(gs))
    return APResult(ap, by_size, matches, n_gt, int(len(ps)))
