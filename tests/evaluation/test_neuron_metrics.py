"""VOI split/merge and adapted Rand: perfect, known splits and merges, ignore label, skimage parity."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information

from napari_emseg.evaluation import adapted_rand, contingency, neuron_metrics, voi
from napari_emseg.evaluation.table import EvaluationError


@pytest.fixture
def gt() -> np.ndarray:
    lab = np.zeros((4, 20, 30), np.uint32)
    lab[:, :, :10] = 1
    lab[:, :, 10:20] = 2
    lab[:, :, 20:] = 3
    lab[:, 9:11, :] = 0  # an unlabelled band: ignored
    return lab


def test_perfect_prediction_scores_zero(gt):
    renamed = np.where(gt > 0, gt * 10 + 5, 0)
    m = neuron_metrics(renamed, gt)
    assert m["voi_split"] == pytest.approx(0, abs=1e-9)
    assert m["voi_merge"] == pytest.approx(0, abs=1e-9)
    assert m["arand"] == pytest.approx(0, abs=1e-12)
    assert m["n_gt"] == 3 and m["n_pred"] == 3


def test_a_split_raises_only_voi_split_and_lowers_rand_recall(gt):
    pred = gt.copy()
    pred[:, :, 15:20] = 7  # object 2 cut in two halves
    v = voi(pred, gt)
    assert v.split == pytest.approx(1 / 3, rel=1e-6)  # a third of the voxels cut in equal halves: 1 bit
    assert v.merge == pytest.approx(0, abs=1e-9)
    r = adapted_rand(pred, gt)
    assert r.error > 0 and r.recall < 1 and r.precision == pytest.approx(1)


def test_a_merge_raises_only_voi_merge_and_lowers_rand_precision(gt):
    pred = gt.copy()
    pred[pred == 3] = 2  # objects 2 and 3 merged
    v = voi(pred, gt)
    assert v.merge > 0.3
    assert v.split == pytest.approx(0, abs=1e-9)
    r = adapted_rand(pred, gt)
    assert r.error > 0 and r.precision < 1 and r.recall == pytest.approx(1)


def test_unlabelled_ground_truth_is_ignored(gt):
    pred = gt.copy()
    pred[gt == 0] = 99  # anything in the ignored band
    base = neuron_metrics(gt, gt)
    assert neuron_metrics(pred, gt)["voi"] == pytest.approx(base["voi"], abs=1e-12)
    assert neuron_metrics(pred, gt)["arand"] == pytest.approx(0, abs=1e-12)


def test_matches_skimage_on_random_segmentations():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 6, (5, 30, 30)).astype(np.uint16)
    pred = rng.integers(0, 9, (5, 30, 30)).astype(np.uint64) * 1000
    split, merge = variation_of_information(gt, pred, ignore_labels=(0,))  # [H(pred|gt), H(gt|pred)]
    v = voi(pred, gt)
    assert (v.split, v.merge) == pytest.approx((split, merge))
    assert split != pytest.approx(merge)  # the order matters here
    are, *_ = adapted_rand_error(gt, pred, ignore_labels=(0,))
    r = adapted_rand(pred, gt)
    assert r.error == pytest.approx(are)
    assert r.error == pytest.approx(1 - 2 * r.precision * r.recall / (r.precision + r.recall))


def test_one_table_serves_all_metrics_and_large_ids(gt):
    pred = gt.astype(np.uint64) * (2**40)  # ids far beyond the volume size
    table = contingency(gt, pred)
    assert table.table.shape == (4, 4)
    assert neuron_metrics(pred, gt, table=table)["arand"] == pytest.approx(0, abs=1e-12)
    with pytest.raises(EvaluationError, match="differ in shape"):
        contingency(gt, pred[:, :, :5])
    with pytest.raises(EvaluationError, match="integer labels"):
        contingency(gt.astype(np.float32) + 0.5, pred)
