"""``napari-emseg``: the headless front end (one subcommand per capability).

Subcommands are discovered from the ``cmd_*.py`` modules of this package, so adding a
capability never touches this file. Errors caused by input (:class:`~napari_emseg.errors.EmsegError`,
bad option values, and ``OSError``/``ValueError`` from reading what the user named) print one
clear line and exit with status 2 (``-v`` adds the traceback); Ctrl-C, and SIGTERM (``timeout``,
SLURM, ``docker stop``), stop the command as Ctrl-C does and exit with 130.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import re
import sys
from collections.abc import Sequence

from .. import __version__
from .._signals import sigterm_as_interrupt
from ..errors import EmsegError
from ._args import OneLineParser

logger = logging.getLogger("napari_emseg")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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


NOISY = ("distributed", "numcodecs", "asyncio", "PIL", "matplotlib")
"""Libraries whose INFO lines are not ours to print: only their warnings and errors are shown."""


class _LibraryThreshold(logging.Filter):
    """Drop records of :data:`NOISY` libraries below ``level`` at the handler.

    A logger level is not enough: dask.distributed sets its loggers to INFO when it is imported,
    which happens after this setup (``--blocks``); a handler filter holds whatever they do.
    """

    def __init__(self, names: Sequence[str], level: int) -> None:
        super().__init__()
        self.names, self.level = tuple(names), level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.level:
            return True
        return not any(record.name == n or record.name.startswith(n + ".") for n in self.names)


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Log to stderr: INFO (``-v``: the same, ``-vv``: DEBUG), or warnings and errors only (``quiet``).

    With ``quiet`` no INFO line reaches stderr from any logger; the libraries in :data:`NOISY`
    show warnings and errors only at every level. The local workers of ``--local-workers`` log
    warnings and errors only (dask's ``silence_logs``). Nothing changes when the root logger
    already has handlers (napari-emseg called from a program that set up its own logging).
    """
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.setLevel(level)
    handler.addFilter(_LibraryThreshold(NOISY, max(level, logging.WARNING)))
    logging.basicConfig(level=level, handlers=[handler])
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def run_main(run, args, prog: str = "napari-emseg") -> int:
    """Call a subcommand, turning input errors into one line and exit status 2.

    SIGTERM raises ``KeyboardInterrupt`` while it runs (:mod:`napari_emseg._signals`), so jobs
    that save on Ctrl-C save on SIGTERM too. ``OSError`` and ``ValueError`` (a file that cannot
    be read or written, a value the user gave) are one line as well; ``-v`` logs the traceback,
    so a bug behind them stays visible.
    """
    try:
        with sigterm_as_interrupt():
            return int(run(args) or 0)
    except EmsegError as err:
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        _log_traceback(args)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as err:
        print(f"{prog}: error: {one_line(err)} ({type(err).__name__}; -v shows the traceback)", file=sys.stderr)
        _log_traceback(args)
        return 2


def one_line(err: BaseException) -> str:
    """An error's message on one line (a DataLoader worker's wrapped traceback: its last line)."""
    text = str(err).strip() or type(err).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if "Traceback (most recent call last)" in text:
        return re.sub(r"^[\w.]+(Error|Exception): ", "", lines[-1])
    return " ".join(lines)


def _log_traceback(args) -> None:
    if getattr(args, "verbose", 0):
        logger.error("traceback of the error above:", exc_info=True)
    else:
        logger.debug("traceback", exc_info=True)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """``parser.parse_args``, or the exit status of ``--help``/``--version``/a usage error."""
    try:
        return parser.parse_args(argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 2)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    setup_logging(args.verbose, args.quiet)
    return run_main(args._run, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
