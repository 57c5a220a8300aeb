"""2D -> 3D transfer on a tiny CPU setting: an inflated 2D encoder against scratch and a native
3D encoder, with equal fine-tuning steps.

Task: mitochondria (BCD) with a 3D UNETR-micro (patch 1x16x16) on the Gerhard et al. 2013 VNC
stack 1, crop 20 x 512 x 512 (y 512:1024, x 256:768), sections 2, 6 and 10 painted; scored by
the foreground IoU (map > 0.5) on sections 13-17 and 19 (18 has no mitochondrion labels). Arms,
all through ``fine_tune(..., dims="3d")`` with the same seed, patches, steps and rates
(``encoder_lr_scale=1``):

* ``scratch``: ``scratch-vit3d-micro``;
* ``native-3d``: the bundled MAE-3D encoder ``mae3d-vit3d-micro-drosophila-vnc``;
* ``inflated-frozen``: a RETINA TransUNet-2D micro pretrained here for ``--pretrain-min``
  minutes on the stack's sections (2D, unlabelled), inflated into the UNETR; its transformer
  blocks frozen (the RETINA default, ``transfer="auto"``);
* ``inflated-trained``: the same, the blocks trained (``transfer="transformer"``).

    python bench/inflate_transfer.py --out /tmp/inflate          # RETINA 3 min + about 3 min an arm
    python bench/inflate_transfer.py --arms scratch --steps 100 --retina R.safetensors --out /tmp/a  # one arm
    python bench/inflate_transfer.py --steps 4 --pretrain-steps 2 --out /tmp/smoke
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_emseg.finetune.job import FineTuneConfig, fine_tune
from napari_emseg.progress import drain
from napari_emseg.workflows import SegmentConfig, segment_job

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "vnc-gerhard2013" / "vnc_stack1.npz"
CROP = (slice(None), slice(512, 1024), slice(256, 768))
VOXEL = (50.0, 4.6, 4.6)
PAINTED = (2, 6, 10)
TEST = (13, 14, 15, 16, 17, 19)


def pretrain_retina(raw: np.ndarray, out: Path, minutes: float, steps: int) -> Path:
    from napari_emseg.cli.pretrain import main

    npy = out / "vnc_raw.npy"
    np.save(npy, raw)
    args = ["-q", "--method", "retina", "--data", str(npy), "--out", str(out / "retina"), "--name", "retina-micro",
            "--max-steps", str(steps), "--time-limit", str(minutes), "--threads", "1",
            "--set", "model.backbone.vit_size=micro", "--set", "data.patch=1,128,128", "--set", "data.batch_size=4",
            "--set", "train.lr=1e-3", "--set", "train.tensorboard=false", "--set", "train.preview_every=0"]
    if main(args) != 0:
        raise SystemExit("RETINA pretraining failed")
    return out / "retina" / "retina-micro.safetensors"


def iou(model, raw, gt) -> float:
    seg = drain(segment_job(model, raw[12:20], SegmentConfig(), voxel_size=VOXEL, postprocess=False,
                            provenance=False), show=False)
    fg = np.asarray(seg.predictions, dtype=np.float32)[0] > 0.5
    idx = [z - 12 for z in TEST]
    p, t = fg[idx], gt[list(TEST)] > 0
    return float((p & t).sum() / max(1, (p | t).sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--patch", default="4,64,64")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pretrain-min", type=float, default=3.0)
    ap.add_argument("--pretrain-steps", type=int, default=100000)
    ap.add_argument("--arms", default="scratch,native-3d,inflated-frozen,inflated-trained")
    ap.add_argument("--retina", type=Path, help="a RETINA encoder to inflate instead of pretraining one")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    d = np.load(DATA)
    raw, gt = d["raw"][CROP], d["mito_instances_2d"][CROP]
    arms = a.arms.split(",")
    res: dict = {"steps": a.steps, "patch": a.patch, "batch": a.batch, "lr": a.lr, "seed": a.seed,
                 "painted": list(PAINTED), "test": list(TEST), "arms": {}}
    retina = a.retina
    if retina is None and any(x.startswith("inflated") for x in arms):
        t0 = time.perf_counter()
        retina = pretrain_retina(raw, a.out, a.pretrain_min, a.pretrain_steps)
        res["retina_pretrain_s"] = round(time.perf_counter() - t0, 1)
    if retina is not None:
        from napari_emseg.models.checkpoint import load_checkpoint

        card = load_checkpoint(retina, tensors=False).card
        res["retina"] = {"path": str(retina), "steps": card.get("steps"), "final_loss": card.get("final_loss")}
    labels = np.zeros_like(gt)
    labels[list(PAINTED)] = gt[list(PAINTED)]
    encoders = {"scratch": ("scratch-vit3d-micro", "auto"), "native-3d": ("mae3d-vit3d-micro-drosophila-vnc", "auto"),
                "inflated-frozen": (str(retina), "auto"), "inflated-trained": (str(retina), "transformer")}
    for arm in arms:
        enc, transfer = encoders[arm]
        cfg = FineTuneConfig(task="mitochondria", target="bcd", dims="3d", patch=tuple(int(v) for v in a.patch.split(",")),
                             batch_size=a.batch, steps=a.steps, lr=a.lr, encoder_lr_scale=1.0, transfer=transfer,
                             holdout=False, calibrate=False, device="cpu", seed=a.seed)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="emseg-inflate-") as tmp:
            r = drain(fine_tune(enc, raw, labels, cfg, out=Path(tmp) / "ft.safetensors", voxel_size=VOXEL), show=False)
            train_s = time.perf_counter() - t0
            score = iou(r.model, raw, gt)
            from napari_emseg.models.checkpoint import load_checkpoint

            transplant = load_checkpoint(r.checkpoint, tensors=False).card.get("transplant")
        res["arms"][arm] = {"iou": score, "final_loss": r.metrics.get("loss"), "train_s": round(train_s, 1),
                            "transplant": transplant}
        print(f"{arm:>17}: fg IoU {score:.3f}  final loss {r.metrics.get('loss'):.4f}  ({train_s:.0f} s)", flush=True)
    (a.out / "inflate_transfer.json").write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
