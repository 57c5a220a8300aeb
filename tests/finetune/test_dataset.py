"""Training patches: planes cut across the painted slices for 2D networks on near-isotropic data."""

import numpy as np
import pytest

from napari_emseg.finetune.annotations import find_annotations
from napari_emseg.finetune.dataset import CROSS_WEIGHT_CAP, AnnotatedPatches
from napari_emseg.finetune.recipe import crop_context


def _painted_volume():
    z, y, x = np.meshgrid(np.arange(40), np.arange(64), np.arange(64), indexing="ij")
    image = (z * 10000 + y * 100 + x).astype(np.float32)  # each voxel says where it is
    labels = np.zeros((40, 64, 64), np.int64)
    for s in (12, 25):
        labels[s, 10:30, 20:40] = 1
        labels[s, 40:52, 5:17] = 2
    return image, labels


@pytest.mark.parametrize("kind, mode", [("bcd", "dense"), ("semantic", "dense"), ("bcd", "scribbles")])
def test_cross_planes_carry_the_painted_slices_targets_along_their_rows(kind, mode):
    image, labels = _painted_volume()
    if mode == "scribbles":  # a painted region of each slice: background label 1, objects 2 and 3
        labels = np.where(labels > 0, labels + 1, 0)
        labels[[12, 25], 5:35, 15:45] = np.where(labels[[12, 25], 5:35, 15:45] > 0, labels[[12, 25], 5:35, 15:45], 1)
    ann = find_annotations(labels, image.shape, mode=mode, context=(20, 16, 16))
    z0, y0, x0 = (b.start for b in ann.box)
    data = AnnotatedPatches(image[ann.box], ann, kind, (1, 32, 32), batch_size=2, seed=0, spatial_dims=2,
                            permute_planes=True)
    full = data.targets(ann.labels, ann.mask)  # the painted slices' own targets, in their plane
    planes, labelled = {"xz": 0, "yz": 0}, 0
    for step in range(60):
        rng = np.random.default_rng(step)
        s = data.cross_sample(rng, data.centres[rng.integers(len(data.centres))])
        assert s["image"].shape == (1, 32, 32) and s["target"].shape == s["mask"].shape
        where = s["image"][0].astype(np.int64)
        zz, yy, xx = where // 10000 - z0, where // 100 % 100 - y0, where % 100 - x0  # in the crop
        along = "xz" if (yy == yy[0, 0]).all() else "yz"  # one y: an xz plane; else one x
        assert along == "xz" or (xx == xx[0, 0]).all()
        planes[along] += 1
        assert (np.diff(zz, axis=1) == 0).all()  # rows are z
        m = s["mask"][0] > 0
        assert np.isin(zz[m] + z0, [12, 25]).all()  # labelled only where the plane crosses a painted slice
        assert ann.mask[zz[m], yy[m], xx[m]].all()  # ... and only where that slice is painted
        assert np.allclose(s["target"][:, m], full.target[:, zz[m], yy[m], xx[m]])
        labelled += m.any()
        if m.any():  # the few rows weigh as much as one painted patch, capped per voxel
            assert np.isclose(s["mask"][0].sum(), min(CROSS_WEIGHT_CAP * m.sum(), 32 * 32))
    assert planes["xz"] > 10 and planes["yz"] > 10 and labelled > 30


def test_a_third_of_the_batches_are_cross_planes_and_only_with_permute_planes():
    image, labels = _painted_volume()
    ann = find_annotations(labels, image.shape, context=(20, 16, 16))
    kw = dict(batch_size=60, seed=0, spatial_dims=2)
    across = AnnotatedPatches(image, ann, "bcd", (1, 32, 32), permute_planes=True, **kw).batch(0)["image"]
    flat = AnnotatedPatches(image, ann, "bcd", (1, 32, 32), permute_planes=False, **kw).batch(0)["image"]
    # (zero padding where a patch leaves the volume is no slice)
    one_z = lambda b: [len(np.unique(p[0].numpy()[p[0].numpy() > 0].astype(np.int64) // 10000)) == 1 for p in b]  # noqa: E731
    assert all(one_z(flat))
    assert 10 <= one_z(across).count(False) <= 30


def test_cross_planes_get_z_context_within_a_memory_cap():
    box = (slice(10, 13), slice(0, 100), slice(0, 100))
    assert crop_context((1, 192, 192), cross=False, box=box, shape=(64, 100, 100)) == (0, 96, 96)
    assert crop_context((1, 192, 192), cross=True, box=box, shape=(64, 100, 100)) == (96, 96, 96)
    big = (slice(0, 3), slice(0, 20000), slice(0, 20000))  # 20k x 20k planes: no room for context
    assert crop_context((1, 192, 192), cross=True, box=big, shape=(500, 20000, 20000))[0] == 0


def test_permute_planes_follows_the_training_grid():
    from types import SimpleNamespace

    from napari_emseg.finetune.recipe import permute_planes

    cfg, volume, sections = SimpleNamespace(permute_planes="auto"), SimpleNamespace(kind="volume"), SimpleNamespace(kind="sections")
    flat = (1, 192, 192)
    assert permute_planes(cfg, (8.0, 8.0, 8.0), volume, flat)
    assert permute_planes(cfg, (8.0, 9.9, 9.9), volume, flat)  # a working grid 1.24x coarser in y and x
    assert not permute_planes(cfg, (40.0, 8.0, 8.0), sections, flat)
    assert permute_planes(cfg, None, volume, flat)  # voxel size unknown: the layout says volume
    assert permute_planes(cfg, None, volume, flat, zoom=(1.0, 0.8, 0.8))
    assert not permute_planes(cfg, None, volume, flat, zoom=(1.0, 0.5, 0.5))  # shrunk 2x in y and x only
    assert not permute_planes(cfg, None, sections, flat)
    assert permute_planes(SimpleNamespace(permute_planes="on"), (40.0, 8.0, 8.0), sections, flat)
