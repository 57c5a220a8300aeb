"""Print what napari-emseg sees in a volume: shape, type, voxel size, chunks, intensity range."""

from __future__ import annotations

import argparse
import json

from ._args import add_axes_argument, non_negative_int

HELP = "describe a volume (shape, dtype, voxel size, chunks)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="volume: file.tif, folder of slices, x.zarr[:key], x.n5:key, x.h5:key, x.npy")
    p.add_argument("--channel", type=non_negative_int, default=None, help="channel to take from multi-channel data")
    add_axes_argument(p, of="the volume")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from ..io import open_volume

    vol = open_volume(args.path, channel=args.channel, axes=args.axes)
    info = {
        "path": vol.path,
        "shape": list(vol.data.shape),
        "dtype": str(vol.data.dtype),
        "voxel_size_nm": list(vol.voxel_size),
        "voxel_size_known": vol.voxel_size_known,
        "chunks": [int(c[0]) for c in vol.data.chunks],
        "gigabytes": round(vol.data.nbytes / 1e9, 3),
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>18}: {v}")
    return 0
