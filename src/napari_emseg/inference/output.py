"""Prediction outputs: create or reopen the array, describe it, record finished blocks.

An output is a ``(C, Z, Y, X)`` array: a zarr array (created from a path, or given), any
array-like with ``__setitem__``, or a numpy array made here for small volumes. Zarr outputs
carry their description in attributes (channel names, target, offsets, resolution, model
summary, settings) and a :class:`ResumeRecord` of the blocks already written, updated after
every block, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmsegError
from ..io import ensure_parent_groups, jsonable

__all__ = [
    "OutputError",
    "ResumeRecord",
    "prepare_output",
    "existing_chunks",
    "fingerprint",
    "weights_digest",
    "model_summary",
    "RECORD_KEY",
]

logger = logging.getLogger(__name__)

RECORD_KEY = "emseg_inference"
"""Attribute holding the resume record ``{"fingerprint", "n_blocks", "done"}``."""


class OutputError(EmsegError, ValueError):
    """The output cannot be written as asked; the message says what to change."""


def fingerprint(parts: dict[str, Any]) -> str:
    """A short stable hash of everything that decides the output's values."""
    text = json.dumps(jsonable(parts), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def weights_digest(model: Any) -> str:
    """A cheap digest of a model's weights (per-tensor sums), to tell checkpoints apart."""
    import torch

    h = hashlib.sha1()
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not torch.is_floating_point(t):
                continue
            t32 = t.detach().float()  # float32: MPS has no float64
            h.update(f"{name}:{tuple(t.shape)}:{float(t32.sum()):.5g}:{float(t32.abs().sum()):.5g};".encode())
    return h.hexdigest()[:16]


def model_summary(model: Any) -> dict[str, Any]:
    """What the output says about the model: class, parameter count, info, card (if any)."""
    info = model.info
    summary: dict[str, Any] = {
        "class": type(model).__name__,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "info": info.to_dict(),
    }
    card = getattr(model, "card", None)
    if card is not None:
        summary["card"] = card.to_dict() if hasattr(card, "to_dict") else card
    return jsonable(summary)


class ResumeRecord:
    """Which blocks of an output are written, kept in the array's attributes (or in memory).

    The record is tied to a fingerprint of the run's settings, model and input: a run whose
    fingerprint differs (or ``resume=False``) starts from no finished block.
    """

    def __init__(self, array: Any, fp: str, n_blocks: int, resume: bool = True) -> None:
        self.array, self.fp, self.n = array, fp, int(n_blocks)
        self.persistent = _is_zarr(array)
        self.done = np.zeros(self.n, dtype=bool)
        if resume and self.persistent:
            rec = dict(array.attrs).get(RECORD_KEY) or {}
            if rec.get("fingerprint") == fp and int(rec.get("n_blocks", -1)) == self.n:
                bits = np.frombuffer(zlib.decompress(base64.b64decode(rec["done"])), dtype=np.uint8)
                self.done = np.unpackbits(bits)[: self.n].astype(bool)
            elif rec:
                logger.warning("output was written with other settings, model or input: predicting it anew")

    @property
    def n_done(self) -> int:
        return int(self.done.sum())

    def mark(self, index: int) -> None:
        """Record block ``index`` as written (call after its data is stored)."""
        self.done[index] = True
        self.save()

    def save(self, complete: bool | None = None) -> None:
        if not self.persistent:
            return
        packed = base64.b64encode(zlib.compress(np.packbits(self.done).tobytes())).decode()
        attrs: dict[str, Any] = {RECORD_KEY: {"fingerprint": self.fp, "n_blocks": self.n, "done": packed}}
        if complete is not None:
            attrs["complete"] = bool(complete)
        self.array.attrs.update(attrs)


def _is_zarr(array: Any) -> bool:
    try:
        import zarr
    except ImportError:  # pragma: no cover - zarr is a dependency
        return False
    return isinstance(array, zarr.Array)


def prepare_output(
    out: Any,
    shape: tuple[int, ...],
    chunks: tuple[int, ...],
    dtype: str,
    attrs: dict[str, Any],
    *,
    max_in_memory_gb: float = 4.0,
    zarr_format: int = 2,
    fp: str | None = None,
    resume: bool = True,
    overwrite: bool = False,
) -> Any:
    """The array to write a ``(C, Z, Y, X)`` prediction into.

    ``out`` is ``None`` (a numpy array, if under ``max_in_memory_gb``), a path (a zarr array is
    created there, or reopened when it holds an earlier napari-emseg prediction of the same shape
    and type), a zarr array or any array-like with the right shape. Zarr outputs get ``attrs``.

    With the run's fingerprint ``fp``, an existing prediction at a path is resumed only when it
    was written under the same fingerprint (``resume``: else it is made anew); one written under
    another fingerprint (another model, input or settings) is refused unless ``overwrite``, and
    an array napari-emseg did not write is never replaced. Nothing is written before the check.
    """
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if out is None:
        if nbytes > max_in_memory_gb * 1e9:
            raise OutputError(
                f"the prediction would take {nbytes / 1e9:.1f} GB in memory; pass out='pred.zarr' "
                "to stream it to disk (or raise max_in_memory_gb)"
            )
        return np.zeros(shape, dtype=dtype)
    if isinstance(out, (str, os.PathLike)):
        return _zarr_at(Path(os.fspath(out)), shape, chunks, dtype, attrs, zarr_format, fp, resume, overwrite)
    if tuple(out.shape) != tuple(shape):
        raise OutputError(f"output has shape {tuple(out.shape)}; this prediction needs {tuple(shape)} (C, Z, Y, X)")
    if _is_zarr(out):
        if np.dtype(out.dtype) != np.dtype(dtype):
            raise OutputError(f"output zarr array is {out.dtype}; this prediction writes {dtype}")
        out.attrs.update(jsonable(attrs))
    return out


def _existing_zarr(out: Any) -> Any:
    if isinstance(out, (str, os.PathLike)):
        if not Path(os.fspath(out)).exists():
            return None
        import zarr

        try:
            return zarr.open_array(store=os.fspath(out), mode="r")
        except Exception:  # noqa: BLE001 - prepare_output reports it
            return None
    return out if _is_zarr(out) else None


def existing_chunks(out: Any) -> tuple[int, ...] | None:
    """Spatial chunks ``(z, y, x)`` of an existing zarr output (blocks are aligned to them)."""
    arr = _existing_zarr(out)
    if arr is not None and len(arr.chunks) == 4:
        return tuple(int(c) for c in arr.chunks[1:])
    return None


def recorded_block(out: Any) -> tuple[int, ...] | None:
    """The block an earlier run recorded in an existing zarr output (``inference.block``), when
    it matches the output's chunks: a resumed run keeps its blocks whatever memory is free now."""
    arr = _existing_zarr(out)
    try:
        block = tuple(int(b) for b in dict(arr.attrs)["inference"]["block"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    return block if block == existing_chunks(arr) else None


def _zarr_at(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str,
             attrs: dict[str, Any], zarr_format: int, fp: str | None = None, resume: bool = True,
             overwrite: bool = False) -> Any:
    import zarr

    from .._outputs import guard_foreign, owner_attrs

    if path.exists() or path.is_symlink():
        guard_foreign(path, option="output")
        try:
            old = zarr.open_array(store=str(path), mode="r+")
        except Exception as err:  # noqa: BLE001 - any failure means "not a zarr array"
            raise OutputError(f"{path}: exists and is not a zarr array; choose another output") from err
        rec = dict(old.attrs).get(RECORD_KEY)
        same_array = tuple(old.shape) == tuple(shape) and np.dtype(old.dtype) == np.dtype(dtype)
        same_run = same_array and rec is not None and (fp is None or rec.get("fingerprint") == fp)
        if same_run and resume:
            old.attrs.update(jsonable(attrs))
            return old
        # blocks of another run (any recorded block, or a finished map without a record) are kept
        # unless --overwrite: a run never mixes its blocks with another's, nor silently replaces them
        if not same_run and not overwrite and (rec is None or rec.get("fingerprint") or dict(old.attrs).get("complete")):
            raise OutputError(
                f"{path}: holds predictions made with another model, input or settings; pass --overwrite "
                "to replace them (the run starts over), or choose another --out")
        logger.warning("%s: replacing an earlier prediction of shape %s %s", path, old.shape, old.dtype)
    ensure_parent_groups(path, zarr_format)
    arr = zarr.create_array(
        store=str(path), shape=shape, chunks=tuple(int(min(c, s)) for c, s in zip(chunks, shape)),
        dtype=dtype, zarr_format=zarr_format, fill_value=0, overwrite=True,
    )
    arr.attrs.update(jsonable({**owner_attrs(), **attrs, RECORD_KEY: {}}))
    return arr
