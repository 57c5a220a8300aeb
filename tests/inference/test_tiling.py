"""Tiling geometry and blending weights (pure numpy): coverage, padding, efficiency."""

from __future__ import annotations

import numpy as np
import pytest

from napari_emseg.inference.blending import axis_windows, outer, weight_sum_1d, window_1d
from napari_emseg.inference.tiling import (
    block_tile_starts,
    choose_block,
    overlap_voxels,
    plan_blocks,
    round_tile,
    tile_grid,
    tile_starts,
)


def test_round_tile_to_multiples_and_volume():
    assert round_tile((16, 130, 100), (1, 16, 16)) == (16, 128, 96)
    assert round_tile((16, 8, 128), (4, 16, 16)) == (16, 16, 128)  # at least one multiple
    # a volume thinner than the tile shrinks it (to the volume rounded up to the multiple)
    assert round_tile((16, 128, 128), (4, 16, 16), shape=(5, 40, 500)) == (8, 48, 128)


def test_tile_starts_snap_last_tile_to_the_end():
    assert tile_starts(100, 32, 24).tolist() == [0, 24, 48, 68]
    assert tile_starts(32, 32, 24).tolist() == [0]
    with pytest.raises(ValueError):
        tile_starts(10, 32, 24)
    assert overlap_voxels((16, 128, 128), (0.25, 0.25, 0.5)) == (4, 32, 64)  # stride int(t * (1 - f))


@pytest.mark.parametrize("mode", ["gaussian", "linear", "constant"])
def test_windows_are_positive_and_flat_at_volume_edges(mode):
    w = window_1d(32, 8, mode)
    assert w.shape == (32,) and (w > 0).all() and 0.99 <= w.max() <= 1.0
    np.testing.assert_allclose(w, w[::-1])
    before = window_1d(32, 8, mode, flat_before=True)
    assert (before[:16] == w.max()).all() and np.array_equal(before[16:], w[16:])
    after = window_1d(32, 8, mode, flat_after=True)
    assert (after[16:] == w.max()).all()
    assert (window_1d(16, 0, mode) == 1).all()  # no overlap, no blending


def _coverage_case(rng):
    shape = tuple(int(rng.integers(1, 90)) for _ in range(3))
    mult = tuple(int(rng.choice([1, 2, 4, 8])) for _ in range(3))
    tile = round_tile([int(rng.integers(1, 48)) for _ in range(3)], mult, shape)
    frac = [float(rng.choice([0.0, 0.1, 0.25, 0.5, 0.7])) for _ in range(3)]
    ov = overlap_voxels(tile, frac)
    target = [int(rng.integers(1, 100)) for _ in range(3)]
    chunks = [int(rng.integers(1, 40)) for _ in range(3)] if rng.random() < 0.3 else None
    return shape, tile, ov, choose_block(shape, tile, ov, target, chunks)


def test_any_shapes_cover_every_voxel_exactly_once_with_positive_weight():
    """Property test over random volumes, tiles, overlaps, multiples and blocks."""
    rng = np.random.default_rng(1234)
    for _ in range(300):
        shape, tile, ov, block = _coverage_case(rng)
        written = np.zeros(shape, np.int32)
        for b in plan_blocks(shape, tile, ov, block):
            written[b.out_slices] += 1
            assert all(s >= t for s, t in zip(b.shape, tile)), (shape, tile, b)
            assert all(r0 <= o0 and o1 <= r1 for o0, o1, r0, r1 in
                       zip(b.out_start, b.out_stop, b.read_start, b.read_stop))
            starts = block_tile_starts(b.shape, b.crop, tile, ov)
            for n, st, t, o, c, bb, ba in zip(b.shape, starts, tile, ov, b.crop, b.border_before, b.border_after):
                wins = axis_windows(n, st, t, o, "gaussian", 0.125, bb, ba)
                wsum = weight_sum_1d(n, st, wins)
                assert (wsum[c] > 0).all(), (shape, tile, ov, block, b)
        assert (written == 1).all(), (shape, tile, ov, block)


def test_blocking_costs_no_more_tiles_than_one_sliding_window():
    shape, tile, ov = (64, 1024, 1024), (16, 128, 128), overlap_voxels((16, 128, 128), (0.25,) * 3)
    whole = np.prod([len(s) for s in tile_grid(shape, tile, ov)])  # MONAI's count
    block = choose_block(shape, tile, ov, (32, 256, 256))
    blocks = plan_blocks(shape, tile, ov, block)
    assert len(blocks) > 8
    tiles = sum(np.prod([len(s) for s in block_tile_starts(b.shape, b.crop, tile, ov)]) for b in blocks)
    assert tiles <= 1.1 * whole, (tiles, whole)


def test_volume_smaller_than_tile_is_reflect_padded():
    (b,) = plan_blocks((3, 20, 50), (4, 24, 32), (0, 8, 8), (4, 24, 64))
    assert b.read_start == (0, 0, 0) and b.read_stop == (3, 20, 50)
    assert b.pad_before == (0, 2, 0) and b.pad_after == (1, 2, 0)
    assert b.shape == (4, 24, 50)
    assert b.crop == (slice(0, 3), slice(2, 22), slice(0, 50))


def test_separable_weight_sum_equals_sum_of_3d_weights():
    shape, tile, ov = (20, 40, 30), (8, 16, 16), (2, 4, 6)
    starts = tile_grid(shape, tile, ov)
    wins = [axis_windows(n, s, t, o, "gaussian", 0.125, True, True) for n, s, t, o in zip(shape, starts, tile, ov)]
    dense = np.zeros(shape)
    for iz, z in enumerate(starts[0]):
        for iy, y in enumerate(starts[1]):
            for ix, x in enumerate(starts[2]):
                dense[z : z + 8, y : y + 16, x : x + 16] += outer([wins[0][iz], wins[1][iy], wins[2][ix]])
    sums = [weight_sum_1d(n, s, w) for n, s, w in zip(shape, starts, wins)]
    np.testing.assert_allclose(dense, outer(sums), rtol=1e-6)
