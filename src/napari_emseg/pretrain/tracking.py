"""TensorBoard logging for training runs, when ``tensorboard`` is installed.

Scalars go under their metric names (validation metrics under ``val/``); preview images (2D
arrays, e.g. input / masked input / reconstruction of one section) are rescaled to [0, 1]
and logged as grey images under ``preview/<name>``. Without tensorboard, or with no folder,
every call does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Tracker", "to_unit"]

logger = logging.getLogger(__name__)


def to_unit(image: Any) -> np.ndarray:
    """A 2D array rescaled to [0, 1] (constant images become 0)."""
    a = np.asarray(image, dtype=np.float32)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


class Tracker:
    """A TensorBoard ``SummaryWriter`` in ``folder`` (or a no-op)."""

    def __init__(self, folder: str | Path | None) -> None:
        self.writer = None
        if folder is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception as err:  # tensorboard missing or broken: log and go on without it
            logger.info("TensorBoard logging off (%s); pip install tensorboard to enable it", err)
            return
        self.writer = SummaryWriter(log_dir=str(folder))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if k != "step":
                self.writer.add_scalar(k, float(v), step)

    def images(self, images: Mapping[str, Any] | None, step: int) -> None:
        if self.writer is None or not images:
            return
        for k, v in images.items():
            self.writer.add_image(f"preview/{k}", to_unit(v), step, dataformats="HW")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
