"""Measure every object of a label volume in physical units and write a CSV table.

    napari-emseg measure seg.zarr/labels --csv mito.csv
    napari-emseg measure labels.tif --voxel-size 40,8,8 --image raw.tif --csv mito.csv

One row per object: volume (µm³), surface area (µm²), bounding box, centroid (voxels and nm),
skeleton length, tip-to-tip length, branch and end points, and the mean image intensity when
``--image`` is given (see docs/morphometrics.md). Without ``--csv`` the table goes to stdout.
"""

from __future__ import annotations

import argparse

from ._args import add_axes_argument, check_out_kind, non_negative_int, voxel_size

HELP = "per-object morphometrics in physical units (volume, surface, length, branching) to CSV"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("labels", help="instance labels (zarr, tif, ...; 0 = background)")
    add_axes_argument(p, of="the labels")
    p.add_argument("--voxel-size", type=voxel_size, default=None, metavar="Z,Y,X",
                   help="nm (default: what the labels file records; required when it records nothing)")
    p.add_argument("--image", default=None, help="image of the same shape: adds each object's mean intensity")
    p.add_argument("--channel", type=non_negative_int, default=None, help="channel of a multi-channel image")
    add_axes_argument(p, "--image-axes", of="--image")
    p.add_argument("--csv", default=None, help="write the table here (default: print it)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing CSV written by 'measure' (never other files, nor an input)")
    p.add_argument("--surface", choices=["smooth", "binary", "none"], default="smooth",
                   help="surface estimate: smoothed mask (default, within a few %%), raw voxel mask, or none")
    p.add_argument("--no-skeleton", action="store_true", help="skip skeleton length and branching (faster)")


def run(args: argparse.Namespace) -> int:
    import sys

    from ..errors import EmsegError
    from ..io import open_volume
    from ..morphometrics import MeasureConfig, csv_text, measure_job, write_csv
    from ..progress import drain

    vs = args.voxel_size
    if args.csv:
        from .._outputs import check_outputs

        check_outputs([args.csv], [args.labels, args.image], overwrite=args.overwrite, option="--csv")
    check_out_kind(args.csv, "file", "--csv")
    labels = open_volume(args.labels, voxel_size=vs, axes=args.axes, fill=0)
    if not labels.voxel_size_known:
        raise EmsegError(f"{args.labels} does not record its voxel size: give it with --voxel-size z,y,x (nm)")
    image = open_volume(args.image, channel=args.channel, axes=args.image_axes).data if args.image else None
    cfg = MeasureConfig(surface=args.surface, skeleton=not args.no_skeleton)
    table = drain(measure_job(labels.data, labels.voxel_size, image, cfg), desc="measure", show=not args.quiet)
    n = len(table["label"])
    if args.csv:
        path = write_csv(table, args.csv)
        total = float(table["volume_um3"].sum())
        print(f"{path}: {n} objects, {total:.4g} µm³ in all, voxel size {' x '.join(f'{v:g}' for v in labels.voxel_size)} nm")
    else:
        sys.stdout.write(csv_text(table))
    return 0
