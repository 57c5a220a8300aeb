"""Does painting the suggested slices beat painting evenly spaced or random ones?

Real EM: a 20 x 384 x 384 crop of Gerhard et al. 2013 (Drosophila VNC, ssTEM, 50 nm sections),
mitochondria with their 2D instance labels. Sections 1, 7 and 18 carry no mitochondrion labels in
the data set and are left out. Six sections (2, 5, 8, 11, 14, 17) are a fixed test set that is
never painted; the other 11 are the pool a user paints from. Starting from one painted
section (9), each strategy adds one pool section per round:

* ``suggest``: the first of :func:`napari_emseg.active.suggest_slices` on the uncertainty map of
  the current model (test sections excluded);
* ``even``: the pool section farthest from every painted one (evenly spaced);
* ``random``: a random order of the pool (one run per seed);
* ``diverse``: the first of :func:`napari_emseg.active.suggest_diverse`: uncertainty times the
  distance, in the model's deepest features, to the nearest painted section (core-set).

Every round fine-tunes the strategy's model further for ``--steps`` steps on all its painted
sections (same seed per round for all strategies: the model a user would continue from), then
scores it on the test sections: the pixel average precision of the foreground map (threshold-free,
the main figure), the foreground IoU at 0.5 and AP50 of the 2D objects after the seeded watershed
(fixed settings). The network is a small ResUNet (16/32/64, one-section tiles) trained from scratch
with light augmentation, the largest that fits the time budget. Printed: the curves (metric against the
number of painted sections), how many sections each strategy needs to reach given IoUs, and
the time spent; then, for each final model, the AP50 of post-processing tuned on its painted
sections (:mod:`napari_emseg.tuning`) against fixed settings. One torch thread (faster than two on the shared 2-core machine).

    python bench/active.py                       # about 25 min on the shared 2-core CPU
    python bench/active.py --rounds 2 --steps 10 # smoke run
    python bench/active.py --arch unet2d --rounds 2 --steps 40 --strategies diverse,random --json d.json

``--sets vnc,fafb,isbi --seeds 0,1,2`` runs the comparison of ``bench/active_sets.py`` instead
(three real EM sets, several seeds, slice and region strategies, a smaller network), and
``--report-sets A.json B.json`` prints its table:

    python bench/active.py --sets vnc --seeds 0,1,2 --rounds 3 --steps 25 --json vnc.json
    python bench/active.py --report-sets vnc.json fafb.json isbi.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from napari_emseg.active import (
    UncertaintyConfig,
    slice_features,
    suggest_diverse,
    suggest_slices,
    uncertainty_job,
)
from napari_emseg.data.augment import AugmentConfig
from napari_emseg.finetune.job import FineTuneConfig, fine_tune
from napari_emseg.inference import InferenceConfig, predict_tiled
from napari_emseg.models import ModelConfig, build_model
from napari_emseg.models.heads import head_info
from napari_emseg.postprocess import MitoConfig, extract_instances
from napari_emseg.progress import drain
from napari_emseg.tuning import slice_score, tune_postprocess

DATA = Path("/work/shared/data/vnc-gerhard2013/vnc_stack1.npz")
CROP = (slice(None), slice(640, 1024), slice(320, 704))  # the crop richest in mitochondria (131 2D objects)
UNANNOTATED = (1, 7, 18)  # sections without mitochondrion labels in the data set: never used
TEST = (2, 5, 8, 11, 14, 17)
START = 9
POST = MitoConfig(mode="2d", seed_foreground=0.7, seed_contour=0.8, seed_distance=0.3, foreground_threshold=0.5,
                  min_seed_size=16, min_size=64)
INFER = InferenceConfig(device="cpu", block=(8, 384, 384))
LIGHT = AugmentConfig(flip=0.5, rotate90=0.5, brightness=0.3, contrast=0.3)  # cheaper than the defaults


def next_even(painted: list[int], pool: list[int]) -> int:
    left = [i for i in pool if i not in painted]
    return max(left, key=lambda i: (min(abs(i - p) for p in painted), -i))


def evaluate(model, raw: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Foreground IoU and AP50 on the test sections (the model sees one section at a time)."""
    test = list(TEST)
    probs = drain(predict_tiled(model, raw[test], None, INFER), show=False)
    fg = (probs[0] > 0.5).astype(np.uint8)
    labels = extract_instances(probs, "bcd", POST)
    ref, at = gt[test], range(len(test))
    return {"pixel_ap": pixel_ap(probs[0], ref > 0), "iou": slice_score(fg, ref, at, metric="iou"),
            "ap50": slice_score(labels, ref, at, metric="ap50")}


def pixel_ap(prob: np.ndarray, truth: np.ndarray) -> float:
    """Average precision of the foreground map over pixels (threshold-free)."""
    order = np.argsort(-prob.astype(np.float32).ravel(), kind="stable")
    hits = truth.ravel()[order]
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float(precision[hits].sum() / max(1, hits.sum()))


def run_strategy(name: str, start_model, raw, gt, pool, rounds, cfg, log, rng=None, start=START,
                 ucfg: UncertaintyConfig | None = None) -> list[dict]:
    painted = [start]
    model, curve = start_model, []
    order = list(rng.permutation([i for i in pool if i != start])) if rng is not None else None
    for r in range(rounds):
        t0 = time.perf_counter()
        umap_s = 0.0
        if name in ("suggest", "diverse"):
            t = time.perf_counter()
            umap = drain(uncertainty_job(model, raw, ucfg or UncertaintyConfig(inference=INFER)), show=False)
            if name == "suggest":
                pick = suggest_slices(umap, painted, n=1, exclude=TEST + UNANNOTATED)[0].index
            else:
                feats = slice_features(model, raw, device="cpu")
                pick = suggest_diverse(umap, feats, painted, n=1, exclude=TEST + UNANNOTATED)[0].index
            umap_s = time.perf_counter() - t
        elif name == "even":
            pick = next_even(painted, pool)
        else:
            pick = int(next(i for i in order if i not in painted))
        painted.append(pick)
        labels = np.zeros_like(gt)
        labels[painted] = gt[painted]
        res = drain(fine_tune(copy.deepcopy(model), raw, labels, cfg.replace(seed=r + 1)), show=False)
        model = res.model
        scores = evaluate(model, raw, gt)
        curve.append({"painted": len(painted), "added": pick, **scores,
                      "seconds": round(time.perf_counter() - t0, 1), "uncertainty_s": round(umap_s, 1)})
        log(f"{name:>10} round {r + 1}: +{pick:>2} -> {sorted(painted)}  pixel AP {scores['pixel_ap']:.3f}  "
            f"iou {scores['iou']:.3f}  "
            f"ap50 {scores['ap50']:.3f}  ({curve[-1]['seconds']:.0f} s, uncertainty {umap_s:.0f} s)")
    return curve, model, painted


def tuned_vs_fixed(model, raw, gt, painted: list[int], metric: str) -> dict[str, float]:
    """Feature 2 on the same data: thresholds tuned on the painted sections, scored on the test ones."""
    probs = drain(predict_tiled(model, raw, None, INFER), show=False)
    labels = np.zeros_like(gt)
    labels[painted] = gt[painted]
    res = tune_postprocess(probs, "bcd", labels, base=POST, metric=metric)
    ref = gt[list(TEST)]
    out = {name: slice_score(extract_instances(probs, "bcd", cfg), ref, TEST, metric=metric)
           for name, cfg in (("defaults", MitoConfig()), ("fixed", POST), ("tuned", res.config))}
    print(f"  {res.describe()}".replace("\n", "\n  "))
    return {**out, "painted_score": res.score, "painted_untuned": res.base_score, "tune_s": res.elapsed_s}


def report_tuning(finals: dict, raw, gt) -> dict[str, dict]:
    tuning: dict[str, dict] = {}
    for metric in ("ap50", "iou"):
        print(f"\npost-processing of each final model, {metric} of the labels on the test sections: MitoConfig "
              "defaults, the fixed settings above, and settings tuned on its painted sections (napari_emseg.tuning):")
        for name, (model, painted) in finals.items():
            tuning.setdefault(metric, {})[name] = t = tuned_vs_fixed(model, raw, gt, painted, metric)
            print(f"  {name:>10}: defaults {t['defaults']:.3f}  fixed {t['fixed']:.3f}  tuned {t['tuned']:.3f}  "
                  f"(on its painted sections {t['painted_untuned']:.3f} -> {t['painted_score']:.3f}, "
                  f"{t['tune_s']:.0f} s)")
    return tuning


def sections_to_reach(curve: list[dict], key: str, target: float) -> int | None:
    return next((c["painted"] for c in curve if c[key] >= target), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5, help="sections added after the first (default 5)")
    ap.add_argument("--steps", type=int, default=100, help="fine-tuning steps per round (default 100)")
    ap.add_argument("--random-seeds", default="2", help="N (seeds 0..N-1) or a list 'A,B'")
    ap.add_argument("--strategies", default="suggest,even,random",
                    help="comma-separated: suggest, diverse, even, random (default suggest,even,random)")
    ap.add_argument("--arch", choices=("resunet", "unet2d"), default="resunet",
                    help="resunet: the small 2D-tiled ResUNet (default); unet2d: the 2D recipe's plain U-Net "
                         "(faster on the CPU)")
    ap.add_argument("--start", type=int, default=START, help=f"the first painted section (default {START})")
    ap.add_argument("--json", default=None, help="write all curves here")
    ap.add_argument("--no-tuning", action="store_true", help="skip the tuned-vs-fixed post-processing report")
    ap.add_argument("--measure", choices=("combined", "entropy", "disagreement"), default="combined",
                    help="uncertainty measure of suggest and diverse (default combined)")
    ap.add_argument("--flips", choices=("auto", "yx", "none"), default="auto",
                    help="test-time flips of the uncertainty map (none: one pass, entropy only; default auto)")
    ap.add_argument("--first-model", default=None, metavar="FILE.pt",
                    help="save the model of the first round here, or load it when the file exists (split a "
                         "comparison over several runs; same --arch, --steps and --start)")
    ap.add_argument("--tuning-only", default=None, metavar="Z,Z,...",
                    help="skip the strategies: fine-tune one model on these sections for (rounds + 1) x steps "
                         "steps and compare tuned with fixed post-processing on the test sections")
    ap.add_argument("--sets", default=None, help="vnc,fafb,isbi: run bench/active_sets.py's comparison instead")
    ap.add_argument("--seeds", default="0,1,2", help="with --sets: seeds (first slice, training, random order)")
    ap.add_argument("--first-steps", type=int, default=40, help="with --sets: steps of the first model (default 40)")
    ap.add_argument("--report-sets", nargs="+", default=None, metavar="JSON", help="print the --sets table of runs")
    args = ap.parse_args()
    if args.report_sets or args.sets:
        import active_sets

        if args.report_sets:
            active_sets.report(args.report_sets)
            return
        torch.set_num_threads(1)
        logging.basicConfig(level=logging.WARNING)
        strategies = ("random,uncertainty,diverse,regions,rregions" if args.strategies == "suggest,even,random"
                      else args.strategies).split(",")
        active_sets.run_sets(args.sets.split(","), [int(v) for v in args.seeds.split(",")], strategies,
                             args.steps, args.first_steps, args.rounds, args.json)
        active_sets.report([args.json]) if args.json else None
        return
    if not DATA.exists():
        print(f"skipped: {DATA} is not here (the benchmark reads it in place)")
        return
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    t_all = time.perf_counter()
    data = np.load(DATA)
    raw, gt = data["raw"][CROP].copy(), data["mito_instances_2d"][CROP].copy()
    pool = [i for i in range(raw.shape[0]) if i not in TEST + UNANNOTATED]
    start = args.start
    if start not in pool:
        raise SystemExit(f"--start {start}: choose a pool section, one of {pool}")
    print(f"VNC crop {raw.shape}, test sections {list(TEST)} ({sum(len(np.unique(gt[z])) - 1 for z in TEST)} "
          f"objects), pool {pool}, start {start}; {args.steps} steps per round, 1 torch thread")
    torch.manual_seed(0)
    arch = ModelConfig(arch="unet2d") if args.arch == "unet2d" else \
        ModelConfig(arch="resunet", widths=(16, 32, 64), anisotropic_levels=2, subunits=1)
    init = build_model(arch, head_info("bcd", tile=(1, 128, 128), voxel_size=(50.0, 4.6, 4.6)))
    cfg = FineTuneConfig(task="mitochondria", steps=args.steps, patch=(1, 128, 128), batch_size=4, lr=3e-3,
                         encoder_lr_scale=1.0, holdout=False, device="cpu", validate_every=10**9, augment=LIGHT)
    if args.tuning_only:
        painted = [int(v) for v in args.tuning_only.split(",")]
        labels = np.zeros_like(gt)
        labels[painted] = gt[painted]
        t = time.perf_counter()
        model = drain(fine_tune(copy.deepcopy(init), raw, labels,
                                cfg.replace(steps=(args.rounds + 1) * args.steps)), show=False).model
        print(f"fine-tuned on {painted} for {(args.rounds + 1) * args.steps} steps ({time.perf_counter() - t:.0f} s): "
              f"{evaluate(model, raw, gt)}")
        report_tuning({"model": (model, painted)}, raw, gt)
        return
    labels = np.zeros_like(gt)
    labels[start] = gt[start]
    t = time.perf_counter()
    cache = Path(args.first_model) if args.first_model else None
    if cache is not None and cache.exists():  # the same first model as an earlier run (same arguments)
        first = copy.deepcopy(init)
        first.load_state_dict(torch.load(cache, weights_only=True))
    else:
        first = drain(fine_tune(copy.deepcopy(init), raw, labels, cfg.replace(seed=0)), show=False).model
        if cache is not None:
            torch.save(first.state_dict(), cache)
    base = {"painted": 1, "added": start, **evaluate(first, raw, gt), "seconds": round(time.perf_counter() - t, 1)}
    print(f"{'start':>10}: [{start}]  pixel AP {base['pixel_ap']:.3f}  iou {base['iou']:.3f}  ap50 {base['ap50']:.3f}  "
          f"({base['seconds']:.0f} s)")
    wanted = args.strategies.split(",")
    seeds = ([int(v) for v in args.random_seeds.split(",")] if "," in args.random_seeds
             else list(range(int(args.random_seeds))))
    runs = {**{n: None for n in ("suggest", "diverse", "even") if n in wanted},
            **({f"random{s}": s for s in seeds} if "random" in wanted else {})}
    curves, finals = {}, {}
    for name, seed in runs.items():
        rng = np.random.default_rng(seed) if seed is not None else None
        kind = "random" if seed is not None else name
        ucfg = UncertaintyConfig(measure=args.measure, flips=args.flips, inference=INFER)
        curve, model, painted = run_strategy(kind, first, raw, gt, pool, args.rounds, cfg, print, rng, start, ucfg)
        curves[name], finals[name] = [base] + curve, (model, painted)
    print("\npainted sections:   " + "  ".join(f"{n:>5}" for n in range(1, args.rounds + 2)))
    for key in ("pixel_ap", "iou", "ap50"):
        for name, curve in curves.items():
            print(f"{key:>8} {name:>10}:   " + "  ".join(f"{c[key]:.3f}" for c in curve))
    best = max(c["pixel_ap"] for curve in curves.values() for c in curve)
    print("\nsections needed to reach a pixel AP on the test sections (- = not within the rounds):")
    for frac in (0.9, 0.95, 0.98):
        target = frac * best
        row = {n: sections_to_reach(c, "pixel_ap", target) for n, c in curves.items()}
        print(f"  pixel AP >= {target:.3f} ({frac:.0%} of the best): "
              + ", ".join(f"{n} {v or '-'}" for n, v in row.items()))
    tuning = report_tuning(finals, raw, gt) if not args.no_tuning else {}
    total = time.perf_counter() - t_all
    print(f"\ntotal {total / 60:.1f} min")
    if args.json:
        Path(args.json).write_text(json.dumps({"curves": curves, "tuning": tuning, "minutes": total / 60,
                                               "steps": args.steps}, indent=1))


if __name__ == "__main__":
    main()
