"""Which slices to paint next: where a fine-tuned model is least sure, spread over the volume.

    napari-emseg suggest --image raw.zarr --model mito.safetensors --labels painted.zarr --n 5

prints one line per suggestion (slice, its mean uncertainty, and its most uncertain region), most
useful first; painted slices are never suggested. ``--regions N`` suggests N regions (of
``--region`` size) across all unpainted slices instead: paint just those windows. ``--map OUT.zarr`` also writes the full
uncertainty map (open it in napari over the image). ``napari-emseg finetune --suggest N`` does
the same right after training.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._args import add_axes_argument, check_out_kind, non_negative_int, positive_int

HELP = "rank the slices to paint next by the model's uncertainty (after a fine-tune)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="the EM volume (any format napari-emseg reads)")
    p.add_argument("--model", required=True, help="fine-tuned checkpoint (.safetensors)")
    p.add_argument("--labels", required=True, help="the painted labels used for fine-tuning (0 = unlabelled)")
    p.add_argument("--n", type=positive_int, default=5, help="how many slices to suggest (default 5)")
    p.add_argument("--min-gap", type=non_negative_int, default=None,
                   help="fewest slices between suggestions (default: spread over the volume)")
    p.add_argument("--region", default="128,128", metavar="H,W", help="size of the region named in each slice")
    p.add_argument("--measure", choices=["combined", "entropy", "disagreement"], default="combined",
                   help="entropy of the prediction, disagreement between flips, or their mean")
    p.add_argument("--flips", choices=["auto", "yx", "none"], default="auto",
                   help="test-time flips (auto: 8 in 3D, 4 in 2D; none: one pass, entropy only)")
    p.add_argument("--method", choices=["uncertainty", "diverse"], default="uncertainty",
                   help="uncertainty: the most uncertain slices, spread out (default); diverse: uncertainty times "
                        "the distance, in the model's features, to the painted and already suggested slices")
    p.add_argument("--regions", type=positive_int, default=None, metavar="N",
                   help="suggest N regions (--region sized, not overlapping, spread over the slices) instead of "
                        "whole slices")
    p.add_argument("--map", default=None, metavar="OUT.zarr", help="also write the full uncertainty map here")
    p.add_argument("--mode", choices=["dense", "scribbles"], default="dense", help="how the labels were painted")
    p.add_argument("--channel", type=non_negative_int, default=None, help="channel of a multi-channel image")
    add_axes_argument(p)
    add_axes_argument(p, "--labels-axes", of="--labels")
    p.add_argument("--device", default=None, help="auto (CUDA, MPS, CPU), cuda, cuda:1, mps or cpu")
    p.add_argument("--json", dest="json_out", default=None, metavar="FILE", help="write the suggestions as JSON")


def uncertainty_config(args: argparse.Namespace):
    """The :class:`~napari_emseg.active.UncertaintyConfig` the arguments ask for."""
    from ..active import UncertaintyConfig

    cfg = UncertaintyConfig(measure=getattr(args, "measure", "combined"), flips=getattr(args, "flips", "auto"))
    device = getattr(args, "device", None)
    if device:
        cfg = cfg.replace(inference=cfg.inference.replace(device=device))
    return cfg


def region_size(text: str) -> tuple[int, int]:
    from ..errors import EmsegError

    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise EmsegError(f"--region {text!r}: expected two integers H,W, e.g. 128,128") from None
    return h, w


def suggest(model: Any, image: Any, labels: Any, args: argparse.Namespace, n: int, *,
            mode: str = "dense", out: Any = None, show: bool = True):
    """Run :func:`~napari_emseg.active.suggest_job` with the arguments' options (defaults where
    ``args`` lacks them, as for ``finetune --suggest``); returns its result."""
    from ..active import suggest_job
    from ..progress import drain

    regions = getattr(args, "regions", None)
    job = suggest_job(model, image, labels, n=regions or n, min_gap=getattr(args, "min_gap", None),
                      region=region_size(getattr(args, "region", "128,128")),
                      config=uncertainty_config(args), mode=mode, out=out,
                      method="regions" if regions else getattr(args, "method", "uncertainty"))
    return drain(job, desc="uncertainty", show=show)


def print_suggestions(result: Any, regions: bool = False) -> None:
    """The suggestions, one per line, under a header naming the painted slices."""
    axis = "zyx"[result.uncertainty.axis]
    painted = ", ".join(str(i) for i in result.painted) or "none"
    what = "regions" if regions else "slices"
    print(f"next {what} to paint along {axis} ({result.uncertainty.measure} uncertainty; painted: {painted}):")
    if not result.suggestions:
        print("  none: every slice is painted")
    for s in result.suggestions:
        print(f"  {s.describe()}")


def run(args: argparse.Namespace) -> int:
    from .._atomic import atomic_write_text
    from .._outputs import check_not_input, guard_foreign
    from ..io import open_volume
    from ..models import load_model

    outputs = [p for p in (args.json_out, args.map) if p]
    check_not_input(outputs, [args.image, args.labels, args.model], option="output")
    for p in outputs:
        guard_foreign(p, option="output")
    check_out_kind(args.map, "folder", "--map")  # a zarr store is a folder
    check_out_kind(args.json_out, "file", "--json")
    image = open_volume(args.image, channel=args.channel, axes=args.axes)
    labels = open_volume(args.labels, axes=args.labels_axes, fill=0).data
    model = load_model(args.model, device="cpu", expect_in_channels=1)
    result = suggest(model, image.data, labels, args, args.n, mode=args.mode, out=args.map, show=not args.quiet)
    print_suggestions(result, regions=bool(args.regions))
    if args.map:
        print(f"{args.map}: uncertainty map (1, Z, Y, X)")
    if args.json_out:
        rows = [{"rank": s.rank, "axis": s.axis, "index": s.index, "score": s.score,
                 "box": [list(b) for b in s.box], "region_score": s.region_score} for s in result.suggestions]
        atomic_write_text(args.json_out, json.dumps({"format": "napari-emseg.suggestions/1",
                                                     "painted": list(result.painted), "suggestions": rows}, indent=2))
    return 0
