"""Issue 16, "open whatever napari-emseg wrote": the napari reader opens ``seg.zarr`` (all its
arrays), ``seg.zarr/labels``, ``seg.zarr:labels``, OME-Zarr pyramids and folders of slices."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_emseg._reader import get_reader
from napari_emseg.cli.main import main
from napari_emseg.io import write_volume

VS = (40.0, 8.0, 8.0)
SEG = ["--tile", "8,32,32", "--block", "8,64,64", "--device", "cpu", "--dtype", "uint8",
       *(f"--post={kv}" for kv in ("seed_foreground=0.55", "seed_contour=0.6", "seed_distance=0.45",
                                   "foreground_threshold=0.45", "min_seed_size=1", "min_size=0"))]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """``segment`` written once as plain zarr and once as OME-Zarr."""
    from napari_emseg.data.synthetic import make_synthetic_em
    from napari_emseg.models import ModelConfig, build_model, head_info, save_checkpoint

    d = tmp_path_factory.mktemp("read")
    net = build_model(ModelConfig(arch="resunet", widths=(4, 8), subunits=1), head_info("bcd", tile=(8, 32, 32)))
    save_checkpoint(d / "mito.safetensors", net)
    write_volume(d / "raw.zarr", make_synthetic_em((8, 100, 100), seed=2).raw, voxel_size=VS)
    for out in ("seg.zarr", "seg.ome.zarr"):
        assert main(["-q", "segment", "--image", str(d / "raw.zarr"), "--model", str(d / "mito.safetensors"),
                     "--out", str(d / out), *SEG]) == 0
    return d


def _read(path):
    reader = get_reader(str(path))
    assert reader is not None, path
    return reader(str(path))


def test_container_opens_every_array(outputs):
    seg = outputs / "seg.zarr"
    layers = _read(seg)
    assert [kind for _, _, kind in layers] == ["image", "labels"]  # labels drawn on top
    (maps, mmeta, _), (labels, lmeta, _) = layers
    pred = zarr.open_array(str(seg / "predictions"), mode="r")
    assert mmeta["channel_axis"] == 0 and not mmeta["multiscale"]
    assert mmeta["name"] == ["seg/predictions foreground", "seg/predictions contour", "seg/predictions distance"]
    assert tuple(mmeta["scale"]) == VS and mmeta["contrast_limits"] == [[0.0, 255.0]] * 3  # uint8, scale 255
    np.testing.assert_array_equal(np.asarray(maps), pred[:])
    assert lmeta["name"] == "seg/labels" and tuple(lmeta["scale"]) == VS
    np.testing.assert_array_equal(np.asarray(labels), zarr.open_array(str(seg / "labels"), mode="r")[:])
    assert np.asarray(labels).max() > 0


@pytest.mark.parametrize("form", ["{}/seg.zarr/labels", "{}/seg.zarr:labels"])
def test_one_array_by_path_or_colon(outputs, form):
    [(data, meta, kind)] = _read(form.format(outputs))
    assert kind == "labels" and tuple(meta["scale"]) == VS and data.shape == (8, 100, 100)
    [(_, meta, kind)] = _read(form.format(outputs).replace("labels", "predictions"))
    assert kind == "image" and meta["channel_axis"] == 0 and len(meta["name"]) == 3


def test_ome_zarr_opens_as_multiscale_layers(outputs):
    layers = _read(outputs / "seg.ome.zarr")
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    (maps, mmeta, _), (labels, lmeta, _) = layers
    assert mmeta["multiscale"] and mmeta["channel_axis"] == 0 and tuple(mmeta["scale"]) == VS
    assert [lv.shape for lv in maps] == [(3, 8, 100, 100), (3, 8, 50, 50)]
    assert lmeta["multiscale"] and tuple(lmeta["scale"]) == VS and lmeta["name"] == "seg/labels"
    assert [lv.shape for lv in labels] == [(8, 100, 100), (8, 50, 50)]
    assert all(hasattr(lv, "dask") for lv in labels)  # lazy: nothing read yet
    plain = zarr.open_array(str(outputs / "seg.zarr/labels"), mode="r")[:]
    np.testing.assert_array_equal(labels[0].compute(), plain)
    for form in ("{}/seg.ome.zarr/labels", "{}/seg.ome.zarr:labels"):
        [(data, meta, kind)] = _read(form.format(outputs))
        assert kind == "labels" and meta["multiscale"] and len(data) == 2


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_folder_of_slices(tmp_path, suffix):
    import imageio.v3 as iio
    import tifffile

    stack = np.random.default_rng(0).integers(0, 255, (4, 20, 30)).astype(np.uint8)
    (tmp_path / "slices").mkdir()
    for i, img in enumerate(stack):
        path = tmp_path / "slices" / f"s{i}{suffix}"
        tifffile.imwrite(path, img) if suffix == ".tif" else iio.imwrite(path, img)
    [(data, meta, kind)] = _read(tmp_path / "slices")
    assert kind == "image" and meta["name"] == "slices"
    np.testing.assert_array_equal(np.asarray(data), stack)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    assert get_reader(str(tmp_path / "notes")) is None


def test_small_labels_napari_emseg_wrote_open_as_labels(tmp_path):
    from napari_emseg._writer import write_labels
    from napari_emseg.workflows import write_labels as write_labels_file

    [path] = write_labels(str(tmp_path / "edit"), np.ones((2, 8, 8), np.uint16), {"scale": VS})
    [(_, _, kind)] = _read(path)
    assert kind == "labels"
    # segment --labels-format tif: 16-bit TIFF labels beside the maps, opened with the container
    write_volume(tmp_path / "seg.zarr/predictions", np.zeros((2, 2, 8, 8), np.uint8), voxel_size=VS)
    write_labels_file(tmp_path / "seg.zarr/labels.tif", np.full((2, 8, 8), 3, np.uint32), VS, {"target": "bcd"})
    layers = _read(tmp_path / "seg.zarr")
    assert [(meta["name"], kind) for _, meta, kind in layers][-1] == ("seg/labels", "labels")
    assert tuple(layers[-1][1]["scale"]) == VS and int(np.asarray(layers[-1][0]).max()) == 3
    [(_, _, kind)] = _read(tmp_path / "seg.zarr/labels.tif")
    assert kind == "labels"
    write_volume(tmp_path / "img.zarr", np.ones((2, 8, 8), np.uint16))
    [(_, _, kind)] = _read(tmp_path / "img.zarr")
    assert kind == "image"  # a 16-bit image from elsewhere stays an image


def test_manifest_offers_the_reader_for_every_output(outputs):
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    for path in ("seg.zarr", "seg.zarr/labels", "seg.zarr:labels", "seg.ome.zarr", "seg.ome.zarr/labels"):
        readers = [r.command for r in pm.iter_compatible_readers([str(outputs / path)])]
        assert "napari-emseg.get_reader" in readers, path


@pytest.mark.qt
def test_outputs_in_viewer(make_napari_viewer, outputs):
    viewer = make_napari_viewer()
    viewer.open(str(outputs / "seg.ome.zarr"), plugin="napari-emseg")
    assert [type(layer).__name__ for layer in viewer.layers] == ["Image", "Image", "Image", "Labels"]
    labels = viewer.layers[-1]
    assert labels.multiscale and tuple(labels.scale) == VS and len(labels.data) == 2
    viewer.open(str(outputs / "seg.zarr/labels"), plugin="napari-emseg")
    assert type(viewer.layers[-1]).__name__ == "Labels" and tuple(viewer.layers[-1].scale) == VS
    # napari checks that a path exists before any reader sees it: "seg.zarr:labels" is for the CLI
    # and napari_emseg.io; in napari, the folder form above names one array
    viewer.open(str(outputs / "seg.zarr"), plugin="napari-emseg")
    assert len(viewer.layers) == 5 + 4
