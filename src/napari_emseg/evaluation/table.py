"""The overlap table of two label volumes, computed once and shared by every metric.

``table[i, j]`` is the number of voxels with ground-truth label ``gt_ids[i]`` and predicted label
``pred_ids[j]``. Row 0 and column 0 are label 0 (always present), so the table also gives every
object's full size (its row or column sum). Labels are first mapped to consecutive codes, then
pairs are counted with one ``bincount`` (or ``np.unique`` when the table would be huge) - no loop
over objects, so a 256^3 volume with thousands of objects takes about a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from ..errors import EmsegError

__all__ = ["Contingency", "EvaluationError", "contingency", "as_labels"]

# dense pair counting up to this many table cells, sparse (np.unique) beyond
_DENSE_CELLS = 2**26


class EvaluationError(EmsegError, ValueError):
    """Prediction and ground truth cannot be compared (shape, type); the message says why."""


@dataclass(frozen=True)
class Contingency:
    """Overlap counts of ground truth (rows) and prediction (columns).

    Attributes
    ----------
    table
        ``scipy.sparse.csr_array`` of int64 voxel counts, shape ``(len(gt_ids), len(pred_ids))``.
    gt_ids, pred_ids
        The label of each row / column; index 0 is label 0.
    """

    table: Any
    gt_ids: np.ndarray
    pred_ids: np.ndarray

    @property
    def gt_sizes(self) -> np.ndarray:
        """Voxels per ground-truth label (row sums), int64."""
        return np.asarray(self.table.sum(axis=1)).ravel().astype(np.int64)

    @property
    def pred_sizes(self) -> np.ndarray:
        """Voxels per predicted label (column sums), int64."""
        return np.asarray(self.table.sum(axis=0)).ravel().astype(np.int64)

    def without_gt_background(self) -> Any:
        """The table without row 0: only voxels the ground truth labels (0 = ignore)."""
        return self.table[1:, :]


def as_labels(volume: Any, name: str) -> np.ndarray:
    """A label array-like (numpy, dask, zarr) as an integer numpy array."""
    arr = volume.compute() if hasattr(volume, "compute") else np.asarray(volume)
    arr = np.asarray(arr)
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype.kind not in "ui":
        if arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0):
            return arr.astype(np.int64)
        raise EvaluationError(f"{name}: expected integer labels, got {arr.dtype} values")
    if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
        raise EvaluationError(f"{name}: labels must be >= 0, found {int(arr.min())}")
    return arr


def _codes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive codes (0 for label 0) and the label of each code (``ids[0] == 0``)."""
    flat = labels.ravel()
    top = int(flat.max()) if flat.size else 0
    if top < 4 * flat.size + 1024 and top < 2**31:
        present = np.bincount(flat.astype(np.int64, copy=False) if flat.dtype == np.uint64 else flat,
                              minlength=top + 1) > 0
        present[0] = True
        ids = np.flatnonzero(present)
        lut = np.zeros(top + 1, np.int64)
        lut[ids] = np.arange(len(ids))
        return lut[flat], ids.astype(np.uint64)
    ids, inverse = np.unique(flat, return_inverse=True)
    if ids[0] != 0:
        ids = np.concatenate([[0], ids])
        inverse = inverse + 1
    return inverse.astype(np.int64), ids.astype(np.uint64)


def contingency(gt: Any, pred: Any) -> Contingency:
    """The overlap table of ``gt`` and ``pred`` (same shape, integer labels)."""
    g = as_labels(gt, "ground truth")
    p = as_labels(pred, "prediction")
    if g.shape != p.shape:
        raise EvaluationError(
            f"prediction {tuple(p.shape)} and ground truth {tuple(g.shape)} differ in shape; "
            "evaluate the same region (crop one of them)"
        )
    gc, gt_ids = _codes(g)
    pc, pred_ids = _codes(p)
    ng, npred = len(gt_ids), len(pred_ids)
    key = gc * npred + pc
    del gc, pc
    if ng * npred <= _DENSE_CELLS:
        counts = np.bincount(key, minlength=ng * npred)
        cells = np.flatnonzero(counts)
        values = counts[cells]
    else:
        cells, values = np.unique(key, return_counts=True)
    rows, cols = np.divmod(cells, npred)
    table = sparse.csr_array((values.astype(np.int64), (rows, cols)), shape=(ng, npred))
    return Contingency(table, gt_ids, pred_ids)
