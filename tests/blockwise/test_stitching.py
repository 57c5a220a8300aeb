"""Blockwise labels agree with the single-block (in-memory) result on the synthetic sample."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_emseg.blockwise import BlockwiseConfig, instances_blockwise_job
from napari_emseg.errors import EmsegError
from napari_emseg.evaluation import adapted_rand
from napari_emseg.io import open_volume
from napari_emseg.postprocess import MitoConfig, NeuronConfig, extract_instances
from napari_emseg.progress import drain

CASES = {"bcd": MitoConfig(), "affinities": NeuronConfig()}


def run(path, out, cfg, blockwise, client, **kw):
    return zarr.open_array(drain(instances_blockwise_job(path, out, cfg, blockwise, scheduler=client, **kw),
                                 show=False), mode="r")


@pytest.mark.parametrize("target", ["bcd", "affinities"])
def test_many_blocks_match_the_single_block_result(target, maps, em, client, tmp_path):
    cfg = CASES[target]
    single = extract_instances(zarr.open_array(maps[target], mode="r"), target, cfg, voxel_size=em.voxel_size)
    # 2 x 4 x 5 = 40 blocks whose faces cut through many objects
    labels = run(maps[target], tmp_path / "seg.zarr/labels", cfg,
                 BlockwiseConfig(blocks=(8, 40, 32), halo=(4, 16, 16)), client)
    blockwise = labels[:]
    gt = em.mitochondria if target == "bcd" else em.neurons
    assert single.max() >= (10 if target == "bcd" else 20)
    assert adapted_rand(blockwise, single).error < 0.01
    assert abs(int(blockwise.max()) - int(single.max())) <= 1
    assert adapted_rand(blockwise, gt).error < adapted_rand(single, gt).error + 0.01
    # what the non-blockwise path writes, plus the blockwise record
    attrs = dict(labels.attrs)
    assert attrs["target"] == target and attrs["n_objects"] == int(blockwise.max())
    assert attrs["postprocess"] == cfg.to_dict() and attrs["complete"] is True
    ids = np.unique(blockwise)
    assert labels.dtype == np.uint32 and np.array_equal(ids[ids > 0], np.arange(1, blockwise.max() + 1))
    vol = open_volume(f"{tmp_path}/seg.zarr:labels")
    assert vol.voxel_size == em.voxel_size
    assert not (tmp_path / "seg.zarr" / ".labels.blockwise").exists()  # scratch removed once complete


@pytest.mark.parametrize("target", ["bcd", "affinities"])
def test_one_block_is_the_in_memory_path(target, maps, em, client, tmp_path):
    cfg = CASES[target]
    single = extract_instances(zarr.open_array(maps[target], mode="r"), target, cfg, voxel_size=em.voxel_size)
    one = run(maps[target], tmp_path / "one.zarr/labels", cfg, BlockwiseConfig(blocks=(64, 256, 256)), client)[:]
    assert one.max() == single.max()
    assert adapted_rand(one, single).error == 0.0 and adapted_rand(single, one).error == 0.0


def test_without_halo_mitochondria_are_cut_at_faces(maps, client, tmp_path):
    """The halo is what stitching compares: without it objects split at block faces."""
    cfg = MitoConfig(min_size=0)
    single = extract_instances(zarr.open_array(maps["bcd"], mode="r"), "bcd", cfg)
    cut = run(maps["bcd"], tmp_path / "a.zarr/labels", cfg, BlockwiseConfig(blocks=(8, 40, 32), halo=(0, 0, 0)),
              client)[:]
    assert cut.max() > single.max() and adapted_rand(cut, single).error > 0.05


def test_unsupported_settings_are_explained(maps, client, tmp_path):
    with pytest.raises(EmsegError, match="merge_function"):
        run(maps["affinities"], tmp_path / "n.zarr/labels", NeuronConfig(merge_function="median"),
            BlockwiseConfig(), client)
    with pytest.raises(EmsegError, match="affinities, boundaries, bcd"):
        run(maps["bcd"], tmp_path / "x.zarr/labels", None, BlockwiseConfig(), client, target="features")


def test_separate_images_stay_apart_across_blocks(em, client, tmp_path):
    """Sections turned each its own way (unrelated images) with z-affinities claiming they
    continue: no neuron spans two sections, within a block or across a block's z-face."""
    from tests.blockwise.conftest import write_map
    from tests.postprocess.conftest import gt_affinities

    apart = np.stack([np.rot90(s, z % 4) for z, s in enumerate(em.neurons)])
    affs = gt_affinities(apart, noise=0.05, seed=3)
    affs[0, 1:] = 1.0
    path = write_map(tmp_path / "affs.zarr", affs, "affinities", em.voxel_size)
    labels = run(path, tmp_path / "seg.zarr/labels", NeuronConfig(min_size=0),
                 BlockwiseConfig(blocks=(6, 160, 160), halo=(2, 16, 16)), client)[:]  # z-faces at 6 and 12
    assert not any(np.isin(labels[z][labels[z] > 0], labels[z + 1]).any() for z in range(len(labels) - 1))
    assert np.mean([adapted_rand(labels[z], apart[z]).error for z in range(len(labels))]) < 0.05
