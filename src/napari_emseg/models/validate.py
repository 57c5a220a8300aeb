"""Check a checkpoint's header against the network its metadata describes, before allocating it.

A checkpoint rebuilds its network from the JSON in its header. A damaged or forged header
(a 3 KB file whose ``config`` describes a model of a trillion weights) used to be built first
and checked afterwards: a >100 GB allocation. :func:`check_header` instead builds the network on
PyTorch's ``meta`` device (shapes, no storage), refuses more than :data:`MAX_PARAMETERS`
parameters, and compares every tensor name and shape with the safetensors header (read with
``safe_open``: shapes without the data) and the bytes the header describes with the file's
size. Only a checkpoint that passes is read and materialised.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from .errors import CorruptCheckpointError

__all__ = ["MAX_PARAMETERS", "check_header", "header_shapes"]

MAX_PARAMETERS = int(os.environ.get("NAPARI_EMSEG_MAX_PARAMETERS", 2_000_000_000))
"""Refuse checkpoints that describe more parameters than this (8 GB as float32); the
environment variable ``NAPARI_EMSEG_MAX_PARAMETERS`` raises it."""

_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
             "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def header_shapes(path: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name: (shape, dtype)}`` of every tensor in a safetensors file, from its header only."""
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            sl = f.get_slice(key)
            out[key] = (tuple(int(s) for s in sl.get_shape()), str(sl.get_dtype()))
    return out


def check_header(path: str | Path, config: Any, info: Any, shapes: dict[str, Any] | None = None) -> None:
    """Raise :class:`CorruptCheckpointError` unless the file's tensors are exactly the network's.

    Parameters
    ----------
    path
        The checkpoint (its size bounds what the header may describe).
    config, info
        The :class:`~.build.ModelConfig` and :class:`~.info.ModelInfo` from its metadata.
    shapes
        ``{name: (shape, dtype)}``; default: read from the file's header.
    """
    from ..config import ConfigError
    from .build import build_model, count_parameters

    path = Path(path)
    shapes = header_shapes(path) if shapes is None else shapes
    described = sum(math.prod(s) * _ITEMSIZE.get(d.upper(), 4) for s, d in shapes.values())
    size = path.stat().st_size
    if described > size:
        raise CorruptCheckpointError(
            f"checkpoint {path}: its header describes {_gb(described)} of weights but the file holds "
            f"{_gb(size)}; the file is truncated or forged, re-download or re-save it")
    _check_plausible(path, config)
    try:
        with torch.device("meta"):
            net = build_model(config, info)
    except (ConfigError, ValueError, TypeError, KeyError, RuntimeError) as err:
        raise CorruptCheckpointError(f"checkpoint {path}: its model config cannot be built ({err})") from None
    n = count_parameters(net)
    if n > MAX_PARAMETERS:
        raise CorruptCheckpointError(
            f"checkpoint {path}: its metadata describes a {config.arch} of {n:,} parameters "
            f"({_gb(4 * n)} as float32) in a file of {_gb(size)}; refused before allocating anything "
            f"(limit {MAX_PARAMETERS:,}: NAPARI_EMSEG_MAX_PARAMETERS)")
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = sorted(set(want) - set(shapes))
    unexpected = sorted(set(shapes) - set(want))
    wrong = sorted(k for k in set(want) & set(shapes) if tuple(shapes[k][0]) != want[k])
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing {missing[:3]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected {unexpected[:3]}")
        if wrong:
            parts.append(f"{len(wrong)} of another shape, e.g. {wrong[0]}: {tuple(shapes[wrong[0]][0])} in the "
                         f"file, {want[wrong[0]]} in the config")
        raise CorruptCheckpointError(
            f"checkpoint {path}: its weights do not fit its own config ({config.arch}): {'; '.join(parts)}; "
            "the file is damaged or was edited, re-download or re-save it")


def _check_plausible(path: Path, config: Any) -> None:
    """Refuse configs whose mere construction would loop for ages (thousands of stages)."""
    widths = tuple(getattr(config, "widths", ()) or ())
    subunits = int(getattr(config, "subunits", 1) or 1)
    if len(widths) > 12 or subunits > 32 or any(int(w) < 1 for w in widths):
        raise CorruptCheckpointError(
            f"checkpoint {path}: implausible model config (widths {widths[:8]}{'...' if len(widths) > 8 else ''}, "
            f"subunits {subunits}); the file is damaged or forged")


def _gb(n: float) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n / 1e3:.3g} KB"
