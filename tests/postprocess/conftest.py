"""Probability maps derived from ground truth, as a well-trained network would predict them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_emseg.finetune.targets import contour_and_distance, pair_slices
from napari_emseg.models.info import NN_OFFSETS


def gt_affinities(labels: np.ndarray, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """Nearest-neighbour affinities: 1 where both voxels share a non-zero id, plus Gaussian noise."""
    affs = np.zeros((3, *labels.shape), np.float32)
    for c, off in enumerate(NN_OFFSETS):
        a, b = pair_slices(labels.shape, off)
        affs[c][a] = (labels[a] == labels[b]) & (labels[a] != 0)
    if noise:
        affs += np.random.default_rng(seed).normal(0, noise, affs.shape).astype(np.float32)
        np.clip(affs, 0, 1, out=affs)
    return affs


def gt_bcd(labels: np.ndarray) -> np.ndarray:
    """Foreground, contour and per-object distance (per section), float32 (3, Z, Y, X)."""
    fg = (labels > 0).astype(np.float32)
    contour = np.zeros_like(fg)
    dist = np.zeros_like(fg)
    for z in range(labels.shape[0]):
        contour[z], dist[z] = contour_and_distance(labels[z], 1)
    return np.stack([fg, contour, dist])


@pytest.fixture(scope="session")
def sample():
    from napari_emseg.data.synthetic import make_synthetic_em

    return make_synthetic_em(shape=(16, 128, 128), seed=3)
