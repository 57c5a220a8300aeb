"""Make a segmentation again from its provenance bundle, and say whether it came out the same.

    napari-emseg rerun seg.zarr                 # writes seg-rerun.zarr beside it
    napari-emseg rerun seg.zarr --out again.zarr --device cpu

Reads ``seg.zarr/provenance.json`` (written by ``napari-emseg segment`` and the Segment widget):
the same checkpoint (its sha256 is checked), input, voxel size and every setting; hand edits
made in the Segment widget (``proofreading``) are replayed on the new labels. Prints whether
the input's content, the checkpoint and the labels match the recorded ones; exits with status 1
when the labels differ (0 when they are identical, bit for bit).
"""

from __future__ import annotations

import argparse

HELP = "reproduce a segmentation from its provenance bundle (OUT/provenance.json)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", help="a segmentation written by napari-emseg (the OUT.zarr container)")
    p.add_argument("--out", default=None, help="where to write the new one (default: OUTPUT-rerun.zarr beside it)")
    p.add_argument("--model", default=None, help="the checkpoint, if it moved since the recorded run")
    p.add_argument("--image", default=None, help="the input volume, if it moved (or came from an in-memory layer)")
    p.add_argument("--device", default=None, help="compute here instead of the recorded setting, e.g. cpu")
    p.add_argument("--overwrite", action="store_true",
                   help="replace napari-emseg's output of another run at --out (an earlier rerun is replaced anyway)")
    p.add_argument("--no-strict", dest="strict", action="store_false",
                   help="run even if the checkpoint file is not the recorded one (only warn)")


def run(args: argparse.Namespace) -> int:
    import sys

    from ..progress import Cancelled, drain
    from ..rerun import rerun_job

    job = rerun_job(args.output, args.out, model=args.model, image=args.image, device=args.device,
                    strict=args.strict, command=list(sys.argv), overwrite=args.overwrite)
    try:
        res = drain(job, desc="rerun", show=not args.quiet)
    except Cancelled:
        print("napari-emseg: interrupted")
        return 130

    def yes(flag: bool | None) -> str:
        return "unknown (not recorded)" if flag is None else ("yes" if flag else "NO")

    print(f"{res.out}: rerun of {args.output}")
    print(f"  input content identical: {yes(res.input_identical)}")
    print(f"  checkpoint identical:    {yes(res.model_identical)}")
    print(f"  labels identical:        {yes(res.labels_identical)}")
    return 1 if res.labels_identical is False else 0
