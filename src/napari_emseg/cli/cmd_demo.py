"""The main job, headless, on the bundled synthetic sample: annotate -> fine-tune -> segment -> score.

1. generate the synthetic EM sample (raw image with neuron and mitochondria ground truth);
2. "paint" two slices per task from the ground truth, as a user would in napari;
3. fine-tune the bundled pretrained encoder on them (mitochondria, then neurons); each fine-tune
   ends by calibrating the post-processing thresholds on the painted slices and storing them
   in the checkpoint (:mod:`napari_emseg.finetune.calibrate`);
4. segment the whole volume with each model (tiled inference + watershed / waterz), with the
   default thresholds and with the checkpoint's calibrated ones (what ``segment`` uses);
5. score both against the ground truth of the whole volume; write zarr labels and PNG overlays.

The same ``--seed`` (and shape, steps, slices) gives the same numbers on the CPU.

The same flow in napari: open the sample (File > Open Sample > napari-emseg), paint in a Labels
layer (Fine-tune widget > New labels layer), press Start, then Segment.

Run again with the same ``--out``, the demo replaces its own earlier results there; anything in
that folder napari-emseg did not write is refused before any work. The run holds ``OUT.lock``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

HELP = "run the main job on the bundled sample: fine-tune on two painted slices, segment, score"
logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--shape", default="24,192,192", help="sample size z,y,x (default 24,192,192)")
    p.add_argument("--steps", type=int, default=150, help="fine-tuning steps per task (default 150)")
    p.add_argument("--encoder", default=None, help="encoder to start from (default: the bundled pretrained one)")
    p.add_argument("--slices", default=None, help="z indices to paint, e.g. 6,17 (default: at 1/4 and 3/4)")
    p.add_argument("--seed", type=int, default=0)


def default_encoder() -> str:
    """The first bundled pretrained encoder (a CNN: fast enough for a CPU demo), else scratch."""
    from ..models.registry import list_encoders

    pretrained = [e for e in list_encoders(include_scratch=False) if e.source == "bundled" and e.config.arch == "resunet"
                  and not str(e.card.get("method", "")).startswith("fine-tuned")]
    return pretrained[0].name if pretrained else "scratch-resunet"


def run(args: argparse.Namespace) -> int:
    import sys

    from .._lock import output_lock
    from .._outputs import check_output_space

    t0 = time.perf_counter()
    out = Path(args.out)
    check_demo_outputs(out)
    check_output_space(out, 50 * 2**20, what="the demo's results")
    with output_lock(out, sys.argv):
        return _run(args, out, t0)


DEMO_TASKS = ("mitochondria", "neurons")


def check_demo_outputs(out: Path) -> None:
    """Refuse, before any work, files in ``out`` the demo would replace that napari-emseg did not write."""
    from .._outputs import guard_foreign

    sample = out / "sample.zarr"
    plan = [sample / n for n in ("raw", "neurons_truth", "mitochondria_truth")] + [out / "metrics.json"]
    for task in DEMO_TASKS:
        plan += [sample / f"{task}_painted", out / f"{task}.safetensors", out / f"{task}_overlay.png",
                 *(out / f"{task}.zarr" / n for n in ("predictions", "labels", "provenance.json"))]
    for p in plan:
        guard_foreign(p)


def _run(args: argparse.Namespace, out: Path, t0: float) -> int:
    from ..calibration import describe_source, resolve_postprocess
    from ..data.synthetic import make_synthetic_em
    from ..finetune.job import FineTuneConfig, fine_tune
    from ..io import write_volume
    from ..models.checkpoint import load_checkpoint
    from ..progress import drain
    from ..resample import VoxelMatchConfig
    from ..workflows import (
        SegmentConfig,
        postprocess_job,
        record_segmentation_job,
        segment_job,
        write_labels,
    )

    out.mkdir(parents=True, exist_ok=True)
    shape = tuple(int(s) for s in args.shape.split(","))
    em = make_synthetic_em(shape=shape, seed=args.seed)
    write_volume(out / "sample.zarr" / "raw", em.raw, voxel_size=em.voxel_size)
    write_volume(out / "sample.zarr" / "neurons_truth", em.neurons, voxel_size=em.voxel_size)
    write_volume(out / "sample.zarr" / "mitochondria_truth", em.mitochondria, voxel_size=em.voxel_size)
    zs = [int(v) for v in args.slices.split(",")] if args.slices else [shape[0] // 4, (3 * shape[0]) // 4]
    encoder = args.encoder or default_encoder()
    print(f"sample {shape} at {em.voxel_size} nm; painting slices {zs}; encoder {encoder}")

    results: dict[str, dict] = {}
    for task, truth, target in (("mitochondria", em.mitochondria, "auto"), ("neurons", em.neurons, "boundaries")):
        painted = np.zeros_like(truth)
        for z in zs:
            painted[z] = truth[z]
        write_volume(out / "sample.zarr" / f"{task}_painted", painted, voxel_size=em.voxel_size)
        # train on the sample's own grid: resampling to the encoder's 4 nm would quadruple the work
        cfg = FineTuneConfig(task=task, target=target, steps=args.steps, patch=(8, 96, 96), batch_size=2,
                             validate_every=25, seed=args.seed, voxel_match=VoxelMatchConfig(enabled=False))
        tuned = drain(fine_tune(encoder, em.raw, painted, cfg, out=out / f"{task}.safetensors",
                                voxel_size=em.voxel_size, source="synthetic sample"), desc=f"fine-tune {task}",
                      show=not args.quiet)
        started = time.time()
        seg = drain(segment_job(tuned.checkpoint, em.raw, SegmentConfig(), out=out / f"{task}.zarr",
                                voxel_size=em.voxel_size, postprocess=False, provenance=False, overwrite=True),
                    desc=f"predict {task}", show=not args.quiet)
        default_labels = drain(postprocess_job(seg, SegmentConfig()), desc=f"segment {task}", show=not args.quiet)
        results[f"{task} (default thresholds)"] = _scores(default_labels, truth, task)
        # the thresholds fine_tune calibrated on the painted slices, stored in the checkpoint: what
        # `segment` and the Segment widget use by default with this model
        post, seg.postprocess_source = resolve_postprocess(load_checkpoint(tuned.checkpoint, tensors=False).card,
                                                           seg.target)
        print(f"{task} {describe_source(seg.postprocess_source)}")
        cfg = SegmentConfig().replace(**{SegmentConfig.section_for(seg.target): post})
        seg.labels = drain(postprocess_job(seg, cfg), show=False)
        seg.paths["labels"] = write_labels(out / f"{task}.zarr" / "labels", seg.labels, em.voxel_size, {
            "target": seg.target, "postprocess": post.to_dict(), "postprocess_source": seg.postprocess_source})
        drain(record_segmentation_job(seg, tuned.checkpoint, em.raw, cfg, out / f"{task}.zarr",
                                      attrs={"source": {"image": f"{out / 'sample.zarr'}:raw"}},
                                      command=["napari-emseg", "demo"], started=started), show=False)
        results[f"{task} (calibrated on painted)"] = _scores(seg.labels, truth, task)
        write_overlay(out / f"{task}_overlay.png", em.raw, seg.labels, truth, zs)
    from .._atomic import atomic_write_text

    atomic_write_text(out / "metrics.json", json.dumps({"format": "napari-emseg.demo-metrics/1", **results}, indent=2))
    print_table(results)
    print(f"\nwrote {out}/: sample.zarr, mitochondria.zarr and neurons.zarr (predictions + labels), "
          f"*.safetensors models, *_overlay.png, metrics.json  ({(time.perf_counter() - t0) / 60:.1f} min)")
    print(f"open in napari:  napari {out}/sample.zarr/raw {out}/mitochondria.zarr/labels {out}/neurons.zarr/labels")
    return 0


def _scores(labels: np.ndarray, truth: np.ndarray, task: str) -> dict[str, float | int]:
    from ..evaluation import evaluate

    scores = {k: v for k, v in evaluate(labels, truth, task).items() if isinstance(v, (int, float))}
    return {**scores, "objects": int(labels.max()), "truth_objects": int(len(np.unique(truth[truth > 0])))}


def print_table(results: dict[str, dict]) -> None:
    keys = {"mitochondria": ["ap50", "ap75", "iou", "objects", "truth_objects"],
            "neurons": ["voi_split", "voi_merge", "arand", "objects", "truth_objects"]}
    print("\nscores on the whole volume against its ground truth (only 2 slices were painted):")
    for row, res in results.items():
        cells = "  ".join(f"{k}={res[k]:.3f}" if isinstance(res.get(k), float) else f"{k}={res.get(k)}"
                          for k in keys[row.split()[0]] if k in res)
        print(f"  {row:<38} {cells}")


def write_overlay(path: Path, raw: np.ndarray, labels: np.ndarray, truth: np.ndarray, painted: list[int]) -> None:
    """PNG: an unpainted middle slice, raw | prediction | truth, object outlines in colour."""
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    z = raw.shape[0] // 2
    if z in painted:
        z = min(raw.shape[0] - 1, z + 1)
    gray = np.repeat(raw[z][..., None], 3, -1).astype(np.float32) / 255.0
    panels = [gray]
    for lab in (labels[z], truth[z]):
        rgb = label2rgb(lab, image=raw[z], bg_label=0, alpha=0.35, image_alpha=1.0)
        rgb[find_boundaries(lab, mode="inner")] = (1.0, 1.0, 0.0)
        panels.append(rgb.astype(np.float32))
    sep = np.ones((raw.shape[1], 4, 3), np.float32)
    img = np.concatenate([panels[0], sep, panels[1], sep, panels[2]], axis=1)
    from PIL import Image, PngImagePlugin

    from .._atomic import atomic_path

    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "napari-emseg demo")  # the mark that lets a later demo replace it
    with atomic_path(path) as tmp:
        Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(tmp, format="PNG", pnginfo=info)
