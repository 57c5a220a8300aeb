"""Score a segmentation against ground truth: VOI and adapted Rand (neurons), AP by size
(mitochondria, MitoEM protocol), IoU/F1 per class (semantic). Prints a table, or JSON.

Ground-truth label 0 is ignored by VOI and adapted Rand; for mitochondria and semantic it is
background. See docs/evaluation.md for the definitions.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from ._args import add_axes_argument, positive_int

HELP = "score a segmentation against ground truth (VOI, ARAND, AP by size, IoU/F1)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pred", required=True, help="predicted labels: x.zarr:labels, file.tif, x.h5:seg, ...")
    p.add_argument("--gt", required=True, help="ground-truth labels, same shape (any format open_volume reads)")
    add_axes_argument(p, "--pred-axes", of="--pred")
    add_axes_argument(p, "--gt-axes", of="--gt")
    p.add_argument("--task", required=True, choices=("neurons", "mitochondria", "semantic"))
    p.add_argument("--classes", type=positive_int, default=None, help="semantic: number of classes (default: from the labels)")
    p.add_argument("--size-bins", default="5000,15000", metavar="SMALL,MEDIUM",
                   help="mitochondria: upper bounds of the small and medium bins in voxels (default 5000,15000)")
    p.add_argument("--json", action="store_true", help="print JSON (NaN as null)")


def run(args: argparse.Namespace) -> int:
    from ..evaluation.tasks import evaluate, format_results
    from ..io import VolumeError, open_volume

    bins = _parse_bins(args.size_bins)
    pred = open_volume(args.pred, axes=args.pred_axes, fill=0)
    gt = open_volume(args.gt, axes=args.gt_axes, fill=0)
    if tuple(pred.data.shape) != tuple(gt.data.shape):
        raise VolumeError(
            f"--pred {args.pred} has shape {tuple(pred.data.shape)} but --gt {args.gt} has "
            f"{tuple(gt.data.shape)}; evaluate volumes of the same region"
        )
    results = evaluate(pred.data, gt.data, args.task, n_classes=args.classes, size_bins=bins)
    if args.json:
        print(json.dumps(_json_safe({"task": args.task, **results}), indent=2))
    else:
        print(f"{args.task}: {args.pred} vs {args.gt} {tuple(gt.data.shape)}")
        print(format_results(results))
    sys.stdout.flush()
    return 0


def _parse_bins(text: str) -> tuple[int, int]:
    from ..config import ConfigError

    try:
        lo, hi = (int(float(v)) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--size-bins {text!r}: expected two voxel counts, e.g. 5000,15000") from None
    if not 0 < lo < hi:
        raise ConfigError(f"--size-bins {text!r}: need 0 < small < medium")
    return lo, hi


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
