"""Shared fixtures: an in-process dask cluster, the synthetic sample and maps from its ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from tests.postprocess.conftest import gt_affinities, gt_bcd


@pytest.fixture(scope="session")
def client():
    """Two thread workers in this process: quick to start, enough to run blocks concurrently."""
    from napari_emseg.blockwise import dask_client

    with dask_client(None, 2, processes=False) as c:
        yield c


@pytest.fixture(scope="session")
def em():
    from napari_emseg.data.synthetic import make_synthetic_em

    return make_synthetic_em((16, 160, 160), seed=5)


def write_map(path, arr: np.ndarray, target: str, voxel_size) -> str:
    """A prediction-like zarr array with the attributes tiled inference writes."""
    a = zarr.create_array(store=str(path), shape=arr.shape, dtype=arr.dtype,
                          chunks=(arr.shape[0], 8, 64, 64), zarr_format=2)
    a[:] = arr
    a.attrs.update({"target": target, "resolution": list(voxel_size)})
    return str(path)


@pytest.fixture(scope="session")
def maps(em, tmp_path_factory):
    """BCD (uint8, as inference writes it) and noisy affinity maps derived from the ground truth."""
    root = tmp_path_factory.mktemp("maps")
    bcd = np.round(gt_bcd(em.mitochondria) * 255).astype(np.uint8)
    return {
        "bcd": write_map(root / "bcd.zarr", bcd, "bcd", em.voxel_size),
        "affinities": write_map(root / "affs.zarr", gt_affinities(em.neurons, noise=0.1, seed=1),
                                "affinities", em.voxel_size),
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_bcd_checkpoint):
    """A tiny random BCD checkpoint and a synthetic ``raw.zarr`` for the CLI runs: ``(root, ckpt)``."""
    from napari_emseg.data.synthetic import make_synthetic_em
    from napari_emseg.io import write_volume

    root = tmp_path_factory.mktemp("cli")
    ckpt = tiny_bcd_checkpoint(root / "bcd.safetensors", seed=0)
    em = make_synthetic_em((12, 96, 96), seed=2)
    write_volume(root / "raw.zarr", em.raw, voxel_size=em.voxel_size)
    return root, ckpt
