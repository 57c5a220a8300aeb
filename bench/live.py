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

``--synthetic`` paints a synthetic EM volume instead (:func:`napari_emseg.data.synthetic.make_synthetic_em`,
``--shape``, its mitochondria as 2D instance labels, section by section), for machines without the
data set (a lent GPU: ``scripts/gpu_check.sh`` runs it as its ``live`` stage): the test sections
are every third from section 2, the pool the others (painted from the middle, then spread out); the
generator costs about 2 us a voxel, so an in-plane size beyond ``--synth-side`` (384) is the
generated section mirrored (a 768 x 768 view on a GPU, as large as its preview window, in seconds).
``--device cuda`` trains, previews and scores on the GPU (the live loop's automatic GPU settings:
a preview every second, 768-pixel window, one neighbour on each side); everything else, the
network, its patch and batch, and how stroke -> overlay is measured, is as above:

    python bench/live.py --synthetic --shape 12,768,768 --device cuda --minutes 1 --every 10 --slices 6 --json live.json
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
from active import CROP, DATA, INFER, LIGHT, POST, TEST, UNANNOTATED, evaluate, next_even, pixel_ap

from napari_emseg.active import UncertaintyConfig, suggest_slices, uncertainty_job
from napari_emseg.finetune.job import FineTuneConfig, fine_tune
from napari_emseg.finetune.live import LiveConfig, ViewSource, live_fine_tune
from napari_emseg.inference import predict_tiled
from napari_emseg.models import ModelConfig, build_model
from napari_emseg.models.heads import head_info
from napari_emseg.postprocess import extract_instances
from napari_emseg.progress import CancelToken, cancellable, drain
from napari_emseg.tuning import slice_score

ORDER = (9, 3, 15, 0, 12, 6, 19, 4, 16, 10, 13)  # the pool, spread out: the painter's order
VOXEL = (50.0, 4.6, 4.6)


class Data:
    """What the painter paints and the scores use: the VNC crop of ``bench/active.py`` (default)
    or, with ``--synthetic``, a synthetic EM volume (:func:`synthetic`)."""

    def __init__(self, args) -> None:
        self.device, self.synthetic = args.device, args.synthetic
        if not args.synthetic:
            data = np.load(DATA)
            self.raw, self.gt = data["raw"][CROP].copy(), data["mito_instances_2d"][CROP].copy()
            self.voxel, self.order, self.test, self.excluded = VOXEL, ORDER, TEST, TEST + UNANNOTATED
            self.infer, self.what = INFER, f"VNC crop {self.raw.shape}"
        else:
            shape = tuple(args.shape)
            self.raw, self.gt, self.voxel, self.what = synthetic(shape, args.seed, args.synth_side)
            self.test = tuple(range(2, shape[0], 3))
            pool = [z for z in range(shape[0]) if z not in self.test]
            order = [min(pool, key=lambda z: (abs(z - shape[0] // 2), z))]  # the middle, then spread out
            while len(order) < len(pool):
                order.append(next_even(order, pool))
            self.order = tuple(order)
            self.excluded = self.test
            self.infer = INFER.replace(device=args.device, block=(8, *shape[1:]))
        assert not set(self.order) & set(self.excluded)

    def evaluate(self, model) -> dict[str, float]:
        """``bench/active.py``'s ``evaluate`` (the VNC crop) or the same scores on the synthetic test sections."""
        if not self.synthetic:
            return evaluate(model, self.raw, self.gt)
        test = list(self.test)
        probs = drain(predict_tiled(model, self.raw[test], None, self.infer), show=False)
        ref, at = self.gt[test], range(len(test))
        return {"pixel_ap": pixel_ap(probs[0], ref > 0),
                "iou": slice_score((probs[0] > 0.5).astype(np.uint8), ref, at, metric="iou"),
                "ap50": slice_score(extract_instances(probs, "bcd", POST), ref, at, metric="ap50")}


def synthetic(shape: tuple[int, int, int], seed: int, side: int):
    """A synthetic EM volume and its mitochondria as 2D instance labels (each section's connected
    objects); an in-plane size beyond ``side`` is a ``side`` x ``side`` volume mirrored to it."""
    from scipy import ndimage as ndi

    from napari_emseg.data.synthetic import make_synthetic_em

    small = (shape[0], min(shape[1], side), min(shape[2], side))
    em = make_synthetic_em(small, seed=seed)
    raw, mito = em.raw, em.mitochondria > 0
    if small != shape:
        pad = ((0, 0), (0, shape[1] - small[1]), (0, shape[2] - small[2]))
        raw, mito = np.pad(raw, pad, mode="symmetric"), np.pad(mito, pad, mode="symmetric")
    gt = np.zeros(shape, np.uint32)
    for z in range(shape[0]):
        gt[z], _ = ndi.label(mito[z])
    what = f"synthetic EM {shape}" + (f" ({small[1]} x {small[2]} mirrored)" if small != shape else "")
    return np.ascontiguousarray(raw), gt, tuple(em.voxel_size), what


def setup(seed: int, data: Data):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(arch="unet2d"), head_info("bcd", tile=(1, 128, 128), voxel_size=data.voxel))
    cfg = FineTuneConfig(task="mitochondria", patch=(1, 128, 128), batch_size=4, lr=3e-3, encoder_lr_scale=1.0,
                         holdout=False, device=data.device, validate_every=10**9, augment=LIGHT, calibrate=False,
                         seed=seed)
    return data.raw, data.gt, model, cfg


def suggested(net, data: Data, painted: list[int]) -> int:
    """The section "annotate here next" suggests for a copy of the live model now."""
    snap = copy.deepcopy(net).eval()
    ucfg = UncertaintyConfig(measure="entropy", flips="none", inference=data.infer)
    umap = drain(uncertainty_job(snap, data.raw, ucfg), show=False)
    return suggest_slices(umap, painted, n=1, exclude=data.excluded)[0].index


def run_live(args, data: Data) -> dict:
    raw, gt, model, cfg = setup(args.seed, data)
    labels = np.zeros_like(gt)
    order = sections(args, data)
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
                z = suggested(net, data, painted)
            else:
                z = next(v for v in order if v not in painted)
            painted.append(z)
            labels[z] = gt[z]  # a whole section, as a user finishes painting it
            view.set(z)
            paints.append((time.perf_counter() - t0, z))

    thread = threading.Thread(target=painter, daemon=True)
    thread.start()
    live = LiveConfig(calibrate_on_stop=False)
    job = cancellable(live_fine_tune(net, raw, labels, cfg, live, view=view, voxel_size=data.voxel), token)
    previews, steps = [], 0
    first = last = None  # (seconds, step) of the first and the latest training step
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
                first, last = first or (now, steps), (now, steps)
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
    scores = data.evaluate(result.model)
    rate = (last[1] - first[1]) / (last[0] - first[0]) if first and last[0] > first[0] else None
    return {"arm": "live", "minutes": args.minutes, "every": args.every, "slices": args.slices, "seed": args.seed,
            **run_info(data), "follow": args.follow, "sections": [z for _, z in paints], "steps": steps,
            "steps_per_s": round(rate, 2) if rate is not None else None,
            "previews": len(previews), "latencies": latencies,
            "median_overlay_s": float(np.median(later)) if later else None,
            "preview_cost_s": float(np.median([p["cost_s"] for p in previews])) if previews else None,
            "preview_side": previews[-1]["side"] if previews else None,
            "refresh_s": previews[-1]["refresh_s"] if previews else None,
            "calibrations": [{"t": h["t"], "elapsed_s": h["elapsed_s"]} for h in result.live_history
                             if h["event"] == "calibrated"], **scores}


def run_then(args, data: Data) -> dict:
    raw, gt, model, cfg = setup(args.seed, data)
    painted = list(sections(args, data)[:args.slices])
    labels = np.zeros_like(gt)
    labels[painted] = gt[painted]
    painting_min = (args.slices - 1) * args.every / 60  # the last section is done then; nothing trains before
    left = args.minutes - painting_min
    res = drain(fine_tune(copy.deepcopy(model), raw, labels, cfg.replace(steps=10**9, time_limit_min=left),
                          voxel_size=data.voxel), show=False)
    return {"arm": "then", "minutes": args.minutes, "every": args.every, "slices": args.slices, "seed": args.seed,
            **run_info(data), "sections": painted, "painting_min": painting_min, "train_min": left, "steps": res.steps,
            **data.evaluate(res.model)}


def run_info(data: Data) -> dict:
    """The data and device of a run, for its JSON."""
    name = "cpu"
    if data.device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(data.device))
    return {"data": data.what, "device": data.device, "device_name": name, "torch_threads": torch.get_num_threads()}


def sections(args, data: Data) -> list[int]:
    """The painter's order: ``--sections`` or the spread-out pool order."""
    order = [int(v) for v in args.sections.split(",")] if args.sections else list(data.order)
    if args.slices > len(order) and args.follow == "order":
        raise SystemExit(f"--slices {args.slices}: only {len(order)} sections can be painted")
    if set(order) & set(data.excluded):
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
    ap.add_argument("--synthetic", action="store_true",
                    help="paint a synthetic EM volume (--shape) instead of the VNC crop (which needs ../shared/data)")
    ap.add_argument("--shape", type=lambda v: [int(x) for x in v.split(",")], default=[20, 384, 384],
                    metavar="Z,Y,X", help="--synthetic: the volume (default 20,384,384, the VNC crop's)")
    ap.add_argument("--synth-side", type=int, default=384,
                    help="--synthetic: in-plane size generated; larger --shape mirrors it (default 384)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: where the live loop trains and previews")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: 1 on the CPU, as the CPU figures; torch's own with --device cuda)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--report", nargs="+", default=None, metavar="JSON", help="print a table of earlier runs")
    args = ap.parse_args()
    if args.report:
        report(args.report)
        return
    if not args.synthetic and not DATA.exists():
        print(f"skipped: {DATA} is not here (the benchmark reads it in place; --synthetic paints a synthetic volume)")
        return
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA device")
    if args.threads or args.device == "cpu":
        torch.set_num_threads(args.threads or 1)
    logging.basicConfig(level=logging.WARNING)
    data = Data(args)
    out = run_live(args, data) if args.arm == "live" else run_then(args, data)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
