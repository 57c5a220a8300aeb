"""Argument types and options shared by the subcommands: bad values fail at the boundary.

Each type turns the text of an option into its value or raises ``argparse.ArgumentTypeError``
with what was expected, so ``--voxel-size 50,x,5``, ``--steps 0`` or ``--overlap 1.5`` stop the
command before anything is read or written, as one line and exit status 2
(:class:`OneLineParser`). :func:`add_axes_argument` gives every command that reads volumes the
same ``--axes`` option (passed to :func:`napari_emseg.io.open_volume`), and :func:`check_out_kind`
refuses an ``--out`` of the wrong kind (a file where a folder or store is expected, a zarr array
where a container is) before any work.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["OneLineParser", "int_triple", "voxel_size", "fraction", "positive_int", "positive_float",
           "non_negative_int", "axes", "add_axes_argument", "check_out_kind"]


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (and exit status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _fail(text: str, expected: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"{text!r}: expected {expected}")


def _numbers(text: str, kind: type, expected: str) -> list[Any]:
    try:
        vals = [kind(v) for v in str(text).replace(" ", "").split(",")]
    except ValueError:
        raise _fail(text, expected) from None
    if not all(math.isfinite(v) for v in vals):
        raise _fail(text, expected)
    return vals


def int_triple(text: str) -> tuple[int, int, int]:
    """``"16,128,128"`` -> ``(16, 128, 128)``: three positive integers z,y,x."""
    expected = "three positive integers z,y,x, e.g. 16,128,128"
    vals = _numbers(text, int, expected)
    if len(vals) != 3 or min(vals) < 1:
        raise _fail(text, expected)
    return tuple(vals)  # type: ignore[return-value]


def voxel_size(text: str) -> tuple[float, float, float]:
    """``"40,8,8"`` -> ``(40.0, 8.0, 8.0)``: three positive numbers z,y,x in nm."""
    expected = "three positive numbers z,y,x in nm, e.g. 40,8,8"
    vals = _numbers(text, float, expected)
    if len(vals) != 3 or min(vals) <= 0:
        raise _fail(text, expected)
    return tuple(vals)  # type: ignore[return-value]


def fraction(text: str) -> float:
    """A number in ``[0, 1)`` (tile overlap)."""
    (val,) = _numbers(text, float, "a fraction in [0, 1), e.g. 0.25")
    if not 0 <= val < 1:
        raise _fail(text, "a fraction in [0, 1), e.g. 0.25")
    return val


def positive_int(text: str) -> int:
    """An integer >= 1 (steps, batch, workers)."""
    try:
        val = int(text)
    except ValueError:
        raise _fail(text, "a positive integer") from None
    if val < 1:
        raise _fail(text, "a positive integer (1 or more)")
    return val


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    try:
        val = int(text)
    except ValueError:
        raise _fail(text, "an integer 0 or more") from None
    if val < 0:
        raise _fail(text, "an integer 0 or more")
    return val


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rate, minutes)."""
    (val,) = _numbers(text, float, "a positive number")
    if val <= 0:
        raise _fail(text, "a positive number")
    return val


def axes(text: str) -> str | None:
    """``--axes``: letters from ``tczyx``, one per stored axis (``zyx``, ``cyx``, ``czyx``, ``yx``)."""
    from .._axes import parse_axes
    from ..errors import EmsegError

    try:
        return parse_axes(text)
    except EmsegError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--axes ")) from None


def add_axes_argument(p: argparse.ArgumentParser, flag: str = "--axes", of: str = "--image",
                      dest: str | None = None) -> None:
    """The ``--axes`` option for the volume named by ``of`` (see docs/io.md, "Axes")."""
    p.add_argument(flag, dest=dest, type=axes, default=None, metavar="AXES",
                   help=f"axes of {of} as stored, one letter each from t,c,z,y,x (e.g. zyx, cyx, czyx, yx) "
                        "when the file is ambiguous; default: 3-4 page TIFFs and axes of length 1 are never channels")


def check_out_kind(path: str | os.PathLike | None, expect: str, option: str = "--out") -> None:
    """Refuse an existing ``path`` of the wrong kind, in one line, before any work.

    ``expect``: ``"container"`` (a folder or zarr group that will hold arrays: not a file, not a
    zarr array), ``"folder"`` (not a file) or ``"file"`` (not a folder).
    """
    from ..errors import EmsegError as UnsafeOutputError

    if path is None:
        return
    p = Path(os.fspath(path))
    if not p.exists():
        parent = next((a for a in p.parents if a.exists()), None)
        if parent is not None and not parent.is_dir():
            raise UnsafeOutputError(f"{option} {p}: {parent} is a file, not a folder; choose an output in a folder")
        return
    if expect in ("container", "folder") and not p.is_dir():
        raise UnsafeOutputError(f"{option} {p}: is a file; it must be a folder{' (a zarr container)' if expect == 'container' else ''}: "
                                "choose a new name")
    if expect == "container" and _is_zarr_array(p):
        raise UnsafeOutputError(f"{option} {p}: is a zarr array; the output is a container that holds arrays "
                                "(e.g. seg.zarr, not seg.zarr/predictions): choose a new name")
    if expect == "file" and p.is_dir():
        raise UnsafeOutputError(f"{option} {p}: is a folder; give a file name (e.g. {p / 'model.safetensors'})")


def _is_zarr_array(p: Path) -> bool:
    if (p / ".zarray").is_file():
        return True
    meta = p / "zarr.json"
    if meta.is_file():
        import json

        try:
            return json.loads(meta.read_text()).get("node_type") == "array"
        except (OSError, ValueError):
            return False
    return False


def device_list(text: str) -> tuple[str, ...]:
    """``--devices``: a list of compute devices (:func:`napari_emseg.blockwise.devices.parse_devices`)."""
    from ..blockwise.devices import parse_devices
    from ..errors import EmsegError

    try:
        return parse_devices(text)
    except EmsegError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix(f"--devices {text!r}: ")) from None


def given_triple(text: str | tuple[int, ...] | None) -> tuple[int, int, int] | None:
    """A ``z,y,x`` option's value, parsed already (a tuple) or not (a string); ``None`` when not given."""
    if not text:
        return None
    if not isinstance(text, str):  # already parsed by the option's type
        return tuple(int(v) for v in text)  # type: ignore[return-value]
    from ..errors import EmsegError

    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise EmsegError(f"{text!r}: expected three integers z,y,x, e.g. 16,128,128") from None
    if len(vals) != 3 or min(vals) < 1:
        raise EmsegError(f"{text!r}: expected three positive integers z,y,x, e.g. 16,128,128")
    return vals  # type: ignore[return-value]


def voxel_size_of(args: argparse.Namespace) -> tuple[float, ...] | None:
    """``--voxel-size`` (parsed by its type; a string from older callers is parsed here)."""
    vs = getattr(args, "voxel_size", None)
    if isinstance(vs, str):
        try:
            vs = voxel_size(vs)
        except argparse.ArgumentTypeError as err:
            from ..errors import EmsegError

            raise EmsegError(f"--voxel-size {err}") from None
    return tuple(vs) if vs else None
