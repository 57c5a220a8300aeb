"""Tiled inference benchmark: ``predict_tiled`` against MONAI's sliding window and a naive loop.

Same model, same volume, one process. Each method goes from the raw uint8 volume to probability
maps (intensity range, normalisation, network, sigmoid, blending), and is timed and watched for
peak resident memory (psutil, sampled every 2 ms, minus the resident memory before it started):

* ``predict_tiled`` (this package: blocks, Gaussian-blended tiles, reader/writer threads, its
  default worker threads), and ``predict_tiled[FIELD=VALUE]`` for each ``--variant``;
* ``monai``: ``monai.inferers.sliding_window_inference`` on the whole normalised volume in
  memory, same tile, overlap (0.25), Gaussian blending (sigma 0.125) and batch; and
  ``monai_default`` with MONAI's default ``sw_batch_size=1``, as it is most often called;
* ``naive``: non-overlapping tiles, no blending (fastest, with seams).

On CUDA it also reports Mvoxel/s of a ViT-B UNETR (bf16) and the fraction of the GPU's dense
bf16 peak its FLOPs reach, twice: ``predict_tiled`` from an in-memory array to in-memory maps, and
end to end from a zarr volume to zarr predictions through the product's public path
(:func:`napari_emseg.workflows.segment_job` without post-processing on a volume from
:func:`napari_emseg.io.open_volume`, what ``napari-emseg segment --task none`` runs: blocks read
from the zarr, float16 maps written to ``OUT/predictions``, the provenance bundle with its input
checksum; ``--unetr-no-zarr`` leaves it out); and, unless ``--stream-gb 0``, it streams a zarr volume of that many
gigabytes (written lazily with dask into a temporary folder, deleted afterwards) through a cheap
model and prints peak RSS against the volume's size.

    python bench/inference.py                    # CPU defaults, ~12 min on a shared 2-core CPU
    python bench/inference.py --cases resunet --variant workers=1    # one case, plus a config variant
    python bench/inference.py --cases pointwise --skip monai_default,naive --variant compile=true
    python bench/inference.py --stream-gb 4      # plus the out-of-core run
    python bench/inference.py --skip-compare --json unetr.json   # UNETR ViT-B throughput only (GPU)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

from napari_emseg.data.normalize import intensity_range, normalize
from napari_emseg.inference import InferenceConfig, predict_tiled
from napari_emseg.models.info import ModelInfo
from napari_emseg.progress import drain

ISBI = Path("/work/shared/data/isbi2012/isbi2012_train.npz")

BF16_PEAK_TFLOPS = {"H100 SXM": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "H200": 989.4,
                    "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


class PeakRSS:
    """Peak resident memory above the level at entry, sampled in a thread."""

    def __init__(self, every_s: float = 0.002) -> None:
        self.proc, self.every = psutil.Process(), every_s

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.every)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


def load_volume(shape: tuple[int, int, int]) -> tuple[np.ndarray, str]:
    if ISBI.exists():
        raw = np.load(ISBI)["raw"]
        reps = [int(np.ceil(s / r)) for s, r in zip(shape, raw.shape)]
        vol = np.tile(raw, reps)[: shape[0], : shape[1], : shape[2]]  # mirror-free tiling of real EM
        return np.ascontiguousarray(vol), f"ISBI 2012 EM tiled to {shape}"
    print(f"({ISBI} absent: using the synthetic EM sample)")
    from napari_emseg.data.synthetic import make_synthetic_em

    return make_synthetic_em(shape, seed=0).raw, f"synthetic EM {shape}"


def resunet(tile: tuple[int, int, int]):
    """A small ResUNet3D (batch norm, so translation-equivariant in eval mode): model-bound."""
    from napari_emseg.models import ModelConfig, build_model, head_info

    net = build_model(ModelConfig(arch="resunet", widths=(8, 16, 32, 64), norm="batch"),
                      head_info("affinities", tile=tile))
    return net.eval()


class Pointwise(torch.nn.Module):
    """1x1x1 convolutions 1 -> 8 -> 3: almost free, so the pipeline around the network shows."""

    def __init__(self, tile: tuple[int, int, int]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 1), torch.nn.ReLU(), torch.nn.Conv3d(8, 3, 1))
        self.info = ModelInfo(input_multiple=(1, 1, 1), tile=tile)

    def forward(self, x):
        return self.net(x)


def run_ours(net, vol, tile, batch, device, changes=None):
    """``predict_tiled`` with the bench's tile, batch and blending, then ``changes`` (a variant,
    which may change the batch too)."""
    cfg = InferenceConfig(tile=tile, batch=batch, device=device, overlap=0.25, blend="gaussian").replace(**(changes or {}))
    return drain(predict_tiled(net, vol, None, cfg), show=False)


def parse_variant(text: str) -> dict:
    """``"workers=1,channels_last=true"`` -> InferenceConfig changes."""
    out = {}
    for part in filter(None, text.split(",")):
        key, value = part.split("=", 1)
        low = value.strip().lower()
        out[key.strip()] = (True if low == "true" else False if low == "false" else None if low == "none"
                            else int(low) if low.lstrip("-").isdigit() else value.strip())
    return out


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def run_monai(net, vol, tile, batch, device):
    from monai.inferers import sliding_window_inference

    lo, hi = intensity_range(vol, net.info.norm)
    x = torch.from_numpy(normalize(vol, lo, hi))[None, None].to(device)
    with torch.inference_mode():
        y = sliding_window_inference(
            x, tile, batch, lambda t: torch.sigmoid(net(t)), overlap=0.25, mode="gaussian", sigma_scale=0.125
        )
    return y[0].cpu().numpy()


def run_naive(net, vol, tile, batch, device):
    lo, hi = intensity_range(vol, net.info.norm)
    out = np.zeros((net.info.out_channels, *vol.shape), np.float32)
    starts = [sorted({min(s, n - t) for s in range(0, n, t)}) for n, t in zip(vol.shape, tile)]
    grid = [(z, y, x) for z in starts[0] for y in starts[1] for x in starts[2]]
    with torch.inference_mode():
        for i in range(0, len(grid), batch):
            pos = grid[i : i + batch]
            sl = [tuple(slice(p, p + t) for p, t in zip(q, tile)) for q in pos]
            xb = torch.from_numpy(np.stack([normalize(vol[s], lo, hi) for s in sl]))[:, None].to(device)
            yb = torch.sigmoid(net(xb)).cpu().numpy()
            for s, y in zip(sl, yb):
                out[(slice(None), *s)] = y
    return out


def compare(label: str, net, vol: np.ndarray, what: str, tile, batch: int, repeat: int,
            variants: list[str] = (), skip: tuple[str, ...] = ()) -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = net.to(device)
    with torch.inference_mode():  # warm-up
        net(torch.zeros((batch, 1, *tile), device=device))
    print(f"\n[{label}] volume: {what}, {vol.size / 1e6:.1f} Mvoxel uint8; "
          f"{sum(p.numel() for p in net.parameters()) / 1e6:.3f} M params; tile {tuple(tile)}, overlap 0.25, "
          f"gaussian, batch {batch}; device {device}, torch threads {torch.get_num_threads()}, "
          f"{len(os.sched_getaffinity(0))} usable cores; load average before: {load_average()}", flush=True)
    ours = [("predict_tiled", lambda *a: run_ours(*a), batch)]
    ours += [(f"predict_tiled[{v}]", lambda *a, c=parse_variant(v): run_ours(*a, c), batch) for v in variants]
    methods = [*ours, ("monai", run_monai, batch), ("monai_default", run_monai, 1), ("naive", run_naive, batch)]
    methods = [m for m in methods if m[0] not in skip]
    wall: dict[str, list[float]] = {m[0]: [] for m in methods}
    cpu: dict[str, list[float]] = {m[0]: [] for m in methods}
    peak: dict[str, float] = {}
    preds: dict[str, np.ndarray] = {}
    for r in range(repeat):  # interleaved rounds: the CPU is shared, so compare within a round
        for name, fn, b in methods:
            with PeakRSS() as mem:
                t0, c0 = time.perf_counter(), time.process_time()
                pred = fn(net, vol, tile, b, device)
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
            peak[name] = min(peak.get(name, mem.mb), mem.mb)
            if name.startswith("predict_tiled") or name == "monai":
                preds[name] = pred
            del pred
        print(f"  round {r + 1}: " + ", ".join(f"{n} {wall[n][-1]:.2f} s" for n, _, _ in methods)
              + f"; load average {load_average()}", flush=True)
    w = max(len(m[0]) for m in methods)
    for name, _, b in methods:
        dt = min(wall[name])
        print(f"{name:>{w}}: {dt:7.2f} s ({min(cpu[name]):7.2f} s CPU)  {vol.size / dt / 1e6:7.3f} Mvoxel/s  "
              f"peak +{peak[name]:7.1f} MB  (batch {b})")

    def ratio(other: str, mine: str, times: dict[str, list[float]]) -> str:
        if other not in times:
            return "n/a"
        r = sorted(o / p for o, p in zip(times[other], times[mine]))
        return f"{statistics.median(r):.2f}x" + (f" ({r[0]:.2f}-{r[-1]:.2f})" if len(r) > 1 else "")

    print(f"median per-round speed ratio (range), {repeat} rounds; monai at the same batch {batch}, "
          "monai_default at its sw_batch_size=1:")
    for name, _, _ in ours:
        if name not in wall:
            continue
        print(f"  {name}: vs monai wall {ratio('monai', name, wall)}, CPU {ratio('monai', name, cpu)}; "
              f"vs monai_default wall {ratio('monai_default', name, wall)}; vs naive wall {ratio('naive', name, wall)}")
        if "monai" in peak:
            print(f"    peak memory monai / {name}: {peak['monai'] / max(peak[name], 1e-3):.1f}x")
    for name, pred in preds.items():
        if name == "predict_tiled" or "predict_tiled" not in preds:
            continue
        diff = np.abs(preds["predict_tiled"].astype(np.float32) - pred.astype(np.float32))
        print(f"|predict_tiled - {name}|: max {diff.max():.4f}, mean {diff.mean():.5f}"
              + (" (tiles at the volume's faces are weighted differently)" if name == "monai" else ""))
    print(f"load average after: {load_average()}", flush=True)


def tile_voxels(shape, tile, cfg: InferenceConfig) -> int:
    """Voxels the network sees for a volume: tiles (with their overlaps) of every block."""
    from napari_emseg.inference.tiling import (
        block_tile_starts,
        choose_block,
        overlap_voxels,
        plan_blocks,
    )

    ov = overlap_voxels(tile, cfg.overlap3())
    blocks = plan_blocks(shape, tile, ov, choose_block(shape, tile, ov, cfg.block))
    n = sum(int(np.prod([len(s) for s in block_tile_starts(b.shape, b.crop, tile, ov)])) for b in blocks)
    return n * int(np.prod(tile))


def peak_bf16_tflops(name: str) -> float | None:
    """Dense bf16 peak of a GPU by name (None when not in :data:`BF16_PEAK_TFLOPS`)."""
    return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def unetr_throughput(args) -> dict | None:
    """Mvoxel/s of a ViT UNETR over a volume (bf16 on CUDA) and its fraction of the bf16 peak."""
    device = args.unetr_device
    if device == "cuda" and not torch.cuda.is_available():
        print("UNETR ViT-B on CUDA: skipped (no CUDA device)")
        return None
    try:
        from napari_emseg.models import ModelConfig, build_model, head_info
    except ImportError as err:
        print(f"UNETR ViT-B: skipped ({err})")
        return None
    from torch.utils.flop_counter import FlopCounterMode

    cuda = device == "cuda"
    tile = tuple(args.unetr_tile)
    net = build_model(ModelConfig(arch="unetr", vit_size=args.unetr_vit, patch_size=(1, 16, 16)),
                      head_info("affinities", tile=tile)).to(device).eval()
    x = torch.zeros((1, 1, *tile), device=device)
    dtype = torch.bfloat16 if cuda else torch.float32
    with torch.inference_mode(), torch.autocast(device, dtype=dtype, enabled=cuda), \
            FlopCounterMode(display=False) as fc:
        net(x)
    flops_per_voxel = fc.get_total_flops() / x.numel()
    vol = np.random.default_rng(0).integers(0, 255, tuple(args.unetr_shape), dtype=np.uint8)
    cfg = InferenceConfig(tile=tile, batch=args.gpu_batch, device=device, precision="bf16" if cuda else "fp32")
    warm = tuple(min(s, 2 * t) for s, t in zip(vol.shape, tile))
    drain(predict_tiled(net, vol[: warm[0], : warm[1], : warm[2]], None, cfg), show=False)  # warm-up
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    drain(predict_tiled(net, vol, None, cfg), show=False)
    dt = time.perf_counter() - t0
    name = torch.cuda.get_device_name() if cuda else "CPU"
    peak = peak_bf16_tflops(name) if cuda else None
    # tiles overlap: the network sees more voxels than the volume has
    achieved = flops_per_voxel * tile_voxels(vol.shape, tile, cfg) / dt / 1e12
    print(f"UNETR ViT-{args.unetr_vit} ({cfg.precision}) on {name}: {vol.size / dt / 1e6:.4g} Mvoxel/s of volume, "
          f"{flops_per_voxel / 1e3:.1f} kFLOP/voxel, ~{achieved:.1f} TFLOP/s"
          + (f" = {achieved / peak:.1%} of the {peak:.0f} TFLOP/s dense bf16 peak" if peak else ""), flush=True)
    out = {"model": f"UNETR ViT-{args.unetr_vit}, patch 1x16x16", "device": name, "precision": cfg.precision,
           "volume": list(vol.shape), "tile": list(tile), "batch": cfg.batch, "seconds": round(dt, 3),
           "mvoxel_per_s": sig(vol.size / dt / 1e6), "kflop_per_voxel": round(flops_per_voxel / 1e3, 2),
           "achieved_tflops": round(achieved, 3), "peak_bf16_tflops": peak,
           "fraction_of_peak": round(achieved / peak, 4) if peak else None}
    if not args.unetr_no_zarr:
        out["zarr"] = unetr_zarr_to_zarr(net, vol, cfg, args)
    return out


def sig(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant figures (a tiny smoke-test rate stays above 0)."""
    return float(f"{x:.{digits}g}")


def unetr_zarr_to_zarr(net, vol: np.ndarray, cfg: InferenceConfig, args) -> dict:
    """End to end from a zarr volume to zarr predictions, as ``napari-emseg segment --task none``.

    ``vol`` is written (outside the clock) to a zarr array in ``--tmp`` (chunks ``--unetr-chunks``,
    zarr's default compressor); :func:`~napari_emseg.workflows.segment_job` (no post-processing)
    then reads it block by block through :func:`~napari_emseg.io.open_volume` and writes
    ``OUT/predictions`` (float16, zarr's default compressor) and the provenance bundle (which
    reads the input once more for its checksum). Timed from the job's start to its return; the
    predict part ends at its last block's event.
    """
    import zarr

    from napari_emseg.io import open_volume
    from napari_emseg.workflows import SegmentConfig, segment_job

    tmp = Path(tempfile.mkdtemp(prefix="emseg-bench-unetr-", dir=args.tmp))
    try:
        chunks = tuple(min(c, s) for c, s in zip(args.unetr_chunks, vol.shape))
        src = zarr.create_array(store=str(tmp / "raw.zarr"), shape=vol.shape, chunks=chunks, dtype="uint8")
        src[:] = vol
        image = open_volume(str(tmp / "raw.zarr"))
        last_block = [0.0]

        def seen(event) -> None:
            if getattr(event, "stage", None) == "predict":
                last_block[0] = time.perf_counter()

        cuda = cfg.device == "cuda"
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        seg = drain(segment_job(net, image, SegmentConfig(inference=cfg), out=tmp / "seg.zarr", postprocess=False,
                                attrs={"source": {"image": str(tmp / "raw.zarr")}}), show=False, callback=seen)
        dt = time.perf_counter() - t0
        pred = zarr.open_array(seg.paths["predictions"], mode="r")
        assert tuple(pred.shape[1:]) == tuple(vol.shape), (pred.shape, vol.shape)
        predict_s = (last_block[0] - t0) if last_block[0] else None
        written = sum(f.stat().st_size for f in (tmp / "seg.zarr").rglob("*") if f.is_file())
        res = {"path": "zarr -> zarr: segment_job(postprocess=False) on open_volume(zarr)",
               "input_chunks": list(chunks), "output": f"{tuple(pred.shape)} {pred.dtype}",
               "output_mb_on_disk": round(written / 2**20, 1), "seconds": round(dt, 3),
               "mvoxel_per_s": sig(vol.size / dt / 1e6),
               "predict_seconds": round(predict_s, 3) if predict_s else None,
               "predict_mvoxel_per_s": sig(vol.size / predict_s / 1e6) if predict_s else None}
        print(f"UNETR ViT-{args.unetr_vit} zarr -> zarr end to end (segment_job, --task none): "
              f"{res['mvoxel_per_s']:.4g} Mvoxel/s ({dt:.2f} s; predicting {predict_s or float('nan'):.2f} s, "
              f"the rest provenance and its input checksum); maps {res['output']}, "
              f"{res['output_mb_on_disk']} MB on disk", flush=True)
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _log_tenths(event) -> None:
    if event.total and event.step and event.step % max(1, event.total // 10) == 0:
        print(f"  {event.describe()}", flush=True)


def streamed(args) -> None:
    import dask.array as da
    import zarr

    gb = args.stream_gb
    z = 64
    side = int(np.ceil(np.sqrt(gb * 1e9 / z) / 256) * 256)  # at least `gb` gigabytes
    shape = (z, side, side)
    tmp = Path(tempfile.mkdtemp(prefix="emseg-bench-", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        lazy = da.random.default_rng(0).integers(0, 255, size=shape, chunks=(32, 512, 512), dtype=np.uint8)
        src = zarr.create_array(store=str(tmp / "raw.zarr"), shape=shape, chunks=(32, 512, 512),
                                dtype="uint8", zarr_format=2, compressors=None)
        da.store(lazy, src, lock=False)
        print(f"streamed: wrote {np.prod(shape) / 1e9:.2f} GB zarr {shape} in {time.perf_counter() - t0:.0f} s")
        info = ModelInfo(target="boundaries", channel_names=("boundary",), input_multiple=(1, 1, 1),
                         tile=(16, 256, 256))
        net = torch.nn.Conv3d(1, 1, 1)  # cheap: the run is about streaming, not compute
        net.info = info
        cfg = InferenceConfig(dtype="uint8", batch=2, device="cpu")  # default blocks (about 32 x 256 x 256)
        proc = psutil.Process()
        with PeakRSS(every_s=0.01) as mem:
            t0 = time.perf_counter()
            drain(predict_tiled(net, zarr.open_array(str(tmp / "raw.zarr"), mode="r"), tmp / "pred.zarr", cfg),
                  show=not args.quiet, callback=_log_tenths)
            dt = time.perf_counter() - t0
        print(f"streamed: {np.prod(shape) / 1e9:.2f} Gvoxel in {dt:.0f} s ({np.prod(shape) / dt / 1e6:.1f} Mvoxel/s), "
              f"peak RSS {mem.peak / 2**20:.0f} MB (+{mem.mb:.0f} MB over the {mem.base / 2**20:.0f} MB before) "
              f"for a {np.prod(shape) / 2**20:.0f} MB volume; process rss now {proc.memory_info().rss / 2**20:.0f} MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", type=lambda s: [int(v) for v in s.split(",")], default=[32, 192, 192])
    p.add_argument("--tile", type=lambda s: [int(v) for v in s.split(",")], default=[16, 64, 64],
                   help="ResUNet tile")
    p.add_argument("--big-shape", type=lambda s: [int(v) for v in s.split(",")], default=[48, 1024, 1024],
                   help="volume for the pointwise model")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--gpu-batch", type=int, default=4, help="UNETR tiles per forward pass")
    p.add_argument("--unetr-device", choices=["cuda", "cpu"], default="cuda",
                   help="where the UNETR throughput runs ('cpu': fp32, for a smoke test)")
    p.add_argument("--unetr-vit", default="base", help="UNETR ViT size (base; micro for a smoke test)")
    p.add_argument("--unetr-shape", type=lambda s: [int(v) for v in s.split(",")], default=[64, 1024, 1024],
                   help="volume of the UNETR throughput run")
    p.add_argument("--unetr-tile", type=lambda s: [int(v) for v in s.split(",")], default=[16, 256, 256])
    p.add_argument("--unetr-chunks", type=lambda s: [int(v) for v in s.split(",")], default=[32, 256, 256],
                   help="chunks of the zarr volume of the end-to-end UNETR run")
    p.add_argument("--unetr-no-zarr", action="store_true",
                   help="leave out the end-to-end zarr -> zarr UNETR run (in memory only)")
    p.add_argument("--json", metavar="PATH", help="write the UNETR throughput figures as JSON")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: stable timings on a shared CPU)")
    p.add_argument("--repeat", type=int, default=3, help="interleaved rounds (ResUNet)")
    p.add_argument("--repeat-pointwise", type=int, default=3, help="interleaved rounds (pointwise)")
    p.add_argument("--cases", default="resunet,pointwise", help="comparisons to run (comma-separated)")
    p.add_argument("--variant", action="append", default=[], metavar="FIELD=VALUE[,...]",
                   help="also time predict_tiled with these InferenceConfig changes (repeatable), "
                        "e.g. --variant workers=1 --variant channels_last=true")
    p.add_argument("--skip", default="", help="methods to leave out, e.g. monai_default,naive")
    p.add_argument("--stream-gb", type=float, default=0.0, help="size of the streamed zarr run (0: skip)")
    p.add_argument("--tmp", default=os.environ.get("TMPDIR", "/tmp"))
    p.add_argument("--skip-compare", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = set(filter(None, args.cases.split(",")))
    skip = tuple(filter(None, args.skip.split(",")))
    if not args.skip_compare and "resunet" in cases:
        vol, what = load_volume(tuple(args.shape))
        compare("ResUNet3D", resunet(tuple(args.tile)), vol, what, tuple(args.tile), args.batch, args.repeat,
                args.variant, skip)
        del vol
    if not args.skip_compare and "pointwise" in cases:
        big, what = load_volume(tuple(args.big_shape))
        compare("pointwise", Pointwise((16, 128, 128)), big, what, (16, 128, 128), args.batch,
                args.repeat_pointwise, args.variant, skip)
        del big
    unetr = unetr_throughput(args)
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({"unetr": unetr}, indent=2))
    if args.stream_gb > 0:
        streamed(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
