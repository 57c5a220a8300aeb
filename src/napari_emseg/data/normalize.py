"""Intensity normalisation shared by training and inference.

EM intensities differ between microscopes, stains and even sections, so the network sees
``2 * (v - lo) / (hi - lo) - 1`` where ``lo, hi`` are robust percentiles of the *volume* (not of
each tile: per-tile statistics would make tiles disagree at their seams). The percentiles are
estimated from a sample of blocks, so a terabyte volume costs a few reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import Config


@dataclass(frozen=True)
class NormConfig(Config):
    """How raw intensities become network input.

    ``lo``/``hi`` fixed values win when both are set; otherwise they are the ``percentiles`` of
    the volume. ``invert`` flips contrast (for data where membranes are bright).
    """

    percentiles: tuple[float, float] = (0.5, 99.5)
    lo: float | None = None
    hi: float | None = None
    invert: bool = False


def intensity_range(
    volume: Any, cfg: NormConfig = NormConfig(), *, max_voxels: int = 4_000_000, seed: int = 0,
    what: str = "image",
) -> tuple[float, float]:
    """Robust ``(lo, hi)`` of a (lazy) volume from a random sample of slices/blocks.

    NaN or infinite values in what is read raise :class:`~napari_emseg._finite.NonFiniteError`
    (``what`` names the volume in the message) instead of giving a NaN range.
    """
    from .._finite import check_finite

    if cfg.lo is not None and cfg.hi is not None:
        return float(cfg.lo), float(cfg.hi)
    shape = tuple(volume.shape)
    n = int(np.prod(shape))
    if n <= max_voxels:
        sample = np.asarray(volume[...] if not hasattr(volume, "compute") else volume.compute())
        check_finite(sample, what)
    else:
        rng = np.random.default_rng(seed)
        # random sub-blocks of about 64^2 x 8 voxels until the budget is spent
        bs = [min(s, b) for s, b in zip(shape, (8, 128, 128))]
        pieces, got = [], 0
        while got < max_voxels:
            start = [int(rng.integers(0, s - b + 1)) for s, b in zip(shape, bs)]
            sl = tuple(slice(a, a + b) for a, b in zip(start, bs))
            block = volume[sl]
            block = np.asarray(block.compute() if hasattr(block, "compute") else block)
            check_finite(block, what, offset=start, region=sl)
            pieces.append(block.ravel())
            got += block.size
        sample = np.concatenate(pieces)
    lo, hi = np.percentile(sample.astype(np.float32), cfg.percentiles)
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def normalize(block: Any, lo: float, hi: float, invert: bool = False) -> np.ndarray:
    """Map raw intensities to about [-1, 1] as float32."""
    x = (np.asarray(block, dtype=np.float32) - lo) * (2.0 / (hi - lo)) - 1.0
    return -x if invert else x
