"""Output safety: never replace what napari-emseg did not write, nor an input of the same command.

Everything napari-emseg writes carries a mark it can check later:

* zarr arrays: the attribute ``napari_emseg_output`` (older outputs: ``emseg_inference`` or
  ``provenance``);
* checkpoints: ``format: napari-emseg.checkpoint/1`` in the safetensors header;
* JSON files (provenance bundles, demo metrics): ``"format": "napari-emseg..."``;
* TIFF labels: a ``napari_emseg`` record in the ImageJ Info or image description;
* CSV tables: the ``measure`` header (``label,...,volume_um3,...``);
* PNG overlays: the text chunk ``Software: napari-emseg``.

Commands call :func:`check_outputs` before any long work: an output that is an input (same
resolved path, also ``store.zarr`` against ``store.zarr:raw``) is refused, so is an existing
file napari-emseg did not write (even with ``--overwrite``), and an existing napari-emseg output
is replaced only with ``--overwrite``. :func:`check_output_space` checks that the output folder
is writable and has room, naming the folder when it is not.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .errors import EmsegError

__all__ = ["OWNER_KEY", "UnsafeOutputError", "owner_attrs", "canonical", "is_ours", "check_not_input",
           "check_replaceable", "check_outputs", "guard_foreign", "check_output_space"]

logger = logging.getLogger(__name__)

OWNER_KEY = "napari_emseg_output"
"""Zarr attribute marking an array (or group) napari-emseg wrote."""
_LEGACY_KEYS = ("emseg_inference", "provenance", "blockwise")
_MB = 1024**2


class UnsafeOutputError(EmsegError, ValueError):
    """Writing the output as asked would destroy data; the message says what to change."""


def owner_attrs() -> dict[str, Any]:
    """The attribute napari-emseg puts on every zarr array it writes."""
    from . import __version__

    return {OWNER_KEY: {"version": __version__}}


def canonical(path: str | os.PathLike) -> Path:
    """Absolute, symlink-free path of a file or of an array inside a container (``a.zarr:raw`` ->
    ``/abs/a.zarr/raw``)."""
    from .io import split_uri

    base, key = split_uri(os.fspath(path))
    p = Path(base).expanduser().resolve()
    return p.joinpath(*key.split("/")) if key else p


def _related(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def check_not_input(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike | None],
                    option: str = "--out") -> None:
    """Refuse an output that is, holds or lies inside an input of the same command."""
    ins = [(i, canonical(i)) for i in inputs if i]
    for out in outputs:
        o = canonical(out)
        for given, i in ins:
            if _related(o, i):
                raise UnsafeOutputError(
                    f"{option} {os.fspath(out)}: would overwrite the input {os.fspath(given)} of this command; "
                    "choose another output")


# ---------------------------------------------------------------------------------------------
def is_ours(path: str | os.PathLike) -> bool:
    """Whether an existing file, folder or zarr array carries napari-emseg's mark (see the module)."""
    p = Path(os.fspath(path))
    if p.is_dir():
        attrs = _zarr_attrs(p)
        return attrs is not None and any(k in attrs for k in (OWNER_KEY, *_LEGACY_KEYS))
    if not p.is_file():
        return False
    suffix = p.suffix.lower()
    try:
        if suffix == ".safetensors":
            return _safetensors_format(p).startswith("napari-emseg")
        if suffix == ".json":
            data = json.loads(p.read_text())
            return isinstance(data, dict) and str(data.get("format", "")).startswith("napari-emseg")
        if suffix in (".tif", ".tiff"):
            return _tiff_marked(p)
        if suffix == ".csv":
            with open(p, encoding="utf-8", errors="replace") as f:
                head = f.readline()
            return head.startswith("label,") and "volume_um3" in head
        if suffix == ".png":
            from PIL import Image

            with Image.open(p) as im:
                return str(getattr(im, "text", {}).get("Software", "")).startswith("napari-emseg")
    except Exception:  # noqa: BLE001 - unreadable: not provably ours
        return False
    return False


def _zarr_attrs(p: Path) -> dict[str, Any] | None:
    for name, key in ((".zattrs", None), ("zarr.json", "attributes"), ("attributes.json", None)):
        f = p / name
        if f.is_file():
            try:
                data = json.loads(f.read_text())
            except (OSError, ValueError):
                return None
            data = data.get(key, {}) if key else data
            return data if isinstance(data, dict) else None
    if (p / ".zarray").is_file() or (p / ".zgroup").is_file():
        return {}
    return None


def _safetensors_format(p: Path) -> str:
    with open(p, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100 * _MB:
            return ""
        header = json.loads(f.read(n))
    return str((header.get("__metadata__") or {}).get("format", ""))


def _tiff_marked(p: Path) -> bool:
    import tifffile

    with tifffile.TiffFile(p) as tif:
        texts = [str((tif.imagej_metadata or {}).get("Info", "")), str(tif.pages[0].description or "")]
    return any('"napari_emseg"' in t for t in texts)


def _kind(p: Path) -> str:
    return "folder" if p.is_dir() and _zarr_attrs(p) is None else ("array" if p.is_dir() else "file")


def guard_foreign(path: str | os.PathLike, option: str = "--out") -> None:
    """Refuse to replace an existing ``path`` that napari-emseg did not write (whatever the flags)."""
    p = Path(os.fspath(path))
    if (p.exists() or p.is_symlink()) and not is_ours(p):
        raise UnsafeOutputError(
            f"{option} {p}: this {_kind(p)} exists and was not written by napari-emseg; it is never replaced "
            "(not even with --overwrite): choose another output")


def check_replaceable(path: str | os.PathLike, overwrite: bool = False, option: str = "--out") -> bool:
    """Refuse ``path`` if it exists and is not ours, or is ours and ``overwrite`` is off.

    Returns whether it exists (and may be replaced)."""
    p = Path(os.fspath(path))
    if not (p.exists() or p.is_symlink()):
        return False
    guard_foreign(p, option)
    if not overwrite:
        raise UnsafeOutputError(
            f"{option} {p}: exists (an earlier napari-emseg output); pass --overwrite to replace it, "
            "or choose another output")
    return True


def check_outputs(outputs: Mapping[str, str | os.PathLike] | Iterable[str | os.PathLike],
                  inputs: Iterable[str | os.PathLike | None] = (), *, overwrite: bool = False,
                  option: str = "--out") -> None:
    """:func:`check_not_input` then :func:`check_replaceable` for every output path."""
    paths = list(outputs.values() if isinstance(outputs, Mapping) else outputs)
    check_not_input(paths, inputs, option)
    for p in paths:
        check_replaceable(p, overwrite, option)


# ---------------------------------------------------------------------------------------------
def check_output_space(out: str | os.PathLike, need_bytes: float = 0, *, want_bytes: float = 0,
                       what: str = "the output") -> Path:
    """Check, before long work, that the folder ``out`` goes to is writable and has room.

    The folder is the nearest existing one on the way to ``out`` (``out`` itself when it is a
    folder). Raises :class:`UnsafeOutputError` naming it when a test file cannot be written there
    or when it has less than ``need_bytes`` free (logs a warning under ``want_bytes``); returns it.
    """
    p = Path(os.path.abspath(os.fspath(out)))
    folder = p if p.is_dir() else p.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UnsafeOutputError(f"{folder}: is not a folder; {what} cannot be written under it")
    try:
        _probe_write(folder)
    except OSError as err:
        raise UnsafeOutputError(f"{folder}: cannot write {what} there ({err.strerror or err}); "
                                "choose an output in a writable folder") from None
    free = shutil.disk_usage(folder).free
    if need_bytes and free < need_bytes:
        raise UnsafeOutputError(f"{folder}: {free / _MB:.0f} MB free, {what} needs about {need_bytes / _MB:.0f} MB; "
                                "free some space or choose an output on another disk")
    if want_bytes and free < want_bytes:
        logger.warning("%s: %.0f MB free; %s takes up to %.0f MB uncompressed and may not fit", folder,
                       free / _MB, what, want_bytes / _MB)
    return folder


def _probe_write(folder: Path) -> None:
    """Create and remove a small file in ``folder`` (raises ``OSError`` when that fails)."""
    probe = folder / f".napari-emseg-write-test-{uuid.uuid4().hex[:8]}"
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
