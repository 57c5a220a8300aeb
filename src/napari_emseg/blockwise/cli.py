"""``napari-emseg segment --blocks Z,Y,X [--scheduler ADDRESS | --local-workers N] [--devices 0,1,...]``.

The command's other options keep their meaning: tile, overlap, batch, device, precision, TTA,
mode, dtype, channel, voxel size, ``--restart``, ``--task`` and ``--post``. Options that need
the whole volume in one process (``--tune``, ``--labels-format tif``) are refused.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from ..errors import EmsegError

__all__ = ["segment_blockwise"]

logger = logging.getLogger(__name__)

_TASK_TARGETS = {"neurons": ("affinities", "boundaries"), "mitochondria": ("bcd",), "semantic": ("semantic",)}


def segment_blockwise(args: argparse.Namespace, inference: Any, blocks: tuple[int, int, int]) -> dict[str, Any]:
    """Run :func:`~napari_emseg.blockwise.segment_blockwise_job` for parsed ``segment`` arguments.

    Returns the summary ``cmd_segment.run`` prints: ``predictions`` (the zarr array),
    ``seconds`` and, unless ``--task none``, ``postprocess`` (the labels' path).
    """
    import zarr

    from ..cli.cmd_segment import post_base
    from ..models.checkpoint import load_checkpoint
    from ..progress import drain
    from .config import BlockwiseConfig
    from .segment import segment_blockwise_job

    if getattr(args, "tune", None):
        raise EmsegError("--tune needs the whole prediction in one process; run it without --blocks "
                         "(on a crop), then pass the chosen values with --post")
    if getattr(args, "labels_format", "zarr") != "zarr":
        raise EmsegError("--blocks writes OUT/labels as zarr (a TIFF cannot be written block by block); "
                         "drop --labels-format tif")
    if args.scheduler and args.local_workers:
        raise EmsegError("--scheduler and --local-workers exclude each other: the scheduler's workers are used")
    info = load_checkpoint(args.model, tensors=False).info
    task = getattr(args, "task", "auto")
    if task not in ("auto", "none") and info.target not in _TASK_TARGETS[task]:
        raise EmsegError(f"--task {task}: the model predicts {info.target!r}, which is not a {task} target; "
                         f"use a {task} model or --task auto")
    post = None
    if task != "none":
        post = post_base(args, info.target).override(getattr(args, "post_overrides", []))
    from ..cli._args import voxel_size_of as _voxel_size
    from ..resample import voxel_match_from_args

    vs = _voxel_size(args)
    cfg = BlockwiseConfig(blocks=blocks)
    t0 = time.perf_counter()
    job = segment_blockwise_job(
        args.model, args.image, args.out, inference, post, cfg, extract=task != "none",
        scheduler=args.scheduler, local_workers=args.local_workers, channel=args.channel, voxel_size=vs,
        axes=getattr(args, "axes", None),
        overwrite=getattr(args, "overwrite", False), devices=getattr(args, "devices", None) or None,
        voxel_match=voxel_match_from_args(args),
    )
    result = drain(job, desc="blockwise", show=not args.quiet)
    summary: dict[str, Any] = {"predictions": zarr.open_array(result.predictions, mode="r"),
                               "seconds": time.perf_counter() - t0}
    if result.labels is not None:
        summary["postprocess"] = str(Path(result.labels))
    return summary
