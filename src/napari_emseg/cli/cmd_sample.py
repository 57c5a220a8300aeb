"""Write the synthetic EM sample (raw image, neuron and mitochondria ground truth) to zarr.

Arrays already in OUT are never replaced unless napari-emseg wrote them and ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import logging

HELP = "write the synthetic EM sample volume with ground truth to a zarr container"
logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output container, e.g. sample.zarr")
    p.add_argument("--shape", default="32,256,256", help="z,y,x size in voxels (default 32,256,256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true",
                   help="replace raw/neurons/mitochondria in OUT written by an earlier 'sample' (never other data)")


def run(args: argparse.Namespace) -> int:
    import sys

    from .._lock import output_lock
    from .._outputs import check_outputs
    from ..data.synthetic import make_synthetic_em
    from ..io import write_volume

    shape = tuple(int(s) for s in args.shape.split(","))
    names = ("raw", "neurons", "mitochondria")
    check_outputs([f"{args.out}/{n}" for n in names], overwrite=args.overwrite)
    em = make_synthetic_em(shape=shape, seed=args.seed)
    with output_lock(args.out, sys.argv):
        for name, arr in zip(names, (em.raw, em.neurons, em.mitochondria)):
            path = write_volume(f"{args.out}/{name}", arr, voxel_size=em.voxel_size)
            logger.info("wrote %s %s %s", path, arr.shape, arr.dtype)
    print(f"{args.out}: raw, neurons, mitochondria {shape} at {em.voxel_size} nm")
    return 0
