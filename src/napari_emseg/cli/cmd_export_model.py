"""Write a checkpoint as a bioimage.io model package (spec 0.5), to share it on bioimage.io.

    napari-emseg export-model mito.safetensors --out mito.zip

The package holds state-dict weights (architecture from napari-emseg) and, where tracing
reproduces the maps, TorchScript weights; a test input with the output the model predicts for
it; the model card (data, licence, citations) and the checkpoint itself, so that
``--model mito.zip`` (and the widgets) use it exactly as the checkpoint. See docs/models.md.
"""

from __future__ import annotations

import argparse

HELP = "write a checkpoint as a bioimage.io model package (.zip)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="checkpoint (.safetensors) with a prediction head (from finetune)")
    p.add_argument("--out", required=True, help="package to write, NAME.zip")
    p.add_argument("--name", default=None, help="model name (default: the card's)")
    p.add_argument("--description", default=None, help="one paragraph (default: the card's)")
    p.add_argument("--author", dest="authors", action="append", default=[], metavar="NAME",
                   help="an author of the model (repeatable; default: the card's)")
    p.add_argument("--license", dest="licence", default=None, metavar="SPDX",
                   help="SPDX licence id, e.g. CC-BY-4.0 (default: the one the card's licence names)")
    p.add_argument("--no-torchscript", dest="torchscript", action="store_false",
                   help="state-dict weights only")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier package napari-emseg wrote at OUT")


def run(args: argparse.Namespace) -> int:
    from ..errors import EmsegError
    from ..models.bioimageio import export_bioimageio

    if not str(args.out).lower().endswith(".zip"):
        raise EmsegError(f"--out {args.out}: a bioimage.io package is a .zip file; name it NAME.zip")
    path = export_bioimageio(args.model, args.out, name=args.name, description=args.description,
                             authors=args.authors, licence=args.licence, torchscript=args.torchscript,
                             overwrite=args.overwrite)
    print(f"{path}: bioimage.io model package (check it with `bioimageio test {path}`)")
    return 0
