"""``bench/active.py --sets``: do the suggestions beat random choice, on three real EM sets?

Sets (read in place from ``/work/shared/data``; nothing is copied):

* ``vnc``: the 20 x 384 x 384 Drosophila VNC crop of ``bench/active.py`` (mitochondria, 2D
  instances); test sections 2, 5, 8, 11, 14, 17; sections 1, 7 and 18 (no labels) never used;
  pool of 11 sections.
* ``fafb``: FAFB mitochondria (8 unrelated 1736 x 1736 sections): the centre 768 x 768 of each,
  cut into four 384 x 384 tiles, 32 "slices"; the tiles of sections 3 and 7 are the test set,
  the 24 others the pool. Objects are the connected components of the binary masks.
* ``isbi``: ISBI 2012 (cells; 30 sections, centre 384 x 384 of each); test sections 2, 7, 12,
  17, 22, 27, the other 24 the pool. Trained as neurons with the ``boundaries`` target.

Score: pixel average precision on the test slices of the foreground map (mitochondria) or of
the boundary map against the membranes (ISBI; ARAND/VOI would add a watershed whose settings
dominate at this training scale). For each seed, the first painted slice is a random pool slice
and the first model is shared by all strategies; each strategy then adds one slice's worth of
painted pixels per round (1 -> 4 painted slices) and continues fine-tuning for ``--steps``:

* ``random``: a random pool slice (its own order per seed);
* ``uncertainty``: the first of ``suggest_slices`` (the ranking of ``suggest``'s default);
* ``diverse``: the first of ``suggest_diverse`` (uncertainty x feature distance x typicality);
* ``even``: the pool slice farthest from the painted ones;
* ``regions``: the ``suggest_regions`` windows (128 x 128) that add up to one slice's pixels;
* ``rregions``: as many random 128 x 128 windows (the random baseline at equal pixels).

Region strategies paint with scribbles (the background label 1 and the objects in each window).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_emseg.active import (
    UncertaintyConfig,
    slice_features,
    suggest_diverse,
    suggest_slices,
    uncertainty_job,
)
from napari_emseg.active_regions import (
    painted_cells,
    random_regions,
    region_boxes_mask,
    suggest_regions,
)
from napari_emseg.data.augment import AugmentConfig
from napari_emseg.finetune.job import FineTuneConfig, fine_tune
from napari_emseg.inference import InferenceConfig, predict_tiled
from napari_emseg.models import ModelConfig, build_model
from napari_emseg.models.heads import head_info
from napari_emseg.progress import drain

ROOT = Path("/work/shared/data")
INFER = InferenceConfig(device="cpu", block=(8, 384, 384))
LIGHT = AugmentConfig(flip=0.5, rotate90=0.5, brightness=0.3, contrast=0.3)
REGION = 128
STRATEGIES = ("random", "uncertainty", "diverse", "even", "regions", "rregions")


@dataclass
class EMSet:
    name: str
    raw: np.ndarray
    gt: np.ndarray  # instance ids per slice, 0 = background (membrane for isbi)
    test: list[int]
    pool: list[int]
    task: str
    target: str
    voxel: tuple[float, float, float]

    def truth(self) -> np.ndarray:
        ref = self.gt[self.test]
        return ref == 0 if self.task == "neurons" else ref > 0


def load_set(name: str) -> EMSet:
    if name == "vnc":
        from active import CROP, DATA, TEST, UNANNOTATED

        d = np.load(DATA)
        raw, gt = d["raw"][CROP].copy(), d["mito_instances_2d"][CROP].copy()
        pool = [i for i in range(raw.shape[0]) if i not in TEST + UNANNOTATED]
        return EMSet(name, raw, gt, list(TEST), pool, "mitochondria", "bcd", (50.0, 4.6, 4.6))
    if name == "fafb":
        d = np.load(ROOT / "fafb-mito/fafb_mito_8slices.npz")
        c = (d["raw"].shape[1] - 768) // 2
        tiles = [(s, y, x) for s in range(d["raw"].shape[0]) for y in (c, c + 384) for x in (c, c + 384)]
        raw = np.stack([d["raw"][s, y:y + 384, x:x + 384] for s, y, x in tiles])
        gt = np.stack([ndi.label(d["mito"][s, y:y + 384, x:x + 384] > 0)[0] for s, y, x in tiles]).astype(np.int32)
        test = [i for i, (s, _, _) in enumerate(tiles) if s in (3, 7)]
        pool = [i for i in range(len(tiles)) if i not in test]
        return EMSet(name, raw, gt, test, pool, "mitochondria", "bcd", (40.0, 8.0, 8.0))
    if name == "isbi":
        d = np.load(ROOT / "isbi2012/isbi2012_train.npz")
        raw, gt = d["raw"][:, 64:448, 64:448].copy(), d["cells2d"][:, 64:448, 64:448].astype(np.int32)
        test = [2, 7, 12, 17, 22, 27]
        pool = [i for i in range(raw.shape[0]) if i not in test]
        return EMSet(name, raw, gt, test, pool, "neurons", "boundaries", (50.0, 4.0, 4.0))
    raise SystemExit(f"unknown set {name!r}: choose vnc, fafb, isbi")


def pixel_ap(prob: np.ndarray, truth: np.ndarray) -> float:
    order = np.argsort(-prob.astype(np.float32).ravel(), kind="stable")
    hits = truth.ravel()[order]
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float(precision[hits].sum() / max(1, hits.sum()))


def evaluate(model, s: EMSet) -> float:
    probs = drain(predict_tiled(model, s.raw[s.test], None, INFER), show=False)
    return pixel_ap(probs[0], s.truth())


class Runner:
    """One set, one seed: the first model and each strategy's rounds."""

    def __init__(self, s: EMSet, seed: int, steps: int, first_steps: int, rounds: int, log=print) -> None:
        self.s, self.seed, self.steps, self.rounds, self.log = s, seed, steps, rounds, log
        torch.manual_seed(seed)
        arch = ModelConfig(arch="resunet", widths=(8, 16, 32), anisotropic_levels=2, subunits=1)
        init = build_model(arch, head_info(s.target, tile=(1, 128, 128), voxel_size=s.voxel))
        self.cfg = FineTuneConfig(task=s.task, target=s.target, steps=steps, patch=(1, 128, 128), batch_size=4,
                                  lr=3e-3, encoder_lr_scale=1.0, holdout=False, device="cpu",
                                  validate_every=10**9, augment=LIGHT, calibrate=False)
        self.start = int(np.random.default_rng(seed).choice([z for z in s.pool if s.gt[z].any()]))
        t = time.perf_counter()
        self.first = self.train(init, {self.start: None}, first_steps, 0)
        self.base = evaluate(self.first, s)
        self.ucfg = UncertaintyConfig(measure="entropy", flips="none", inference=INFER)
        log(f"[{s.name} seed {seed}] start {self.start}: pixel AP {self.base:.3f} ({time.perf_counter() - t:.0f} s)")

    def train(self, model, painted: dict, steps: int, round_: int):
        """``painted``: slice -> None (whole slice) or a list of boxes (painted regions)."""
        s = self.s
        whole = all(v is None for v in painted.values())
        labels = np.zeros(s.gt.shape, np.int32)
        for z, boxes in painted.items():
            if boxes is None:
                labels[z] = s.gt[z] if whole else s.gt[z] + 1
            else:
                m = region_boxes_mask(s.gt.shape[1:], [b[1:] for b in boxes])
                labels[z][m] = s.gt[z][m] + 1  # scribbles: background label 1, objects 2, 3, ...
        cfg = self.cfg.replace(steps=steps, seed=self.seed * 100 + round_,
                               mode="dense" if whole else "scribbles", background_label=1)
        return drain(fine_tune(copy.deepcopy(model), s.raw, labels, cfg), show=False).model

    def umap(self, model):
        return drain(uncertainty_job(model, self.s.raw[self.s.pool], self.ucfg), show=False)

    def run(self, name: str) -> list[dict]:
        s, model = self.s, self.first
        painted: dict[int, list | None] = {self.start: None}
        rng = np.random.default_rng(1000 + self.seed)
        pool_ix = {z: i for i, z in enumerate(s.pool)}
        curve = [{"painted": 1, "added": [self.start], "pixel_ap": self.base}]
        per_slice = (s.raw.shape[1] // REGION) * (s.raw.shape[2] // REGION)
        for r in range(1, self.rounds + 1):
            t = time.perf_counter()
            whole = [z for z, v in painted.items() if v is None]
            left = [z for z in s.pool if z not in painted]
            if name == "random":
                added = [int(rng.choice(left))]
            elif name == "even":
                added = [max(left, key=lambda i: (min(abs(i - p) for p in painted), -i))]
            elif name in ("uncertainty", "diverse"):
                um = self.umap(model)
                done = [pool_ix[z] for z in whole]
                if name == "uncertainty":
                    pick = suggest_slices(um, done, n=1)[0].index
                else:
                    feats = slice_features(model, s.raw[s.pool], device="cpu")
                    pick = suggest_diverse(um, feats, done, n=1)[0].index
                added = [s.pool[pick]]
            else:
                boxes = [b for v in painted.values() if v for b in v]
                if name == "regions":
                    um = self.umap(model)
                    pboxes = [((pool_ix[b[0][0]], pool_ix[b[0][0]] + 1), *b[1:]) for b in boxes]
                    mask = painted_cells(um, region_boxes_mask(um.shape, pboxes))
                    found = suggest_regions(um, per_slice, (REGION, REGION), painted=[pool_ix[z] for z in whole],
                                            painted_mask=mask)
                    new = [((s.pool[f.index], s.pool[f.index] + 1), *f.box[1:]) for f in found]
                else:
                    new = random_regions(s.raw.shape, per_slice, (REGION, REGION), rng=rng,
                                         candidates=[z for z in s.pool if z not in whole], painted_boxes=boxes)
                for b in new:
                    painted.setdefault(b[0][0], []).append(b)  # type: ignore[union-attr]
                added = sorted({b[0][0] for b in new})
            for z in added if name in ("random", "even", "uncertainty", "diverse") else ():
                painted[z] = None
            model = self.train(model, painted, self.steps, r)
            ap = evaluate(model, s)
            curve.append({"painted": r + 1, "added": [int(z) for z in added], "pixel_ap": ap,
                          "seconds": round(time.perf_counter() - t, 1)})
            self.log(f"[{s.name} seed {self.seed}] {name:>11} round {r}: +{added}  pixel AP {ap:.3f}  "
                     f"({curve[-1]['seconds']:.0f} s)")
        return curve


def run_sets(sets: list[str], seeds: list[int], strategies: list[str], steps: int, first_steps: int, rounds: int,
             out: str | None) -> dict:
    results: dict = {}
    for name in sets:
        s = load_set(name)
        print(f"{name}: {s.raw.shape}, test {s.test}, pool {len(s.pool)} slices, {s.task} ({s.target})", flush=True)
        for seed in seeds:
            t = time.process_time()
            runner = Runner(s, seed, steps, first_steps, rounds)
            for strat in strategies:  # saved after each strategy: a stopped run keeps what it finished
                results.setdefault(name, {}).setdefault(strat, {})[str(seed)] = runner.run(strat)
                results[name].setdefault("cpu_s", {})[str(seed)] = round(time.process_time() - t, 1)
                if out:
                    Path(out).write_text(json.dumps({"results": results, "steps": steps, "first_steps": first_steps,
                                                     "rounds": rounds}, indent=1))
    return results


def report(paths: list[str]) -> None:
    """Mean over seeds, spread (min-max), and the paired margin over random, per set and step
    (``*``: a clear margin, at least +0.02 on average and positive for every seed); then the
    same as a Markdown table."""
    merged: dict = {}
    for p in paths:
        for name, by in json.loads(Path(p).read_text())["results"].items():
            for strat, runs in by.items():
                merged.setdefault(name, {}).setdefault(strat, {}).update(runs)
    rows: list[str] = []
    for name, by in merged.items():
        cpu = sum(by.pop("cpu_s", {}).values())
        print(f"\n{name} ({cpu / 60:.1f} CPU-min): pixel AP on the test slices, mean over seeds [min, max];"
              " margin = paired difference to random, mean [min, max]")
        base = by.get("random", {})
        for strat, runs in by.items():
            seeds = sorted(runs)
            steps = len(runs[seeds[0]])
            cells = []
            for k in range(1, steps):
                v = np.array([runs[sd][k]["pixel_ap"] for sd in seeds])
                cell = f"{v.mean():.3f} [{v.min():.3f}, {v.max():.3f}]"
                if strat != "random" and all(sd in base for sd in seeds):
                    d = v - np.array([base[sd][k]["pixel_ap"] for sd in seeds])
                    clear = d.mean() >= 0.02 and (d > 0).all()
                    cell += f" {d.mean():+.3f} [{d.min():+.3f}, {d.max():+.3f}]{' *' if clear else ''}"
                cells.append(cell)
            print(f"  {strat:>11} ({len(seeds)} seeds): " + " | ".join(cells))
            rows.append(f"| {name} | {strat} | {len(seeds)} | " + " | ".join(
                c.replace(" [", " (").replace("] ", ") ").replace("]", ")").replace(", ", " to ") for c in cells) + " |")
    print("\n| set | strategy | seeds | 2 painted | 3 painted | 4 painted |\n|---|---|---|---|---|---|")
    print("\n".join(rows))
