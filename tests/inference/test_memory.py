"""A zarr volume several times larger than the memory allowed streams through in bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr

SHAPE = (192, 1024, 1024)  # 192 MiB of uint8 (768 MiB as float32), and as much again as output

SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np, psutil, torch, zarr
    from napari_emseg.inference import InferenceConfig, predict_tiled
    from napari_emseg.models.info import ModelInfo
    from napari_emseg.progress import drain

    torch.set_num_threads(1)
    src, out = sys.argv[1], sys.argv[2]
    net = torch.nn.Conv3d(1, 1, 1)  # cheap: the test is about memory, not compute
    net.info = ModelInfo(target="boundaries", channel_names=("b",), input_multiple=(1, 8, 8), tile=(8, 128, 128))
    # one worker: a second one (the default with 1 torch thread on 2 cores) adds its own malloc
    # arena's slack, 50-65 MB of growth against 33-40 MB in three runs each (docs/benchmarks.md)
    cfg = InferenceConfig(device="cpu", batch=2, block=(8, 256, 256), dtype="uint8", norm_samples=1_000_000,
                          workers=1)
    # warm up every code path (threads, codecs, allocator) on a small crop first
    drain(predict_tiled(net, np.zeros((16, 256, 256), np.uint8), out + ".warm", cfg), show=False)

    def status_kb(key):
        return int([l.split()[1] for l in open("/proc/self/status") if l.startswith(key)][0])

    def peak_kb():
        # VmHWM: this process's peak RSS. (ru_maxrss also keeps the parent's RSS at fork time.)
        try:
            return status_kb("VmHWM")
        except (OSError, IndexError):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:  # reset the peak (Linux >= 4.0); otherwise the peak so far only makes the test stricter
        open("/proc/self/clear_refs", "w").write("5")
    except OSError:
        pass
    base = psutil.Process().memory_info().rss // 1024
    t0 = time.perf_counter()
    drain(predict_tiled(net, zarr.open_array(src, mode="r"), out, cfg), show=False)
    print(json.dumps({"base_kb": base, "peak_kb": peak_kb(), "seconds": time.perf_counter() - t0}))
    """
)


@pytest.mark.slow
def test_streaming_a_large_zarr_volume_keeps_peak_rss_bounded(tmp_path):
    src = zarr.create_array(store=str(tmp_path / "raw.zarr"), shape=SHAPE, chunks=(32, 256, 256),
                            dtype="uint8", compressors=None)
    rng = np.random.default_rng(0)
    for z in range(0, SHAPE[0], 32):
        src[z : z + 32] = rng.integers(0, 255, (32, *SHAPE[1:]), dtype=np.uint8)
    del rng
    volume_mb = np.prod(SHAPE) / 2**20
    # glibc gives each thread (ours, zarr's codec pool) its own malloc arena, whose free space
    # still counts as resident; two arenas keep RSS close to what is really in use
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "raw.zarr"), str(tmp_path / "pred.zarr")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    growth_mb = (m["peak_kb"] - m["base_kb"]) / 1024
    # the run grows by a third of the raw volume at most (a twelfth of it as float32); the blocks,
    # tiles, read-ahead and write-behind buffers, not the volume, set the bound
    assert growth_mb < volume_mb / 3, (growth_mb, volume_mb, m)
    pred = zarr.open_array(str(tmp_path / "pred.zarr"), mode="r")
    assert pred.shape == (1, *SHAPE) and pred.attrs["complete"] is True
    assert pred[0, -1, -5:, -5:].any()  # the last block was written too
