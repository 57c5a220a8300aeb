"""npe2 reader and writer without a viewer, and the sample data in a real napari viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_emseg._reader import get_reader
from napari_emseg._writer import write_labels
from napari_emseg.io import open_volume, write_volume


def test_reader_opens_image_and_labels_with_scale(tmp_path):
    write_volume(tmp_path / "v.zarr/raw", np.ones((3, 8, 8), np.uint8), voxel_size=(40, 8, 8))
    write_volume(tmp_path / "v.zarr/seg", np.ones((3, 8, 8), np.uint32), voxel_size=(40, 8, 8))
    reader = get_reader(f"{tmp_path}/v.zarr:raw")
    assert reader is not None
    [(data, meta, kind)] = reader(f"{tmp_path}/v.zarr:raw")
    assert kind == "image" and meta["scale"] == (40, 8, 8) and data.shape == (3, 8, 8)
    [(_, _, kind)] = reader(f"{tmp_path}/v.zarr:seg")
    assert kind == "labels"
    assert get_reader(str(tmp_path / "notes.txt")) is None


def test_writer_round_trip(tmp_path):
    labels = np.random.default_rng(0).integers(0, 5, (4, 16, 16)).astype(np.uint32)
    [path] = write_labels(str(tmp_path / "lab"), labels, {"scale": (40.0, 8.0, 8.0), "name": "x"})
    assert path.endswith(".zarr")
    vol = open_volume(path)
    np.testing.assert_array_equal(vol.data.compute(), labels)
    assert vol.voxel_size == (40, 8, 8)


@pytest.mark.qt
def test_sample_data_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-emseg", "synthetic_em")
    names = [layer.name for layer in viewer.layers]
    assert names == ["synthetic EM", "neurons (ground truth)", "mitochondria (ground truth)"]
    assert tuple(viewer.layers[0].scale) == (40.0, 8.0, 8.0)
    assert viewer.layers[2].data.max() > 0
    assert len(layers) == 3


@pytest.mark.qt
def test_reader_in_viewer(make_napari_viewer, tmp_path):
    write_volume(tmp_path / "r.zarr", np.full((2, 8, 8), 7, np.uint8), voxel_size=(30, 4, 4))
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "r.zarr"), plugin="napari-emseg")
    assert tuple(viewer.layers[0].scale) == (30.0, 4.0, 4.0)
