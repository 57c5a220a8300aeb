"""Fragments: an over-segmentation of an affinity map by seeded watershed.

Per section (``mode="2d"``, the usual choice for anisotropic serial-section EM) or in 3D:

1. the *inside map*: per voxel, the lowest affinity of the edges that touch it (in-plane edges
   in 2D, all three directions in 3D; :func:`~.affinities.inside_map`);
2. the *mask*: voxels whose inside map exceeds ``boundary_threshold``; the rest is boundary;
3. *seeds*: maxima of the (Gaussian-smoothed) distance transform of the mask, at most one per
   ``min_seed_distance`` window (the distance-transform watershed of the LSD/funkey pipelines);
4. a seeded watershed of ``1 - inside`` restricted to the mask;
5. *filling*: each boundary voxel goes to the nearest fragment (Euclidean, anisotropic in 3D),
   so fragments cover every voxel and two neighbours touch along their whole boundary, not
   only where the boundary has a hole. The boundary mask is kept: agglomeration counts the
   affinities of edges that touch a boundary voxel as 0 (see :mod:`.neurons`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from ..config import Config
from ..progress import Job, Stopwatch
from .affinities import inside_map

__all__ = ["FragmentConfig", "Fragments", "fragments_job", "seeded_fragments", "fill_nearest"]


@dataclass(frozen=True)
class FragmentConfig(Config):
    """How affinities become fragments.

    Attributes
    ----------
    mode
        ``"2d"``: fragments per section (z-slices never share a fragment; waterz joins them
        through the z-affinities), ``"3d"``: volumetric fragments.
    boundary_threshold
        A voxel is inside an object when every affinity touching it exceeds this.
    sigma_seeds
        Gaussian smoothing (in-plane voxels) of the distance transform before finding maxima;
        0 = none. Smoothing removes maxima caused by ragged boundaries.
    min_seed_distance
        Size (in-plane voxels) of the window in which a distance maximum must be the largest.
    """

    mode: Literal["2d", "3d"] = "2d"
    boundary_threshold: float = 0.5
    sigma_seeds: float = 1.0
    min_seed_distance: int = 5


@dataclass(frozen=True)
class Fragments:
    """Result of :func:`fragments_job`.

    Attributes
    ----------
    labels
        uint32 fragments covering every voxel, ids 1..count.
    boundary
        bool, the voxels outside the mask (on or next to a cut edge), filled by nearest fragment.
    count
        Number of fragments.
    """

    labels: np.ndarray
    boundary: np.ndarray
    count: int


def seeded_fragments(
    inside: np.ndarray,
    config: FragmentConfig,
    sampling: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Masked and filled fragments of one section or volume from its inside map.

    Returns ``(masked, filled, n)`` with ids 1..n (int32 arrays from skimage).
    """
    mask = inside > config.boundary_threshold
    if not mask.any():
        empty = np.zeros(inside.shape, np.int32)
        return empty, empty.copy(), 0
    sampling = tuple(sampling) if sampling is not None else (1.0,) * inside.ndim
    dist = ndi.distance_transform_edt(mask, sampling=sampling).astype(np.float32)
    # smoothing and the seed window are given in in-plane voxels; scale them for anisotropic z
    rel = [min(sampling) / s for s in sampling]
    if config.sigma_seeds > 0:
        dist = ndi.gaussian_filter(dist, [config.sigma_seeds * r for r in rel])
    size = [max(1, int(round(config.min_seed_distance * r))) for r in rel]
    maxima = (ndi.maximum_filter(dist, size=size) == dist) & mask
    seeds, n = ndi.label(maxima)
    height = 1.0 - inside
    masked = watershed(height, seeds, mask=mask)
    return masked, fill_nearest(masked, sampling), int(n)


def fill_nearest(labels: np.ndarray, sampling: Sequence[float] | None = None) -> np.ndarray:
    """Every 0 voxel takes the label of the nearest labelled voxel (labels without 0 stay as they are)."""
    background = labels == 0
    if not background.any() or background.all():
        return labels.copy()
    index = ndi.distance_transform_edt(background, sampling=sampling, return_distances=False, return_indices=True)
    return labels[tuple(index)]


def fragments_job(
    affs: np.ndarray,
    config: FragmentConfig = FragmentConfig(),
    *,
    voxel_size: Sequence[float] | None = None,
) -> Job[Fragments]:
    """Fragments of a float32 affinity map ``(C >= 3, Z, Y, X)``, yielding progress per section.

    Parameters
    ----------
    affs
        float32 affinities, channels 0-2 the nearest neighbours (z, y, x).
    config
        Fragment settings.
    voxel_size
        ``(z, y, x)`` nm, used in 3D mode to make the distance transform anisotropic.
    """
    nz = affs.shape[1]
    watch = Stopwatch()
    labels = np.zeros(affs.shape[1:], np.uint32)
    boundary = np.zeros(affs.shape[1:], bool)
    if config.mode == "2d":
        count = 0
        for z in range(nz):
            inside = inside_map(affs, (1, 2), z=z)
            m, f, n = seeded_fragments(inside, config)
            boundary[z] = m == 0
            if n:
                labels[z] = f
                labels[z][f > 0] += np.uint32(count)
            count += n
            yield watch.event(z + 1, nz, stage="fragments", message=f"{count} fragments")
        return Fragments(labels, boundary, count)
    yield watch.event(0, 1, stage="fragments", message="3D watershed")
    inside = inside_map(affs, (0, 1, 2))
    sampling = tuple(float(v) for v in voxel_size) if voxel_size is not None else None
    m, f, count = seeded_fragments(inside, config, sampling)
    del inside
    np.equal(m, 0, out=boundary)
    labels[...] = f
    yield watch.event(1, 1, stage="fragments", message=f"{count} fragments")
    return Fragments(labels, boundary, count)
