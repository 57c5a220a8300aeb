"""Self-training on the unpainted sections (pseudo-labels), FAFB: does it beat more painted steps?

Sections 0-2 painted; ``fine_tune`` (the recipe, ``--encoder auto``) for ``--s1`` steps; the
unpainted sections 3-7 predicted with 4-flip test-time augmentation; pixels above ``--hi`` kept
as objects (4-connected components), below ``--lo`` as background, the rest ignored; then
``--s2`` more steps on batches of 8 patches, ``--frac`` of them from the pseudo-labelled
sections. Prints the foreground IoU on the central 768^2 of sections 3-7 before and after,
the pseudo-labels' precision and the seconds. docs/benchmarks.md ("third round") has the result:
it did not pay, and the product does not self-train.

    python bench/self_training.py --s1 75 --s2 75
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fafb-mito" / "fafb_mito_8slices.npz"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--s1", type=int, default=75)
    ap.add_argument("--s2", type=int, default=75)
    ap.add_argument("--hi", type=float, default=0.9)
    ap.add_argument("--lo", type=float, default=0.1)
    ap.add_argument("--frac", type=float, default=0.5, help="fraction of each batch from pseudo-labels")
    ap.add_argument("--data", default=str(DATA))
    args = ap.parse_args()
    if not Path(args.data).exists():
        print(f"skipped: {args.data} is not here (the benchmark reads it in place)")
        return 0
    from napari_emseg.data.normalize import intensity_range, normalize
    from napari_emseg.finetune.annotations import Annotations
    from napari_emseg.finetune.dataset import AnnotatedPatches
    from napari_emseg.finetune.job import FineTuneConfig, MaskedObjective, fine_tune
    from napari_emseg.finetune.model_setup import freeze_and_group
    from napari_emseg.pretrain.trainer import TrainConfig, train
    from napari_emseg.progress import drain

    torch.set_num_threads(2)

    with np.load(args.data) as f:
        raw, mito = f["raw"], f["mito"]
    labels = np.zeros(raw.shape, np.uint32)
    for z in range(3):
        labels[z] = ndi.label(mito[z] > 0)[0]
    cfg = FineTuneConfig(task="mitochondria", steps=args.s1, calibrate=False)
    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp()
    res = drain(fine_tune("auto", raw, labels, cfg, out=os.path.join(tmp, "a.safetensors"), voxel_size=(40.0, 8.0, 8.0)), show=False)
    model = res.model
    lo_, hi_ = intensity_range(raw, model.info.norm)
    img = normalize(raw, lo_, hi_, model.info.norm.invert).astype(np.float32)

    def predict(model, x):  # x (n, Y, X) -> fg prob, 4-flip TTA
        model.eval()
        out = []
        with torch.no_grad():
            for z in range(x.shape[0]):
                t = torch.from_numpy(x[z])[None, None]
                ps = []
                for dims in ((), (-1,), (-2,), (-2, -1)):
                    v = t.flip(dims) if dims else t
                    p = torch.sigmoid(model(v)[:, :1])
                    ps.append(p.flip(dims) if dims else p)
                out.append(torch.stack(ps).mean(0)[0, 0].numpy())
        return np.stack(out)

    def score(model, tag):
        crop = slice(484, 1252)
        p = predict(model, img[3:, crop, crop])
        gt = mito[3:, crop, crop] > 0
        for name, fg in ((tag + " tta4", p > 0.5),):
            print(f"{name}: IoU {(fg & gt).sum() / (fg | gt).sum():.3f}", flush=True)

    score(model, f"stage1 {args.s1}")
    t1 = time.perf_counter()
    prob = predict(model, img[3:, :1728, :1728])  # all unpainted sections, whole (a multiple of 16)
    print(f"pseudo-label prediction {time.perf_counter() - t1:.0f} s", flush=True)
    fg = prob > args.hi
    known = fg | (prob < args.lo)
    ids = np.zeros(prob.shape, np.int64)
    for z in range(prob.shape[0]):
        ids[z] = ndi.label(fg[z])[0]
    print(f"pseudo: known {known.mean():.3f}, fg {fg.mean():.3f} (gt fg {(mito[3:, :1728, :1728]>0).mean():.3f}); "
          f"pseudo fg precision {(fg & (mito[3:, :1728, :1728]>0)).sum()/fg.sum():.3f}, bg precision {((prob<args.lo) & (mito[3:, :1728, :1728]==0)).sum()/(prob<args.lo).sum():.3f}", flush=True)
    pseudo = Annotations(labels=ids, mask=known, box=(slice(3, 8), slice(0, 1728), slice(0, 1728)), axis=0,
                         slices=tuple(range(3, 8)), mode="dense", background_label=0)
    painted_ids = labels[:3].astype(np.int64)
    painted = Annotations(labels=painted_ids, mask=np.ones(painted_ids.shape, bool), box=(slice(0, 3), slice(None), slice(None)),
                          axis=0, slices=(0, 1, 2), mode="dense", background_label=0)
    aug = cfg.augment
    nb = 8
    npseudo = int(round(nb * args.frac))
    A = AnnotatedPatches(img[:3], painted, "bcd", (1, 192, 192), batch_size=nb - npseudo, seed=1, augmentation=aug, spatial_dims=2)
    B = AnnotatedPatches(img[3:, :1728, :1728], pseudo, "bcd", (1, 192, 192), batch_size=npseudo, seed=2, augmentation=aug, spatial_dims=2)
    def batches(start=0):
        s = start
        while True:
            a, b = A.batch(s), B.batch(s)
            yield {k: torch.cat([a[k], b[k]]) for k in a}
            s += 1
    model.train()
    obj = MaskedObjective(model, "bcd")
    groups = freeze_and_group(model, cfg, True)
    tcfg = TrainConfig(optimizer="adamw", lr=cfg.lr, weight_decay=0.0, schedule="constant", warmup_steps=0,
                       max_steps=args.s2, grad_clip=1.0, device="cpu", seed=1, checkpoint_every=10**9,
                       log_every=25, preview_every=10**9, tensorboard=False)
    drain(train(obj, batches, tcfg, None, param_groups=groups), show=False)
    score(model, f"stage2 +{args.s2} (pseudo frac {args.frac}, hi {args.hi}, lo {args.lo})")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
