"""Fine-tune a pretrained encoder on a few painted slices and save a self-describing checkpoint.

Paint every object of a task on two or three slices of a Labels volume (0 elsewhere), then:

    napari-emseg finetune --image raw.zarr --labels painted.zarr --task mitochondria --time-limit 10 --out mito.safetensors

The checkpoint rebuilds its model (``napari-emseg segment --model mito.safetensors``).
Ctrl-C, or SIGTERM (``timeout``, SLURM, ``docker stop``), stops training and still saves the
best model so far (exit status 130).
"""

from __future__ import annotations

import argparse
import logging

from ..resample import add_voxel_match_arguments, voxel_match_from_args
from ._args import (
    add_axes_argument,
    check_out_kind,
    int_triple,
    non_negative_int,
    positive_float,
    positive_int,
    voxel_size,
)

HELP = "fine-tune an encoder on painted slices (neurons, mitochondria, semantic)"
logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", required=True, help="the EM volume (any format napari-emseg reads)")
    p.add_argument("--labels", required=True, help="painted labels of the same shape (0 = unlabelled)")
    p.add_argument("--task", required=True, choices=["neurons", "mitochondria", "semantic"])
    p.add_argument("--encoder", default="auto",
                   help="catalogue name (napari-emseg encoders) or checkpoint path; default 'auto': the best "
                        "start for the network the data gets (2D for separate images and serial sections, and for "
                        "mitochondria and classes in near-isotropic volumes; 3D for neurons there; docs/finetuning.md)")
    p.add_argument("--dims", choices=["auto", "2d", "3d"], default=None,
                   help="force a 2D or 3D network (default: chosen from the voxel size and the data)")
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing checkpoint at OUT written by napari-emseg (never other files)")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps (default: until --time-limit when that is given, else 600 for a 2D network, 300 for a 3D one)")
    p.add_argument("--time-limit", type=positive_float, default=None, metavar="MIN", help="stop after this many minutes")
    p.add_argument("--mode", choices=["dense", "scribbles"], default="dense",
                   help="dense: painted slices are complete; scribbles: 0 is unknown everywhere")
    p.add_argument("--background-label", type=non_negative_int, default=None, help="scribbles: the background label (default 1)")
    p.add_argument("--target", choices=["auto", "affinities", "boundaries", "bcd", "semantic"], default=None)
    p.add_argument("--patch", type=int_triple, default=None, metavar="Z,Y,X", help="training patch z,y,x")
    p.add_argument("--lr", type=positive_float, default=None)
    p.add_argument("--freeze", choices=["none", "encoder", "transformer"], default=None)
    p.add_argument("--channel", type=non_negative_int, default=None, help="channel of a multi-channel image")
    add_axes_argument(p)
    add_axes_argument(p, "--labels-axes", of="--labels")
    p.add_argument("--voxel-size", type=voxel_size, default=None, metavar="Z,Y,X",
                   help="z,y,x nm when the file does not say")
    add_voxel_match_arguments(p)
    p.add_argument("--config", default=None, help="YAML/JSON FineTuneConfig to start from")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="any FineTuneConfig field, e.g. --set batch_size=4 (repeatable)")
    p.add_argument("--suggest", type=non_negative_int, default=0, metavar="N",
                   help="after training, print the N slices to paint next (napari-emseg suggest)")


def build_config(args: argparse.Namespace):
    from ..finetune.job import FineTuneConfig

    cfg = FineTuneConfig.from_file(args.config) if args.config else FineTuneConfig()
    direct = {"task": args.task, "steps": args.steps, "mode": args.mode, "target": args.target,
              "background_label": args.background_label, "lr": args.lr, "freeze": args.freeze,
              "time_limit_min": args.time_limit, "dims": args.dims}
    if args.patch:
        direct["patch"] = tuple(args.patch)
    cfg = cfg.replace(**{k: v for k, v in direct.items() if v is not None})
    cfg = cfg.replace(voxel_match=voxel_match_from_args(args, cfg.voxel_match))
    return cfg.override(args.overrides)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .._outputs import check_outputs
    from ..finetune.job import fine_tune
    from ..io import check_extents, open_volume
    from ..progress import drain

    check_out_kind(args.out, "file")
    encoder = args.encoder if Path(args.encoder).suffix else None  # a file, not a catalogue name
    check_outputs([args.out], [args.image, args.labels, encoder, args.config], overwrite=args.overwrite)
    cfg = build_config(args)
    image = open_volume(args.image, channel=args.channel, voxel_size=args.voxel_size, axes=args.axes)
    labels = open_volume(args.labels, axes=args.labels_axes, fill=0)  # around smaller slices: unlabelled
    check_extents(image, labels, args.image, args.labels)
    result = drain(fine_tune(args.encoder, image.data, labels.data, cfg, out=args.out,
                             voxel_size=image.voxel_size if image.voxel_size_known else None, source=args.image),
                   desc="fine-tune", show=not args.quiet)
    loss = result.metrics.get("loss")
    loss_text = f", loss {loss:.4f}" if loss is not None else ""
    best = f", best held-out loss {result.best_metric:.4f}" if result.best_metric is not None else ""
    print(f"{result.checkpoint}: {result.steps} steps ({result.stopped}){loss_text}{best}, "
          f"{result.elapsed_s / 60:.1f} min")
    if result.stopped == "cancelled":  # Ctrl-C or SIGTERM: the best model so far is saved
        return 130
    if args.suggest > 0:
        from .cmd_suggest import print_suggestions, suggest

        print_suggestions(suggest(result.model, image.data, labels.data, args, args.suggest, mode=cfg.mode,
                                  show=not args.quiet))
    return 0
