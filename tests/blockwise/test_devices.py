"""``segment --devices``: one device per worker (CPU stand-ins), the same maps as one device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from napari_emseg.blockwise import devices as dv
from napari_emseg.cli.main import main
from napari_emseg.errors import EmsegError


def test_parse_devices():
    assert dv.parse_devices("0,1") == ("cuda:0", "cuda:1")
    assert dv.parse_devices("cuda:2, cpu") == ("cuda:2", "cpu")
    assert dv.parse_devices("cpu,cpu") == ("cpu", "cpu")
    for bad in ("gpu0", "0,,1", "cuda:x"):
        with pytest.raises(EmsegError, match="--devices"):
            dv.parse_devices(bad)


def test_worker_i_gets_device_i_mod_n(monkeypatch):
    assert [dv.device_for_worker(i, ("cuda:0", "cuda:1")) for i in range(5)] == ["cuda:0", "cuda:1"] * 2 + ["cuda:0"]
    # no --devices: every worker of a multi-GPU machine takes its own GPU (today's bug: all on GPU 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    for i, want in enumerate(["cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]):
        monkeypatch.setattr(dv, "worker_index", lambda i=i: i)
        assert dv.worker_device("auto", None) == want
        assert dv.worker_device("cuda", None) == want
        assert dv.worker_device("cpu", None) == "cpu"  # an explicit device is kept
        assert dv.worker_device("auto", ("cpu", "mps")) == ("cpu", "mps")[i % 2]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert dv.worker_device("auto", None) == "auto"


def test_devices_split_blocks_and_give_the_single_device_maps(setup, client, tmp_path, monkeypatch):
    """Two workers of the in-process cluster stand in for two GPUs: the device each asks for is
    recorded (and served by the CPU); the maps equal a one-process, one-device run."""
    root, ckpt = setup
    import napari_emseg.device as device_mod

    asked: list[str] = []
    real = device_mod.select_device

    def fake(name=None):
        asked.append(str(name))
        return real("cpu") if str(name).startswith("cuda") else real(name)

    monkeypatch.setattr(device_mod, "select_device", fake)
    common = ["-q", "segment", "--image", str(root / "raw.zarr"), "--model", str(ckpt), "--dtype", "uint8",
              "--task", "none"]
    assert main([*common, "--device", "cpu", "--out", str(tmp_path / "one.zarr"), "--block", "6,48,48"]) == 0
    ref = zarr.open_array(str(tmp_path / "one.zarr/predictions"), mode="r")[:]
    assert main([*common, "--devices", "0,1", "--blocks", "6,48,48", "--scheduler", client.scheduler.address,
                 "--out", str(tmp_path / "two.zarr")]) == 0
    pred = zarr.open_array(str(tmp_path / "two.zarr/predictions"), mode="r")
    np.testing.assert_array_equal(pred[:], ref)
    inf = dict(pred.attrs)["inference"]
    assert inf["devices"] == ["cuda:0", "cuda:1"]
    assert inf["workers"] == {"0": "cuda:0", "1": "cuda:1"}  # worker i on device i mod 2, both used
    assert {"cuda:0", "cuda:1"} <= set(asked)
    # real CPU stand-ins, three blocks' worth of workers over two devices: the same maps again
    assert main([*common, "--devices", "cpu,cpu", "--blocks", "6,48,48", "--scheduler", client.scheduler.address,
                 "--out", str(tmp_path / "cpu.zarr")]) == 0
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "cpu.zarr/predictions"), mode="r")[:], ref)


def test_devices_routing(setup, tmp_path, monkeypatch, capsys):
    """Several devices without --blocks: blockwise with the default blocks, one local worker per
    device; one device is --device; --device with --devices is refused."""
    root, ckpt = setup
    import napari_emseg.blockwise.segment as bseg

    seen = {}

    def fake_job(model, image, out, inference, post, cfg, **kw):
        seen.update(kw, blocks=cfg.blocks, device=inference.device)
        raise EmsegError("stop here")
        yield

    monkeypatch.setattr(bseg, "segment_blockwise_job", fake_job)
    base = ["segment", "--image", str(root / "raw.zarr"), "--model", str(ckpt), "--task", "none"]
    assert main([*base, "--devices", "0,1,2", "--out", str(tmp_path / "a.zarr")]) == 2
    assert seen["devices"] == ("cuda:0", "cuda:1", "cuda:2") and seen["blocks"] == (32, 256, 256)
    assert seen["local_workers"] is None and seen["scheduler"] is None  # the job makes one worker per device
    assert main([*base, "--devices", "0,1", "--local-workers", "4", "--out", str(tmp_path / "b.zarr")]) == 2
    assert seen["local_workers"] == 4 and seen["devices"] == ("cuda:0", "cuda:1")
    capsys.readouterr()
    assert main([*base, "--devices", "0,1", "--device", "cpu", "--out", str(tmp_path / "c.zarr")]) == 2
    assert "not both" in capsys.readouterr().err
    assert main([*base, "--devices", "gpu", "--out", str(tmp_path / "d.zarr")]) == 2
    assert "not a device" in capsys.readouterr().err
    # one device: the ordinary one-process run on it
    assert main(["-q", *base, "--devices", "cpu", "--out", str(tmp_path / "e.zarr")]) == 0
    attrs = dict(zarr.open_array(str(tmp_path / "e.zarr/predictions"), mode="r").attrs)
    assert attrs["inference"]["device"] == "cpu" and "distributed" not in attrs["inference"]


def test_local_cluster_gets_one_worker_per_device(monkeypatch, tmp_path):
    """segment_blockwise_job starts len(devices) local workers unless told otherwise."""
    import contextlib

    import napari_emseg.blockwise.segment as bseg

    asked = []

    @contextlib.contextmanager
    def fake_client(scheduler, local_workers, processes=True):
        asked.append(local_workers)
        raise EmsegError("stop")
        yield

    monkeypatch.setattr(bseg, "dask_client", fake_client)
    image = np.zeros((4, 32, 32), np.float32)
    for devices, workers, want in ((("cpu", "cpu", "cpu"), None, 3), (("cpu",), 2, 2), (None, None, None)):
        with pytest.raises(EmsegError):
            from napari_emseg.progress import drain

            drain(bseg.segment_blockwise_job("m.safetensors", image, tmp_path / f"o{len(asked)}.zarr",
                                             devices=devices, local_workers=workers), show=False)
        assert asked[-1] == want
