"""Interrupted runs resume by skipping written blocks; out-of-memory backs off instead of failing."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import zarr

from napari_emseg.inference import InferenceConfig, OutOfMemory, predict_tiled
from napari_emseg.inference.output import RECORD_KEY, OutputError
from napari_emseg.progress import Cancelled, CancelToken, cancellable, drain

from .toys import ConvNet, FakeOOM, em_volume

CFG = InferenceConfig(device="cpu", block=(8, 32, 32), prefetch=2)
VOL_SHAPE = (24, 64, 96)


def _predict_blocks(gen, n):
    """Advance a job until ``n`` blocks are reported written."""
    for event in gen:
        if event.stage == "predict" and event.step >= n and event.message.startswith("tile"):
            return event
    raise AssertionError("job ended early")


def test_resume_after_interruption_gives_the_uninterrupted_output(tmp_path):
    vol = em_volume(VOL_SHAPE, seed=5)
    full_net = ConvNet(tile=(8, 32, 32))
    full = drain(predict_tiled(full_net, vol, tmp_path / "a.zarr", CFG), show=False)[:]

    net = ConvNet(tile=(8, 32, 32))
    gen = predict_tiled(net, vol, tmp_path / "b.zarr", CFG)
    event = _predict_blocks(gen, 5)
    total = event.total
    with pytest.raises(Cancelled):
        gen.throw(Cancelled("stop"))
    part = zarr.open_array(str(tmp_path / "b.zarr"), mode="r")
    assert part.attrs["complete"] is False and RECORD_KEY in part.attrs
    assert not np.array_equal(part[:], full)  # really unfinished

    again = ConvNet(tile=(8, 32, 32))
    events = []
    out = drain(predict_tiled(again, vol, tmp_path / "b.zarr", CFG), show=False, callback=events.append)
    first = [e for e in events if e.stage == "predict"][0]
    assert first.step == 5 and first.total == total  # 5 blocks skipped
    assert 0 < again.calls < full_net.calls
    np.testing.assert_array_equal(out[:], full)
    assert zarr.open_array(str(tmp_path / "b.zarr"), mode="r").attrs["complete"] is True

    # a finished output is not predicted again; other settings are refused (nothing written), and
    # start anew with overwrite
    third = ConvNet(tile=(8, 32, 32))
    drain(predict_tiled(third, vol, tmp_path / "b.zarr", CFG), show=False)
    assert third.calls == 0
    fourth = ConvNet(tile=(8, 32, 32))
    with pytest.raises(OutputError, match="another model, input or settings"):
        drain(predict_tiled(fourth, vol, tmp_path / "b.zarr", CFG.replace(overlap=0.5)), show=False)
    assert fourth.calls == 0
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "b.zarr"), mode="r")[:], full)
    drain(predict_tiled(fourth, vol, tmp_path / "b.zarr", CFG.replace(overlap=0.5), overwrite=True), show=False)
    assert fourth.calls > 0


def test_cancel_token_and_ctrl_c_stop_between_blocks(tmp_path):
    vol = em_volume(VOL_SHAPE, seed=6)
    token = CancelToken()
    seen = []

    def on_event(e):
        seen.append(e)
        if e.stage == "predict" and e.step >= 2:
            token.cancel()

    job = cancellable(predict_tiled(ConvNet(tile=(8, 32, 32)), vol, tmp_path / "c.zarr", CFG), token)
    with pytest.raises(Cancelled):
        drain(job, show=False, callback=on_event)
    arr = zarr.open_array(str(tmp_path / "c.zarr"), mode="r")
    assert arr.attrs["complete"] is False
    # every block reported before the cancel is on disk and recorded
    reported = max(e.step for e in seen if e.stage == "predict")
    ours = predict_tiled(ConvNet(tile=(8, 32, 32)), vol, tmp_path / "c.zarr", CFG)
    first = next(e for e in ours if e.stage == "predict")
    assert first.step >= reported
    ours.close()


def test_out_of_memory_halves_batch_then_tile_and_warns(caplog):
    vol = em_volume((16, 64, 64), seed=7)
    # one forward pass at a time, so the failures are counted exactly (several workers: test_fastpath)
    cfg = InferenceConfig(device="cpu", tile=(8, 32, 32), batch=4, block=(16, 64, 64), workers=1)
    ref = drain(predict_tiled(ConvNet(tile=(8, 32, 32)), vol, None, cfg), show=False)

    # fits one tile per pass: batch 4 -> 2 -> 1, same result
    net = FakeOOM(ConvNet(tile=(8, 32, 32)), max_voxels=8 * 32 * 32)
    with caplog.at_level(logging.WARNING, logger="napari_emseg.inference"):
        got = drain(predict_tiled(net, vol, None, cfg), show=False)
    assert net.fails == 2
    assert sum("retrying with batch 2" in r.message for r in caplog.records) == 1
    assert sum("retrying with batch 1" in r.message for r in caplog.records) == 1
    np.testing.assert_allclose(got.astype(np.float32), ref.astype(np.float32), atol=1e-3)  # batch-size rounding

    # not even one tile fits: the tile is halved (to the input multiple) and the run completes
    caplog.clear()
    net = FakeOOM(ConvNet(tile=(8, 32, 32)), max_voxels=4 * 16 * 16)
    with caplog.at_level(logging.WARNING, logger="napari_emseg.inference"):
        got = drain(predict_tiled(net, vol, None, cfg), show=False)
    assert any("tile (4, 16, 16)" in r.message for r in caplog.records)
    assert (got > 0).all()  # every voxel predicted (the fill value is 0)
    # smaller tiles see less context: close to the reference on average, not voxel-exact
    assert np.abs(got.astype(np.float32) - ref.astype(np.float32)).mean() < 0.02

    # nothing left to shrink: a clear error instead of a crash
    net = FakeOOM(ConvNet(tile=(8, 32, 32)), max_voxels=1)
    with pytest.raises(OutOfMemory, match="even with batch 1"):
        drain(predict_tiled(net, vol, None, cfg), show=False)


def test_other_errors_are_not_mistaken_for_out_of_memory():
    vol = em_volume((8, 32, 32))

    class Broken(ConvNet):
        def forward(self, x):
            raise RuntimeError("shape mismatch somewhere")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        drain(predict_tiled(Broken(tile=(8, 32, 32)), vol, None, CFG), show=False)
