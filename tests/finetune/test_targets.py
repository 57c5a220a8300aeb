"""Target builders against hand-computed cases, and the errors that say what to paint."""

from __future__ import annotations

import numpy as np
import pytest

from napari_emseg.finetune.annotations import AnnotationError, find_annotations
from napari_emseg.finetune.targets import (
    affinity_targets,
    bcd_targets,
    boundary_targets,
    build_targets,
    semantic_targets,
)


def painted(shape=(5, 6, 6), z=(1, 3)):
    lab = np.zeros(shape, np.int64)
    for zi in z:
        lab[zi, :, :3] = 7
        lab[zi, :, 3:] = 9
    return lab


def test_dense_detects_painted_axis_and_slices():
    ann = find_annotations(painted(), (5, 6, 6))
    assert ann.axis == 0 and ann.slices == (1, 3) and ann.isolated_slices
    assert ann.mask.shape == ann.labels.shape == (3, 6, 6)  # cropped to z 1..3
    assert ann.mask[0].all() and not ann.mask[1].any() and ann.mask[2].all()
    # the same slices painted along x
    lab = np.moveaxis(painted(), 0, 2)
    ann = find_annotations(lab, lab.shape)
    assert ann.axis == 2 and ann.slices == (1, 3)


def test_dense_3d_annotation_marks_everything():
    lab = np.ones((3, 4, 4), np.int64)
    lab[:, :, 2:] = 2
    ann = find_annotations(lab, lab.shape)
    # a densely painted volume is a stack of painted z-slices: every voxel known, none isolated
    assert ann.axis == 0 and ann.slices == (0, 1, 2) and ann.mask.all() and not ann.isolated_slices


def test_affinities_hand_computed():
    lab = np.array([[[1, 1, 2, 0]]])  # one slice, one row
    ann = find_annotations(lab, lab.shape, axis=0)
    t = affinity_targets(ann)
    # x-affinity at p relates p and p-1: [unknown, 1-1 same, 1-2 differ, 2-0 background]
    np.testing.assert_array_equal(t.target[2, 0, 0], [0, 1, 0, 0])
    np.testing.assert_array_equal(t.mask[2, 0, 0], [0, 1, 1, 1])
    assert t.mask[0].sum() == 0  # z-affinity of a single slice: never known
    assert t.channel_names == ("aff_z", "aff_y", "aff_x")


def test_affinities_between_isolated_slices_are_unknown():
    ann = find_annotations(painted(), (5, 6, 6))
    t = affinity_targets(ann)
    assert t.mask[0].sum() == 0  # no z-edge joins two painted voxels
    assert t.mask[2].sum() > 0


def test_boundaries_mark_both_sides_and_background():
    lab = np.array([[[1, 1, 2, 2, 0, 3]]])
    ann = find_annotations(lab, lab.shape, axis=0)
    t = boundary_targets(ann)
    np.testing.assert_array_equal(t.target[0, 0, 0], [0, 1, 1, 1, 1, 1])
    assert t.mask.all()


def test_scribbles_background_label_and_unknowns():
    lab = np.zeros((1, 1, 6), np.int64)
    lab[0, 0, :2] = 5      # a neurite interior
    lab[0, 0, 3] = 1       # membrane (background label)
    ann = find_annotations(lab, lab.shape, mode="scribbles", background_label=1)
    t = boundary_targets(ann)
    np.testing.assert_array_equal(t.mask[0, 0, 0], [1, 1, 0, 1])  # cropped to the scribbles
    np.testing.assert_array_equal(t.target[0, 0, 0][[0, 1, 3]], [0, 0, 1])


def test_bcd_contour_and_distance():
    lab = np.zeros((1, 7, 7), np.int64)
    lab[0, 1:6, 1:6] = 4
    ann = find_annotations(lab, lab.shape, axis=0)
    t = bcd_targets(ann)
    fg, contour, dist = t.target
    assert fg.sum() == 25
    assert contour[0, 1, 1] == 1 and contour[0, 3, 3] == 0
    assert dist[0, 3, 3] == pytest.approx(1.0) and dist[0, 1, 1] < dist[0, 2, 2] < 1
    assert dist[fg == 0].max() == 0


def test_bcd_binary_labels_split_into_objects():
    lab = np.zeros((1, 5, 9), np.int64)
    lab[0, 1:4, 1:4] = 1
    lab[0, 1:4, 5:8] = 1  # a second object with the same value
    t = bcd_targets(find_annotations(lab, lab.shape, axis=0))
    assert t.target[2, 0, 2, 2] == pytest.approx(1.0) and t.target[2, 0, 2, 6] == pytest.approx(1.0)


def test_semantic_classes():
    lab = np.zeros((1, 2, 3), np.int64)
    lab[0, 0] = 2
    t = semantic_targets(find_annotations(lab, lab.shape, axis=0))
    assert t.target.shape == (1, 1, 2, 3) and t.target.max() == 2 and len(t.channel_names) == 3


@pytest.mark.parametrize("labels, kwargs, match", [
    (np.zeros((3, 4, 4), np.int64), {}, "all 0"),
    (np.ones((2, 4, 4), np.int64), {"image_shape": (3, 4, 4)}, "shape"),
    (np.full((1, 4, 4), 3, np.int64), {"mode": "scribbles"}, "background"),
    (np.full((1, 4, 4), 1, np.int64), {"mode": "scribbles"}, "objects"),
])
def test_annotation_errors(labels, kwargs, match):
    shape = kwargs.pop("image_shape", labels.shape)
    with pytest.raises(AnnotationError, match=match):
        find_annotations(labels, shape, **kwargs)


def test_target_errors_say_what_to_paint():
    one = np.zeros((3, 4, 4), np.int64)
    one[1] = 3  # a single neuron fills the painted slice
    with pytest.raises(AnnotationError, match="neighbouring"):
        boundary_targets(find_annotations(one, one.shape))
    with pytest.raises(AnnotationError, match="no background"):
        bcd_targets(find_annotations(one, one.shape))


def test_bcd_from_a_painted_region():
    """A region of a slice painted as scribbles trains mitochondria: foreground wherever painted,
    contour and distance only on background and objects whole inside the region."""
    lab = np.zeros((1, 12, 12), np.int64)
    lab[0, 2:10, 2:10] = 1  # the painted region: background ...
    lab[0, 4:7, 4:7] = 5  # ... a mitochondrion inside it
    lab[0, 2:4, 8:10] = 6  # ... and one cut by the region's edge
    t = build_targets(find_annotations(lab, lab.shape, mode="scribbles", context=(0, 1, 1)), "bcd")
    fg, contour, dist = t.target[:, 0]
    known_fg, known_shape = t.mask[0, 0], t.mask[1, 0]
    assert fg.sum() == 9 + 4 and known_fg.sum() == 64  # crop 1:11: one unpainted voxel around the region
    assert contour[3:6, 3:6].sum() == 8 and dist[4, 4] == 1.0  # the whole object: ring and centre
    assert known_shape[3:6, 3:6].all()
    assert not known_shape[1:3, 7:9].any() and known_shape[1:3, 1:7].all()  # the cut object: foreground only
    np.testing.assert_array_equal(t.mask[1], t.mask[2])
