"""Separate micrographs of different sizes in one folder: fine-tuned, segmented and cut back to
each micrograph (the canvas around the smaller ones holds no result)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_emseg.cli.main import main
from napari_emseg.io import open_volume

SIZES = [(96, 80), (64, 96), (80, 64)]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_em):
    """``(images, labels)``: three micrographs cut from different slices of the synthetic sample,
    each a different size, and their mitochondria painted on the first two (the third unpainted)."""
    root = tmp_path_factory.mktemp("micrographs")
    (root / "img").mkdir()
    (root / "lab").mkdir()
    raw, mito = np.asarray(tiny_em.raw), np.asarray(tiny_em.mitochondria)
    for i, (h, w) in enumerate(SIZES):
        z = 2 + 4 * i
        tifffile.imwrite(root / "img" / f"cell_{i}.tif", raw[z, :h, :w])
        painted = mito[z, :h, :w].astype(np.uint32) if i < 2 else np.zeros((h, w), np.uint32)
        tifffile.imwrite(root / "lab" / f"cell_{i}.tif", painted)
    return root / "img", root / "lab"


def outside(z: int, shape: tuple[int, int]) -> np.ndarray:
    h, w = SIZES[z]
    mask = np.ones(shape, bool)
    mask[:h, :w] = False
    return mask


def test_finetune_and_segment_a_folder_of_micrographs_of_different_sizes(folders, tmp_path, capsys):
    images, labels = folders
    model = tmp_path / "mito.safetensors"
    rc = main(["-q", "finetune", "--image", str(images), "--labels", str(labels), "--task", "mitochondria",
               "--encoder", "scratch-unet2d", "--dims", "2d", "--steps", "2", "--patch", "1,32,32",
               "--out", str(model)])
    assert rc == 0, capsys.readouterr().err
    out = tmp_path / "seg.zarr"
    assert main(["-q", "segment", "--image", str(images), "--model", str(model), "--out", str(out),
                 "--device", "cpu"]) == 0, capsys.readouterr().err
    maps = zarr.open_array(str(out / "predictions"), mode="r")
    seg = zarr.open_array(str(out / "labels"), mode="r")
    assert maps.shape[1:] == seg.shape == (3, 96, 96)
    assert [list(e) for e in maps.attrs["extents"]] == [list(s) for s in SIZES]
    for z in range(3):
        h, w = SIZES[z]
        assert not np.asarray(maps[:, z])[:, outside(z, (96, 96))].any()  # nothing where no image was
        assert not np.asarray(seg[z])[outside(z, (96, 96))].any()
        assert np.asarray(maps[:, z, :h, :w]).any()


def test_segment_job_and_reader_keep_the_extents(folders, tiny_bcd_checkpoint, tmp_path):
    from napari_emseg._reader import read_volumes
    from napari_emseg.inference import InferenceConfig
    from napari_emseg.progress import drain
    from napari_emseg.workflows import SegmentConfig, postprocess_job, segment_job

    images, labels = folders
    vol = open_volume(images)
    assert vol.extents == tuple(SIZES)
    model = tiny_bcd_checkpoint(tmp_path / "m.safetensors", seed=0)
    cfg = SegmentConfig(inference=InferenceConfig(device="cpu"))
    seg = drain(segment_job(model, vol, cfg), show=False)
    assert seg.extents == tuple(SIZES)
    relabelled = drain(postprocess_job(seg, cfg.replace(mitochondria=cfg.mitochondria.replace(
        foreground_threshold=0.01))), show=False)  # a threshold that takes nearly everything
    for z in range(3):
        assert not np.asarray(seg.predictions)[:, z][:, outside(z, (96, 96))].any()
        assert not relabelled[z][outside(z, (96, 96))].any()
        h, w = SIZES[z]
        assert relabelled[z, :h, :w].any()
    layers = {meta["name"]: (data, meta, kind) for data, meta, kind in read_volumes([str(images), str(labels)])}
    assert layers["img"][1]["metadata"]["extents"] == [list(s) for s in SIZES]
    data, meta, kind = layers["lab"]
    assert kind == "labels" and not np.asarray(data)[0][outside(0, (96, 96))].any()  # unpainted around them


def test_a_folder_of_slices_with_other_channels_names_the_file(tmp_path, capsys):
    folder = tmp_path / "slices"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"s{i:03d}.tif", np.zeros((32, 32, 3) if i == 2 else (32, 32), np.uint8))
    code = main(["-q", "info", str(folder)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "s002.tif" in err and "same channels" in err, err
