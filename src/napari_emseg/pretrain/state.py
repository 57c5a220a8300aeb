"""Training checkpoints: everything needed to continue a run exactly, written atomically.

A training checkpoint ``<out>/checkpoints/step_0000100.pt`` holds the model's and optimiser's
state, the learning-rate scheduler, the AMP grad scaler, the step, the random-number states of
every process (torch, CUDA, numpy, Python), the elapsed time, the loss history and the
caller's ``meta`` (e.g. which pretraining method and configs made it). It is a plain dict of
tensors and JSON-like values, saved with :func:`torch.save` and read back with
``torch.load(..., weights_only=True)`` (no pickled code). Files are written beside their
target and renamed into place (:func:`napari_emseg._atomic.atomic_path`), and older ones are
removed only after a new one is complete, so a crash or Ctrl-C never destroys the last good
checkpoint.

These are *training* checkpoints (for ``resume``). The model a run produces for the encoder
picker is exported separately with :func:`napari_emseg.models.checkpoint.save_checkpoint`.
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._atomic import atomic_path
from ..errors import EmsegError

__all__ = [
    "CheckpointError",
    "capture_rng",
    "restore_rng",
    "save_training_checkpoint",
    "load_training_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "prune_checkpoints",
    "read_meta",
]

logger = logging.getLogger(__name__)

FORMAT = "napari-emseg-train/1"
_NAME = re.compile(r"^step_(\d+)\.pt$")


class CheckpointError(EmsegError, ValueError):
    """A training checkpoint is missing, unreadable or from another kind of run."""


# -- random number generator states -------------------------------------------------------------
def capture_rng() -> dict[str, Any]:
    """This process's torch, CUDA, numpy and Python RNG states as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (legacy global state, saved for user code that uses it)
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))  # noqa: NPY002
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- files --------------------------------------------------------------------------------------
def checkpoint_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step_{int(step):07d}.pt"


def list_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_training_checkpoint(folder: str | Path, state: dict[str, Any], keep_last: int = 3) -> Path:
    """Write ``state`` (must hold ``"step"``) atomically, then keep only the newest ``keep_last``."""
    target = checkpoint_path(Path(folder), state["step"])
    payload = {"format": FORMAT, **state}
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    prune_checkpoints(folder, keep_last, protect=target)
    return target


def prune_checkpoints(folder: str | Path, keep_last: int, protect: Path | None = None) -> None:
    """Delete all but the ``keep_last`` newest checkpoints (never ``protect``)."""
    if keep_last <= 0:
        return
    items = list_checkpoints(folder)
    for _, path in items[:-keep_last]:
        if protect is None or path != protect:
            path.unlink(missing_ok=True)


def load_training_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a training checkpoint (weights only, no pickled code)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: cannot read this training checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a napari-emseg training checkpoint")
    return state


def latest_checkpoint(folder: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable checkpoint in ``folder`` and its content, or ``None`` if there is none.

    An unreadable file (a disk error) is reported and skipped in favour of the previous one.
    """
    for _, path in reversed(list_checkpoints(folder)):
        try:
            return path, load_training_checkpoint(path)
        except CheckpointError as err:
            logger.warning("skipping %s", err)
    return None


def read_meta(state: dict[str, Any]) -> dict[str, Any]:
    """The caller's ``meta`` dict stored in a checkpoint."""
    raw = state.get("meta") or "{}"
    return json.loads(raw) if isinstance(raw, str) else dict(raw)
