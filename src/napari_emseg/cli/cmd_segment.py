"""Predict probability maps over a volume of any size with a checkpoint (tiled, resumable).

    napari-emseg segment --image raw.zarr --model mito.safetensors --out seg.zarr

writes ``seg.zarr/predictions``: ``(C, Z, Y, X)`` maps in [0, 1] (float16, or uint8 with
attribute ``scale: 255``), with the model's channel names, target, offsets and the voxel size in
its attributes. The volume is read and written block by block, so it may be far larger than
memory. Ctrl-C stops between blocks; the same command again resumes (``--restart``: start over).

OUT belongs to one run: maps another model, input or settings made there are refused unless
``--overwrite``; arrays and files napari-emseg did not write (and the command's own inputs) are
never replaced. The run holds ``OUT.lock``, so a second writer of OUT is refused.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from ..ngff import array_path
from ..resample import add_voxel_match_arguments, voxel_match_from_args
from ._args import (
    add_axes_argument,
    check_out_kind,
    device_list,
    fraction,
    int_triple,
    non_negative_int,
    positive_int,
    voxel_size,
    voxel_size_of,
)
from ._args import given_triple as _triple

HELP = "predict probability maps with a checkpoint, tiled over a volume of any size"
PREDICTIONS = "predictions"
"""Name of the prediction array inside ``--out``."""

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="the EM volume (any format napari-emseg reads)")
    p.add_argument("--model", default=None, help="checkpoint (.safetensors) written by finetune")
    p.add_argument("--preset", choices=["mitochondria", "neurons"], default=None,
                   help="one-click: the bundled model and tuned settings for this structure (instead of --model)")
    p.add_argument("--out", required=True, help=f"output zarr container; maps go to OUT/{PREDICTIONS} "
                   "(OUT ending in .ome.zarr: OME-Zarr multiscale images with a pyramid)")
    p.add_argument("--tile", type=int_triple, default=None, metavar="Z,Y,X", help="tile shape (default: the model's)")
    p.add_argument("--overlap", type=fraction, default=None, help="tile overlap fraction in [0, 1) (default 0.25)")
    p.add_argument("--batch", type=positive_int, default=None, help="tiles (3D) or planes (2D) per pass; halved on OOM")
    p.add_argument("--block", type=int_triple, default=None, metavar="Z,Y,X", help="output block (default 32,256,256)")
    p.add_argument("--device", default=None, help="auto (CUDA, MPS, CPU), cuda, cuda:1, mps or cpu")
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default=None)
    p.add_argument("--tta", action="store_true", help="average over flips (8x slower in 3D)")
    p.add_argument("--ortho", action="store_true", help="2D model: average xy, xz and yz planes (isotropic data)")
    p.add_argument("--mode", choices=["auto", "3d", "slices", "ortho"], default=None)
    p.add_argument("--dtype", choices=["float16", "uint8"], default=None, help="output type (default float16)")
    p.add_argument("--channel", type=non_negative_int, default=None, help="channel of a multi-channel image")
    add_axes_argument(p)
    p.add_argument("--voxel-size", type=voxel_size, default=None, metavar="Z,Y,X", help="nm, when the file does not say")
    p.add_argument("--restart", action="store_true", help="ignore an interrupted run's output and start over")
    p.add_argument("--overwrite", action="store_true",
                   help="replace napari-emseg's earlier output at OUT made with another model, input or settings "
                        "(never files napari-emseg did not write)")
    add_voxel_match_arguments(p)
    p.add_argument("--task", choices=["auto", "none", "neurons", "mitochondria", "semantic"], default="auto",
                   help="instance extraction after prediction: auto (what the model predicts), or none")
    p.add_argument("--post", dest="post_overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="post-processing setting, e.g. --post threshold=0.4 (neurons) or "
                        "--post seed_foreground=0.8 (mitochondria); repeatable")
    p.add_argument("--no-calibration", dest="calibration", action="store_false",
                   help="ignore the post-processing calibrated on the painted slices when the model was "
                        "fine-tuned (stored in the checkpoint): start from the defaults")
    p.add_argument("--labels-format", choices=["zarr", "tif"], default="zarr",
                   help="labels go to OUT/labels (zarr) or OUT/labels.tif")
    p.add_argument("--tune", default=None, metavar="LABELS",
                   help="painted labels (0 = unlabelled): first choose the post-processing thresholds that "
                        "score best on the painted slices, print them, then extract instances with them")
    add_axes_argument(p, "--tune-axes", of="--tune")
    p.add_argument("--tune-metric", choices=["auto", "arand", "voi", "ap", "ap50", "ap75", "iou"], default="auto",
                   help="what --tune maximises (auto: ARAND for neurons, AP for mitochondria)")
    p.add_argument("--tune-grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="values --tune tries for a field, e.g. --tune-grid threshold=0.2,0.4 (repeatable)")
    p.add_argument("--config", default=None, help="YAML/JSON InferenceConfig to start from")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="any InferenceConfig field, e.g. --set blend=linear (repeatable)")
    p.add_argument("--blocks", type=int_triple, default=None, metavar="Z,Y,X",
                   help="blockwise on dask.distributed: predict and extract instances in blocks of this core, "
                        "stitched into global ids (docs/scale-out.md)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="with --blocks: address of a running dask scheduler (default: a local cluster)")
    p.add_argument("--local-workers", type=positive_int, default=None, metavar="N",
                   help="with --blocks: workers of the local cluster, one model each (default 1, or one per "
                        "--devices entry); on a machine with several GPUs worker i uses GPU i mod the GPU count")
    p.add_argument("--devices", type=device_list, default=None, metavar="LIST",
                   help="spread prediction over these devices, one worker each: GPU numbers 0,1,2,3, cuda:N, cpu, "
                        "or all; worker i uses device i mod their number (several devices: blockwise on a "
                        "local cluster, --blocks defaulting to 32,256,256; docs/scale-out.md)")


def _axes(args: argparse.Namespace) -> str | None:
    return getattr(args, "axes", None)


def build_config(args: argparse.Namespace):
    """The :class:`~napari_emseg.inference.InferenceConfig` the arguments ask for."""
    from ..inference import InferenceConfig

    cfg = InferenceConfig.from_file(args.config) if args.config else InferenceConfig()
    direct: dict[str, Any] = {
        "tile": _triple(args.tile), "overlap": args.overlap, "batch": args.batch, "block": _triple(args.block),
        "device": args.device, "precision": args.precision, "dtype": args.dtype,
        "mode": "ortho" if args.ortho else args.mode,
    }
    if args.tta:
        direct["tta"] = True
    if args.block is not None:
        direct["auto_block"] = False  # a block asked for is used as given, not sized from free memory
    if args.restart:
        direct["resume"] = False
    cfg = cfg.replace(**{k: v for k, v in direct.items() if v is not None})
    return cfg.override(args.overrides)


def segment_config(args: argparse.Namespace, target: str | None = None) -> Any:
    """This run's ``SegmentConfig``: the options' inference and voxel matching (on the preset's config,
    as the widget's one-click button: :func:`napari_emseg.presets.preset_segment_config`); with
    ``target``, its post-processing section as :func:`post_start` resolves it."""
    from ..workflows import SegmentConfig

    inference, match = build_config(args), voxel_match_from_args(args)
    if getattr(args, "preset", None):
        from ..presets import preset_segment_config

        cfg = preset_segment_config(args.preset, inference=inference, voxel_match=match)
    else:
        cfg = SegmentConfig(inference=inference, voxel_match=match)
    if target is not None:
        cfg = cfg.replace(**{SegmentConfig.section_for(target): post_start(args, target)[0]})
    return cfg


def predict(args: argparse.Namespace) -> Any:
    """Open the image and the checkpoint and write ``OUT/predictions``; returns the zarr array."""
    from ..inference.matched import predict_matched
    from ..io import cut_to_extents, open_volume
    from ..models import load_model
    from ..progress import drain
    from ..workflows import finish_multiscale

    cfg = build_config(args)
    match = voxel_match_from_args(args)
    image = open_volume(args.image, channel=args.channel, voxel_size=voxel_size_of(args), axes=_axes(args))
    model = load_model(args.model, device="cpu", expect_in_channels=1)
    out = array_path(args.out, PREDICTIONS)
    attrs = {"source": {"image": str(args.image), "model": str(args.model), "channel": args.channel,
                        **({"axes": args.axes} if _axes(args) else {})}}
    if image.extents:  # micrographs of different sizes on one canvas: cut back to each (and after post-processing)
        attrs["extents"] = [list(e) for e in image.extents]
    job = predict_matched(model, image, out, cfg, match, attrs=attrs, overwrite=getattr(args, "overwrite", False))
    pred = cut_to_extents(drain(job, desc="predict", show=not args.quiet), image.extents)
    finish_multiscale(out, "maps", image.voxel_size if image.voxel_size_known else None)
    return pred


def postprocess(pred: Any, args: argparse.Namespace, started: float | None = None) -> Any:
    """The step after prediction: instance extraction for the model's target (or ``None``).

    Writes ``OUT/labels`` (zarr, or ``OUT/labels.tif``) beside the maps, then the provenance
    bundle (``OUT/provenance.json``; ``started``: ``time.time()`` at the start), and returns the path.
    """
    task = getattr(args, "task", "auto")
    if task == "none":
        return None
    from ..errors import EmsegError
    from ..io import cut_to_extents
    from ..postprocess import extract_instances_job
    from ..workflows import write_labels

    target = pred.attrs.get("target")
    expected = {"neurons": ("affinities", "boundaries"), "mitochondria": ("bcd",), "semantic": ("semantic",)}
    if task != "auto" and target not in expected[task]:
        raise EmsegError(f"--task {task}: the model predicts {target!r}, which is not a {task} target; "
                         f"use a {task} model or --task auto")
    cfg, source = post_start(args, target)
    offsets = pred.attrs.get("offsets") or None
    voxel_size = pred.attrs.get("resolution")

    def job():
        final, tuned, used = cfg, {}, source
        if getattr(args, "tune", None):
            final, tuned = yield from _tune(pred, target, cfg, offsets, voxel_size, args)
            used = {"source": "tuned on painted labels (--tune)", "labels": str(args.tune), "base": source["source"]}
        elif not getattr(args, "quiet", False):
            from ..calibration import describe_source

            print(describe_source(used))
        labels = yield from extract_instances_job(pred, target, final, offsets=offsets, voxel_size=voxel_size)
        cut_to_extents(labels, pred.attrs.get("extents"))
        name = "labels.tif" if getattr(args, "labels_format", "zarr") == "tif" else "labels"
        path = write_labels(Path(args.out) / name, labels, voxel_size,
                            {"target": target, "postprocess": final.to_dict(), "n_objects": int(labels.max()),
                             "postprocess_source": used, **tuned})
        yield from record(args, pred, final, labels, path, started, source=used)
        return path

    return job()


def _tune(pred: Any, target: str, base: Any, offsets: Any, voxel_size: Any, args: argparse.Namespace):
    """``--tune``: the post-processing config that scores best on the painted labels (printed)."""
    from ..io import open_volume
    from ..tuning import parse_grid, tune_job

    grid = None
    if getattr(args, "tune_grid", None):
        from ..tuning import DEFAULT_GRIDS

        grid = {**DEFAULT_GRIDS["neurons" if target in ("affinities", "boundaries") else "mitochondria"],
                **parse_grid(args.tune_grid)}
    res = yield from tune_job(pred, target, open_volume(args.tune, axes=getattr(args, "tune_axes", None), fill=0).data, offsets=offsets, voxel_size=voxel_size,
                              grid=grid, metric=getattr(args, "tune_metric", "auto"), base=base)
    print(res.describe())
    return res.config, {"tuning": {"labels": str(args.tune), "metric": res.metric, "score": res.score,
                                   "default_score": res.base_score, "slices": list(res.slices), "axis": res.axis}}


def post_base(args: argparse.Namespace, target: str) -> Any:
    """The post-processing config ``--post`` changes: the preset's (tuned) one, the one calibrated
    on the painted slices when the model was fine-tuned (unless ``--no-calibration``), or the defaults."""
    return post_start(args, target, overrides=False)[0]


def post_start(args: argparse.Namespace, target: str, *, overrides: bool = True) -> tuple[Any, dict[str, Any]]:
    """The post-processing config to use (``--post`` applied unless ``overrides=False``) and a
    record of where it came from (:func:`napari_emseg.calibration.resolve_postprocess`)."""
    from ..calibration import resolve_postprocess
    from ..models.checkpoint import load_checkpoint

    post = list(getattr(args, "post_overrides", []) or []) if overrides else []
    if getattr(args, "preset", None):
        from ..presets import preset_segment_config

        cfg = preset_segment_config(args.preset).postprocess_for(target)
        return resolve_postprocess(None, target, cfg, overrides=post) if post else (
            cfg, {"source": f"preset {args.preset} (tuned when its model was trained)"})
    card = load_checkpoint(args.model, tensors=False).card if getattr(args, "model", None) else None
    return resolve_postprocess(card, target, None, overrides=post,
                               use_calibration=getattr(args, "calibration", True))


def resolve_model(args: argparse.Namespace) -> None:
    """``--preset`` names the bundled model; exactly one of ``--model`` / ``--preset`` is needed."""
    from ..errors import EmsegError

    if args.preset and args.model:
        raise EmsegError("give --model or --preset, not both")
    if args.preset:
        from ..presets import preset_model_path

        args.model = str(preset_model_path(args.preset))
    if not args.model:
        raise EmsegError("no model: give --model CHECKPOINT (from napari-emseg finetune) or --preset mitochondria|neurons")


def segment(args: argparse.Namespace) -> dict[str, Any]:
    """Predict, then post-process if a step is configured; returns a summary for printing.

    Blockwise on dask with ``--blocks``, or with several ``--devices`` (default blocks then);
    one device in ``--devices`` is ``--device``.
    """
    devices = tuple(getattr(args, "devices", None) or ())
    blocks = _triple(getattr(args, "blocks", None))
    if devices:
        from ..errors import EmsegError

        if args.device:
            raise EmsegError("give --device (one device) or --devices (several), not both")
        if len(devices) == 1 and not blocks:
            args.device, args.devices = devices[0], None
        elif not blocks:
            from ..blockwise.config import BlockwiseConfig

            blocks = BlockwiseConfig().blocks
            logger.info("--devices %s: blockwise prediction on %d workers, blocks %s (choose with --blocks)",
                        ",".join(devices), args.local_workers or len(devices), ",".join(map(str, blocks)))
    if blocks:
        from ..blockwise.cli import segment_blockwise

        return segment_blockwise(args, build_config(args), blocks)
    from ..progress import drain

    t0, started = time.perf_counter(), time.time()
    pred = predict(args)
    summary: dict[str, Any] = {"predictions": pred, "seconds": time.perf_counter() - t0}
    job = postprocess(pred, args, started)
    if job is not None:
        summary["postprocess"] = drain(job, desc="post-process", show=not args.quiet)
    else:
        drain(record(args, pred, None, None, None, started), show=False)
    return summary


def record(args: argparse.Namespace, pred: Any, post: Any, labels: Any, labels_path: str | None,
           started: float | None, source: dict[str, Any] | None = None) -> Any:
    """Write the provenance bundle of this run (``OUT/provenance.json``, zarr attributes); a job."""
    import dataclasses
    import sys

    from ..device import select_device
    from ..io import open_volume
    from ..models import load_model
    from ..provenance import record_job
    from ..resample import plan_voxel_match

    image = open_volume(args.image, channel=args.channel, voxel_size=voxel_size_of(args), axes=_axes(args))
    config = segment_config(args)
    if post is not None:  # the section of the model's target (tuned or as given)
        name = next(f.name for f in dataclasses.fields(config) if type(getattr(config, f.name)) is type(post))
        config = config.replace(**{name: post})
    model = load_model(args.model)
    vs = image.voxel_size if image.voxel_size_known else None
    outputs = {PREDICTIONS: str(array_path(args.out, PREDICTIONS)), **({"labels": str(labels_path)} if labels_path else {})}
    return (yield from record_job(
        args.out, model=model, config=config, image=image, voxel_size=vs, outputs=outputs, labels=labels,
        postprocess=labels_path is not None, model_path=args.model, input_path=str(args.image), channel=args.channel,
        voxel_plan=plan_voxel_match(model.info.voxel_size, vs, config.voxel_match,
                                    model_zoom=model.info.input_zoom),
        device=select_device(config.inference.device), started=started, command=list(sys.argv),
        postprocess_source=source))


def check_model(args: argparse.Namespace) -> Any:
    """The checkpoint's info, refused before any output is touched when it cannot do the job: a
    pretrained encoder (no instance extraction), or a target that is not the ``--task``'s."""
    from ..errors import EmsegError
    from ..models.checkpoint import load_checkpoint
    from ..postprocess.extract import TARGET_CONFIGS

    info = load_checkpoint(args.model, tensors=False).info
    task = getattr(args, "task", "auto")
    if info.target not in TARGET_CONFIGS and task != "none":
        raise EmsegError(f"--model {args.model}: predicts {info.target!r} (a {info.task} model, e.g. a pretrained "
                         f"encoder), which has no instance extraction; fine-tune it first (napari-emseg finetune "
                         f"--encoder {args.model} ...), or pass --task none for the raw maps")
    expected = {"neurons": ("affinities", "boundaries"), "mitochondria": ("bcd",), "semantic": ("semantic",)}
    if task in expected and info.target not in expected[task]:
        raise EmsegError(f"--task {task}: the model predicts {info.target!r}, which is not a {task} target; "
                         f"use a {task} model or --task auto")
    return info


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse, before any work, outputs that are inputs or that napari-emseg did not write, and
    earlier outputs at OUT with nothing to tell whose they are (the maps' own check is in
    :func:`~napari_emseg.inference.output.prepare_output`)."""
    from .._outputs import UnsafeOutputError, check_not_input, guard_foreign
    from ..resample import MODEL_GRID_SUFFIX

    out = Path(args.out)
    labels = out / ("labels.tif" if getattr(args, "labels_format", "zarr") == "tif" else "labels")
    pred = array_path(out, PREDICTIONS)
    plan = [pred, labels, out / "provenance.json", Path(f"{pred}{MODEL_GRID_SUFFIX}")]
    check_not_input(plan, [args.image, args.model, getattr(args, "tune", None), getattr(args, "config", None)])
    for p in plan:
        guard_foreign(p)
    if not pred.exists() and not getattr(args, "overwrite", False):
        for p in plan[1:3]:
            if p.exists():
                raise UnsafeOutputError(f"--out {out}: holds an earlier napari-emseg output ({p.name}) but no "
                                        "predictions to resume; pass --overwrite to replace it, or choose another --out")


def run(args: argparse.Namespace) -> int:
    import sys

    resolve_model(args)
    from .._lock import output_lock
    from ..progress import Cancelled

    check_out_kind(args.out, "container")
    check_model(args)
    check_outputs(args)
    try:
        with output_lock(args.out, sys.argv):
            summary = segment(args)
    except Cancelled:
        print(f"napari-emseg: interrupted; run the same command again to resume into {args.out}")
        return 130
    pred, dt = summary["predictions"], summary["seconds"]
    names = ", ".join(pred.attrs.get("channel_names", []))
    print(f"{Path(args.out) / PREDICTIONS}: {tuple(pred.shape)} {pred.dtype} ({names}), "
          f"{dt:.1f} s, {pred.size / pred.shape[0] / max(dt, 1e-9) / 1e6:.2f} Mvoxel/s")
    if "postprocess" in summary:
        print(f"{summary['postprocess']}: instance labels")
    return 0

