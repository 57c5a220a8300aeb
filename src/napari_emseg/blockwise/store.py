"""Where blockwise jobs keep per-block results, so an interrupted run resumes.

A :class:`Scratch` folder sits beside the labels (``OUT.zarr/.labels.blockwise``) and is tied to
a fingerprint of the run's settings; a run with other settings clears it. Each stage keeps one
small ``.npz`` per finished block, written atomically *after* the block's arrays are stored:
its presence is the record that the block is done.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path, atomic_write_text

__all__ = ["Scratch", "Stage"]

logger = logging.getLogger(__name__)


class Stage:
    """Per-block results of one stage (``extract``, ``faces``, ``write``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, index: int) -> Path:
        return self.root / f"{int(index)}.npz"

    def done(self, index: int) -> bool:
        return self.path(index).exists()

    def save(self, index: int, **arrays: Any) -> None:
        """Record block ``index`` as finished, with its (small) result arrays."""
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path(index)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})

    def load(self, index: int) -> dict[str, np.ndarray]:
        with np.load(self.path(index), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


class Scratch:
    """A folder of intermediate results tied to a settings fingerprint.

    Parameters
    ----------
    root
        The folder (created).
    fingerprint
        Hash of everything that decides the results; a different one clears the folder.
    resume
        ``False`` clears it whatever it holds.
    """

    def __init__(self, root: str | Path, fingerprint: str, resume: bool = True) -> None:
        self.root = Path(root)
        self.fingerprint = fingerprint
        manifest = self.root / "manifest.json"
        if self.root.exists():
            old = _read(manifest).get("fingerprint")
            if not resume or old != fingerprint:
                if old is not None and resume:
                    logger.warning("%s: earlier blockwise results used other settings; starting over", self.root)
                shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        if not manifest.exists():
            atomic_write_text(manifest, json.dumps({"fingerprint": fingerprint}))

    def stage(self, name: str) -> Stage:
        return Stage(self.root / name)

    def array_path(self, name: str) -> str:
        """Path of a zarr array kept in the scratch folder."""
        return str(self.root / f"{name}.zarr")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
