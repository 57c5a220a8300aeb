"""``napari-emseg``: the headless front end (one subcommand per capability).

Subcommands are discovered from the ``cmd_*.py`` modules of this package, so adding a
capability never touches this file. Errors caused by input (:class:`~napari_emseg.errors.EmsegError`)
print one clear line and exit with status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import EmsegError

logger = logging.getLogger("napari_emseg")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-emseg",
        description="EM segmentation: fine-tune pretrained encoders on a few painted slices, "
        "segment mitochondria and neurons in volumes of any size, evaluate.",
    )
    parser.add_argument("--version", action="version", version=f"napari-emseg {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    from . import __path__ as pkg_path

    for info in sorted(pkgutil.iter_modules(pkg_path), key=lambda m: m.name):
        if not info.name.startswith("cmd_"):
            continue
        module = importlib.import_module(f"{__package__}.{info.name}")
        name = info.name[4:].replace("_", "-")
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("distributed", "numcodecs", "asyncio", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def run_main(run, args) -> int:
    """Call a subcommand, turning input errors into one line and exit status 2."""
    try:
        return int(run(args) or 0)
    except EmsegError as err:
        print(f"napari-emseg: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("napari-emseg: interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    return run_main(args._run, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
