"""Neurons from affinities (or boundaries): fragments, waterz agglomeration, clean-up.

``affinities ──fragments_job──> fragments ──waterz (one pass)──> merge history``
``──Agglomeration.segmentation(threshold)──> labels``

:func:`agglomeration_job` does the expensive part once and returns an
:class:`~.agglomerate.Agglomeration`; the Segment widget keeps it and calls
:meth:`~.agglomerate.Agglomeration.segmentation` when the user moves the threshold slider.
:func:`neurons_job` / :func:`segment_neurons` are the one-call versions.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import Config, ConfigError
from ..progress import Job, Progress, drain
from .affinities import (
    affinities_from_boundaries,
    check_offsets,
    unrelated_sections,
    zero_at_boundaries,
)
from .agglomerate import MERGE_FUNCTIONS, Agglomeration, waterz_agglomerate
from .cleanup import SmallMode, label_sizes, region_adjacency
from .fragments import FragmentConfig, fragments_job
from .maps import channel_as_float32, check_map
from .memory import check_memory

__all__ = [
    "NeuronConfig",
    "agglomeration_job",
    "build_agglomeration",
    "neurons_job",
    "segment_neurons",
    "affinities_for_waterz",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class NeuronConfig(Config):
    """Neurons from affinities: fragments, waterz agglomeration, clean-up.

    Attributes
    ----------
    fragments
        How fragments are made (2D per section by default).
    merge_function
        waterz merge function: ``"mean"``, ``"median"`` or ``"quantile_Q"`` with Q in 10..95
        step 5 (see :data:`~napari_emseg.postprocess.agglomerate.MERGE_FUNCTIONS`).
    threshold
        Merge-score threshold: higher merges more (fewer segments). Tune it on painted slices;
        the best value differs by metric and data (docs/science.md). Scores count
        boundary contacts as affinity 0, so same-object fragments score about the fraction of
        their contact that runs through boundary voxels: 0.5 suits clean maps.
    max_threshold
        The agglomeration history is recorded up to this threshold, so re-runs at any threshold
        up to it are instant.
    min_size
        Segments smaller than this many voxels are merged into (``small="merge"``) the neighbour
        they touch most, or removed (``small="drop"``). 0 = keep all.
    small
        ``"merge"`` or ``"drop"``.
    """

    fragments: FragmentConfig = FragmentConfig()
    merge_function: str = "mean"
    threshold: float = 0.5
    max_threshold: float = 1.0
    min_size: int = 100
    small: SmallMode = "merge"

    def __post_init__(self) -> None:
        if self.merge_function not in MERGE_FUNCTIONS:
            raise ConfigError(
                f"merge_function {self.merge_function!r} is not available; choose one of "
                f"{sorted(MERGE_FUNCTIONS)}"
            )
        if not 0.0 <= self.threshold <= self.max_threshold:
            raise ConfigError(
                f"threshold {self.threshold} must lie in [0, max_threshold={self.max_threshold}]"
            )


def affinities_for_waterz(
    probs: Any, target: str = "affinities", offsets: Sequence[Sequence[int]] | None = None
) -> np.ndarray:
    """float32 nearest-neighbour affinities ``(3, Z, Y, X)`` from an affinity or boundary map.

    Affinity maps: channels 0-2 are converted one at a time (long-range channels are not read).
    Boundary maps (1 channel): affinities ``1 - max(b(p), b(p + offset))``.
    """
    if target == "boundaries":
        check_map(probs, 1, "boundaries")
        return affinities_from_boundaries(probs)
    shape = check_map(probs, None, "affinities")
    check_offsets(offsets, shape[0], "affinities")
    affs = np.empty((3, *shape[1:]), np.float32)
    for c in range(3):
        channel_as_float32(probs, c, out=affs[c])
    return affs


def agglomeration_job(
    affs: np.ndarray,
    config: NeuronConfig = NeuronConfig(),
    *,
    voxel_size: Sequence[float] | None = None,
    overwrite_affs: bool = False,
) -> Job[Agglomeration]:
    """Fragments and one waterz pass to ``config.max_threshold``; returns an :class:`Agglomeration`.

    waterz agglomerates the filled fragments on the affinities with every edge that touches a
    boundary voxel set to 0 (:func:`~.affinities.zero_at_boundaries`): two fragments that meet
    only along a boundary score 1 - 0, two that share interior contact keep their affinities, and
    a hole in a boundary no longer joins the objects on both sides on its own. The z-affinities
    between sections that do not continue each other (:func:`~.affinities.unrelated_sections`:
    a stack of separate micrographs) are set to 0 too, so no object spans them.

    Parameters
    ----------
    affs
        float32 ``(C >= 3, Z, Y, X)`` nearest-neighbour affinities (see :func:`affinities_for_waterz`).
    config
        Neuron settings (``threshold`` and ``min_size`` are not used here but by
        :meth:`Agglomeration.segmentation`).
    voxel_size
        ``(z, y, x)`` nm, for 3D fragments on anisotropic data.
    overwrite_affs
        Allow zeroing the boundary edges of ``affs`` in place (saves a copy of three channels).
    """
    apart = unrelated_sections(affs)
    frags = yield from fragments_job(affs, config.fragments, voxel_size=voxel_size)
    yield _event("agglomerate", f"waterz on {frags.count} fragments ({config.merge_function})")
    cut = affs[:3] if overwrite_affs and affs.dtype == np.float32 else np.array(affs[:3], np.float32)
    zero_at_boundaries(cut, frags.boundary)
    if apart:  # separate images: nothing joins across them (channel 0 at z + 1 links z + 1 to z)
        cut[0, [z + 1 for z in apart]] = 0.0
        logger.info("sections %s and the next ones do not continue each other (separate images): "
                    "not joined", ", ".join(str(z) for z in apart[:10]) + (" ..." if len(apart) > 10 else ""))
    labels, count = frags.labels, frags.count
    del frags
    ((_, _, pairs, scores),) = waterz_agglomerate(
        cut, labels, [config.max_threshold], config.merge_function, copy_segmentations=False
    )
    del cut
    # waterz merges in order of non-decreasing score; the running maximum makes that exact
    scores = np.maximum.accumulate(scores) if len(scores) else scores
    yield _event("adjacency", "fragment sizes and contacts")
    sizes = label_sizes(labels, count + 1)
    adjacency = region_adjacency(labels)
    return Agglomeration(labels, pairs, scores, float(config.max_threshold), sizes, adjacency)


def build_agglomeration(
    affs: np.ndarray, config: NeuronConfig = NeuronConfig(), *, voxel_size: Sequence[float] | None = None
) -> Agglomeration:
    """:func:`agglomeration_job` run to completion (no progress bar)."""
    return drain(agglomeration_job(affs, config, voxel_size=voxel_size), show=False)


def neurons_job(
    probs: Any,
    config: NeuronConfig = NeuronConfig(),
    *,
    target: str = "affinities",
    offsets: Sequence[Sequence[int]] | None = None,
    voxel_size: Sequence[float] | None = None,
) -> Job[np.ndarray]:
    """Neuron labels (uint32, consecutive) from an affinity or boundary map, with progress.

    Checks first that the in-memory path fits in available memory
    (:class:`~.memory.VolumeTooLargeError` otherwise).
    """
    shape = tuple(int(s) for s in probs.shape[1:])
    check_memory(shape, f"{target}/{config.fragments.mode}", what=f"neurons from {target}")
    yield _event("read", f"reading {target}")
    affs = affinities_for_waterz(probs, target, offsets)
    agg = yield from agglomeration_job(affs, config, voxel_size=voxel_size, overwrite_affs=True)
    del affs
    yield _event("relabel", f"threshold {config.threshold}")
    return agg.segmentation(config.threshold, min_size=config.min_size, small=config.small)


def segment_neurons(
    probs: Any,
    config: NeuronConfig = NeuronConfig(),
    *,
    target: str = "affinities",
    offsets: Sequence[Sequence[int]] | None = None,
    voxel_size: Sequence[float] | None = None,
) -> np.ndarray:
    """:func:`neurons_job` run to completion."""
    return drain(neurons_job(probs, config, target=target, offsets=offsets, voxel_size=voxel_size), show=False)


def _event(stage: str, message: str) -> Progress:
    return Progress(step=0, total=None, stage=stage, message=message)
