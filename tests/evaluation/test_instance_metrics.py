"""AP by IoU and object size on hand-built volumes with known matches; per-class scores; evaluate()."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_emseg.evaluation import (
    average_precision,
    binary_scores,
    class_scores,
    coco_ap,
    evaluate,
)


def test_perfect_prediction_has_ap_one_in_every_populated_bin(tiny_em):
    gt = tiny_em.mitochondria
    pred = np.where(gt > 0, gt + 100, 0)
    res = average_precision(pred, gt)
    assert all(v == pytest.approx(1.0) for v in res.ap.values())
    for name, per_iou in res.ap_by_size.items():
        populated = res.n_gt[name] > 0
        assert all((v == pytest.approx(1.0)) if populated else math.isnan(v) for v in per_iou.values())
    scores = evaluate(pred, gt, "mitochondria")
    assert scores["ap50"] == scores["ap75"] == scores["iou"] == pytest.approx(1.0)


def test_false_positive_rank_changes_ap_as_coco_interpolates():
    gt = np.zeros((10, 40, 40), np.uint32)
    gt[:, :10, :10] = 1  # A, 1000 voxels
    gt[:, 20:30, :10] = 2  # B, 1000 voxels, missed
    pred = np.zeros_like(gt)
    pred[:, :10, :10] = 5  # exact match of A
    pred[:, :20, 20:30] = 6  # false positive, 2000 voxels: ranked first by size
    by_size = average_precision(pred, gt, iou_thresholds=(0.5,))
    assert by_size.ap[0.5] == pytest.approx(51 * 0.5 / 101)  # precision 1/2 up to recall 1/2
    assert by_size.matches[0.5] == (1, 1, 1)
    confident = average_precision(pred, gt, iou_thresholds=(0.5,), scores={5: 0.9, 6: 0.1})
    assert confident.ap[0.5] == pytest.approx(51 / 101)  # precision 1 up to recall 1/2


def test_iou_between_thresholds_counts_at_50_only():
    gt = np.zeros((10, 10, 10), np.uint32)
    gt[...] = 1
    pred = np.zeros_like(gt)
    pred[:, :6] = 3  # IoU 0.6
    res = average_precision(pred, gt, iou_thresholds=(0.5, 0.75))
    assert res.ap[0.5] == pytest.approx(1.0) and res.ap[0.75] == 0.0


def test_size_bins_follow_ground_truth_size_and_ignore_other_bins():
    gt = np.zeros((10, 100, 100), np.uint32)
    gt[:, 0:40, 0:50] = 1  # large: 20,000 voxels
    gt[:, 50:90, 0:20] = 2  # medium: 8,000
    gt[:, 50:60, 60:70] = 3  # small: 1,000, missed
    pred = np.zeros_like(gt)
    pred[gt == 1] = 11
    pred[gt == 2] = 12
    pred[:, 0:30, 60:70] = 13  # false positive of 3,000 voxels (small range)
    res = average_precision(pred, gt, iou_thresholds=(0.75,))
    assert res.n_gt == {"small": 1, "medium": 1, "large": 1, "all": 3}
    assert res.ap_by_size["small"][0.75] == 0.0  # its only candidate is the false positive
    assert res.ap_by_size["medium"][0.75] == pytest.approx(1.0)  # the large match is ignored here
    assert res.ap_by_size["large"][0.75] == pytest.approx(1.0)
    assert res.ap[0.75] == pytest.approx(67 / 101)  # precision 1 up to recall 2/3
    scores = evaluate(pred, gt, "mitochondria")
    assert scores["ap75_small"] == 0.0 and scores["ap75_large"] == pytest.approx(1.0)
    assert (scores["tp75"], scores["fp75"], scores["fn75"]) == (2, 1, 1)


def test_below_half_iou_matching_is_one_to_one():
    gt = np.zeros((10, 10, 10), np.uint32)
    gt[...] = 1
    pred = np.zeros_like(gt)
    pred[:, :, :4] = 1  # IoU 0.4
    pred[:, :, 4:8] = 2  # IoU 0.4
    res = average_precision(pred, gt, iou_thresholds=(0.3,))
    assert res.matches[0.3] == (1, 1, 0)


def test_coco_ap_edge_cases():
    assert math.isnan(coco_ap(np.array([False]), 0))
    assert coco_ap(np.array([], bool), 3) == 0.0
    assert coco_ap(np.array([True, True]), 2) == pytest.approx(1.0)


def test_class_scores_by_hand():
    gt = np.array([0, 0, 1, 1, 1, 2, 2, 2]).reshape(1, 2, 4)
    pred = np.array([0, 1, 1, 1, 2, 2, 2, 0]).reshape(1, 2, 4)
    s = class_scores(pred, gt)
    # class 1: TP 2 (idx 2,3), FP 1 (idx 1), FN 1 (idx 4)
    assert (s[1].iou, s[1].f1, s[1].precision, s[1].recall) == pytest.approx((0.5, 2 / 3, 2 / 3, 2 / 3))
    # class 2: TP 2 (idx 5,6), FP 1 (idx 4), FN 1 (idx 7)
    assert s[2].iou == pytest.approx(0.5) and s[2].support == 3
    res = evaluate(pred, gt, "semantic")
    assert res["iou"] == pytest.approx(0.5) and set(res["per_class"]) == {"0", "1", "2"}
    fg = binary_scores(pred, gt)
    assert (fg.precision, fg.recall) == pytest.approx((5 / 6, 5 / 6))
