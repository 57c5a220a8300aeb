"""Does the bundled pretrained encoder help when only 1, 2 or 3 sections are painted?

Two real EM tasks, each fine-tuned from the bundled MS-Con encoder
(``mscon-resunet-small-drosophila-vnc``) and from scratch, with the same architecture (the
encoder's ResUNet 16/32/64/128 with skips, as :func:`~napari_emseg.models.registry.model_for_encoder`
builds it), the same seed, data, patches, augmentation, steps and evaluation:

* ``vnc``: Gerhard et al. 2013 stack 1, crop 20 x 512 x 512 (y 512:1024, x 256:768), voxel
  (50, 4.6, 4.6) nm, task ``mitochondria`` (BCD). Painted: all mitochondria of sections
  [6] / [2, 10] / [2, 6, 10] (from ``mito_instances_2d``); scored on the unpainted sections
  13-17 and 19 (section 18 has no mitochondrion labels in the data set): foreground IoU of the
  map (> 0.5), and AP50 / AP75 of the 2D objects of each section against ``mito_instances_2d``
  (all test sections pooled).
* ``isbi``: ISBI 2012 training volume 30 x 512 x 512, voxel (50, 4, 4) nm, task ``neurons`` with
  ``target="boundaries"``. Painted: the 2D cells (``cells2d``, 0 = membrane) of sections
  [10] / [4, 16] / [4, 10, 16]; scored on sections 24-29: VOI split, VOI merge and adapted Rand
  error of the 2D cells, per section (membrane ignored), averaged.

One fine-tune per (task, painted sections, arm) runs ``max(--steps)`` steps (warm-up and cosine
decay over the whole run); the model is scored at each of ``--steps`` during that run. Both arms
start from the same decoder and head initialisation (same torch seed) and differ only in the
encoder's initial weights: both are passed to ``fine_tune`` as built modules, which train at one
learning rate for the whole network (since commit f35f43c; before it, a module's encoder trained
at ``lr * encoder_lr_scale``, and this script gave the pretrained arm 0.1, the rate ``fine_tune``
uses for a named pretrained encoder, and the scratch arm 1.0). No held-out painted section
(every painted section trains). Post-processing is scored twice: with the library's
default settings, and with settings tuned on the painted sections by
:func:`napari_emseg.tuning.tune_postprocess` (its default metric: AP over IoU 0.50:0.95 for
mitochondria, ARAND for neurons; a reduced grid, the same for every arm). The maps come from
the 3D network (test sections predicted as one sub-volume with context, each painted section
with one section before and two after, tile 8x512x512 or the sub-volume); each section is then
post-processed on its own (2D), as the per-section ground truth asks. One torch thread.

``--arch unet2d`` measures the 2D recipe's network instead: the plain 2D U-Net (MONAI
``BasicUNet`` 16..256, ``scratch-unet2d``) started from ``--encoder`` (a ``masked2d``-pretrained
U-Net: every tensor but the head, :func:`~napari_emseg.models.whole_network.transplant_whole`)
or at random, on 2D patches ``(1, P, P)``; ``fafb`` adds FAFB mitochondria (8 separate 1736^2
sections, the central 768^2; painted [0] / [0, 1] / [0, 1, 2]; scored on sections 3-7), a set
no bundled encoder has seen (FAFB's terms: benchmarks only); ``vnc-sem`` is a semantic task on
the ``vnc`` crop: three classes from the data set's class map (0 other, 1 membrane, 2
mitochondria; every pixel of a painted section painted), scored on sections 13-19 by the IoU of
each class's argmax map and their mean over membrane and mitochondria (``miou``). ``--seeds`` repeats every cell; the summary gives the error cut
(error = 1 - foreground IoU for mitochondria, tuned ARAND for cells) per cell, mean over seeds.

    python bench/finetune_curve.py                   # 39 min on the shared 2-core CPU
    python bench/finetune_curve.py --arch unet2d --encoder runs/m2d/masked2d-unet2d.safetensors \
        --datasets isbi,vnc,fafb --painted 1 --seeds 0,1,2 --steps 25,50 --patch 1,96,96 --batch 4
    python bench/finetune_curve.py --painted 1,3 --seeds 1
    python bench/finetune_curve.py --steps 2 --painted 1 --datasets isbi   # smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from few_slices import score as class_scores  # bench/few_slices.py, beside this file
from few_slices import semantic_classes

from napari_emseg.data.normalize import NormConfig, intensity_range, normalize
from napari_emseg.evaluation import evaluate
from napari_emseg.finetune.job import FineTuneConfig, fine_tune
from napari_emseg.inference import InferenceConfig
from napari_emseg.models import build_model
from napari_emseg.models.build import ModelConfig, segmentation_config
from napari_emseg.models.checkpoint import load_checkpoint
from napari_emseg.models.heads import head_info
from napari_emseg.models.registry import get_encoder, model_for_encoder
from napari_emseg.postprocess import extract_instances
from napari_emseg.progress import drain
from napari_emseg.tuning import slice_score, tune_postprocess
from napari_emseg.workflows import SegmentConfig, segment_job

ENCODER = "mscon-resunet-small-drosophila-vnc"
DATASETS = {
    "vnc": dict(
        path=Path("/work/shared/data/vnc-gerhard2013/vnc_stack1.npz"), gt="mito_instances_2d",
        crop=(slice(None), slice(512, 1024), slice(256, 768)), voxel_size=(50.0, 4.6, 4.6),
        task="mitochondria", target="bcd", test=(13, 14, 15, 16, 17, 19), test_run=(12, 20),
        painted={1: (6,), 2: (2, 10), 3: (2, 6, 10)},
        grid={"seed_foreground": (0.5, 0.7, 0.9), "foreground_threshold": (0.3, 0.5, 0.7), "min_size": (0, 128, 512)},
        metrics=("iou", "ap50", "ap75"),
    ),
    "isbi": dict(
        path=Path("/work/shared/data/isbi2012/isbi2012_train.npz"), gt="cells2d",
        crop=(slice(None),) * 3, voxel_size=(50.0, 4.0, 4.0),
        task="neurons", target="boundaries", test=(24, 25, 26, 27, 28, 29), test_run=(22, 30),
        painted={1: (10,), 2: (4, 16), 3: (4, 10, 16)},
        grid={"merge_function": ("mean", "quantile_75"), "threshold": tuple(round(0.05 * i, 2) for i in range(1, 20)),
              "min_size": (0, 100, 400)},
        metrics=("voi_split", "voi_merge", "arand"),
    ),
    "fafb": dict(
        path=Path("/work/shared/data/fafb-mito/fafb_mito_8slices.npz"), gt="mito",
        crop=(slice(None), slice(484, 1252), slice(484, 1252)), voxel_size=(40.0, 8.0, 8.0),
        task="mitochondria", target="bcd", test=(3, 4, 5, 6, 7), test_run=(3, 8),
        painted={1: (0,), 2: (0, 1), 3: (0, 1, 2)},
        grid={"seed_foreground": (0.5, 0.7, 0.9), "foreground_threshold": (0.3, 0.5, 0.7), "min_size": (0, 128, 512)},
        metrics=("iou", "ap50", "ap75"), separate=True,
    ),
    "vnc-sem": dict(
        path=Path("/work/shared/data/vnc-gerhard2013/vnc_stack1.npz"), gt="labels",
        crop=(slice(None), slice(512, 1024), slice(256, 768)), voxel_size=(50.0, 4.6, 4.6),
        task="semantic", target="semantic", n_classes=3, test=(13, 14, 15, 16, 17, 18, 19), test_run=(12, 20),
        painted={1: (6,), 2: (2, 10), 3: (2, 6, 10)}, metrics=("miou", "iou_membrane", "iou_mito"),
    ),
}
# ``vnc-sem``'s classes: few_slices.semantic_classes (0-128 membrane, 191 mitochondria, the rest class 0)


def semantic_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Per-class IoU of class maps (all test sections pooled) and their mean over the classes
    other than 0 (``miou``): :func:`napari_emseg.evaluation.evaluate` with ``task="semantic"``
    (``few_slices.score``)."""
    return {k: v for k, v in class_scores("semantic", pred, gt).items() if k.startswith("iou_") or k == "miou"}


LOWER_IS_BETTER = {"voi_split", "voi_merge", "voi", "arand"}
ARMS = {"pretrained": True, "scratch": False}  # arm -> the encoder's weights are transplanted


def build_arm(pretrained: bool, ds: dict, patch, norm: NormConfig, seed: int, encoder: str = ENCODER,
              arch: str = "resunet") -> torch.nn.Module:
    """The segmentation network on the encoder (weights transplanted) or the same one at random."""
    info = head_info(ds["target"], task=ds["task"], tile=tuple(patch), voxel_size=ds["voxel_size"], norm=norm,
                     n_classes=ds.get("n_classes", 2))
    torch.manual_seed(seed)  # the same decoder and head initialisation in both arms
    if pretrained:
        model, report = model_for_encoder(encoder, info)
        if arch == "unet2d" and any(not k.startswith("net.final_conv.") for k in report.missing):
            raise SystemExit(f"transplant of {encoder} left body tensors missing: {report.missing}")
        if arch != "unet2d" and report.missing:
            raise SystemExit(f"transplant of {encoder} left {len(report.missing)} encoder tensors missing")
        return model.train()
    if arch == "unet2d":
        return build_model(ModelConfig(arch="unet2d"), info).train()
    cfg = load_checkpoint(get_encoder(encoder).location, tensors=False).config
    return build_model(segmentation_config(cfg, info.out_channels), info).train()


def predict_runs(model, raw, runs: list[tuple[int, int]], ds: dict, infer: InferenceConfig) -> dict[int, np.ndarray]:
    """Maps ``(C, Y, X)`` of every section of the z-ranges ``runs`` (each predicted as one sub-volume)."""
    maps: dict[int, np.ndarray] = {}
    for a, b in runs:
        seg = drain(segment_job(model, raw[a:b], SegmentConfig(inference=infer), voxel_size=ds["voxel_size"],
                                postprocess=False, provenance=False), show=False)
        pred = np.asarray(seg.predictions, dtype=np.float32)
        maps.update({a + i: pred[:, i] for i in range(b - a)})
    return maps


def isolated(maps: list[np.ndarray], target: str) -> np.ndarray:
    """Sections stacked with a separator between neighbours (boundary 1 / foreground 0), so the
    3D post-processing never joins objects of two sections: each section is segmented in 2D."""
    sep = np.full_like(maps[0], 1.0 if target == "boundaries" else 0.0)
    return np.stack([m for z in maps for m in (z, sep)][:-1], axis=1)


def score(model, raw, gt, painted, ds: dict, infer: InferenceConfig) -> dict[str, float]:
    """Scores of the test sections with the default post-processing and with settings tuned on
    the painted sections (every section post-processed in 2D, with the 3D network's maps)."""
    test = list(ds["test"])
    ctx = (0, 1) if model.info.spatial_dims == 2 else (1, 3)  # a 2D network needs no neighbouring sections
    runs = sorted({(max(0, p - ctx[0]), min(raw.shape[0], p + ctx[1])) for p in painted} | {ds["test_run"]})
    maps = predict_runs(model, raw, runs, ds, infer)
    if ds["task"] == "semantic":
        return {**semantic_scores(np.stack([maps[z].argmax(0) for z in test]), gt[test]), "tune_s": 0.0}
    ref = np.zeros((2 * len(painted) - 1, *gt.shape[1:]), gt.dtype)
    ref[::2] = gt[list(painted)]
    t0 = time.perf_counter()
    tuned = tune_postprocess(isolated([maps[p] for p in painted], ds["target"]), ds["target"], ref,
                             grid=ds["grid"], voxel_size=ds["voxel_size"]).config
    out: dict[str, float] = {"tune_s": time.perf_counter() - t0}
    probs = isolated([maps[z] for z in test], ds["target"])
    for name, cfg in (("default", None), ("tuned", tuned)):
        pred = extract_instances(probs, ds["target"], cfg, voxel_size=ds["voxel_size"])[::2]
        if ds["task"] == "mitochondria":
            for m in ("ap50", "ap75"):
                out[f"{m}_{name}"] = slice_score(pred, gt[test], range(len(test)), metric=m)
        else:
            rows = [evaluate(p[None], gt[z][None], "neurons") for p, z in zip(pred, test)]
            for m in ("voi_split", "voi_merge", "arand"):
                out[f"{m}_{name}"] = float(np.mean([r[m] for r in rows]))
    if ds["task"] == "mitochondria":
        fg = (probs[0, ::2] > 0.5).astype(np.uint8)
        out["iou"] = slice_score(fg, gt[test], range(len(test)), metric="iou")
    return out


#: ISBI's reduced tuning grid for the 2D U-Net runs (waterz on one 512^2 section per setting)
GRID_2D = {"merge_function": ("mean",), "threshold": tuple(round(0.1 * i, 1) for i in range(1, 10)),
           "min_size": (0, 100)}


def score2d(model, raw, gt, painted, ds: dict) -> dict[str, float]:
    """The lean scores of a 2D network: each section predicted whole in one forward pass.
    Mitochondria: foreground IoU (map > 0.5) pooled over the test sections, no post-processing.
    Cells: VOI and ARAND of the test sections with the watershed settings tuned on the painted
    sections (:data:`GRID_2D`)."""
    test = list(ds["test"])
    need = test + (list(painted) if ds["task"] == "neurons" else [])
    lo, hi = model.info.norm.lo, model.info.norm.hi
    model.eval()
    maps = {}
    with torch.no_grad():
        for z in need:
            x = torch.from_numpy(normalize(raw[z], lo, hi, model.info.norm.invert))[None, None]
            out = model(x)[0]
            maps[z] = (out.argmax(0) if ds["task"] == "semantic" else torch.sigmoid(out)).numpy()
    if ds["task"] == "semantic":
        return {**semantic_scores(np.stack([maps[z] for z in test]), gt[test]), "tune_s": 0.0}
    if ds["task"] == "mitochondria":
        fg = np.stack([maps[z][0] > 0.5 for z in test]).astype(np.uint8)
        return {"iou": slice_score(fg, gt[test], range(len(test)), metric="iou"), "tune_s": 0.0}
    ref = np.zeros((2 * len(painted) - 1, *gt.shape[1:]), gt.dtype)
    ref[::2] = gt[list(painted)]
    t0 = time.perf_counter()
    tuned = tune_postprocess(isolated([maps[p] for p in painted], ds["target"]), ds["target"], ref,
                             grid=GRID_2D, voxel_size=ds["voxel_size"]).config
    out: dict[str, float] = {"tune_s": time.perf_counter() - t0}
    pred = extract_instances(isolated([maps[z] for z in test], ds["target"]), ds["target"], tuned,
                             voxel_size=ds["voxel_size"])[::2]
    rows = [evaluate(p[None], gt[z][None], "neurons") for p, z in zip(pred, test)]
    out.update({f"{m}_tuned": float(np.mean([r[m] for r in rows])) for m in ("voi_split", "voi_merge", "arand")})
    return out


def run_one(ds: dict, raw, gt, norm, n: int, arm: str, steps: list[int], args, infer, log, seed: int) -> dict[int, dict]:
    pretrained = ARMS[arm]
    painted = ds["painted"][n]
    model = build_arm(pretrained, ds, args.patch, norm, seed, args.encoder, args.arch)
    labels = np.zeros_like(gt)
    labels[list(painted)] = gt[list(painted)]
    cfg = FineTuneConfig(task=ds["task"], target=ds["target"], patch=tuple(args.patch), batch_size=args.batch,
                         n_classes=ds.get("n_classes"), steps=max(steps), lr=args.lr, encoder_lr_scale=1.0, holdout=False,
                         device="cpu", seed=seed, calibrate=False)
    results: dict[int, dict] = {}
    t0 = time.perf_counter()
    spent = [0.0]

    def at_step(event) -> None:
        if event.stage != "fine-tune" or event.step not in steps or event.step in results:
            return
        t = time.perf_counter()
        train_s = t - t0 - spent[0]  # fine-tuning time so far, scoring left out
        res = (score2d(model, raw, gt, painted, ds) if args.arch == "unet2d"
               else score(model, raw, gt, painted, ds, infer))
        model.train()
        spent[0] += time.perf_counter() - t
        res.update(loss=float(event.metrics.get("loss", float("nan"))), train_s=train_s)
        results[event.step] = res
        log(f"  {arm:>10} seed {seed} painted {list(painted)} step {event.step:>4}: "
            + "  ".join(f"{k} {v:.3f}" for k, v in res.items() if not k.endswith("_s"))
            + f"  (train {res['train_s']:.0f} s, tune {res['tune_s']:.0f} s, eval {time.perf_counter() - t:.0f} s)")

    with tempfile.TemporaryDirectory(prefix="emseg-bench-") as tmp:
        drain(fine_tune(model, raw, labels, cfg, out=Path(tmp) / "ft.safetensors", voxel_size=ds["voxel_size"],
                        source=str(ds["path"])), show=False, callback=at_step)
    return results


def relative_gain(pre: float, scr: float, metric: str) -> float:
    """How much better pretrained is than scratch, in % of scratch (VOI/ARAND: relative reduction)."""
    if metric in LOWER_IS_BETTER:
        return 100.0 * (scr - pre) / scr if scr else float("nan")
    return 100.0 * (pre - scr) / scr if scr else float("nan")


def print_table(name: str, ds: dict, res: dict, arms: list[str], steps: list[int]) -> None:
    cols = [c for c in dict.fromkeys((*(f"{m}_{p}" for m in ds["metrics"] for p in ("default", "tuned")),
                                       *ds["metrics"], "iou"))
            if any(c in r for by_arm in res.values() for a in by_arm.values() for r in a.values())]
    print(f"\n{name} ({ds['task']}): {' / '.join(c for c in cols)}")
    print("| painted | steps | arm | " + " | ".join(cols) + " |")
    print("|---|---:|---|" + "---:|" * len(cols))
    for n, by_arm in res.items():
        for s in steps:
            for arm in arms:
                r = by_arm[arm].get(s)
                if r is not None:
                    print(f"| {n} | {s} | {arm} | " + " | ".join(f"{r[c]:.3f}" for c in cols) + " |")
            for arm in (a for a in arms if ARMS[a] and "scratch" in by_arm and s in by_arm["scratch"]):
                pre, scr = by_arm[arm][s], by_arm["scratch"][s]
                gains = [relative_gain(pre[c], scr[c], c.rsplit("_", 1)[0] if c != "iou" else c) for c in cols]
                print(f"| {n} | {s} | gain % {arm} | " + " | ".join("n/a" if np.isnan(g) else f"{g:+.1f}"
                                                                    for g in gains) + " |")


def error(r: dict, task: str) -> float:
    """The error the summary cuts: 1 - foreground IoU (mitochondria), tuned ARAND (cells),
    1 - mean IoU of membrane and mitochondria (``vnc-sem``)."""
    if task == "semantic":
        return 1.0 - r["miou"]
    return 1.0 - r["iou"] if task == "mitochondria" else r["arand_tuned"]


def summary(every: dict) -> list[dict]:
    """Per (set, painted, steps): each arm's error, mean and per seed, and the cut of pretrained over scratch."""
    rows = []
    for name, by_seed in every.items():
        task = DATASETS[name]["task"]
        seeds = sorted(by_seed)
        cells = sorted({(int(n), int(s)) for sd in by_seed.values() for n, by_arm in sd.items()
                        for r in by_arm.values() for s in r})
        for n, st in cells:
            err = {arm: [error(by_seed[sd][str(n)][arm][str(st)], task) for sd in seeds
                         if str(st) in by_seed[sd].get(str(n), {}).get(arm, {})] for arm in ARMS}
            if not all(len(v) == len(seeds) for v in err.values()):
                continue
            pre, scr = float(np.mean(err["pretrained"])), float(np.mean(err["scratch"]))
            rows.append(dict(set=name, painted=n, steps=st, seeds=seeds, pretrained=pre, scratch=scr,
                             cut=100.0 * (1 - pre / scr) if scr else float("nan"),
                             per_seed_cut=[100.0 * (1 - a / b) if b else float("nan")
                                           for a, b in zip(err["pretrained"], err["scratch"])]))
    return rows


def print_summary(rows: list[dict]) -> None:
    print("\n| set | painted | steps | error pretrained | error scratch | error cut (mean of seeds) | cut per seed |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['set']} | {r['painted']} | {r['steps']} | {r['pretrained']:.3f} | {r['scratch']:.3f} | "
              f"{r['cut']:+.1f} % | {', '.join(f'{c:+.0f}' for c in r['per_seed_cut'])} |")


def merge(paths: list[str]) -> dict:
    """The scores of several ``--json`` files (e.g. one per arm) as one ``{set: {seed: {painted: {arm: ...}}}}``."""
    every: dict = {}
    for path in paths:
        for name, by_seed in json.loads(Path(path).read_text())["results"].items():
            for sd, by_n in by_seed.items():
                for n, by_arm in by_n.items():
                    every.setdefault(name, {}).setdefault(sd, {}).setdefault(n, {}).update(by_arm)
    return every


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="vnc,isbi", help=f"from {sorted(DATASETS)}")
    ap.add_argument("--painted", default="1,2,3", help="numbers of painted sections")
    ap.add_argument("--steps", default="50,100,200", help="scored after these steps (one run to the largest)")
    ap.add_argument("--arms", default="pretrained,scratch", help=f"from {sorted(ARMS)}")
    ap.add_argument("--arch", default="resunet", choices=["resunet", "unet2d"],
                    help="the 3D ResUNet of --encoder, or the plain 2D U-Net (the 2D recipe's network)")
    ap.add_argument("--encoder", default=None, help=f"the pretrained arm's encoder (default {ENCODER}; "
                                                     "with --arch unet2d a masked2d-pretrained U-Net)")
    ap.add_argument("--patch", default=None, help="training patch z,y,x (default 4,96,96; unet2d 1,128,128)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seeds", "--seed", default="0", help="seeds, comma-separated (each cell runs once per seed)")
    ap.add_argument("--json", default=None, help="write every score here")
    ap.add_argument("--summary", nargs="+", default=None, metavar="JSON",
                    help="only print the error-cut summary of these --json files (e.g. one per arm) and exit")
    args = ap.parse_args()
    if args.summary:
        print_summary(summary(merge(args.summary)))
        return
    if args.encoder is None:
        if args.arch == "unet2d" and "pretrained" in args.arms:
            raise SystemExit("--arch unet2d: give the pretrained arm's --encoder (a masked2d-pretrained U-Net)")
        args.encoder = ENCODER
    args.patch = tuple(int(v) for v in (args.patch or ("1,128,128" if args.arch == "unet2d" else "4,96,96")).split(","))
    steps = sorted(int(v) for v in args.steps.split(","))
    arms = args.arms.split(",")
    seeds = [int(v) for v in args.seeds.split(",")]
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    infer = InferenceConfig(device="cpu", tile=(8, 512, 512), overlap=(0.5, 0.0, 0.0), block=(8, 512, 512))
    t_all = time.perf_counter()
    every: dict[str, dict] = {}
    for name in args.datasets.split(","):
        ds = DATASETS[name]
        if not ds["path"].exists():
            print(f"skipped {name}: {ds['path']} is not here (the benchmark reads it in place)")
            continue
        data = np.load(ds["path"])
        raw, gt = data["raw"][ds["crop"]].copy(), data[ds["gt"]][ds["crop"]].copy()
        if ds.get("separate"):  # separate 2D images with binary masks: the 2D objects of each, ids unique
            from scipy import ndimage as ndi

            lab = np.zeros(gt.shape, np.uint32)
            for z in range(gt.shape[0]):
                lab[z] = ndi.label(gt[z] > 0)[0]
                lab[z][lab[z] > 0] += z * 100_000
            gt = lab
        if ds["task"] == "semantic":
            gt = semantic_classes(gt)
        lo, hi = intensity_range(raw, NormConfig())  # fixed, so sub-volumes are predicted as fine-tuning saw them
        norm = NormConfig(lo=lo, hi=hi)
        print(f"{name}: {ds['task']} ({ds['target']}) on {raw.shape}, test sections {list(ds['test'])}; {args.arch}, "
              f"steps {steps}, patch {args.patch}, batch {args.batch}, lr {args.lr}, seeds {seeds}", flush=True)
        every[name] = {}
        for seed in seeds:
            every[name][seed] = {}
            for n in (int(v) for v in args.painted.split(",")):
                every[name][seed][n] = {arm: run_one(ds, raw, gt, norm, n, arm, steps, args, infer,
                                                     lambda s: print(s, flush=True), seed) for arm in arms}
            print_table(f"{name}, seed {seed}", ds, every[name][seed], arms, steps)
    total = time.perf_counter() - t_all
    if len(arms) > 1:
        print_summary(summary(json.loads(json.dumps(every))))
    print(f"\ntotal {total / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": every, "minutes": total / 60, "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
