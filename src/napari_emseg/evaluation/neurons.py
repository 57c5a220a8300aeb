"""Neuron segmentation metrics: variation of information (split/merge) and adapted Rand error.

Both are computed over the voxels the ground truth labels: ground-truth label 0 is *ignored*
(unlabelled or membrane), while predicted label 0 counts as one more segment.

* **VOI split** ``= H(pred | gt)``: how much a ground-truth object is cut into several
  predicted segments (over-segmentation). 0 when no object is split.
* **VOI merge** ``= H(gt | pred)``: how much a predicted segment mixes several ground-truth
  objects (under-segmentation). 0 when no segments are merged.

  Entropies in bits. ``skimage.metrics.variation_of_information(gt, pred)`` returns
  ``[H(pred|gt), H(gt|pred)]`` = ``[split, merge]`` ("false splits, false merges" in its source),
  and :func:`voi` returns them in that order, by name.
* **Adapted Rand error** (SNEMI3D; Arganda-Carreras et al. 2015): ``1 - F`` of the Rand
  precision and recall over voxel pairs, from ``skimage.metrics.adapted_rand_error``.
  We report precision = pairs together in both / pairs together in the prediction (low when
  segments are merged) and recall = pairs together in both / pairs together in the ground truth
  (low when objects are split). skimage's own second and third return values use the opposite
  naming (scikit-image issue #6485), so they are computed here from the same table instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from skimage.metrics import adapted_rand_error, variation_of_information

from .table import Contingency, contingency

__all__ = ["VOI", "ARand", "voi", "adapted_rand", "neuron_metrics"]

_NO_IMAGE = np.zeros(0, np.uint8)  # skimage checks image shapes even when it is given a table


@dataclass(frozen=True)
class VOI:
    """Variation of information in bits: ``split = H(pred|gt)``, ``merge = H(gt|pred)``."""

    split: float
    merge: float

    @property
    def total(self) -> float:
        return self.split + self.merge


@dataclass(frozen=True)
class ARand:
    """Adapted Rand error and the Rand precision (merges lower it) and recall (splits lower it)."""

    error: float
    precision: float
    recall: float


def _table(gt: Any, pred: Any, table: Contingency | None) -> Contingency:
    return table if table is not None else contingency(gt, pred)


def voi(pred: Any = None, gt: Any = None, *, table: Contingency | None = None) -> VOI:
    """VOI split and merge over ground-truth-labelled voxels (gt 0 ignored).

    Parameters
    ----------
    pred, gt
        Label volumes of the same shape (or pass ``table``). Note the order: prediction first,
        as everywhere in :mod:`napari_emseg.evaluation` (scikit-image takes ground truth first).
    table
        A :func:`~.table.contingency` of ``gt`` and ``pred``, to share between metrics.
    """
    t = _table(gt, pred, table).without_gt_background().astype(np.float64)
    total = t.sum()
    if total == 0:
        return VOI(0.0, 0.0)
    split, merge = variation_of_information(_NO_IMAGE, _NO_IMAGE, table=t / total)
    return VOI(float(max(split, 0.0)), float(max(merge, 0.0)))


def adapted_rand(pred: Any = None, gt: Any = None, *, table: Contingency | None = None) -> ARand:
    """Adapted Rand error over ground-truth-labelled voxels (gt 0 ignored), with precision/recall."""
    t = _table(gt, pred, table).without_gt_background().astype(np.float64)
    n = t.sum()
    if n <= 1:
        return ARand(0.0, 1.0, 1.0)
    error, _, _ = adapted_rand_error(table=t)
    both = float(t.data @ t.data - n)
    gt_sizes = np.asarray(t.sum(axis=1)).ravel()
    pred_sizes = np.asarray(t.sum(axis=0)).ravel()
    gt_pairs = float(gt_sizes @ gt_sizes - n)
    pred_pairs = float(pred_sizes @ pred_sizes - n)
    precision = both / pred_pairs if pred_pairs > 0 else 1.0
    recall = both / gt_pairs if gt_pairs > 0 else 1.0
    return ARand(float(error), precision, recall)


def neuron_metrics(pred: Any, gt: Any, *, table: Contingency | None = None) -> dict[str, float]:
    """``voi_split``, ``voi_merge``, ``voi``, ``arand``, ``rand_precision``, ``rand_recall``, counts."""
    c = _table(gt, pred, table)
    v = voi(table=c)
    r = adapted_rand(table=c)
    return {
        "voi_split": v.split,
        "voi_merge": v.merge,
        "voi": v.total,
        "arand": r.error,
        "rand_precision": r.precision,
        "rand_recall": r.recall,
        "n_gt": int(len(c.gt_ids) - 1),
        "n_pred": int(len(c.pred_ids) - 1),
    }
