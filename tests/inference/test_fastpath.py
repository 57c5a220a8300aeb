"""Fast paths: worker threads, output written in its type, compile with fall-back, CPU precision."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch

from napari_emseg.inference import InferenceConfig, OutOfMemory, fastpath, predict_tiled
from napari_emseg.inference.runner import BlockPredictor, to_output_dtype
from napari_emseg.inference.tiling import plan_blocks
from napari_emseg.progress import drain

from .toys import ConvNet, FakeOOM, em_volume

CPU = InferenceConfig(device="cpu", tile=(8, 32, 32), block=(16, 64, 64), batch=2)


def run(model, volume, **changes):
    return drain(predict_tiled(model, volume, None, CPU.replace(**changes)), show=False)


class ThreadLog(ConvNet):
    """A ConvNet that records the thread of every forward pass."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.threads: list[str] = []

    def forward(self, x):
        self.threads.append(threading.current_thread().name)
        return super().forward(x)


@pytest.mark.parametrize("dtype", ["float16", "uint8"])
def test_workers_run_batches_in_threads_and_give_identical_output(dtype):
    vol = em_volume((24, 70, 90), seed=3)
    one = ThreadLog(tile=(8, 32, 32))
    many = ThreadLog(tile=(8, 32, 32))
    a = run(one, vol, workers=1, dtype=dtype)
    b = run(many, vol, workers=3, dtype=dtype)
    assert set(one.threads) == {threading.current_thread().name}  # one worker: the caller's thread
    assert {t.split("_")[0] for t in many.threads} == {"emseg-net"} and len(set(many.threads)) > 1
    np.testing.assert_array_equal(a, b)  # sums in tile order: bit-identical whatever the workers


def test_worker_threads_stop_when_the_job_ends():
    before = {t.name for t in threading.enumerate()}
    run(ConvNet(tile=(8, 32, 32)), em_volume((16, 64, 64)), workers=2)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("emseg-net") and t.name not in before]


def test_default_workers_fill_the_cores_torch_leaves_idle(monkeypatch):
    monkeypatch.setattr(fastpath, "usable_cores", lambda: 8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert fastpath.resolve_workers(None, torch.device("cpu")) == 8
        torch.set_num_threads(4)
        assert fastpath.resolve_workers(None, torch.device("cpu")) == 2
        assert fastpath.resolve_workers(None, torch.device("cuda")) == 1  # one thread feeds a GPU
        assert fastpath.resolve_workers(3, torch.device("cuda")) == 3  # an explicit number is kept
    finally:
        torch.set_num_threads(threads)


def test_out_of_memory_back_off_with_workers():
    vol = em_volume((16, 64, 64), seed=7)
    ref = run(ConvNet(tile=(8, 32, 32)), vol, batch=4, workers=1)
    net = FakeOOM(ConvNet(tile=(8, 32, 32)), max_voxels=8 * 32 * 32)
    got = run(net, vol, batch=4, workers=2)
    assert net.fails >= 2  # batch 4 -> 2 -> 1, a failure in either worker
    np.testing.assert_allclose(got.astype(np.float32), ref.astype(np.float32), atol=1e-3)
    with pytest.raises(OutOfMemory):
        run(FakeOOM(ConvNet(tile=(8, 32, 32)), max_voxels=1), vol, workers=2)


@pytest.mark.parametrize("dtype", ["float16", "uint8"])
def test_blocks_are_divided_straight_into_the_output_type(dtype):
    vol = torch.from_numpy(em_volume((16, 48, 48)).astype(np.float32) / 255)
    net = ConvNet(tile=(8, 32, 32))
    pred = BlockPredictor(net, net.info, CPU, torch.device("cpu"), "3d", (8, 32, 32))
    (block,) = plan_blocks(tuple(vol.shape), (8, 32, 32), (2, 8, 8), (16, 48, 48))
    direct = pred.predict_block(vol, block, dtype)
    assert direct.dtype == getattr(torch, dtype)
    torch.testing.assert_close(direct, to_output_dtype(pred.predict_block(vol, block), dtype), rtol=0, atol=0)


def test_compile_is_used_when_it_works(monkeypatch):
    calls = []

    def fake_compile(model, **kw):
        calls.append(kw)
        return lambda x: model(x)

    monkeypatch.setattr(torch, "compile", fake_compile)
    vol = em_volume((16, 64, 64), seed=5)
    net = ConvNet(tile=(8, 32, 32))
    got = run(net, vol, compile=True, workers=2)
    assert len(calls) == 1 and calls[0]["dynamic"] is False  # fixed tile shapes
    np.testing.assert_array_equal(got, run(ConvNet(tile=(8, 32, 32)), vol))


@pytest.mark.parametrize("where", ["compile", "call"])
def test_compile_failure_falls_back_to_the_eager_network(monkeypatch, caplog, where):
    def broken(x):
        raise RuntimeError("inductor: no C++ compiler (fake)")

    def fake_compile(model, **kw):
        if where == "compile":
            raise RuntimeError("dynamo unsupported here (fake)")
        return broken

    monkeypatch.setattr(torch, "compile", fake_compile)
    vol = em_volume((16, 64, 64), seed=5)
    with caplog.at_level(logging.WARNING, logger="napari_emseg.inference"):
        got = run(ConvNet(tile=(8, 32, 32)), vol, compile=True, workers=2)
    np.testing.assert_array_equal(got, run(ConvNet(tile=(8, 32, 32)), vol))
    assert sum("torch.compile failed" in r.message for r in caplog.records) == 1  # said once, not per call


def test_compiled_net_re_raises_out_of_memory():
    def oom(x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")

    net = fastpath.CompiledNet(torch.nn.Identity(), torch.device("cpu"))
    net._fn = oom
    with pytest.raises(torch.cuda.OutOfMemoryError):
        net(torch.zeros(1))
    assert net.active  # an OOM is not a compiler failure


def test_reduced_precision_on_a_cpu_only_where_it_is_native(monkeypatch, caplog):
    cpu = torch.device("cpu")
    assert fastpath.resolve_precision(cpu, "auto") is None
    monkeypatch.setattr(fastpath, "cpu_supports", lambda dtype: False)
    with caplog.at_level(logging.WARNING, logger="napari_emseg.inference"):
        assert fastpath.resolve_precision(cpu, "bf16") is None
    assert any("no native" in r.message for r in caplog.records)
    monkeypatch.setattr(fastpath, "cpu_supports", lambda dtype: True)
    assert fastpath.resolve_precision(cpu, "bf16") is torch.bfloat16

