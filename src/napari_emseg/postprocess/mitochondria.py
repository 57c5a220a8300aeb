"""Mitochondria from BCD maps (foreground, contour, distance) by seeded watershed.

The U3D-BCD post-processing of MitoEM / PyTorch Connectomics (Wei et al., MICCAI 2020; Lin et al.
2021, ``bcd_watershed``):

1. *seeds*: connected components of ``foreground > seed_foreground`` and
   ``contour < seed_contour`` and ``distance > seed_distance``; seeds smaller than
   ``min_seed_size`` voxels are discarded. Touching objects are separated by the contour
   channel and by the distance channel, which falls to 0 at every object's border;
2. *mask*: ``foreground > foreground_threshold``;
3. a watershed of ``1 - distance`` from the seeds inside the mask (PyTC floods the inverted
   foreground; the distance channel puts the line between two touching objects where their
   distances meet, which a flat foreground cannot);
4. objects smaller than ``min_size`` voxels are removed (``small="drop"``, PyTC's
   ``'background'``) or merged into the neighbour they touch most (``"merge"``).

With ``mode="linked"`` steps 1-3 run per section and each section's objects are then joined to
the object of the next section that covers most of the smaller of the two, one to one
(:func:`link_sections`): every object has at most one profile per section, as in a stack of
sections segmented by a 2D network, and still spans the sections it runs through. Sections whose
profiles continue no more than by chance (separate micrographs) are not linked.

With ``split=False`` steps 1 and 3 are skipped: every connected piece of the mask is one object.
Where mitochondria seldom touch (serial sections of neuropil), that matched held-out objects
better than the seeds, which can cut one long mitochondrion in two; calibration tries both
(docs/postprocess.md).

Defaults are PyTC's (``thres1=0.9``, ``thres2=0.8``, ``thres3=0.85``, ``seed_thres=32``,
``thres_small=128``). PyTC's ``thres4=0.5`` is a signed tanh distance in ``[-1, 1]``; our distance
channel is normalised per object to ``[0, 1]`` (1 at the centre), so seeds need ``distance > 0.5``
in our scale, the inner half of an object's radius.

Thresholds are compared with the maps in their stored type (uint8 maps are never made float).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from ..config import Config
from ..progress import Job, Progress, Stopwatch, drain
from .cleanup import SmallMode, face_contacts, remove_small_objects
from .maps import check_map, map_scale, native_threshold, read_channel
from .memory import check_memory
from .sections import chance_placements

__all__ = ["MitoConfig", "mitochondria_job", "segment_mitochondria", "bcd_watershed", "link_sections"]


@dataclass(frozen=True)
class MitoConfig(Config):
    """Mitochondria from BCD maps.

    Attributes
    ----------
    mode
        ``"3d"``: volumetric seeds and watershed (objects span sections); ``"2d"``: per section
        (an object is one profile of one section); ``"linked"``: per section, then profiles of
        neighbouring sections joined one to one where they overlap (:func:`link_sections`).
    seed_foreground, seed_contour, seed_distance
        A voxel seeds an object when foreground > ``seed_foreground``, contour <
        ``seed_contour`` and distance > ``seed_distance``.
    foreground_threshold
        Voxels with foreground above this belong to some object.
    min_seed_size
        Seeds smaller than this (voxels) are ignored.
    min_size
        Objects smaller than this (voxels) are removed or merged (``small``).
    small
        ``"drop"`` (default) or ``"merge"`` into the touching object with the largest contact.
    split
        Separate touching objects by the seeded watershed (default); ``False``: each connected
        piece of foreground is one object (the seed settings are then unused).
    """

    mode: Literal["2d", "3d", "linked"] = "3d"
    seed_foreground: float = 0.9
    seed_contour: float = 0.8
    seed_distance: float = 0.5
    foreground_threshold: float = 0.85
    min_seed_size: int = 32
    min_size: int = 128
    small: SmallMode = "drop"
    split: bool = True

    def unused_fields(self) -> tuple[str, ...]:
        """Fields this setting ignores (tuning skips settings that differ only in them)."""
        return ("seed_foreground", "seed_contour", "seed_distance", "min_seed_size") if not self.split else ()


def bcd_watershed(
    foreground: np.ndarray,
    contour: np.ndarray,
    distance: np.ndarray,
    config: MitoConfig = MitoConfig(),
    scale: float = 1.0,
) -> np.ndarray:
    """Seeded watershed of one section or volume (arrays in their stored type, ``scale`` = 1.0 value).

    The seeds only split touching objects: a connected piece of foreground that holds no seed
    (a small or faint object, or a weak distance map) is still an object of its own, never
    dropped. Returns int32 labels (not consecutive, not size-filtered).
    """
    mask = foreground > native_threshold(config.foreground_threshold, scale)
    if not config.split:
        return ndi.label(mask)[0].astype(np.int32, copy=False)
    seeds_mask = foreground > native_threshold(config.seed_foreground, scale)
    seeds_mask &= contour < native_threshold(config.seed_contour, scale)
    seeds_mask &= distance > native_threshold(config.seed_distance, scale)
    seeds, n = ndi.label(seeds_mask)
    del seeds_mask
    if n and config.min_seed_size > 1:
        sizes = np.bincount(seeds.ravel())
        small = sizes < config.min_seed_size
        small[0] = False
        seeds[small[seeds]] = 0
    labels = np.zeros(foreground.shape, np.int32)
    if seeds.any():
        height = np.subtract(np.float32(scale), distance, dtype=np.float32)
        labels = watershed(height, seeds, mask=mask).astype(np.int32, copy=False)
    orphans, k = ndi.label(mask & (labels == 0))  # foreground no seed reached
    if k:
        labels = np.where(orphans > 0, orphans + int(labels.max()), labels).astype(np.int32, copy=False)
    return labels


#: a pair of sections is linked when this much more of its mitochondrion area finds a partner
#: than with the second section turned or rolled (the share by chance): consecutive sections of
#: the VNC and FAFB masks join 0.75-1.0 of their profiles, turned ones 0.02-0.14
LINK_MARGIN = 0.3
#: pairs with fewer profiles than this (both sections together) follow the stack's pooled rates
LINK_MIN_PROFILES = 6

logger = logging.getLogger(__name__)


def _pairings(a: np.ndarray, b: np.ndarray, sizes: np.ndarray, min_overlap: float) -> list[tuple[int, int]]:
    """One-to-one joins of the profiles of facing sections ``a`` and ``b``, largest overlaps first."""
    both = (a > 0) & (b > 0)
    u, v, counts = face_contacts(a[both], b[both])
    cover = counts / np.minimum(sizes[u], sizes[v])
    taken_a, taken_b, pairs = set(), set(), []
    for i in np.argsort(-counts, kind="stable"):
        ia, ib = int(u[i]), int(v[i])
        if cover[i] < min_overlap or ia in taken_a or ib in taken_b:
            continue
        taken_a.add(ia)
        taken_b.add(ib)
        pairs.append((ia, ib))
    return pairs


def _area(pairs: list[tuple[int, int]], sizes: np.ndarray) -> int:
    """Voxels of the joined profiles (both sections)."""
    return int(sum(sizes[i] + sizes[j] for i, j in pairs))


def _chance(a: np.ndarray, b: np.ndarray, sizes: np.ndarray, min_overlap: float, enough: float) -> int:
    """Joined area by chance: the least over ``b`` turned by 180 degrees and rolled by half its
    height or width (three unrelated placements; one can coincide with the real one in a
    symmetric layout). Stops at the first placement joining at most ``enough`` voxels."""
    if enough < 0:  # even no chance joins at all would leave the pair below the margin
        return 0
    least = None
    for moved in chance_placements(b):
        k = _area(_pairings(a, moved, sizes, min_overlap), sizes)
        least = k if least is None else min(least, k)
        if k <= enough:
            break
    return least


def link_sections(labels: np.ndarray, min_overlap: float = 0.5, margin: float = LINK_MARGIN) -> np.ndarray:
    """Join 2D objects of neighbouring sections ``(Z, Y, X)`` into 3D objects, one to one.

    Every id must lie in one section. Two objects of sections ``z`` and ``z + 1`` are joined
    when their overlap covers at least ``min_overlap`` of the smaller one; the largest overlaps
    are taken first and each object joins at most one object of each neighbouring section, so
    a joined object never holds two profiles of one section.

    Only sections that continue each other are linked: a pair is joined when the fraction of
    its foreground in profiles that find a partner exceeds, by ``margin``, the fraction found
    with the second section turned or rolled (what unrelated images give by chance). A pair
    with fewer than :data:`LINK_MIN_PROFILES` profiles is judged by the areas pooled over the
    stack. A stack of separate micrographs thus keeps every image's objects apart. Returns
    ``labels`` (uint32) with the joined ids (not consecutive).
    """
    labels = np.asarray(labels)
    top = int(labels.max()) if labels.size else 0
    if top == 0 or labels.shape[0] < 2:
        return labels.astype(np.uint32, copy=False)
    sizes = np.bincount(labels.ravel(), minlength=top + 1)
    pairs, rates, small, empty = [], [], [], []
    for z in range(labels.shape[0] - 1):
        a, b = labels[z], labels[z + 1]
        joined = _pairings(a, b, sizes, min_overlap)
        area = _area(joined, sizes)
        total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
        na, nb = (len(np.unique(s)) - 1 + int(s.min() > 0) for s in (a, b))
        pairs.append(joined)
        rates.append((area, _chance(a, b, sizes, min_overlap, area - margin * total), total))
        small.append(na + nb < LINK_MIN_PROFILES)
        empty.append(na == 0 or nb == 0)
    pooled_total = sum(r[2] for r in rates)
    pooled = pooled_total == 0 or sum(r[0] - r[1] for r in rates) / pooled_total >= margin
    root = np.arange(top + 1, dtype=np.uint32)
    apart = []
    for z, (joined, (area, chance, total)) in enumerate(zip(pairs, rates)):
        related = pooled if small[z] else (area - chance) / max(total, 1) >= margin
        if not related:
            if not empty[z]:
                apart.append(z)
            continue
        for ia, ib in joined:
            root[ib] = root[ia]  # sections go in order: ia's root is final
    if apart:
        logger.info("sections %s and the next ones look unrelated (few profiles continue, as by chance): "
                    "not linked", ", ".join(str(z) for z in apart[:10]) + (" ..." if len(apart) > 10 else ""))
    return root[labels]


def mitochondria_job(probs: Any, config: MitoConfig = MitoConfig()) -> Job[np.ndarray]:
    """Mitochondrion labels (uint32, consecutive) from a BCD map ``(3, Z, Y, X)``, with progress."""
    shape = check_map(probs, 3, "bcd")
    whole = 3 * np.dtype(probs.dtype).itemsize if config.mode == "3d" else 0  # channels read at once
    check_memory(shape[1:], f"bcd/{config.mode}", extra_per_voxel=whole, what="mitochondria from BCD maps")
    scale = map_scale(probs)
    watch = Stopwatch()
    nz = shape[1]
    if config.mode == "3d":
        yield Progress(0, 1, "watershed", "3D seeded watershed")
        fg, ct, dist = (read_channel(probs, c) for c in range(3))
        labels = bcd_watershed(fg, ct, dist, config, scale)
        del fg, ct, dist
    else:
        labels = np.zeros(shape[1:], np.uint32)
        count = 0
        for z in range(nz):
            fg, ct, dist = (read_channel(probs, c, z) for c in range(3))
            lab = bcd_watershed(fg, ct, dist, config, scale)
            labels[z] = lab
            labels[z][lab > 0] += np.uint32(count)
            count += int(lab.max())
            yield watch.event(z + 1, nz, stage="watershed", message=f"{count} objects")
        if config.mode == "linked":
            yield Progress(0, None, "link", "joining each section's objects to the next section's")
            labels = link_sections(labels)
    yield Progress(0, None, "size filter", f"objects under {config.min_size} voxels: {config.small}")
    labels, n = remove_small_objects(labels, config.min_size, config.small)
    return labels


def segment_mitochondria(probs: Any, config: MitoConfig = MitoConfig()) -> np.ndarray:
    """:func:`mitochondria_job` run to completion."""
    return drain(mitochondria_job(probs, config), show=False)
