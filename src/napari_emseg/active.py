"""Annotate here next: which slices to paint next, from where a fine-tuned model is unsure.

:func:`suggest_slices` ranks the slices (the painted ones excluded) by their mean uncertainty
(:mod:`napari_emseg.uncertainty`), keeps them at least ``min_gap`` slices apart from each other
and from the painted ones, and names the most uncertain region of each. :func:`suggest_job`
computes the uncertainty map and does both from the painted labels.

>>> found = drain(suggest_job(result.model, image, labels, n=5))      # doctest: +SKIP
>>> [(s.index, round(s.score, 3)) for s in found.suggestions]         # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from .progress import Job
from .uncertainty import UncertaintyConfig, UncertaintyMap, UncertaintyNet, uncertainty_job

__all__ = [
    "UncertaintyConfig",
    "UncertaintyMap",
    "Suggestion",
    "SuggestResult",
    "UncertaintyNet",
    "uncertainty_job",
    "suggest_slices",
    "suggest_job",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Suggestion:
    """One slice to paint next.

    Attributes
    ----------
    rank
        1 = paint first.
    axis, index
        The slice: ``index`` along ``axis`` (0 = z).
    score
        Its mean uncertainty (``UncertaintyMap.slice_scores[index]``).
    box
        ``((z0, z1), (y0, y1), (x0, x1))``: its most uncertain region.
    region_score
        The mean uncertainty in ``box``.
    """

    rank: int
    axis: int
    index: int
    score: float
    box: tuple[tuple[int, int], ...]
    region_score: float

    @property
    def center(self) -> tuple[float, float, float]:
        """Centre of ``box`` ``(z, y, x)``: where to point the viewer."""
        return tuple((lo + hi - 1) / 2 for lo, hi in self.box)  # type: ignore[return-value]

    def describe(self) -> str:
        """One line, e.g. ``1. z=12  uncertainty 0.214  (region y 64:192, x 128:256: 0.391)``."""
        names = "zyx"
        region = ", ".join(f"{names[d]} {lo}:{hi}" for d, (lo, hi) in enumerate(self.box) if d != self.axis)
        return (f"{self.rank}. {names[self.axis]}={self.index}  uncertainty {self.score:.3f}  "
                f"(region {region}: {self.region_score:.3f})")


@dataclass
class SuggestResult:
    """What :func:`suggest_job` returns: the map, the painted slices and the suggestions."""

    uncertainty: UncertaintyMap
    painted: tuple[int, ...]
    suggestions: list[Suggestion] = field(default_factory=list)


def suggest_slices(
    scores: UncertaintyMap | Sequence[float] | np.ndarray,
    painted: Sequence[int] = (),
    n: int = 5,
    min_gap: int | None = None,
    *,
    exclude: Sequence[int] = (),
    region: Sequence[int] = (128, 128),
    axis: int | None = None,
) -> list[Suggestion]:
    """The ``n`` slices to paint next, most uncertain first, spread out.

    Greedy: take the most uncertain slice that is not painted nor excluded and lies at least
    ``min_gap`` slices from every painted and already suggested slice; repeat. When too few
    slices are left at that distance, the gap shrinks one step at a time (never to a painted
    or excluded slice).

    Parameters
    ----------
    scores
        An :class:`UncertaintyMap` (gives regions too) or one score per slice.
    painted
        Indices of the slices already painted (along the scored axis).
    n
        How many suggestions.
    min_gap
        Smallest distance between suggestions (and from painted slices); ``None``:
        ``max(2, n_slices // (2 * (n + len(painted))))``, which spreads them over the volume.
    exclude
        Slices never to suggest (held out, damaged), without a gap around them.
    region
        In-plane size (voxels) of the region named in each suggestion.
    axis
        The axis of plain ``scores`` (default 0); an :class:`UncertaintyMap` knows its own.
    """
    if isinstance(scores, UncertaintyMap):
        umap, values, ax = scores, np.asarray(scores.slice_scores, np.float64), scores.axis
    else:
        umap, values, ax = None, np.asarray(scores, np.float64).ravel(), 0 if axis is None else int(axis)
    count = len(values)
    painted_set = {int(p) for p in painted}
    banned = painted_set | {int(e) for e in exclude}
    if min_gap is None:
        min_gap = max(2, count // (2 * (max(1, n) + len(painted_set))))
    order = [int(i) for i in np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable") if int(i) not in banned]
    chosen: list[int] = []
    gap = max(1, int(min_gap))
    while len(chosen) < n and gap >= 1:
        anchors = np.array(sorted(painted_set | set(chosen)), np.int64)
        for i in order:
            if len(chosen) >= n:
                break
            if i in chosen or (anchors.size and np.abs(anchors - i).min() < gap):
                continue
            chosen.append(i)
            anchors = np.append(anchors, i)
        gap -= 1
    out = []
    for rank, i in enumerate(chosen, start=1):
        if umap is not None:
            box, rscore = umap.region(i, region)
        else:
            box = tuple((i, i + 1) if d == ax else (0, 0) for d in range(3))
            rscore = float(values[i])
        out.append(Suggestion(rank, ax, i, float(values[i]), box, rscore))
    return out


def suggest_job(
    model: nn.Module,
    image: Any,
    labels: Any,
    *,
    n: int = 5,
    min_gap: int | None = None,
    region: Sequence[int] = (128, 128),
    config: UncertaintyConfig = UncertaintyConfig(),
    mode: str = "dense",
    background_label: int = 1,
    exclude: Sequence[int] = (),
    out: str | os.PathLike | Any = None,
) -> Job[SuggestResult]:
    """Uncertainty over ``image`` and the ``n`` slices to paint next, given what is painted.

    The painted axis and slices are read from ``labels`` as fine-tuning reads them
    (:func:`~napari_emseg.finetune.annotations.find_annotations`); for 3D or scribble labels the
    slices along ``config.axis`` that hold any label count as painted.

    Returns
    -------
    SuggestResult
        ``uncertainty`` (:class:`UncertaintyMap`), ``painted`` and ``suggestions``.
    """
    from .finetune.annotations import find_annotations

    data = getattr(image, "data", image)
    ann = find_annotations(labels, tuple(data.shape), mode=mode, background_label=background_label)  # type: ignore[arg-type]
    if ann.axis is not None:
        axis, painted = ann.axis, tuple(ann.slices)
    else:
        axis = config.axis
        lab = np.asarray(labels)
        others = tuple(a for a in range(3) if a != axis)
        painted = tuple(int(i) for i in np.flatnonzero((lab != 0).any(axis=others)))
    umap = yield from uncertainty_job(model, image, config.replace(axis=axis), out=out)
    found = suggest_slices(umap, painted, n, min_gap, exclude=exclude, region=region)
    logger.info("next slices to paint: %s", [s.index for s in found])
    return SuggestResult(umap, painted, found)
