"""Live fine-tuning: how soon does a stroke show in the overlay, and is painting live better?

A scripted painter paints whole sections from the ground truth of real EM (the 20 x 384 x 384
Drosophila VNC crop of ``bench/active.py``, mitochondria, 2D instance labels) while
:func:`napari_emseg.finetune.live.live_fine_tune` trains, one section every ``--every`` seconds
(``--slices`` in all, spread over the pool of ``bench/active.py``), and moves the view to each
section it paints, as a user would. With ``--follow uncertainty`` the painter paints, after the
first section, the section that "annotate here next" suggests at that moment instead: it copies
the live model, computes its uncertainty map (entropy, one pass) and paints the top of
``suggest_slices`` (test and unlabelled sections excluded); the time that takes is the
painter's, as it would be the user's. ``--arm then --sections A,B,...`` paints given sections
(e.g. those a ``--follow`` run chose, from its JSON) for a paint-then-train comparison on the
same sections. Two figures:

* **stroke -> overlay**: seconds from the moment a section is painted to the first preview of
  that section made by a model that has taken a training step on it (median over the strokes
  after the first; the first also waits for the model to be built);
* **accuracy after ``--minutes``**: the live model when the clock says ``--minutes`` against
  paint-then-train: the same sections painted at the same pace with nothing training, then
  ``fine_tune`` on all of them for the minutes left (``--arm then``). Scored on the six test
  sections of ``bench/active.py`` (never painted): pixel AP of the foreground map, foreground
  IoU at 0.5 and AP50 of the 2D objects after the watershed with fixed settings.

The network is the plain 2D U-Net of the 2D recipe (MONAI ``BasicUNet``) from scratch, on patches
of 128 x 128, 4 a step (the 2D ResUNet of ``bench/active.py`` took 1.5x as long a step and 5x as
long a preview on the CPU), one torch thread; the live loop runs with its automatic CPU settings
(preview window, refresh, quick calibrations). Timing-sensitive: run it alone, e.g.

    flock /tmp/cpu.lock python bench/live.py --arm live --json live.json     # about 6 min
    flock /tmp/cpu.lock python bench/live.py --arm then --json then.json     # about 5 min
    python bench/live.py --report live.json then.json
    flock /tmp/cpu.lock python bench/live.py --arm live --follow uncertainty --json follow.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import threading
import time
from pathlib import Path

import numpy as np
import torch
from active import CROP, DATA, INFER, LIGHT, TEST, UNANNOTATED, evaluate

from napari_emseg.active import UncertaintyConfig, suggest_slices, uncertainty_job
from napari_emseg.finetune.job import FineTuneConfig, fine_tune
from napari_emseg.finetune.live import LiveConfig, ViewSource, live_fine_tune
from napari_emseg.models import ModelConfig, build_model
from napari_emseg.models.heads import head_info
from napari_emseg.progress import CancelToken, cancellable, drain

ORDER = (9, 3, 15, 0, 12, 6, 19, 4, 16, 10, 13)  # the pool, spread out: the painter's order
VOXEL = (50.0, 4.6, 4.6)


def setup(seed: int):
    data = np.load(DATA)
    raw, gt = data["raw"][CROP].copy(), data["mito_instances_2d"][CROP].copy()
    assert not set(ORDER) & set(TEST + UNANNOTATED)
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch="unet2d"), head_info("bcd", tile=(1, 128, 128), voxel_size=VOXEL))
    cfg = FineTuneConfig(task="mitochondria", patch=(1, 128, 128), batch_size=4, lr=3e-3, encoder_lr_scale=1.0,
                         holdout=False, device="cpu", validate_every=10**9, augment=LIGHT, calibrate=False,
                         seed=seed)
    return raw, gt, model, cfg


def suggested(net, raw, painted: list[int]) -> int:
    """The section "annotate here next" suggests for a copy of the live model now."""
    snap = copy.deepcopy(net).eval()
    ucfg = UncertaintyConfig(measure="entropy", flips="none", inference=INFER)
    umap = drain(uncertainty_job(snap, raw, ucfg), show=False)
    return suggest_slices(umap, painted, n=1, exclude=TEST + UNANNOTATED)[0].index


def run_live(args) -> dict:
    raw, gt, model, cfg = setup(args.seed)
    labels = np.zeros_like(gt)
    order = sections(args)
    view, token = ViewSource(order[0]), CancelToken()
    paints: list[tuple[float, int]] = []
    net = copy.deepcopy(model)  # live_fine_tune trains this module in place
    t0 = time.perf_counter()

    def painter():
        painted: list[int] = []
        for i in range(args.slices):
            wait = t0 + i * args.every - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            if i and args.follow == "uncertainty":
                z = suggested(net, raw, painted)
            else:
                z = next(v for v in order if v not in painted)
            painted.append(z)
            labels[z] = gt[z]  # a whole section, as a user finishes painting it
            view.set(z)
            paints.append((time.perf_counter() - t0, z))

    thread = threading.Thread(target=painter, daemon=True)
    thread.start()
    live = LiveConfig(calibrate_on_stop=False)
    job = cancellable(live_fine_tune(net, raw, labels, cfg, live, view=view, voxel_size=VOXEL), token)
    previews, steps = [], 0
    try:
        event = next(job)
        while True:
            now = time.perf_counter() - t0
            if event.preview is not None:
                p = event.preview
                previews.append({"t": now, "z": p["z"], "version": p["version"], "steps_on_version": p["steps_on_version"],
                                 "cost_s": p["cost_s"], "side": p["side"], "refresh_s": p["refresh_s"]})
            if event.stage == "live":
                steps = event.step
            if now >= 60 * args.minutes and not token.cancelled:
                token.cancel()
            event = next(job)
    except StopIteration as stop:
        result = stop.value
    thread.join()
    latencies = []
    for t_paint, z in paints:
        row = next((h for h in result.live_history if h["event"] == "labels" and z in h["added"]
                    and h["t"] >= t_paint - 0.5), None)
        shown = next((p for p in previews if row is not None and p["t"] >= t_paint and p["z"] == z
                      and p["version"] >= row["version"] and p["steps_on_version"] >= 1), None)
        latencies.append({"z": z, "painted_s": round(t_paint, 2), "read_s": round(row["t"] - t_paint, 2) if row else None,
                          "overlay_s": round(shown["t"] - t_paint, 2) if shown else None})
    later = [x["overlay_s"] for x in latencies[1:] if x["overlay_s"] is not None]
    scores = evaluate(result.model, raw, gt)
    return {"arm": "live", "minutes": args.minutes, "every": args.every, "slices": args.slices, "seed": args.seed,
            "follow": args.follow, "sections": [z for _, z in paints], "steps": steps, "previews": len(previews), "latencies": latencies,
            "median_overlay_s": float(np.median(later)) if later else None,
            "preview_cost_s": float(np.median([p["cost_s"] for p in previews])) if previews else None,
            "preview_side": previews[-1]["side"] if previews else None,
            "refresh_s": previews[-1]["refresh_s"] if previews else None,
            "calibrations": [{"t": h["t"], "elapsed_s": h["elapsed_s"]} for h in result.live_history
                             if h["event"] == "calibrated"], **scores}


def run_then(args) -> dict:
    raw, gt, model, cfg = setup(args.seed)
    painted = list(sections(args)[:args.slices])
    labels = np.zeros_like(gt)
    labels[painted] = gt[painted]
    painting_min = (args.slices - 1) * args.every / 60  # the last section is done then; nothing trains before
    left = args.minutes - painting_min
    res = drain(fine_tune(copy.deepcopy(model), raw, labels, cfg.replace(steps=10**9, time_limit_min=left),
                          voxel_size=VOXEL), show=False)
    return {"arm": "then", "minutes": args.minutes, "every": args.every, "slices": args.slices, "seed": args.seed,
            "sections": painted, "painting_min": painting_min, "train_min": left, "steps": res.steps, **evaluate(res.model, raw, gt)}


def sections(args) -> list[int]:
    """The painter's order: ``--sections`` or the spread-out pool order."""
    order = [int(v) for v in args.sections.split(",")] if args.sections else list(ORDER)
    if set(order) & set(TEST + UNANNOTATED):
        raise SystemExit(f"--sections {args.sections}: test or unlabelled sections cannot be painted")
    return order


def report(paths: list[str]) -> None:
    rows = [json.loads(Path(p).read_text()) for p in paths]
    print(f"{'arm':>5} {'seed':>4} {'min':>4} {'steps':>6} {'pixel AP':>9} {'IoU':>6} {'AP50':>6}  stroke->overlay")
    for r in rows:
        lat = f"median {r['median_overlay_s']:.1f} s ({[x['overlay_s'] for x in r['latencies']]})" if r["arm"] == "live" else ""
        print(f"{r['arm']:>5} {r['seed']:>4} {r['minutes']:>4} {r['steps']:>6} {r['pixel_ap']:>9.3f} {r['iou']:>6.3f} "
              f"{r['ap50']:>6.3f}  sections {r.get('sections', '-')} {r.get('follow', '')} {lat}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arm", choices=("live", "then"), default="live")
    ap.add_argument("--minutes", type=float, default=5.0, help="wall clock from the first stroke (default 5)")
    ap.add_argument("--every", type=float, default=30.0, help="seconds between painted sections (default 30)")
    ap.add_argument("--slices", type=int, default=4, help="sections painted (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--follow", choices=("order", "uncertainty"), default="order",
                    help="live arm: paint the fixed order (default) or, after the first, the suggested section")
    ap.add_argument("--sections", default=None, metavar="Z,Z,...", help="the sections to paint, in order "
                    "(default: the spread-out pool order; with --follow only the first is used)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--report", nargs="+", default=None, metavar="JSON", help="print a table of earlier runs")
    args = ap.parse_args()
    if args.report:
        report(args.report)
        return
    if not DATA.exists():
        print(f"skipped: {DATA} is not here (the benchmark reads it in place)")
        return
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    out = run_live(args) if args.arm == "live" else run_then(args)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
