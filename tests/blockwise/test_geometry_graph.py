"""Block grid geometry, and the global agglomeration against waterz itself."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from napari_emseg.blockwise.geometry import block_grid, face_pairs, grid_shape
from napari_emseg.blockwise.graph import mean_affinity_agglomeration
from napari_emseg.blockwise.neurons import edge_statistics
from napari_emseg.evaluation import adapted_rand
from napari_emseg.postprocess.agglomerate import waterz_agglomerate


def test_cores_tile_the_volume_and_halos_stay_inside():
    shape, blocks, halo = (10, 37, 50), (4, 16, 16), (2, 5, 5)
    boxes = block_grid(shape, blocks, halo)
    assert grid_shape(shape, blocks) == (3, 3, 4) and len(boxes) == 36
    count = np.zeros(shape, np.int32)
    for b in boxes:
        count[b.core] += 1
        assert all(0 <= e0 <= s0 and s1 <= e1 <= n for e0, s0, s1, e1, n in
                   zip(b.ext_start, b.start, b.stop, b.ext_stop, shape))
        assert all(s0 - e0 == min(h, s0) for s0, e0, h in zip(b.start, b.ext_start, halo))
        ext = np.zeros(shape, bool)
        ext[b.ext] = True
        assert ext[b.core].all() and ext[b.ext][b.inner].all()
    assert (count == 1).all()
    pairs = list(face_pairs(boxes, grid_shape(shape, blocks)))
    assert len(pairs) == 2 * 3 * 4 + 3 * 2 * 4 + 3 * 3 * 3  # faces along z, y, x
    first = boxes[0]
    assert first.halo_slab(0, -1) is None and first.halo_slab(2, 1) == (slice(0, 4), slice(0, 16), slice(16, 21))


def _partition(n, pairs):
    g = sparse.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(g, directed=False)[1]


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
def test_mean_affinity_agglomeration_matches_waterz(threshold):
    rng = np.random.default_rng(0)
    shape = (6, 40, 40)
    seeds = np.zeros(shape, np.int32)
    pts = rng.integers(0, shape, size=(60, 3))
    seeds[tuple(pts.T)] = np.arange(1, 61)
    _, idx = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    frags = seeds[tuple(idx)].astype(np.uint64)
    affs = rng.random((3, *shape)).astype(np.float32)  # continuous: no ties in the merge order
    *_, (_, seg, _, _) = waterz_agglomerate(affs, frags, [threshold])
    u, v, s, c = edge_statistics(frags.astype(np.int64), affs, np.zeros(shape, bool))
    pairs, scores = mean_affinity_agglomeration(61, u, v, s, c, threshold)
    assert np.all(scores < threshold)
    ours = _partition(61, pairs)[frags.astype(np.int64)]
    assert len(np.unique(ours)) == len(np.unique(seg)) < 60
    assert adapted_rand(ours, seg.astype(np.int64)).error == 0.0
