"""Semantic classes in a near-isotropic volume: the product's 2D network against its 3D one.

No near-isotropic real set with class labels is in ``../shared/data``, so the synthetic sample
generated at 8 x 8 x 8 nm (64 x 320 x 320, seed 7; the ``synth-iso`` stand-in of
``bench/few_slices.py``) stands in for FIB-SEM. Three classes from its ground truth: 0 other,
1 membrane, 2 mitochondria (mitochondria drawn over membranes). The classes of xy slices
[12, 32, 52] are painted (every voxel of those slices); ``fine_tune("auto", ...,
FineTuneConfig(task="semantic", time_limit_min=MINUTES, seed=SEED, dims=DIMS))`` with every other
field at its default, then ``segment_job`` with ``SegmentConfig()`` on the whole volume; the
argmax of the class map is scored on xy slices 4, 8, 20, 24, 28, 36, 40, 44, 56 and 60: the IoU
of each class and their mean over membrane and mitochondria (``miou``).

``--dims 2d``: the plain 2D U-Net from the bundled ``masked2d-unet2d-isbi-vnc``, trained also on
xz and yz planes cut across the painted slices and predicted on the xy, xz and yz planes
(what ``auto`` chooses since 2026-12-02); ``--dims 3d``: the residual 3D U-Net from the MS-Con
encoder on cubes of 64^3, the painted plane also shown along y and x (what it chose before).

    python bench/semantic_iso.py --dims 2d,3d --seeds 0          # 2 x 11 min on 2 cores
    python bench/semantic_iso.py --dims 2d --threads 1 &         # the two arms at once,
    python bench/semantic_iso.py --dims 3d --threads 1           # one core each
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from finetune_curve import semantic_scores  # bench/finetune_curve.py, beside this file

from napari_emseg.data.synthetic import make_synthetic_em
from napari_emseg.finetune.job import FineTuneConfig, fine_tune
from napari_emseg.finetune.recipe import PATCH_ISO
from napari_emseg.postprocess.semantic import class_map
from napari_emseg.progress import drain
from napari_emseg.workflows import SegmentConfig, segment_job

PAINTED = (12, 32, 52)
TEST = (4, 8, 20, 24, 28, 36, 40, 44, 56, 60)
VOXEL = (8.0, 8.0, 8.0)


def run(raw: np.ndarray, gt: np.ndarray, dims: str, minutes: float, seed: int) -> dict:
    labels = np.zeros(gt.shape, np.uint32)
    labels[list(PAINTED)] = gt[list(PAINTED)]
    extra = {"patch": PATCH_ISO} if dims == "3d" else {}  # as auto's 3D network in a volume had
    cfg = FineTuneConfig(task="semantic", time_limit_min=minutes, seed=seed, device="cpu", dims=dims, **extra)
    with tempfile.TemporaryDirectory(prefix="emseg-sem-") as tmp:
        t0 = time.perf_counter()
        res = drain(fine_tune("auto", raw, labels, cfg, out=Path(tmp) / "m.safetensors", voxel_size=VOXEL), show=False)
        t1 = time.perf_counter()
        seg = drain(segment_job(Path(tmp) / "m.safetensors", raw, SegmentConfig(), voxel_size=VOXEL,
                                provenance=False), show=False)
        pred = class_map(seg.predictions)  # the arg-max over the classes, as segment makes it
    row = semantic_scores(pred[list(TEST)], gt[list(TEST)])
    row.update(dims=dims, seed=seed, arch=res.model.config.arch, steps=res.steps,
               train_s=round(t1 - t0), predict_s=round(time.perf_counter() - t1))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", default="2d,3d", help="networks to compare, comma-separated")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: the machine's cores)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    em = make_synthetic_em(shape=(64, 320, 320), seed=7, voxel_size=VOXEL)
    gt = np.zeros(em.raw.shape, np.uint8)
    gt[em.membranes] = 1
    gt[em.mitochondria > 0] = 2
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for dims in args.dims.split(","):
            rows.append(run(em.raw, gt, dims, args.minutes, seed))
            r = rows[-1]
            print(f"seed {seed} {dims} ({r['arch']}, {r['steps']} steps, train {r['train_s']} s, predict "
                  f"{r['predict_s']} s): membrane {r['iou_membrane']:.3f}  mitochondria {r['iou_mito']:.3f}  "
                  f"mean {r['miou']:.3f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
