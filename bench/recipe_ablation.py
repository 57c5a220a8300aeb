"""One row of the fine-tuning recipe's equal-step ablation on real EM (docs/benchmarks.md).

FAFB mitochondria (``../shared/data``, read in place): sections 0-2 fully painted, ``fine_tune``
for a fixed number of steps (default 150) with the named recipe changes, then the foreground
channel of the trained model on the central 768 x 768 of sections 3-7, thresholded at 0.5, and
its IoU with the ground truth. Prints one line: the changes, the foreground IoU, the seconds.

    python bench/recipe_ablation.py                                   # the recipe as it is
    python bench/recipe_ablation.py --set schedule=cosine --set warmup_steps=8 --set weight_decay=1e-4
    python bench/recipe_ablation.py --aux-weight 1.0                  # contour + distance at full weight
    python bench/recipe_ablation.py --no-object-patches --no-clip
    python bench/recipe_ablation.py --encoder scratch-unet2d          # from scratch, not the bundled model
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fafb-mito" / "fafb_mito_8slices.npz"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--encoder", default="auto")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="FineTuneConfig override")
    ap.add_argument("--aux-weight", type=float, default=None, help="finetune.losses.BCD_AUX_WEIGHT")
    ap.add_argument("--no-object-patches", action="store_true", help="no patches centred on painted objects")
    ap.add_argument("--no-clip", action="store_true", help="no gradient clipping")
    ap.add_argument("--ema", type=float, default=None, metavar="DECAY",
                    help="also score an exponential moving average of the weights (e.g. 0.99)")
    ap.add_argument("--save", default=None, metavar="PATH", help="keep the fine-tuned checkpoint here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args()
    if not Path(args.data).exists():
        print(f"skipped: {args.data} is not here (the benchmark reads it in place)")
        return 0
    from scipy import ndimage as ndi

    import napari_emseg.finetune.dataset as dataset
    import napari_emseg.finetune.losses as losses
    import napari_emseg.pretrain.trainer as trainer
    from napari_emseg.data.normalize import intensity_range, normalize
    from napari_emseg.finetune.job import FineTuneConfig, fine_tune
    from napari_emseg.progress import drain

    torch.set_num_threads(args.threads)
    if args.aux_weight is not None:
        losses.BCD_AUX_WEIGHT = args.aux_weight
    if args.no_object_patches:
        init = dataset.AnnotatedPatches.__init__

        def no_objects(self, *a, **k):
            init(self, *a, **k)
            self.object_centres = self.object_centres[:0]

        dataset.AnnotatedPatches.__init__ = no_objects
    if args.no_clip:
        config = trainer.TrainConfig
        trainer.TrainConfig = lambda **kw: config(**{**kw, "grad_clip": None})
    ema: dict[str, torch.nn.Module] = {}
    if args.ema is not None:
        build = trainer.build_optimizer

        def with_ema(model, cfg, groups=None):
            opt = build(model, cfg, groups)
            net = getattr(model, "model", model)
            ema["net"] = torch.optim.swa_utils.AveragedModel(
                net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(args.ema), use_buffers=True)
            opt.register_step_post_hook(lambda *_: ema["net"].update_parameters(net))
            return opt

        trainer.build_optimizer = with_ema
    with np.load(args.data) as f:
        raw, mito = f["raw"], f["mito"]
    labels = np.zeros(raw.shape, np.uint32)
    for z in range(3):
        labels[z] = ndi.label(mito[z] > 0)[0]
    cfg = FineTuneConfig(task="mitochondria", steps=args.steps, calibrate=False).override(args.set)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = drain(fine_tune(args.encoder, raw, labels, cfg, out=args.save or os.path.join(tmp, "m.safetensors"),
                              voxel_size=(40.0, 8.0, 8.0)), show=False)
    seconds = time.perf_counter() - t0
    crop = slice(484, 1252)
    gt = mito[3:, crop, crop] > 0
    scores = {}
    nets = {"": res.model.eval()}
    if ema:
        nets["ema "] = ema["net"].module.eval()
    for name, model in nets.items():
        lo, hi = intensity_range(raw, model.info.norm)
        x = torch.from_numpy(normalize(raw[3:, crop, crop], lo, hi, model.info.norm.invert).astype(np.float32))[:, None]
        with torch.no_grad():
            views = []
            for k in range(4):  # the 8 symmetries of the square: 4 rotations, with and without a flip
                for flip in (False, True):
                    v = torch.rot90(x.flip(-1) if flip else x, k, (-2, -1))
                    p = torch.sigmoid(model(v)[:, :1])
                    p = torch.rot90(p, -k, (-2, -1))
                    views.append(p.flip(-1) if flip else p)
        for tag, prob in ((f"{name}plain", views[0]), (f"{name}tta8", torch.stack(views).mean(0))):
            fg = prob[:, 0].numpy() > 0.5
            scores[tag] = float((fg & gt).sum() / (fg | gt).sum())
    changes = args.set + ([f"aux_weight={args.aux_weight}"] if args.aux_weight is not None else []) + \
        (["no_object_patches"] if args.no_object_patches else []) + (["no_clip"] if args.no_clip else []) + \
        ([f"ema={args.ema}"] if args.ema is not None else [])
    print(f"encoder {args.encoder}, {res.steps} steps, changes {changes or 'none'}: "
          "foreground IoU " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()) + f"; {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
