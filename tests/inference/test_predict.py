"""predict_tiled: seamless blending, equality with one pass, global normalisation, array-likes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from napari_emseg.data.normalize import intensity_range, normalize
from napari_emseg.inference import InferenceConfig, predict_tiled
from napari_emseg.inference.output import RECORD_KEY
from napari_emseg.io import open_volume
from napari_emseg.progress import Progress, drain

from .toys import Constant, ConvNet, Identity, em_volume, single_pass

CPU = InferenceConfig(device="cpu", prefetch=1)


def run(model, volume, out=None, **changes):
    return drain(predict_tiled(model, volume, out, CPU.replace(**changes)), show=False)


@pytest.mark.parametrize(
    "changes",
    [
        {"blend": "gaussian"},
        {"blend": "linear", "overlap": 0.5},
        {"blend": "gaussian", "tta": True, "overlap": (0.25, 0.1, 0.6)},
    ],
)
def test_constant_model_gives_constant_output_without_seams(changes):
    vol = em_volume((21, 70, 90))
    model = Constant(0.37, channels=2, tile=(8, 32, 32))
    pred = run(model, vol, block=(8, 32, 32), dtype="float16", **changes)
    assert pred.shape == (2, 21, 70, 90) and pred.dtype == np.float16
    np.testing.assert_allclose(pred.astype(np.float32), 0.37, atol=2e-4)
    assert model.tiles > 20  # many tiles and blocks really were blended


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("tile,block", [((16, 32, 32), (16, 48, 48)), ((12, 24, 40), (8, 64, 32))])
def test_tiled_equals_single_pass_for_a_translation_equivariant_net(tile, block, workers):
    vol = em_volume((40, 90, 100), seed=1)
    net = ConvNet(tile=tile)
    pred = run(net, vol, overlap=0.5, block=block, workers=workers)
    ref = single_pass(net, vol)
    diff = np.abs(pred.astype(np.float32) - ref)
    assert net.calls > 10
    assert diff.max() < 2.5e-3, diff.max()  # float16 output: ~5e-4 resolution near 0.5


def test_volume_smaller_than_a_tile_is_reflect_padded():
    vol = em_volume((5, 20, 30), seed=2)
    # input multiple (1, 8, 8): the tile shrinks to z 5 (no padding), y 24 (pad 4), x 32 (pad 2)
    net = ConvNet(tile=(16, 32, 32))
    pred = run(net, vol)
    assert pred.shape == (3, 5, 20, 30)
    np.testing.assert_allclose(pred.astype(np.float32), single_pass(net, vol, pad=(0, 4, 2)), atol=1.5e-3)


def test_intensity_range_is_computed_once_for_the_volume_not_per_tile():
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 200, 96)[None, None, :] + rng.integers(0, 40, (12, 64, 96))
    vol = ramp.astype(np.uint8)
    pred = run(Identity(tile=(8, 32, 32)), vol, block=(8, 32, 32), overlap=0.25)
    lo, hi = intensity_range(vol)
    np.testing.assert_allclose(pred[0].astype(np.float32), normalize(vol, lo, hi), atol=4e-3)


def test_inputs_dask_zarr_h5_and_zarr_output_with_metadata(tmp_path):
    import dask.array as da
    import h5py

    vol = em_volume((18, 40, 56), seed=3)
    net = ConvNet(tile=(8, 32, 32))
    ref = run(net, vol, block=(8, 32, 32))
    zin = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=vol.shape, chunks=(4, 16, 16), dtype="uint8")
    zin[:] = vol
    with h5py.File(tmp_path / "in.h5", "w") as f:
        f["raw"] = vol
    with h5py.File(tmp_path / "in.h5", "r") as f:
        for volume in (da.from_array(vol, chunks=(5, 20, 20)), zin, f["raw"]):
            np.testing.assert_array_equal(run(net, volume, block=(8, 32, 32)), ref)

    out = tmp_path / "pred.zarr" / "predictions"
    got = run(net, vol, out, block=(8, 32, 32), dtype="uint8")
    np.testing.assert_allclose(got[:].astype(np.float32), np.round(ref.astype(np.float32) * 255), atol=1)
    attrs = dict(zarr.open_array(str(out), mode="r").attrs)
    assert attrs["scale"] == 255 and attrs["complete"] is True
    assert attrs["channel_names"] == ["aff_z", "aff_y", "aff_x"] and attrs["target"] == "affinities"
    assert attrs["offsets"] == [[-1, 0, 0], [0, -1, 0], [0, 0, -1]] and attrs["task"] == "neurons"
    assert attrs["model"]["class"] == "ConvNet" and attrs["model"]["info"]["tile"] == [8, 32, 32]
    assert attrs["inference"]["tile"] == [8, 32, 32] and attrs["norm_range"][1] > attrs["norm_range"][0]
    assert RECORD_KEY in attrs
    # the napari-emseg reader sees it as a volume with a resolution
    reopened = open_volume(f"{tmp_path / 'pred.zarr'}:predictions", channel=0)
    assert reopened.data.shape == vol.shape


def test_voxel_size_from_a_volume_and_2d_images():
    from napari_emseg.io import Volume

    img = em_volume((1, 40, 48), seed=4)[0]
    net = ConvNet(tile=(1, 32, 32))
    pred = run(net, img)
    assert pred.shape == (3, 1, 40, 48)
    gen = predict_tiled(net, Volume(img[None], (30.0, 4.0, 4.0), "x", True), None, CPU)
    drain(gen, show=False)


def test_progress_events_and_preview():
    vol = em_volume((16, 64, 64))
    events: list[Progress] = []
    drain(predict_tiled(Constant(tile=(8, 32, 32)), vol, None, CPU.replace(block=(8, 32, 32))),
          show=False, callback=events.append)
    blocks = [e for e in events if e.stage == "predict" and e.step]
    assert blocks[-1].step == blocks[-1].total == len(blocks) >= 4
    assert blocks[-1].preview.ndim == 2 and "Mvox/s" in blocks[-1].metrics


def test_refuses_bad_outputs(tmp_path):
    from napari_emseg.errors import EmsegError

    vol = em_volume((8, 32, 32))
    foreign = zarr.create_array(store=str(tmp_path / "other.zarr"), shape=(3, 8, 32, 32), dtype="float32")
    with pytest.raises(EmsegError, match="not written by napari-emseg"):
        run(ConvNet(tile=(8, 32, 32)), vol, tmp_path / "other.zarr")
    with pytest.raises(EmsegError, match="shape"):
        run(ConvNet(tile=(8, 32, 32)), vol, np.zeros((2, 8, 32, 32), np.float16))
    with pytest.raises(EmsegError, match="pass out="):
        run(ConvNet(tile=(8, 32, 32)), vol, max_in_memory_gb=1e-6)
    with pytest.raises(EmsegError, match="2D model"):
        run(ConvNet(tile=(8, 32, 32)), vol, mode="ortho")
    assert foreign.shape == (3, 8, 32, 32)


def test_model_output_that_contradicts_its_info_is_reported():
    from napari_emseg.errors import EmsegError

    net = ConvNet(tile=(8, 32, 32))
    net.info = net.info.replace(channel_names=("a", "b"))
    with pytest.raises(EmsegError, match="expected"):
        run(net, em_volume((8, 32, 32)))


def test_explicit_cpu_device_and_autocast_precision_choice(monkeypatch):
    from napari_emseg.device import autocast_dtype
    from napari_emseg.inference import fastpath

    assert autocast_dtype(torch.device("cpu"), "auto") is None  # fp32 on CPU
    monkeypatch.setattr(fastpath, "cpu_supports", lambda dtype: True)  # as on a CPU with AVX512-BF16/AMX
    vol = em_volume((8, 32, 32))
    a = run(ConvNet(tile=(8, 32, 32)), vol, precision="bf16")
    b = run(ConvNet(tile=(8, 32, 32)), vol, precision="fp32")
    diff = np.abs(a.astype(np.float32) - b.astype(np.float32)).max()
    assert 0 < diff < 0.05  # bf16 autocast ran


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_blocks_travel_raw_and_are_normalised_like_the_shared_helper(dtype):
    from napari_emseg.inference.prefetch import BlockReader, normalize_tensor
    from napari_emseg.inference.tiling import plan_blocks

    vol = (em_volume((6, 20, 30)).astype(np.float64) * 3).astype(dtype)
    keep = vol.copy()
    (block,) = plan_blocks(vol.shape, (6, 24, 32), (0, 8, 8), (6, 24, 32))  # padded in y and x
    raw = BlockReader(vol)(block)
    assert raw.dtype == (torch.uint8 if dtype == "uint8" else torch.float32)
    for invert in (False, True):
        got = normalize_tensor(raw, 10.0, 500.0, invert).numpy()
        want = np.pad(normalize(vol, 10.0, 500.0, invert), [(0, 0), (2, 2), (1, 1)], mode="reflect")
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(vol, keep)  # the caller's array is never normalised in place
