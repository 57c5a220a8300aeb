"""Round trips for every format open_volume reads, and the errors it gives for bad input."""

from __future__ import annotations

import json

import dask.array as da
import h5py
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from napari_emseg.io import VolumeError, open_volume, split_uri, write_volume

from .conftest import write_n5

VOL = (np.arange(6 * 20 * 24) % 251).astype(np.uint8).reshape(6, 20, 24)


def check(vol, expected=VOL, vs=None):
    assert isinstance(vol.data, da.Array), "open_volume must return a lazy dask array"
    np.testing.assert_array_equal(vol.data.compute(), expected)
    if vs is not None:
        np.testing.assert_allclose(vol.voxel_size, vs, rtol=1e-6)
        assert vol.voxel_size_known


def test_multipage_tiff_with_imagej_voxel_size(tmp_path):
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, VOL, imagej=True, resolution=(1 / 0.008, 1 / 0.008),
                     metadata={"spacing": 0.04, "unit": "um", "axes": "ZYX"})
    check(open_volume(p), vs=(40, 8, 8))


def test_folder_of_tiff_and_png_slices(tmp_path):
    for suffix, writer in ((".tif", tifffile.imwrite), (".png", iio.imwrite)):
        folder = tmp_path / suffix[1:]
        folder.mkdir()
        for z in range(VOL.shape[0]):  # natural order: 2 < 10
            writer(folder / f"slice_{z * 5}{suffix}", VOL[z])
        vol = open_volume(folder)
        check(vol)
        assert vol.data.chunks[0] == (1,) * VOL.shape[0]  # one slice per chunk: lazy


def test_folder_of_micrographs_of_different_sizes(tmp_path, caplog):
    """Separate micrographs of different sizes: one stack on a canvas as large as the largest,
    each at the top left, the rest at its median (images) or 0 (labels); results cut back."""
    from napari_emseg.io import check_extents, cut_to_extents

    rng = np.random.default_rng(0)
    sizes = [(40, 64), (64, 30), (50, 50)]
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    images = []
    for i, (h, w) in enumerate(sizes):
        images.append(rng.integers(10, 200, (h, w)).astype(np.uint8))
        iio.imwrite(tmp_path / "img" / f"m{i}.png", images[-1])
        tifffile.imwrite(tmp_path / "lab" / f"m{i}.tif", np.full((h, w), i + 1, np.uint16))
    with caplog.at_level("WARNING", logger="napari_emseg.io"):
        vol = open_volume(tmp_path / "img")
    assert "3 slices of different sizes (40-64 x 30-64 pixels)" in caplog.text and "64 x 64 canvas, the margin filled with each slice's median" in caplog.text
    assert vol.data.shape == (3, 64, 64) and vol.extents == ((40, 64), (64, 30), (50, 50))
    stack = vol.data.compute()
    for z, ((h, w), img) in enumerate(zip(sizes, images)):
        np.testing.assert_array_equal(stack[z, :h, :w], img)
        outside = np.ones((64, 64), bool)
        outside[:h, :w] = False
        assert np.all(stack[z][outside] == np.median(img).astype(np.uint8))
    labels = open_volume(tmp_path / "lab", fill=0)
    assert labels.extents == vol.extents
    assert [int((lab > 0).sum()) for lab in labels.data.compute()] == [h * w for h, w in sizes]
    check_extents(vol, labels, "img", "lab")
    # a labels stack painted on the whole canvas needs no extents; labels of other sizes are refused
    check_extents(vol, labels._replace(extents=None), "img", "lab")
    with pytest.raises(VolumeError, match="slice 1 is 30 x 64 pixels, but slice 1 of img is 64 x 30"):
        check_extents(vol, labels._replace(extents=((40, 64), (30, 64), (50, 50))), "img", "lab")
    maps = zarr.create_array(str(tmp_path / "maps.zarr"), shape=(2, 3, 64, 64), chunks=(1, 1, 32, 32), dtype="f4")
    maps[:] = 1
    cut_to_extents(maps, vol.extents)
    assert [float(maps[0, z].sum()) for z in range(3)] == [float(h * w) for h, w in sizes]
    assert float(np.asarray(maps[:]).sum()) == 2 * sum(h * w for h, w in sizes)
    # same-size folders have no extents; slices whose channels differ are refused, naming the file
    assert open_volume(tmp_path / "lab").extents is not None and cut_to_extents(stack, None) is stack
    iio.imwrite(tmp_path / "img" / "m3.png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(VolumeError, match="m3.png.*same channels"):
        open_volume(tmp_path / "img")


def test_palette_pngs_of_different_sizes(tmp_path):
    """PNG headers that do not say how they read as channels (palette images) are not refused."""
    from PIL import Image

    for i, size in enumerate([(40, 30), (24, 50)]):
        im = Image.new("P", size)
        im.putpalette([v for g in range(256) for v in (g, g, g)])  # a gray palette
        im.putdata([(x * 7) % 256 for x in range(size[0] * size[1])])
        im.save(tmp_path / f"p{i}.png")
    vol = open_volume(tmp_path)
    assert vol.data.shape == (2, 50, 40) and vol.extents == ((30, 40), (50, 24))  # PIL sizes are (width, height)
    assert vol.data.compute().shape == (2, 50, 40)


@pytest.mark.parametrize("fmt", [2, 3])
def test_zarr_v2_and_v3(tmp_path, fmt):
    p = tmp_path / f"v{fmt}.zarr"
    a = zarr.create_array(str(p), shape=VOL.shape, chunks=(2, 10, 12), dtype=VOL.dtype, zarr_format=fmt)
    a[:] = VOL
    a.attrs["resolution"] = [30, 4, 4]
    vol = open_volume(p)
    check(vol, vs=(30, 4, 4))
    assert vol.data.chunks[0][0] == 2


def test_zarr_dataset_in_group_by_colon_and_path(tmp_path):
    g = zarr.open_group(str(tmp_path / "c.zarr"), mode="w")
    g.create_array("volumes/raw", shape=VOL.shape, dtype=VOL.dtype)[:] = VOL
    g.create_array("volumes/other", shape=(2, 2), dtype="f4")
    check(open_volume(f"{tmp_path}/c.zarr:volumes/raw"))
    with pytest.raises(VolumeError, match="NAME"):
        open_volume(tmp_path / "c.zarr")


def test_ome_zarr_level0_and_scale(tmp_path):
    p = tmp_path / "img.ome.zarr"
    g = zarr.open_group(str(p), mode="w", zarr_format=2)
    g.create_array("0", shape=(1, 1, *VOL.shape), dtype=VOL.dtype)[:] = VOL[None, None]
    g.create_array("1", shape=(1, 1, 6, 10, 12), dtype=VOL.dtype)
    g.attrs["multiscales"] = [{
        "version": "0.4",
        "axes": [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"},
                 {"name": "z", "type": "space", "unit": "micrometer"},
                 {"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [
            {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 0.05, 0.005, 0.005]}]},
            {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 0.05, 0.01, 0.01]}]},
        ],
    }]
    check(open_volume(p), vs=(50, 5, 5))


def test_n5_with_resolution_in_xyz(tmp_path):
    data = (np.arange(5 * 7 * 9) % 1000).astype(np.uint16).reshape(5, 7, 9)
    write_n5(tmp_path / "vol.n5", "raw", data, block=(2, 4, 4), attrs={"resolution": [4, 4, 40]})
    check(open_volume(f"{tmp_path}/vol.n5:raw"), expected=data, vs=(40, 4, 4))


def test_hdf5_named_and_single_dataset(tmp_path):
    one = tmp_path / "one.h5"
    with h5py.File(one, "w") as f:
        d = f.create_dataset("volumes/raw", data=VOL, chunks=(2, 10, 12))
        d.attrs["resolution"] = [40, 8, 8]
    check(open_volume(one), vs=(40, 8, 8))
    check(open_volume(f"{one}:volumes/raw"), vs=(40, 8, 8))
    two = tmp_path / "two.h5"
    with h5py.File(two, "w") as f:
        f["a"] = VOL
        f["b"] = VOL
    with pytest.raises(VolumeError, match=r"2 datasets.*:DATASET"):
        open_volume(two)
    with pytest.raises(VolumeError, match="no dataset 'c'"):
        open_volume(f"{two}:c")


def test_npy_is_memory_mapped(tmp_path):
    p = tmp_path / "v.npy"
    np.save(p, VOL)
    check(open_volume(p, voxel_size=(30, 6, 6)), vs=(30, 6, 6))


def test_2d_image_is_one_slice_volume(tmp_path):
    p = tmp_path / "img.png"
    iio.imwrite(p, VOL[0])
    vol = open_volume(p)
    assert vol.data.shape == (1, 20, 24)
    assert not vol.voxel_size_known


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(VolumeError, match=r"nope\.tif: no such file"):
        open_volume(tmp_path / "nope.tif")


def test_rgb_asks_for_a_channel(tmp_path):
    p = tmp_path / "rgb.tif"
    rgb = np.stack([VOL[0], VOL[0] // 2, VOL[0] // 3], -1)
    tifffile.imwrite(p, rgb, photometric="rgb")
    with pytest.raises(VolumeError, match=r"3 channels.*channel=0\.\.2"):
        open_volume(p)
    np.testing.assert_array_equal(open_volume(p, channel=1).data[0].compute(), VOL[0] // 2)


def test_gray_stored_as_colour_is_read_as_gray(tmp_path):
    """A gray micrograph saved as RGB or RGBA (equal colour channels, constant alpha) needs no
    --channel; one differing pixel, or a varying alpha, makes it colour again."""
    gray = np.stack([VOL[0]] * 3, -1)
    for name, data in [("g.tif", gray), ("g.png", gray), ("g.bmp", gray), ("ga.png", np.concatenate([gray, np.full_like(gray[..., :1], 255)], -1))]:
        p = tmp_path / name
        if name.endswith(".tif"):
            tifffile.imwrite(p, data, photometric="rgb")
        else:
            iio.imwrite(p, data)
        np.testing.assert_array_equal(open_volume(p).data.compute(), VOL[:1])
    iio.imwrite(tmp_path / "g.jpg", gray, quality=90)  # lossy, but gray stays gray
    assert open_volume(tmp_path / "g.jpg").data.shape == (1, *VOL.shape[1:])
    one_off = gray.copy()
    one_off[3, 4, 2] ^= 1
    alpha = np.concatenate([gray, np.zeros_like(gray[..., :1])], -1)
    alpha[0, 0, 3] = 1
    for name, data in [("c.png", one_off), ("ca.png", alpha)]:
        iio.imwrite(tmp_path / name, data)
        with pytest.raises(VolumeError, match="channels"):
            open_volume(tmp_path / name)


def test_4d_multichannel_asks_for_a_channel(tmp_path):
    p = tmp_path / "mc.npy"
    np.save(p, np.stack([VOL, VOL], 1))  # z, c, y, x
    with pytest.raises(VolumeError, match="2 channels"):
        open_volume(p)
    check(open_volume(p, channel=0))


def test_too_many_dimensions(tmp_path):
    p = tmp_path / "5d.npy"
    np.save(p, np.zeros((2, 3, 6, 5, 5), np.uint8))
    with pytest.raises(VolumeError, match="dimensions"):
        open_volume(p)


def test_non_numeric_and_empty(tmp_path):
    p = tmp_path / "s.npy"
    np.save(p, np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(VolumeError, match="not numeric"):
        open_volume(p)
    e = tmp_path / "e.zarr"
    zarr.create_array(str(e), shape=(0, 5, 5), dtype="u1")
    with pytest.raises(VolumeError, match="empty"):
        open_volume(e)


def test_unreadable_file(tmp_path):
    p = tmp_path / "broken.tif"
    p.write_bytes(b"this is not a tiff")
    with pytest.raises(VolumeError, match="broken.tif: cannot read"):
        open_volume(p)


def test_write_volume_streams_chunks_and_is_atomic(tmp_path):
    big = da.random.randint(0, 255, size=(8, 64, 64), chunks=(2, 32, 32)).astype(np.uint8)
    out = tmp_path / "o.zarr"
    write_volume(out, big, voxel_size=(40, 8, 8), chunks=(4, 32, 32), attrs={"note": "x"})
    vol = open_volume(out)
    np.testing.assert_array_equal(vol.data.compute(), big.compute())
    assert vol.voxel_size == (40, 8, 8)
    assert json.loads((out / ".zattrs").read_text())["note"] == "x"
    # a failing source leaves the previous good output in place and no partial folders
    def boom(block):
        raise RuntimeError("disk on fire")

    bad = big.map_blocks(boom, dtype=np.uint8)
    with pytest.raises(RuntimeError):
        write_volume(out, bad)
    np.testing.assert_array_equal(open_volume(out).data.compute(), big.compute())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr"]


def test_write_volume_into_a_group(tmp_path):
    write_volume(tmp_path / "seg.zarr/labels", np.ones((2, 4, 4), np.uint32))
    write_volume(tmp_path / "seg.zarr/probs", np.zeros((2, 4, 4), np.float32))
    check(open_volume(f"{tmp_path}/seg.zarr:labels"), expected=np.ones((2, 4, 4), np.uint32))


def test_split_uri():
    assert split_uri("a/b.h5:raw") == ("a/b.h5", "raw")
    assert split_uri("x.zarr:volumes/raw") == ("x.zarr", "volumes/raw")
    assert split_uri("plain.tif") == ("plain.tif", None)
