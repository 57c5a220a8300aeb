"""Semantic components, boundary-derived affinities, small-object clean-up, memory guard."""

from __future__ import annotations

import numpy as np
import pytest

from napari_emseg.postprocess import (
    SemanticConfig,
    VolumeTooLargeError,
    affinities_from_boundaries,
    class_map,
    extract_instances,
    relabel_consecutive,
    remove_small_objects,
)
from napari_emseg.postprocess import memory as memory_module

from .conftest import gt_affinities, gt_bcd


def test_semantic_components_per_class_with_size_filter():
    classes = np.zeros((2, 20, 20), np.uint8)
    classes[:, 2:8, 2:8] = 1  # 72 voxels
    classes[:, 12:18, 2:8] = 1  # 72 voxels, separate object of class 1
    classes[:, 2:8, 10:18] = 2  # 96 voxels, touches nothing of class 2
    classes[:, 15, 15] = 2  # 2 voxels
    probs = np.stack([(classes == k).astype(np.float32) * 0.8 + 0.1 for k in range(3)])
    assert np.array_equal(class_map(probs), classes)
    labels = extract_instances(probs, "semantic")
    assert labels.max() == 4
    filtered = extract_instances(probs, "semantic", SemanticConfig(min_size=10))
    assert filtered.max() == 3 and filtered[:, 15, 15].max() == 0
    as_classes = extract_instances(probs, "semantic", SemanticConfig(min_size=10, output="classes"))
    expected = classes.copy()
    expected[:, 15, 15] = 0
    assert np.array_equal(as_classes, expected)
    # uint8 storage: same answer, input untouched
    u8 = np.round(probs * 255).astype(np.uint8)
    before = u8.copy()
    assert np.array_equal(extract_instances(u8, "semantic"), labels)
    assert np.array_equal(u8, before)


def test_semantic_objects_do_not_cross_from_one_separate_image_into_the_next():
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:128, :128]

    def blobs():
        sec = np.zeros((128, 128), np.uint8)
        for y, x in rng.integers(8, 120, size=(60, 2)):
            sec[(yy - y) ** 2 + (xx - x) ** 2 <= 49] = 1
        return sec

    def probs(classes):
        return np.stack([(classes == k).astype(np.float32) * 0.8 + 0.1 for k in range(2)])

    first = blobs()
    serial = np.stack([np.roll(first, k, axis=1) for k in range(3)])  # objects run through
    apart = np.stack([blobs() for _ in range(3)])  # three unrelated images
    mixed = np.concatenate([serial, apart])
    labels = extract_instances(probs(mixed), "semantic")
    per_section = extract_instances(probs(mixed), "semantic", SemanticConfig(mode="2d"))
    for z in range(2, 5):  # serial -> first unrelated image, and between unrelated images
        assert not np.isin(labels[z + 1][labels[z + 1] > 0], labels[z]).any()
    assert len(np.unique(labels[:3])) == len(np.unique(per_section[0]))  # serial: one object per profile
    assert len(np.unique(labels)) == len(np.unique(labels[:3])) + len(np.unique(per_section[3:])) - 1


def test_affinities_from_boundaries():
    b = np.zeros((2, 4, 5), np.float32)
    b[:, :, 2] = 1.0  # a membrane column in x
    affs = affinities_from_boundaries(b[None])
    assert affs.shape == (3, 2, 4, 5) and affs.dtype == np.float32
    assert np.all(affs[2][:, :, 2] == 0) and np.all(affs[2][:, :, 3] == 0)  # pairs touching it
    assert np.all(affs[2][:, :, 1] == 1) and np.all(affs[2][:, :, 4] == 1)
    assert np.all(affs[0][0] == 0) and np.all(affs[2][:, :, 0] == 0)  # no partner: 0
    # uint8 boundaries and the boundaries target split the two halves
    b8 = (b * 255).astype(np.uint8)[None]
    assert np.array_equal(affinities_from_boundaries(b8), affs)
    labels = extract_instances(np.repeat(np.repeat(b8, 8, axis=2), 8, axis=3), "boundaries")
    assert labels.max() == 2


def test_small_objects_merge_into_largest_contact_or_drop():
    lab = np.zeros((1, 6, 10), np.uint32)
    lab[0, :, :4] = 1  # 24 voxels
    lab[0, :, 6:] = 2  # 24 voxels
    lab[0, :, 4:6] = 3  # 12 voxels between them ...
    lab[0, 0:2, 4:6] = 4  # ... 4 voxels on top of 3
    lab[0, 5, 5] = 0
    merged, n = remove_small_objects(lab, 13, "merge")
    assert n == 2
    # 3 (10 voxels left) touches 1 along 4 faces and 2 along 3 faces; 4 touches 1, 2 and 3
    assert set(np.unique(merged[lab == 3])) == {1}
    assert merged[0, 5, 5] == 0
    dropped, n = remove_small_objects(lab, 13, "drop")
    assert n == 2 and (dropped[lab >= 3] == 0).all()
    relabelled, n = relabel_consecutive(lab * 7)
    assert n == 4 and set(np.unique(relabelled)) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("target", ["affinities", "boundaries", "bcd", "semantic"])
def test_too_large_for_memory_is_reported_before_running(monkeypatch, tiny_em, target):
    maps = {
        "affinities": gt_affinities(tiny_em.neurons),
        "boundaries": tiny_em.membranes[None].astype(np.float32),
        "bcd": gt_bcd(tiny_em.mitochondria),
        "semantic": np.stack([tiny_em.mitochondria == 0, tiny_em.mitochondria > 0]).astype(np.float32),
    }
    monkeypatch.setattr(memory_module, "available_memory", lambda: 1_000_000)
    with pytest.raises(VolumeTooLargeError, match="too large for the in-memory path.*blockwise mode"):
        extract_instances(maps[target], target)
    monkeypatch.setattr(memory_module, "available_memory", lambda: 10**12)
    assert extract_instances(maps[target], target).max() > 0


def test_contacts_are_summed_per_pair_before_choosing_a_neighbour():
    from napari_emseg.postprocess.cleanup import small_objects_lut

    sizes = np.array([0, 50, 50, 5])
    # object 3 touches 1 in two separate places (2 + 2 faces) and 2 in one place (3 faces)
    u = np.array([1, 1, 2])
    v = np.array([3, 3, 3])
    contact = np.array([2, 2, 3])
    lut = small_objects_lut(sizes, u, v, contact, min_size=10, mode="merge")
    assert lut[3] == lut[1] != lut[2]
