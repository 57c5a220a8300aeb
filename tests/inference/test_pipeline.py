"""The block pipeline: blending against a float64 reference, batches split over workers, the
kept heap, blocks sized from free memory, in-place activation, the CUDA copy-back."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from napari_emseg.data.normalize import intensity_range, normalize
from napari_emseg.inference import InferenceConfig, budget, heap, predict_tiled
from napari_emseg.inference.blending import window_1d
from napari_emseg.inference.predict import pick_block
from napari_emseg.inference.runner import BlockPredictor
from napari_emseg.inference.tiling import overlap_voxels, tile_grid
from napari_emseg.models.info import ModelInfo
from napari_emseg.progress import drain

from .toys import ConvNet, em_volume

CPU = InferenceConfig(device="cpu", tile=(8, 32, 32), batch=4, auto_block=False)


def run(model, volume, out=None, **changes):
    return drain(predict_tiled(model, volume, out, CPU.replace(**changes)), show=False)


def reference(model, volume, tile, overlap=0.25):
    """Gaussian-blended tiles over the whole volume in float64, tile by tile (no blocks)."""
    lo, hi = intensity_range(volume, model.info.norm)
    x = torch.from_numpy(normalize(volume, lo, hi))
    ov = overlap_voxels(tile, (overlap,) * 3)
    starts = tile_grid(volume.shape, tile, ov)
    acc = np.zeros((model.info.out_channels, *volume.shape))
    wsum = np.zeros(volume.shape)
    for pos in itertools.product(*starts):
        r = tuple(slice(int(s), int(s) + t) for s, t in zip(pos, tile))
        with torch.no_grad():
            y = torch.sigmoid(model(x[r][None, None]))[0].double().numpy()
        wins = [window_1d(t, o, "gaussian", 0.125, s == 0, s + t == n)
                for t, o, s, n in zip(tile, ov, pos, volume.shape)]
        w = np.multiply.outer(np.multiply.outer(wins[0], wins[1]), wins[2]).astype(np.float64)
        acc[(slice(None), *r)] += y * w
        wsum[r] += w
    return acc / wsum


@pytest.mark.parametrize("workers,dtype", [(1, "float16"), (2, "float16"), (2, "uint8")])
def test_output_is_the_float64_blend_within_the_output_types_rounding(workers, dtype):
    vol = em_volume((16, 56, 72), seed=5)
    net = ConvNet(tile=(8, 32, 32))
    got = run(net, vol, workers=workers, dtype=dtype, block=tuple(vol.shape))  # one block: no block seams
    want = reference(net, vol, (8, 32, 32))
    # half a unit in the last place of the output type (float16: 2.4e-4 below 1; uint8: 0.5 / 255),
    # plus float32 sums
    got, tol = (got / 255.0, 0.5 / 255 + 1e-5) if dtype == "uint8" else (got.astype(np.float64), 3e-4)
    assert np.abs(got - want).max() < tol


@pytest.mark.parametrize("dtype", ["float16", "uint8"])
def test_in_memory_output_divided_in_place_equals_the_written_one(tmp_path, dtype):
    """An in-memory CPU output is divided into block by block (strided views of the array); a
    zarr output and a caller's array of another type go through the writer thread: same values."""
    vol = em_volume((20, 60, 76), seed=3)
    net = ConvNet(tile=(8, 32, 32))
    cfg = dict(dtype=dtype, block=(8, 24, 40), workers=2)
    direct = run(net, vol, **cfg)
    assert isinstance(direct, np.ndarray) and direct.dtype == np.dtype(dtype)
    written = np.asarray(run(net, vol, tmp_path / "p.zarr", **cfg)[...])
    np.testing.assert_array_equal(direct, written)
    other = np.zeros((net.info.out_channels, *vol.shape), dtype=np.float64)
    run(net, vol, other, **cfg)
    np.testing.assert_array_equal(direct, other.astype(dtype))


def test_workers_split_a_batch_keeping_two_tiles_a_pass():
    def group(workers, batch, mode="3d", tile=(8, 32, 32)):
        cfg = CPU.replace(workers=workers, batch=batch)
        net = ConvNet(tile=tile) if mode == "3d" else ConvNet(spatial_dims=2, tile=(1, 32, 32))
        return BlockPredictor(net, net.info, cfg, torch.device("cpu"), mode, tile).group(tile)

    assert group(1, 4) == 4 and group(2, 4) == 2 and group(4, 8) == 2
    assert group(3, 2) == 2 and group(2, 1) == 1  # never below 2 (or the batch) a pass
    assert group(2, 16, "slices", (1, 32, 32)) == 8


def test_freed_memory_is_kept_only_while_running(monkeypatch):
    with heap.reuse_freed_memory() as kept:
        with heap.reuse_freed_memory() as inner:
            assert inner == kept
            a = np.ones(20_000_000, np.uint8)  # served from the heap while kept
        assert heap._depth == (1 if kept else 0)
    assert heap._depth == 0 and a.sum() == 20_000_000
    with heap.reuse_freed_memory(enabled=False) as kept:
        assert kept is False
    assert heap.worth_keeping("cpu", 4 * 16 * 128 * 128) and not heap.worth_keeping("cpu", 2 * 16 * 128 * 128)
    assert not heap.worth_keeping("cuda", 4 * 16 * 128 * 128)
    monkeypatch.setenv("NAPARI_EMSEG_REUSE_MEMORY", "0")
    with heap.reuse_freed_memory() as kept:
        assert kept is False


def test_scale_block_gives_growth_the_volume_cannot_take_to_the_other_axes():
    assert budget.scale_block((32, 256, 256), (48, 10_000, 10_000), 8.0) == (48, 591, 591)  # z: 1.5x only
    assert budget.scale_block((32, 256, 256), (10_000,) * 3, 8.0) == (64, 512, 512)
    assert budget.scale_block((32, 256, 256), (10_000,) * 3, 1 / 8) == (16, 128, 128)


def test_blocks_are_sized_from_free_memory(monkeypatch):
    gb = 1 << 30
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    kw = dict(c_out=3, in_bytes=1, out_bytes=2, prefetch=1)
    target, shape = (32, 256, 256), (512, 4096, 4096)
    monkeypatch.setattr(budget, "free_memory", lambda d: (None, 16 * gb))
    assert budget.auto_block(target, shape, cpu, **kw) == target  # roomy CPU: as configured
    monkeypatch.setattr(budget, "free_memory", lambda d: (None, gb // 2))
    small = budget.auto_block(target, shape, cpu, **kw)
    assert np.prod(small) < np.prod(target)  # short RAM: smaller
    monkeypatch.setattr(budget, "free_memory", lambda d: (100 * gb, 100 * gb))
    big = budget.auto_block(target, shape, cuda, **kw)
    assert np.prod(big) == pytest.approx(budget.MAX_GROWTH * np.prod(target), rel=0.02)
    monkeypatch.setattr(budget, "free_memory", lambda d: (gb // 8, 100 * gb))
    assert budget.auto_block(target, shape, cuda, **kw) == target  # never below the configured block


def test_a_resumed_auto_sized_run_keeps_its_blocks(tmp_path, monkeypatch):
    vol = em_volume((16, 96, 96), seed=2)
    net = ConvNet(tile=(8, 32, 32))
    cfg = CPU.replace(auto_block=True, block=(16, 64, 64))
    monkeypatch.setattr(budget, "free_memory", lambda d: (None, 1 << 20))  # 1 MB: tiny blocks
    drain(predict_tiled(net, vol, tmp_path / "p.zarr", cfg), show=False)
    import zarr

    first = tuple(zarr.open_array(str(tmp_path / "p.zarr"), mode="r").attrs["inference"]["block"])
    assert np.prod(first) < 16 * 64 * 64
    monkeypatch.setattr(budget, "free_memory", lambda d: (None, 1 << 40))
    ov = overlap_voxels((8, 32, 32), (0.25,) * 3)
    again = pick_block(str(tmp_path / "p.zarr"), vol.shape, (8, 32, 32), ov, cfg, torch.device("cpu"), 3, vol)
    assert again == first


class Echo(nn.Module):
    """A 2D model that returns its input planes themselves (a view), with a sigmoid to apply."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.info = ModelInfo(target="boundaries", channel_names=("x",), spatial_dims=2,
                              input_multiple=(1, 8, 8), tile=(1, 16, 16))

    def forward(self, x):
        return x


def test_activation_never_runs_in_place_on_the_networks_input():
    vol = em_volume((32, 32, 32), seed=1)
    got = run(Echo(), vol, mode="ortho", tile=(16, 16, 16)).astype(np.float32)
    lo, hi = intensity_range(vol, Echo().info.norm)
    want = torch.sigmoid(torch.from_numpy(normalize(vol, lo, hi))).numpy()
    np.testing.assert_allclose(got[0], want, atol=1e-3)  # each plane direction saw the raw input


@pytest.mark.gpu
def test_cuda_blocks_grow_with_free_memory_and_copy_back_through_pinned_memory():
    from napari_emseg.inference.predict import to_host

    p = torch.rand((3, 8, 64, 64), device="cuda").half()
    np.testing.assert_array_equal(to_host(p), p.cpu().numpy())
    vol = em_volume((24, 96, 128), seed=4)
    cfg = InferenceConfig(tile=(8, 32, 32), block=(8, 32, 32), precision="fp32")
    a = drain(predict_tiled(ConvNet(tile=(8, 32, 32)), vol, None, cfg.replace(device="cuda")), show=False)
    b = drain(predict_tiled(ConvNet(tile=(8, 32, 32)), vol, None, cfg.replace(device="cpu")), show=False)
    assert np.abs(a.astype(np.float32) - b.astype(np.float32)).max() < 2e-3
    block = budget.auto_block((8, 32, 32), (512, 4096, 4096), torch.device("cuda"), c_out=3, in_bytes=1,
                              out_bytes=2, prefetch=1)
    assert np.prod(block) > 8 * 32 * 32
