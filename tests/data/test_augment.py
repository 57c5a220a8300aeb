"""EM augmentations: one random draw for image and labels alike, each op does what it says."""

from __future__ import annotations

import numpy as np
import pytest

from napari_emseg.data.augment import (
    AugmentConfig,
    augment,
    block_mask,
    cutout,
    missing_sections,
    random_geometry,
    random_intensity,
    splice,
)


@pytest.fixture
def volume():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(4, 32, 32)).astype(np.float32)
    labels = (np.arange(4 * 32 * 32).reshape(4, 32, 32) // 64).astype(np.uint32)
    return img, labels


def test_identity_when_everything_is_off(volume):
    img, lab = volume
    off = AugmentConfig(flip=0.0, rotate90=0.0)
    out, (lab2,) = augment(img, [lab], np.random.default_rng(0), off)
    np.testing.assert_array_equal(out, img)
    np.testing.assert_array_equal(lab2, lab)


def test_flip_rotate_apply_the_same_transform_to_all_arrays(volume):
    img, lab = volume
    # labels encode position, so the image built from them must follow them exactly
    as_img = lab.astype(np.float32)
    cfg = AugmentConfig(flip=0.5, rotate90=0.5, flip_z=0.5)
    for seed in range(8):
        a, b = random_geometry([as_img, lab], np.random.default_rng(seed), cfg)
        np.testing.assert_array_equal(a, b.astype(np.float32))
        assert sorted(np.unique(b)) == sorted(np.unique(lab))  # a permutation of voxels


@pytest.mark.parametrize("op", ["affine", "elastic", "misalign"])
def test_interpolating_geometry_keeps_labels_integer_and_aligned(volume, op):
    img, lab = volume
    cfg = AugmentConfig(flip=0.0, rotate90=0.0, **{op: 1.0}, elastic_magnitude=(2.0, 3.0), misalign_max=4)
    a, b = random_geometry([lab.astype(np.float32), lab], np.random.default_rng(1), cfg)
    assert b.dtype == np.uint32 and a.dtype == np.float32
    assert set(np.unique(b)) <= set(np.unique(lab))
    assert not np.array_equal(b, lab)  # something moved
    # nearest-neighbour labels agree with the linearly resampled image almost everywhere
    assert np.mean(np.abs(a - b) < 1.0) > 0.8


def test_same_seed_same_result(volume):
    img, lab = volume
    cfg = AugmentConfig(elastic=1.0, noise=1.0, blur=1.0, gamma=1.0, cutout=1.0)
    r1 = augment(img, [lab], np.random.default_rng(5), cfg)
    r2 = augment(img, [lab], np.random.default_rng(5), cfg)
    np.testing.assert_array_equal(r1[0], r2[0])
    np.testing.assert_array_equal(r1[1][0], r2[1][0])


def test_intensity_ops_change_the_image_as_expected(volume):
    img, _ = volume
    rng = np.random.default_rng(0)
    bright = random_intensity(img, rng, AugmentConfig(brightness=1.0, brightness_range=0.5))
    shift = bright - img
    assert np.allclose(shift, shift.flat[0]) and abs(shift.flat[0]) > 0
    contrast = random_intensity(img, rng, AugmentConfig(contrast=1.0, contrast_range=0.5))
    assert not np.isclose(contrast.std(), img.std())
    blurred = random_intensity(img, rng, AugmentConfig(blur=1.0, blur_sigma=(1.5, 1.5)))
    assert blurred.std() < 0.7 * img.std()
    noisy = random_intensity(img, rng, AugmentConfig(noise=1.0, noise_std=(0.5, 0.5)))
    assert 0.4 < (noisy - img).std() < 0.6
    gamma = random_intensity(img, rng, AugmentConfig(gamma=1.0, gamma_range=(2.0, 2.0)))
    assert gamma.min() == pytest.approx(img.min(), abs=1e-4) and gamma.max() == pytest.approx(img.max(), abs=1e-4)
    assert gamma.mean() < img.mean()  # gamma > 1 darkens mid-tones


def test_defects_and_masks(volume):
    img, _ = volume
    rng = np.random.default_rng(2)
    miss = missing_sections(img, rng, max_missing=2)
    flat = [z for z in range(img.shape[0]) if miss[z].std() == 0]
    assert 1 <= len(flat) <= 2
    cut = cutout(img, rng, count=(3, 3), size=(4, 4), fill=0.0)
    assert 0 < (cut == 0).sum() <= 3 * 16 * img.shape[0]
    assert np.all((cut == 0) | (cut == img))
    blk = block_mask(img, rng, fraction=(0.5, 0.5), fill=7.0)
    assert (blk == 7.0).sum() == 2 * 16 * 16
    sp = splice(img, rng, fraction=(0.5, 0.5))
    assert sp.shape == img.shape and not np.array_equal(sp, img)
