"""``napari-emseg-pretrain``: headless self-supervised pretraining (MAE-3D, MS-Con, RETINA, masked 2D inpainting).

Examples
--------
One GPU (or the CPU)::

    napari-emseg-pretrain --method mae3d --data a.zarr:raw b.h5:raw --out runs/mae

Eight GPUs on one node, the same command under torchrun::

    torchrun --nproc_per_node 8 -m napari_emseg.cli.pretrain --method mae3d --data ... --out runs/mae

Any config field is settable: ``--set model.mask_ratio=0.75 --set data.patch=6,96,96``;
``--dry-run`` prints the resolved config and checks the data without training. Input errors
print one line and exit with status 2; Ctrl-C, and SIGTERM (``timeout``, SLURM, ``docker stop``),
save a checkpoint and exit with 130; ``--resume`` continues exactly from it.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from collections.abc import Sequence

from ..errors import EmsegError
from ._args import add_axes_argument, check_out_kind, non_negative_int, positive_float, positive_int

logger = logging.getLogger("napari_emseg")

PROG = "napari-emseg-pretrain"


def build_parser() -> argparse.ArgumentParser:
    from ._args import OneLineParser

    p = OneLineParser(prog=PROG, description="Self-supervised pretraining of EM encoders "
                                "(MAE-3D, MS-Con, RETINA, masked 2D inpainting) on unlabelled volumes; single GPU, CPU or torchrun.")
    p.add_argument("--method", required=True, choices=["mae3d", "mscon", "retina", "masked2d"], help="pretraining method")
    p.add_argument("--data", nargs="+", metavar="PATH", default=[],
                   help="volumes (tif, zarr[:key], n5:key, h5:key, npy, slice folders); each batch draws one "
                        "with equal probability")
    p.add_argument("--out", metavar="DIR", help="run folder: checkpoints, tensorboard/, the exported encoder")
    p.add_argument("--config", metavar="YAML", help="job config file (YAML or JSON), applied over the defaults")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any config field, e.g. train.lr=3e-4 or data.patch=6,96,96 (repeatable)")
    p.add_argument("--max-steps", type=positive_int, help="same as --set train.max_steps=N")
    p.add_argument("--time-limit", type=positive_float, metavar="MIN", help="stop (and export) after MIN minutes")
    p.add_argument("--workers", type=non_negative_int, help="DataLoader worker processes (data.workers)")
    add_axes_argument(p, of="the --data volumes (data.axes)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config, check the data, do not train")
    p.add_argument("--name", help="file name (and catalogue name) of the exported encoder")
    p.add_argument("--card", action="append", default=[], metavar="KEY=VALUE",
                   help="model card field of the exported encoder, e.g. licence='CC BY-NC-SA 3.0' (repeatable)")
    p.add_argument("--install", action="store_true",
                   help="also copy the exported encoder into the catalogue's local folder (napari-emseg encoders)")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bar")
    return p


def _resolve(args: argparse.Namespace):
    from ..config import ConfigError
    from ..pretrain.methods import load_job

    overrides = list(args.overrides)
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.time_limit is not None:
        overrides.append(f"train.time_limit_min={args.time_limit}")
    if args.workers is not None:
        overrides.append(f"data.workers={args.workers}")
    if args.axes is not None:
        overrides.append(f"data.axes={args.axes}")
    job = load_job(args.method, args.config, overrides)
    if job.train.max_steps < 1:
        raise ConfigError(f"train.max_steps {job.train.max_steps}: pretraining needs at least one step")
    card = {}
    for item in args.card:
        if "=" not in item:
            raise ConfigError(f"--card {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        card[key.strip()] = value
    return job, card


def run(args: argparse.Namespace) -> int:
    from ..pretrain.distributed import dist_env

    job, card = _resolve(args)
    main_rank = dist_env().is_main
    if args.dry_run:
        print(job.to_json())
        if args.data:
            from ..data.sampler import open_sources

            for s in open_sources(args.data, job.data):
                print(f"# data {s.path}: {s.shape} voxel size {s.voxel_size} range [{s.lo:g}, {s.hi:g}]")
        return 0
    if not args.data or not args.out:
        raise EmsegError("--data PATH [PATH ...] and --out DIR are required (except with --dry-run)")
    check_out_kind(args.out, "folder")
    import torch

    from ..pretrain.methods import install_encoder, pretrain
    from ..progress import drain

    if args.threads:
        torch.set_num_threads(args.threads)
    command = " ".join(shlex.quote(a) for a in [PROG, *getattr(args, "argv", sys.argv[1:])])
    job_run = pretrain(job, args.data, args.out, resume=args.resume, card=card, name=args.name, command=command)
    result = drain(job_run, desc=f"pretrain {job.method}", show=main_rank and not args.quiet)
    if not main_rank:
        return 0
    tr = result.train
    summary = {"method": job.method, "steps": tr.step, "stopped": tr.stopped, "final_metrics": tr.metrics,
               "wall_time_s": round(tr.elapsed_s, 1), "checkpoint": str(tr.checkpoint) if tr.checkpoint else None,
               "encoder": str(result.encoder) if result.encoder else None}
    if args.install and result.encoder is not None:
        summary["installed"] = str(install_encoder(result.encoder))
    print(json.dumps(summary, indent=2))
    return 130 if tr.stopped == "cancelled" else 0


def main(argv: Sequence[str] | None = None) -> int:
    from .main import parse, run_main, setup_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    args.argv = argv  # for the model card's reproducing command
    setup_logging(args.verbose, args.quiet)
    return run_main(run, args, PROG)  # one-line errors (exit 2); Ctrl-C and SIGTERM save, exit 130


if __name__ == "__main__":  # pragma: no cover - torchrun -m napari_emseg.cli.pretrain
    sys.exit(main())
