"""Train the bundled one-click models on real EM with napari-emseg's own fine-tuning.

    python scripts/train_oneclick_models.py mito --downsample 2 --minutes 25   # VNC mitochondria, 9.2 nm px
    python scripts/train_oneclick_models.py boundaries --minutes 25            # VNC membranes (neurons preset)

Both train on Gerhard et al. 2013 (Drosophila larva VNC) only, so that ISBI 2012 and FAFB stay
unseen by them (bench/few_slices.py scores fine-tuning from them there). Reads ../shared/data
(never copied into the repository), trains a plain 2D U-Net from scratch with the default recipe on
the first sections (all objects painted), measures on held-out sections, and writes
``src/napari_emseg/models/weights/<name>.safetensors`` with a model card holding the data,
its terms, the command and the measured scores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WEIGHTS = ROOT / "src" / "napari_emseg" / "models" / "weights"
VNC_TERMS = "Gerhard et al. 2013, CC BY-NC-SA 3.0, doi:10.6084/m9.figshare.856713"


def train(kind: str, steps: int, minutes: float, threads: int, downsample: int = 1, encoder: str = "scratch-unet2d",
          seed: int = 0, evaluate_only: bool = False, recalibrate: bool = False) -> dict:
    import torch

    from napari_emseg.evaluation import evaluate
    from napari_emseg.finetune.job import FineTuneConfig, fine_tune
    from napari_emseg.models.checkpoint import load_checkpoint, load_model, save_checkpoint
    from napari_emseg.progress import drain
    from napari_emseg.resample import VoxelMatchConfig
    from napari_emseg.workflows import SegmentConfig, segment_job

    torch.set_num_threads(threads)
    if kind == "mito":
        d = np.load(DATA / "vnc-gerhard2013" / "vnc_stack1.npz")
        raw, labels, gt = d["raw"], d["mito_instances_2d"], d["mito_instances_2d"]
        # section 18 carries no mitochondrion labels in the data set (nor do 1 and 7, which training
        # skips as unpainted): scoring it would count every mitochondrion found there as false
        vs, train_z, test_z = (50.0, 4.6, 4.6), range(0, 14), [14, 15, 16, 17, 19]
        task, name, terms = "mitochondria", "emseg-mito-vnc", VNC_TERMS
        data = "Gerhard et al. 2013 ssTEM stack 1 (Drosophila larva VNC), sections 0-13 painted"
    else:
        d = np.load(DATA / "vnc-gerhard2013" / "vnc_stack1.npz")
        raw, labels, gt = d["raw"], d["cells2d"], d["cells2d"]
        vs, train_z, test_z = (50.0, 4.6, 4.6), range(0, 16), [16, 17, 18, 19]
        task, name, terms = "neurons", "emseg-boundaries-em", VNC_TERMS
        data = "Gerhard et al. 2013 ssTEM stack 1 (Drosophila larva VNC), sections 0-15 painted (2D cells)"
    if downsample > 1:  # more context per patch, 4x less work; inference resamples to this grid
        f = downsample
        z, y, x = raw.shape
        raw = raw[:, : y // f * f, : x // f * f].reshape(z, y // f, f, x // f, f).mean((2, 4)).astype(np.uint8)
        labels, gt = labels[:, ::f, ::f][:, : y // f, : x // f], gt[:, ::f, ::f][:, : y // f, : x // f]
        vs = (vs[0], vs[1] * f, vs[2] * f)
        data += f" (x/y binned {f}x to {vs[1]:g} nm)"
    painted = np.zeros_like(labels)
    for z in train_z:
        painted[z] = labels[z]
    # ISBI's cells are 2D components (ids differ between sections): train in-plane boundaries
    target = "boundaries" if task == "neurons" else "auto"
    # the default recipe (2D network for these serial sections, calibrated post-processing)
    cfg = FineTuneConfig(task=task, target=target, steps=steps, time_limit_min=minutes, seed=seed,
                         validate_every=50, patience=8,
                         # train on this grid (binned data gives more context), not the encoder's
                         voxel_match=VoxelMatchConfig(enabled=False))
    t0 = time.time()
    if evaluate_only:  # the bundled model as it is (after a change of the post-processing): score it again
        res = _bundled(WEIGHTS / f"{name}.safetensors")
        train_s = float(load_checkpoint(res.checkpoint, tensors=False).card.get("train_wall_time_s", 0.0))
        if recalibrate:  # the post-processing calibrated again on the training sections, with this code
            from napari_emseg.finetune.calibrate import calibrate_checkpoint

            cal = calibrate_checkpoint(res.checkpoint, raw, painted, voxel_size=vs,
                                       voxel_match=VoxelMatchConfig(enabled=False))
            print(f"recalibrated: {cal.choice}, {cal.metric} {cal.score:.4f} on the painted sections "
                  f"(defaults {cal.default_score:.4f}): {cal.config.to_dict()}")
    else:
        res = drain(fine_tune(encoder, raw, painted, cfg, out=WEIGHTS / f"{name}.safetensors", voxel_size=vs,
                              source=data), desc=name)
        train_s = time.time() - t0
    model = load_model(res.checkpoint)
    # segment as a user does: the post-processing calibrated on the painted sections
    seg = drain(segment_job(res.checkpoint, raw[test_z], SegmentConfig(), voxel_size=vs), desc="evaluate")
    truth = gt[test_z]
    if task == "mitochondria":
        # 2D objects of each held-out section (the 2D network segments sections, as the benchmark scores)
        scores = evaluate(_per_section(seg.labels), _per_section(truth), "mitochondria")
    else:  # 2D ISBI-style scores: each held-out section against its cells
        per = [evaluate(seg.labels[i], truth[i], "neurons") for i in range(truth.shape[0])]
        scores = {k: float(np.mean([p[k] for p in per])) for k in ("voi_split", "voi_merge", "arand")}
    scores = {k: (None if not np.isfinite(v) else round(float(v), 4)) if isinstance(v, (int, float, np.floating)) else v
              for k, v in scores.items() if not isinstance(v, (dict, list))}
    ck = load_checkpoint(res.checkpoint)
    card = dict(ck.card)
    card.update({
        "name": name, "family": f"{model.config.arch} widths {'/'.join(map(str, model.config.widths))}", "data": data,
        "licence": f"Non-commercial: {terms}",
        "held_out_scores": {"sections": ", ".join(map(str, test_z)), **scores},
        "generalises_to": "serial-section TEM of insect neuropil at ~4-9 nm pixels; on other tissue, microscopes "
                          "or resolutions fine-tune on a few painted slices (fine-tuning starts from this model)",
        "train_wall_time_s": round(train_s, 1),
    })
    if not evaluate_only:  # a re-scored model keeps the description and command that trained it
        card["description"] = (f"One-click {task} model: fine-tuned with napari-emseg's default recipe on real "
                               f"ssTEM (encoder {card.get('layout', {}).get('arch', '')} from {encoder!r}).")
        card["command"] = (f"python scripts/train_oneclick_models.py {kind} --steps {steps} --minutes {minutes} "
                           f"--downsample {downsample} --encoder {encoder} --seed {seed}")
    save_checkpoint(res.checkpoint, model, job=ck.job, card=card)
    print(json.dumps({"model": str(res.checkpoint), "steps": res.steps, "stopped": res.stopped,
                      "train_s": round(train_s), "scores": scores}, indent=1))
    return scores


def _bundled(path: Path):
    """The bundled model as a fine-tune result, to score it again without training."""
    from types import SimpleNamespace

    from napari_emseg.models.checkpoint import load_checkpoint

    card = load_checkpoint(path, tensors=False).card or {}
    return SimpleNamespace(checkpoint=path, steps=card.get("steps"), stopped=card.get("stopped"))


def _per_section(stack: np.ndarray) -> np.ndarray:
    """Ids made unique per section: an object is a 2D object of one section."""
    out = np.zeros(stack.shape, np.int64)
    offset = 0
    for z, s in enumerate(np.asarray(stack)):
        ids, inv = np.unique(s, return_inverse=True)
        codes = inv.reshape(s.shape) + (0 if ids[0] == 0 else 1)
        out[z] = np.where(codes > 0, codes + offset, 0)
        offset += len(ids)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["mito", "boundaries"])
    p.add_argument("--steps", type=int, default=5000)
    p.add_argument("--minutes", type=float, default=25.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--downsample", type=int, default=1, help="bin x/y by this factor before training")
    p.add_argument("--encoder", default="scratch-unet2d", help="encoder to start from (default: a plain 2D U-Net)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evaluate-only", action="store_true",
                   help="do not train: score the bundled model again on its held-out sections")
    p.add_argument("--recalibrate", action="store_true",
                   help="with --evaluate-only: calibrate its post-processing again on the training sections "
                        "first (after a change of the post-processing), and write it into the bundled card")
    args = p.parse_args(argv)
    if not DATA.exists():
        print(f"{DATA} not found: this script needs the shared EM data", file=sys.stderr)
        return 1
    train(args.kind, args.steps, args.minutes, args.threads, args.downsample, args.encoder, args.seed,
          args.evaluate_only, args.recalibrate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
