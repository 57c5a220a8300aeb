"""The main job on the bundled sample, headless: generate, save, reopen and describe it."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "run the main job on the bundled synthetic sample"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from ..data.synthetic import make_synthetic_em
    from ..io import open_volume, write_volume

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    em = make_synthetic_em(shape=(32, 256, 256), seed=args.seed)
    store = out / "sample.zarr"
    for name, arr in (("raw", em.raw), ("neurons", em.neurons), ("mitochondria", em.mitochondria)):
        write_volume(store / name, arr, voxel_size=em.voxel_size)
    vol = open_volume(f"{store}:raw")
    print(f"sample: {store} raw {tuple(vol.data.shape)} {vol.data.dtype} voxel size {vol.voxel_size} nm")
    print(f"        {len(set(em.neurons.ravel().tolist()))} neurons, {int(em.mitochondria.max())} mitochondria")
    return 0
