"""Mitochondria from BCD maps: touching objects separated, stored types, size filter, 2D/3D."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_emseg.evaluation import average_precision
from napari_emseg.postprocess import MitoConfig, extract_instances
from napari_emseg.postprocess.maps import MapError
from napari_emseg.postprocess.mitochondria import link_sections

from .conftest import gt_bcd


def two_touching_mitochondria(shape=(10, 64, 96), centres=(30.0, 64.0)) -> np.ndarray:
    """Two elongated ellipsoids side by side in x, touching along a wide face (by default)."""
    z, y, x = np.indices(shape)
    cz, cy = shape[0] / 2, shape[1] / 2
    labels = np.zeros(shape, np.uint32)
    for i, cx in enumerate(centres, start=1):
        inside = ((z - cz) / 4.5) ** 2 + ((y - cy) / 20) ** 2 + ((x - cx) / 17.5) ** 2 <= 1
        labels[inside & (labels == 0)] = i
    return labels


def test_bcd_watershed_separates_touching_objects_that_a_threshold_merges():
    gt = two_touching_mitochondria()
    assert ndi.label(gt > 0)[1] == 1  # they really touch
    bcd = gt_bcd(gt)
    noisy = np.clip(bcd + np.random.default_rng(0).normal(0, 0.05, bcd.shape), 0, 1).astype(np.float32)
    thresholded, n_plain = ndi.label(noisy[0] > 0.5)
    assert n_plain == 1  # plain threshold + components: one merged object
    labels = extract_instances(noisy, "bcd")
    assert labels.max() == 2
    ap = average_precision(labels, gt)
    assert ap.ap[0.75] == pytest.approx(1.0)


def test_uint8_maps_give_the_same_labels_without_float_copies():
    gt = two_touching_mitochondria()
    bcd = gt_bcd(gt)
    u8 = np.round(bcd * 255).astype(np.uint8)
    assert np.array_equal(extract_instances(u8, "bcd"), extract_instances(u8.astype(np.float32) / 255, "bcd"))


def test_size_filter_and_seed_thresholds(tiny_em):
    gt = tiny_em.mitochondria
    bcd = gt_bcd(gt)
    sizes = np.bincount(gt.ravel())[1:]
    assert sizes.min() < 128 <= sizes.max()  # the sample holds objects on both sides of the cut
    labels = extract_instances(bcd, "bcd", MitoConfig(min_size=128))
    kept = np.bincount(labels.ravel())[1:]
    assert kept.min() >= 128
    assert labels.max() == (sizes >= 128).sum()
    # seeds need a high distance: asking for more than any voxel has finds no seed, and every
    # piece of foreground is then an object of its own (never dropped for want of a seed)
    unseeded = extract_instances(bcd, "bcd", MitoConfig(seed_distance=1.0, min_size=1))
    pieces, n = ndi.label(bcd[0] > MitoConfig().foreground_threshold)
    assert unseeded.max() == n > 0
    assert np.array_equal(unseeded > 0, pieces > 0)


def test_foreground_without_a_seed_is_kept_as_its_own_object():
    gt = two_touching_mitochondria(centres=(25.0, 75.0))  # apart
    bcd = gt_bcd(gt)
    bcd[2][gt == 2] = 0.0  # object 2 has no distance: no seed in it
    labels = extract_instances(bcd, "bcd", MitoConfig(min_size=1))
    assert labels.max() == 2  # object 1 from its seed, object 2 from the leftover foreground
    assert np.array_equal(labels > 0, bcd[0] > MitoConfig().foreground_threshold)


def test_2d_mode_labels_each_section_separately():
    gt = two_touching_mitochondria()
    labels = extract_instances(gt_bcd(gt), "bcd", MitoConfig(mode="2d", min_size=10))
    ids_per_section = [set(np.unique(s)) - {0} for s in labels]
    nonempty = [s for s in ids_per_section if s]
    assert all(len(s) == 2 for s in nonempty)
    assert all(a.isdisjoint(b) for a, b in zip(nonempty, nonempty[1:]))


def test_bcd_needs_three_channels():
    with pytest.raises(MapError, match="3 channel"):
        extract_instances(np.zeros((2, 4, 8, 8), np.float32), "bcd")


def test_split_false_makes_each_connected_piece_one_object():
    gt = two_touching_mitochondria()
    bcd = gt_bcd(gt)
    merged = extract_instances(bcd, "bcd", MitoConfig(split=False, min_size=1))
    assert merged.max() == 1 and np.array_equal(merged > 0, bcd[0] > MitoConfig().foreground_threshold)
    apart = extract_instances(gt_bcd(two_touching_mitochondria(centres=(25.0, 75.0))), "bcd", MitoConfig(split=False))
    assert apart.max() == 2
    assert MitoConfig(split=False).unused_fields() and not MitoConfig().unused_fields()


def test_linked_mode_joins_sections_one_to_one():
    gt = two_touching_mitochondria()
    labels = extract_instances(gt_bcd(gt), "bcd", MitoConfig(mode="linked", min_size=10))
    assert np.unique(labels).size - 1 == 2  # each ellipsoid: one object through its sections
    assert all(np.unique(s).size - 1 in (0, 2) for s in labels)
    # two separate profiles that both lie under one profile of the next section: only one joins it
    stack = np.zeros((2, 20, 40), np.uint32)
    stack[0, 5:15, 2:12], stack[0, 5:15, 22:32] = 1, 2
    stack[1, 5:15, 2:32] = 3
    joined = link_sections(stack)
    assert joined[1, 10, 5] == joined[0, 10, 5] != joined[0, 10, 25]
    # a profile covering less than half of the smaller one is not joined
    shifted = np.zeros((2, 20, 40), np.uint32)
    shifted[0, 5:15, 2:12], shifted[1, 5:15, 8:18] = 1, 2
    assert len(np.unique(link_sections(shifted))) == 3
    shifted[1, 5:15, 6:16] = 2  # now 6 of 10 columns overlap
    assert len(np.unique(link_sections(shifted))) == 2


def _blobs(rng, n, shape=(128, 128), r=6):
    """A section of ``n`` disc profiles at random places, ids from 1."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    sec = np.zeros(shape, np.uint32)
    for i, (y, x) in enumerate(rng.integers(r, np.array(shape) - r, size=(n, 2)), start=1):
        sec[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = i
    return sec


def _stack(sections):
    """Per-section ids made unique through the stack."""
    out, top = [], 0
    for sec in sections:
        out.append(np.where(sec > 0, sec + top, 0).astype(np.uint32))
        top = int(out[-1].max())
    return np.stack(out)


def test_separate_images_are_not_linked_serial_sections_are():
    rng = np.random.default_rng(0)
    unrelated = _stack([_blobs(rng, 40) for _ in range(5)])  # five micrographs: profiles overlap only by chance
    assert (link_sections(unrelated) == unrelated).all()
    first = _blobs(rng, 40)
    serial = _stack([np.roll(first, k, axis=1) for k in range(5)])  # each profile moves a pixel a section
    joined = link_sections(serial)
    assert len(np.unique(joined)) - 1 <= 45  # (nearly) every profile continues: about 40 objects, not 200
    # a serial pair between two unrelated ones: only that pair is linked
    mixed = _stack([_blobs(rng, 40), first, np.roll(first, 1, axis=1), _blobs(rng, 40)])
    linked = link_sections(mixed)
    assert len(np.unique(linked[1:3])) - 1 <= 45
    assert not np.isin(linked[0][linked[0] > 0], linked[1]).any()
    assert not np.isin(linked[3][linked[3] > 0], linked[2]).any()
