"""Patch sampling: checks before training, lazy reads, equal dataset draws, reproducible streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_emseg._finite import NonFiniteError
from napari_emseg.data.sampler import (
    DataError,
    PatchBatches,
    SamplerConfig,
    make_loader,
    open_sources,
)
from napari_emseg.io import VolumeError, write_volume


@pytest.fixture
def volumes(tmp_path, tiny_em):
    a = tmp_path / "a.npy"
    np.save(a, tiny_em.raw)
    b = tmp_path / "b.zarr"
    write_volume(b, tiny_em.raw[:, :64, :80], voxel_size=tiny_em.voxel_size)
    return [str(a), str(b)]


CFG = SamplerConfig(patch=(4, 32, 32), batch_size=2)


def test_sources_hold_shape_range_and_voxel_size(volumes, tiny_em):
    a, b = open_sources(volumes, CFG)
    assert a.shape == (12, 96, 96) and b.shape == (12, 64, 80)
    assert b.voxel_size == tuple(tiny_em.voxel_size)
    lo, hi = np.percentile(tiny_em.raw, (0.5, 99.5))
    assert a.lo == pytest.approx(lo, abs=1) and a.hi == pytest.approx(hi, abs=1)
    p = a.read(np.random.default_rng(0), CFG.patch)
    assert p.shape == (4, 32, 32) and p.dtype == np.float32
    assert -1.6 < p.min() and p.max() < 1.6


def test_batches_are_reproducible_and_independent_of_workers(volumes):
    stream = PatchBatches(open_sources(volumes, CFG), CFG)
    b5 = stream.batch(5)
    assert b5["image"].shape == (2, 1, 4, 32, 32) and b5["source"].shape == (2,)
    torch.testing.assert_close(stream.batch(5)["image"], b5["image"])
    assert not torch.equal(stream.batch(6)["image"], b5["image"])
    serial = [b["image"] for _, b in zip(range(5), make_loader(stream.starting_at(3), 0))]
    parallel = [b["image"] for _, b in zip(range(5), make_loader(stream.starting_at(3), 2))]
    for s, p, i in zip(serial, parallel, range(3, 8)):
        torch.testing.assert_close(s, p)
        torch.testing.assert_close(s, stream.batch(i)["image"])
    other_rank = PatchBatches(stream.sources, CFG, rank=1)
    assert not torch.equal(other_rank.batch(5)["image"], b5["image"])


def test_each_batch_draws_one_dataset_with_equal_probability(volumes):
    stream = PatchBatches(open_sources(volumes, CFG.replace(batch_size=1)), CFG.replace(batch_size=1))
    picks = [int(stream.batch(i)["source"][0]) for i in range(300)]
    assert 120 < picks.count(0) < 180  # binomial(300, 0.5): 150 +- 3.5 sigma


def test_patches_are_read_lazily(volumes):
    src = open_sources(volumes[:1], CFG)[0]
    shapes = []

    class Spy:
        shape = src.shape

        def __getitem__(self, sl):
            shapes.append(tuple(s.stop - s.start for s in sl))
            return np.zeros([s.stop - s.start for s in sl], np.uint8)

    src._data = Spy()
    PatchBatches([src], CFG).batch(0)
    assert shapes == [(4, 32, 32)] * 2


def test_isotropic_volumes_are_cut_along_every_axis(tmp_path):
    vol = np.random.default_rng(0).integers(0, 255, (40, 24, 48), dtype=np.uint8)
    iso, aniso = tmp_path / "iso.zarr", tmp_path / "aniso.zarr"
    write_volume(iso, vol, voxel_size=(8, 8, 8))
    write_volume(aniso, vol, voxel_size=(40, 8, 8))
    cfg = SamplerConfig(patch=(2, 16, 16), batch_size=1)
    s_iso, s_aniso = open_sources([iso, aniso], cfg)
    assert s_iso.orientations == (0, 1, 2) and s_aniso.orientations == (0,)
    assert open_sources([iso], cfg.replace(reorient_isotropic=False))[0].orientations == (0,)
    shapes = {s_iso.read(np.random.default_rng(i), cfg.patch).shape for i in range(20)}
    assert shapes == {(2, 16, 16)}


def test_bad_volumes_are_refused_with_their_name(tmp_path, volumes):
    missing = tmp_path / "nope.npy"
    with pytest.raises(VolumeError, match="nope.npy"):
        open_sources([volumes[0], missing], CFG)
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((2, 16, 16), np.uint8) + np.arange(16, dtype=np.uint8))
    with pytest.raises(DataError, match="small.npy.*smaller than the patch"):
        open_sources([small], CFG)
    const = tmp_path / "const.npy"
    np.save(const, np.full((8, 64, 64), 7, np.uint8))
    with pytest.raises(DataError, match="const.npy.*constant"):
        open_sources([const], CFG)
    nan = tmp_path / "nan.npy"
    arr = np.random.default_rng(0).random((8, 64, 64)).astype(np.float32)
    arr[3, 10, 10] = np.nan
    np.save(nan, arr)
    with pytest.raises(NonFiniteError, match="nan.npy.*NaN.*first at z=3,y=10,x=10"):
        open_sources([nan], CFG)
    with pytest.raises(DataError, match="no training volumes"):
        open_sources([], CFG)
