"""Blockwise segmentation on dask.distributed: voxels/s and peak RSS per worker, 1, 2, 4 workers.

A multi-GB zarr volume is generated lazily with dask into ``--root`` (a synthetic EM sample
tiled with a flip per tile), with BCD maps of its mitochondria tiled the same way. For each
worker count, a fresh ``LocalCluster`` (one process and one thread per worker, one model per
worker) runs, each for ``--window`` seconds of wall time:

* ``predict``: :func:`napari_emseg.blockwise.predict_blockwise_job` of a cheap BCD ResUNet
  (widths 4, 8) over the whole volume, stopped after the window (the run is resumable, so a
  stopped run is a valid partial result); voxels/s counts the blocks finished after the first
  one, over the time from the first to the last (cluster start, imports, model loading and
  planning are paid once per run, whatever the volume, and are left out);
* ``extract``: the per-block mitochondria extraction stage of
  :func:`napari_emseg.blockwise.instances_blockwise_job` on the tiled maps, stopped likewise.

Peak RSS per worker is each worker process's ``ru_maxrss``; the same is measured with one
worker on a volume 16x smaller, to show it depends on the block, not the volume. Everything
under ``--root`` is deleted afterwards (``--keep`` keeps it).

    python bench/scale.py                       # 2.1 GB volume, about 12 minutes on 2 cores
    python bench/scale.py --shape 64,1024,1024 --window 30

On a 2-core machine 2 workers can at best double the speed of 1, and 4 workers cannot scale
linearly: they share the same 2 cores (the script says so next to its figures).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np

TILE = (64, 256, 256)


def _tiles(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic sample and BCD maps of its mitochondria (as a good network predicts them)."""
    from napari_emseg.data.synthetic import make_synthetic_em
    from napari_emseg.finetune.targets import contour_and_distance

    em = make_synthetic_em(TILE, seed=seed)
    bcd = np.zeros((3, *TILE), np.uint8)
    bcd[0] = (em.mitochondria > 0) * 255
    for z in range(TILE[0]):
        contour, dist = contour_and_distance(em.mitochondria[z], 1)
        bcd[1, z], bcd[2, z] = np.round(contour * 255), np.round(dist * 255)
    return em.raw, bcd


def make_volume(root: Path, shape: tuple[int, int, int], seed: int = 0) -> tuple[str, str]:
    """Raw ``(Z, Y, X)`` uint8 and BCD maps ``(3, Z, Y, X)`` uint8 tiled from one synthetic sample."""
    import dask.array as da
    import zarr

    raw_tile, bcd_tile = _tiles(seed)

    def tile(block_info=None, channels=False):
        loc = block_info[None]["chunk-location"][-3:]
        src = bcd_tile if channels else raw_tile
        flip = tuple(ax for ax, k in zip((-3, -2, -1), loc) if k % 2)  # mirrored neighbours: no seams
        return np.flip(src, axis=flip) if flip else src

    chunks = tuple((t,) * (n // t) for t, n in zip(TILE, shape))
    raw = da.map_blocks(tile, chunks=chunks, dtype=np.uint8)
    bcd = da.map_blocks(tile, chunks=((3,), *chunks), dtype=np.uint8, channels=True)
    raw_path, bcd_path = str(root / "raw.zarr"), str(root / "maps.zarr/predictions")
    zr = zarr.create_array(store=raw_path, shape=shape, chunks=(32, 256, 256), dtype=np.uint8, zarr_format=2)
    zr.attrs.update({"resolution": [40.0, 8.0, 8.0], "unit": "nm"})
    zb = zarr.create_array(store=bcd_path, shape=(3, *shape), chunks=(3, 32, 256, 256), dtype=np.uint8,
                           zarr_format=2)
    zb.attrs.update({"target": "bcd", "scale": 255, "resolution": [40.0, 8.0, 8.0]})
    da.store([raw, bcd], [zr, zb], lock=False, scheduler="threads")
    return raw_path, bcd_path


def checkpoint(root: Path) -> str:
    import torch

    from napari_emseg.models import ModelConfig, build_model, head_info, save_checkpoint

    torch.manual_seed(0)
    net = build_model(ModelConfig(arch="resunet", widths=(4, 8), anisotropic_levels=1, subunits=1),
                      head_info("bcd", tile=(8, 64, 64)))
    return str(save_checkpoint(root / "cheap-bcd.safetensors", net))


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_window(job, window: float) -> tuple[float, int]:
    """Drive ``job`` for ``window`` seconds, then cancel it.

    Returns the seconds from its first finished block to its last and the number of blocks
    finished after the first: the steady-state rate, without cluster start, worker imports and
    planning (those are paid once per run, whatever the volume).
    """
    from napari_emseg.progress import Cancelled

    start, times = time.perf_counter(), []
    try:
        for event in job:
            if event.message.startswith("block "):
                times.append(time.perf_counter())
            if time.perf_counter() - start > window:
                job.throw(Cancelled("time window over"))
    except (Cancelled, StopIteration):
        pass
    return (times[-1] - times[0] if len(times) > 1 else float("nan")), max(0, len(times) - 1)


def predicted_voxels(pred_path: str) -> int:
    import zarr

    from napari_emseg.inference.output import RECORD_KEY, ResumeRecord
    from napari_emseg.inference.tiling import plan_blocks

    arr = zarr.open_array(pred_path, mode="r")
    inf, rec = dict(arr.attrs)["inference"], dict(arr.attrs).get(RECORD_KEY) or {}
    blocks = plan_blocks(arr.shape[1:], inf["tile"], inf["overlap"], inf["block"])
    done = ResumeRecord(arr, rec.get("fingerprint", ""), len(blocks)).done
    return int(sum(np.prod([b - a for a, b in zip(blk.out_start, blk.out_stop)]) for blk in blocks if done[blk.index]))


def extracted_voxels(labels_path: str, blocks: tuple[int, int, int]) -> int:
    scratch = Path(labels_path).with_name(f".{Path(labels_path).name}.blockwise") / "extract"
    return len(list(scratch.glob("*.npz"))) * int(np.prod(blocks))


def measure(n: int, raw: str, maps: str, ckpt: str, root: Path, blocks, window: float) -> dict[str, float]:
    from napari_emseg.blockwise import BlockwiseConfig, dask_client, instances_blockwise_job
    from napari_emseg.blockwise.cluster import SyncArray, VolumeRef
    from napari_emseg.blockwise.predict import predict_blockwise_job
    from napari_emseg.inference import InferenceConfig
    from napari_emseg.io import open_volume
    from napari_emseg.postprocess import MitoConfig

    out = root / f"run-{n}-{time.time_ns()}"
    vol = open_volume(raw)
    cfg = InferenceConfig(device="cpu", dtype="uint8", block=blocks, batch=4)
    with dask_client(None, n, processes=True) as client:
        client.run(lambda: __import__("torch").set_num_threads(1))
        job = predict_blockwise_job(client, ckpt, SyncArray(vol.data), str(out / "seg.zarr/predictions"), cfg,
                                    image_ref=VolumeRef(raw), voxel_size=vol.voxel_size)
        t_pred, k_pred = run_window(job, window)
        v_pred = predicted_voxels(str(out / "seg.zarr/predictions")) * k_pred / max(1, k_pred + 1)
        labels = str(out / "seg.zarr/labels")
        job = instances_blockwise_job(maps, labels, MitoConfig(), BlockwiseConfig(blocks=blocks, keep_scratch=True),
                                      scheduler=client)
        t_ext, k_ext = run_window(job, window)
        v_ext = extracted_voxels(labels, blocks) * k_ext / max(1, k_ext + 1)
        rss = sorted(client.run(_peak_rss_mb).values())
    shutil.rmtree(out, ignore_errors=True)
    return {"workers": n, "predict_vps": v_pred / t_pred, "extract_vps": v_ext / t_ext, "predict_blocks": k_pred + 1,
            "extract_blocks": k_ext + 1, "rss_max": max(rss), "rss_min": min(rss)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="128,4096,4096", help="volume z,y,x (multiples of 64,256,256)")
    p.add_argument("--workers", default="1,2,4")
    p.add_argument("--blocks", default="32,256,256")
    p.add_argument("--window", type=float, default=75.0, help="seconds each stage runs per worker count")
    p.add_argument("--root", default="/tmp/emseg-scale-bench")
    p.add_argument("--keep", action="store_true", help="keep the generated volume")
    a = p.parse_args()
    shape = tuple(int(v) for v in a.shape.split(","))
    blocks = tuple(int(v) for v in a.blocks.split(","))
    root = Path(a.root)
    root.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        raw, maps = make_volume(root, shape)
        gb = np.prod(shape) / 1e9
        print(f"volume {shape} uint8: {gb:.2f} GB raw + {3 * gb:.2f} GB BCD maps (uncompressed), "
              f"generated in {time.perf_counter() - t0:.0f} s; blocks {blocks}, window {a.window:.0f} s per stage")
        small = (shape[0], *(max(t, s // 4 // t * t) for t, s in zip(TILE[1:], shape[1:])))  # 1/16
        ckpt = checkpoint(root)
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
        print("workers | predict Mvoxel/s (blocks) | extract Mvoxel/s (blocks) | peak RSS per worker (MB)")
        base = None
        for n in [int(v) for v in a.workers.split(",")]:
            r = measure(n, raw, maps, ckpt, root, blocks, a.window)
            base = base or r
            print(f"{n:7d} | {r['predict_vps'] / 1e6:6.2f} ({r['predict_vps'] / base['predict_vps']:.2f}x, "
                  f"{r['predict_blocks']}) | {r['extract_vps'] / 1e6:6.2f} "
                  f"({r['extract_vps'] / base['extract_vps']:.2f}x, {r['extract_blocks']}) | "
                  f"{r['rss_min']:.0f}-{r['rss_max']:.0f}", flush=True)
        sroot = root / "small"
        sroot.mkdir(exist_ok=True)
        sraw, smaps = make_volume(sroot, small)
        r = measure(1, sraw, smaps, ckpt, sroot, blocks, a.window / 3)
        sgb = np.prod(small) / 1e9
        print(f"same blocks on a {sgb:.2f} GB volume, 1 worker: peak RSS {r['rss_max']:.0f} MB "
              "(memory follows the block, not the volume)")
        print(f"note: this machine has {os.cpu_count()} cores shared with other jobs; 4 workers on 2 cores "
              "cannot scale linearly, and 2 workers at best double 1 worker's speed")
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
