"""waterz agglomeration of fragments, with a merge tree for instant re-runs at new thresholds.

waterz (Funke et al., "Large scale image segmentation with structured loss based deep learning
for connectome reconstruction", TPAMI 2019) builds the region graph of the fragments, scores
every edge with a *merge function* of the affinities along it, and merges the lowest-scoring
edge first, re-scoring as regions grow, until the lowest score reaches a threshold.

Threshold semantics (checked in the tests): scores are ``1 - statistic(affinities)``, so two
regions are merged while their boundary's affinity statistic exceeds ``1 - threshold``.
**A higher threshold merges more and gives fewer, larger segments**; threshold 0 returns the
fragments, 1 merges every connected pair except along edges of affinity 0.

One waterz pass to the largest threshold records the merge history (pairs and scores, in order);
:class:`Agglomeration` keeps it with the fragments, so the segmentation at any threshold up to
that one is a lookup table applied to the fragments: no watershed, no region graph, no waterz.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import waterz
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from ..config import ConfigError
from .cleanup import SmallMode, apply_lut, consecutive_lut, small_objects_lut
from .quiet import captured_stdout

__all__ = ["MERGE_FUNCTIONS", "scoring_function", "waterz_agglomerate", "Agglomeration"]

logger = logging.getLogger(__name__)

_QUANTILES = (10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75, 80, 85, 90, 95)

MERGE_FUNCTIONS: dict[str, str] = {"mean": "OneMinus<MeanAffinity<RegionGraphType, ScoreValue>>"}
for _q in _QUANTILES:
    MERGE_FUNCTIONS[f"quantile_{_q}"] = (
        f"OneMinus<HistogramQuantileAffinity<RegionGraphType, {_q}, ScoreValue, 256, false>>"
    )
MERGE_FUNCTIONS["median"] = MERGE_FUNCTIONS["quantile_50"]
"""Merge functions by name -> waterz C++ scoring function (all ship precompiled with waterz).

``mean``: 1 - mean affinity along the boundary (waterz's default). ``quantile_Q``: 1 - the Q-th
percentile of the boundary's affinities, from a 256-bin histogram (``median`` = ``quantile_50``;
the LSD papers use ``quantile_50`` and ``quantile_75``). A low quantile is conservative (a
boundary with some low affinities is kept), a high one merges through thin cuts.
"""


def scoring_function(name: str) -> str:
    """The waterz scoring function for a merge-function name (see :data:`MERGE_FUNCTIONS`)."""
    try:
        return MERGE_FUNCTIONS[name]
    except KeyError:
        raise ConfigError(
            f"merge function {name!r} is not available; choose one of {sorted(MERGE_FUNCTIONS)}"
        ) from None


def waterz_agglomerate(
    affs: np.ndarray,
    fragments: np.ndarray,
    thresholds: Sequence[float],
    merge_function: str = "mean",
    *,
    copy_segmentations: bool = True,
) -> Iterator[tuple[float, np.ndarray | None, np.ndarray, np.ndarray]]:
    """Run waterz once over several thresholds, without a word on stdout.

    Parameters
    ----------
    affs
        float32 ``(C >= 3, Z, Y, X)``; waterz reads channels 0-2 (nearest neighbours).
    fragments
        uint64 fragments, 0 = boundary (no edges); not modified.
    thresholds
        Merge-score thresholds, processed in increasing order.
    merge_function
        A key of :data:`MERGE_FUNCTIONS`.
    copy_segmentations
        Yield a copy of the segmentation at each threshold (``False``: yield ``None``, for
        callers that only want the merge history).

    Yields
    ------
    (threshold, segmentation, pairs, scores)
        ``segmentation`` uint64 (or ``None``); ``pairs`` int64 ``(K, 2)`` and ``scores`` float64
        ``(K,)``: the merges made since the previous threshold, in waterz's order.
    """
    sf = scoring_function(merge_function)
    affs3 = np.ascontiguousarray(affs[:3], dtype=np.float32)
    work = np.array(fragments, dtype=np.uint64, order="C", copy=True)
    ordered = sorted(float(t) for t in thresholds)
    gen = waterz.agglomerate(affs3, ordered, fragments=work, scoring_function=sf, return_merge_history=True)
    for t in ordered:
        with captured_stdout("waterz"):
            seg, history = next(gen)
        pairs = np.array([(h["a"], h["b"]) for h in history], np.int64).reshape(-1, 2)
        scores = np.array([h["score"] for h in history], np.float64)
        yield t, (seg.copy() if copy_segmentations else None), pairs, scores
    with captured_stdout("waterz"):
        for _ in gen:  # lets waterz free its state
            pass


@dataclass
class Agglomeration:
    """Fragments plus waterz's merge history: a segmentation at any threshold, instantly.

    Build it with :func:`napari_emseg.postprocess.neurons.agglomeration_job` (or
    :func:`~napari_emseg.postprocess.neurons.build_agglomeration`); then
    :meth:`segmentation` re-runs the threshold and the small-object clean-up on lookup tables
    only, in the time of one pass over the volume.

    Attributes
    ----------
    fragments
        Filled fragments covering every voxel (uint32/uint64, ids 1..n_fragments).
    pairs
        int64 ``(K, 2)`` fragment ids merged, in waterz's order.
    scores
        float64 ``(K,)`` running maximum of the merge scores (a merge happens at threshold ``t``
        iff its running maximum is below ``t``, exactly as waterz decides).
    max_threshold
        The threshold the history was recorded to; larger thresholds are clipped to it.
    sizes, adjacency
        Voxel count per fragment, and ``(u, v, contact)`` of touching fragments, for clean-up.
    """

    fragments: np.ndarray
    pairs: np.ndarray
    scores: np.ndarray
    max_threshold: float
    sizes: np.ndarray
    adjacency: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def n_fragments(self) -> int:
        return len(self.sizes) - 1

    def merges_below(self, threshold: float) -> int:
        """Number of recorded merges waterz makes at ``threshold``."""
        if threshold > self.max_threshold + 1e-12:
            logger.warning(
                "threshold %.3g is above the %.3g this agglomeration was recorded to; using %.3g",
                threshold, self.max_threshold, self.max_threshold,
            )
        # waterz compares float32 scores with a float32 threshold: do the same
        return int(np.searchsorted(self.scores.astype(np.float32), np.float32(threshold), side="left"))

    def lookup(self, threshold: float) -> np.ndarray:
        """int64 table fragment id -> segment id at ``threshold`` (0 stays 0; not consecutive)."""
        n = len(self.sizes)
        k = self.merges_below(threshold)
        graph = sparse.coo_matrix(
            (np.ones(k), (self.pairs[:k, 0], self.pairs[:k, 1])), shape=(n, n)
        )
        _, comp = connected_components(graph, directed=False)
        comp = comp.astype(np.int64) + 1
        comp[0] = 0
        return comp

    def segment_lut(
        self, threshold: float, *, min_size: int = 0, small: SmallMode = "merge"
    ) -> tuple[np.ndarray, int]:
        """Consecutive table fragment id -> final label at ``threshold``, after clean-up."""
        lut = self.lookup(threshold)
        if min_size > 1:
            seg_sizes = np.bincount(lut, weights=self.sizes, minlength=int(lut.max()) + 1).astype(np.int64)
            u, v, w = self.adjacency
            su, sv = lut[u], lut[v]
            keep = su != sv
            lut = small_objects_lut(seg_sizes, np.minimum(su, sv)[keep], np.maximum(su, sv)[keep],
                                    w[keep], min_size, small)[lut]
        return consecutive_lut(lut, self.sizes)

    def n_segments(self, threshold: float, *, min_size: int = 0, small: SmallMode = "merge") -> int:
        """How many segments :meth:`segmentation` gives, without touching the voxels."""
        return self.segment_lut(threshold, min_size=min_size, small=small)[1]

    def segmentation(
        self, threshold: float, *, min_size: int = 0, small: SmallMode = "merge"
    ) -> np.ndarray:
        """Labels at ``threshold`` (uint32, consecutive 1..n), small segments merged or dropped."""
        lut, _ = self.segment_lut(threshold, min_size=min_size, small=small)
        return apply_lut(self.fragments, lut)

    def segmentations(
        self, thresholds: Sequence[float], *, min_size: int = 0, small: SmallMode = "merge"
    ) -> Iterator[tuple[float, np.ndarray]]:
        """``(threshold, labels)`` for each threshold, in the order given."""
        for t in thresholds:
            yield float(t), self.segmentation(t, min_size=min_size, small=small)
