"""List the encoder catalogue (bundled, downloadable, local and scratch encoders), or fetch one."""

from __future__ import annotations

import argparse
import json

HELP = "list pretrained encoders (and scratch choices); --fetch NAME downloads one"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the catalogue as JSON")
    p.add_argument("--fetch", metavar="NAME", help="download (or locate) encoder NAME and print its path")
    p.add_argument("--no-scratch", action="store_true", help="leave out the randomly initialised choices")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (tuple, list)):
        return "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def run(args: argparse.Namespace) -> int:
    from ..models.registry import fetch_encoder, list_encoders

    if args.fetch:
        print(fetch_encoder(args.fetch, progressbar=not args.json))
        return 0
    entries = list_encoders(include_scratch=not args.no_scratch)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    cols = ("name", "source", "family", "method", "data", "patch", "voxel nm", "params", "licence")
    rows = [
        (e.name, e.source, e.family, e.method, e.data, _fmt(e.patch_size), _fmt(e.voxel_size),
         f"{e.params / 1e6:.2f}M", e.licence)
        for e in entries
    ]
    widths = [min(36, max(len(c), *(len(r[i]) for r in rows))) if rows else len(c) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(v[:w].ljust(w) for v, w in zip(r, widths)))
    if not any(e.pretrained for e in entries):
        print("(no pretrained encoder installed: train one with napari-emseg-pretrain)")
    return 0
