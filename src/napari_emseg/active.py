"""Annotate here next: which slices to paint next, from where a fine-tuned model is unsure.

:func:`suggest_slices` ranks the slices (the painted ones excluded) by their mean uncertainty
(:mod:`napari_emseg.uncertainty`), keeps them at least ``min_gap`` slices apart from each other
and from the painted ones, and names the most uncertain region of each. :func:`suggest_job`
computes the uncertainty map and does both from the painted labels.

``method="diverse"`` adds diversity (:func:`suggest_diverse`): each slice is also described by
the model's own deepest features (:func:`slice_features`), and a slice scores its uncertainty
times its feature distance to the nearest painted or already suggested slice (a core-set
choice), so a second suggestion does not repeat what the first one, or a painted slice, shows.

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
    "suggest_diverse",
    "slice_features",
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
    method: str = "uncertainty",
) -> Job[SuggestResult]:
    """Uncertainty over ``image`` and the ``n`` slices to paint next, given what is painted.

    The painted axis and slices are read from ``labels`` as fine-tuning reads them
    (:func:`~napari_emseg.finetune.annotations.find_annotations`); for 3D or scribble labels the
    slices along ``config.axis`` that hold any label count as painted.

    ``method``: ``"uncertainty"`` (:func:`suggest_slices`), ``"diverse"`` (uncertainty times
    feature distance to what is painted, :func:`suggest_diverse`) or ``"regions"`` (``n``
    ``region``-sized windows across all unpainted voxels, not whole slices:
    :func:`~napari_emseg.active_regions.suggest_regions`; scribbled labels count as painted only
    where they are).

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
    if method == "regions":
        from .active_regions import painted_cells, suggest_regions

        mask = None if ann.axis is not None else painted_cells(umap, np.asarray(labels) != 0)
        found = suggest_regions(umap, n, region, painted=painted if mask is None else (), painted_mask=mask,
                                exclude=exclude)
    elif method == "diverse" and axis == 0:
        feats = slice_features(model, image, device=config.inference.device)
        found = suggest_diverse(umap, feats, painted, n, exclude=exclude, region=region)
    elif method in ("uncertainty", "diverse"):
        found = suggest_slices(umap, painted, n, min_gap, exclude=exclude, region=region)
    else:
        raise ValueError(f"method must be 'uncertainty', 'diverse' or 'regions', got {method!r}")
    logger.info("next slices to paint: %s", [s.index for s in found])
    return SuggestResult(umap, painted, found)


def suggest_diverse(
    umap: UncertaintyMap,
    features: np.ndarray,
    painted: Sequence[int] = (),
    n: int = 5,
    *,
    exclude: Sequence[int] = (),
    region: Sequence[int] = (128, 128),
    power: float = 1.0,
    represent: float = 1.0,
) -> list[Suggestion]:
    """The ``n`` slices that are uncertain *and* unlike what is painted or already suggested.

    Greedy core-set: each round takes the slice maximising ``u ** power * d``, where ``u`` is its
    mean uncertainty (scaled to the most uncertain candidate) and ``d`` its cosine distance, in
    ``features`` (one row per slice, :func:`slice_features`), to the nearest painted or chosen
    slice (scaled to the farthest candidate); with nothing painted, or no candidate unlike the
    chosen ones, ``d = 1``: uncertainty alone decides. The product is weighed by how typical the
    slice is, ``r ** represent``: ``r`` is the smallest mean cosine distance of a candidate to
    all candidates divided by the slice's own, so an outlier (a damaged or edge section, far
    from everything) is not taken for being far from what is painted; ``represent=0`` is the
    plain core-set choice.
    """
    values = np.nan_to_num(np.asarray(umap.slice_scores, np.float64), nan=0.0)
    f = np.asarray(features, np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    banned = {int(p) for p in painted} | {int(e) for e in exclude}
    anchors = [int(p) for p in painted if 0 <= int(p) < len(f)]
    pool = np.array([i for i in range(len(values)) if i not in banned], np.int64)
    spread = (1 - f @ f[pool].T).clip(0, None).mean(axis=1) if pool.size else np.ones(len(f))
    typical = spread[pool].min() / np.maximum(spread, 1e-12) if pool.size else np.ones(len(f))
    chosen: list[int] = []
    for _ in range(n):
        cand = np.array([i for i in range(len(values)) if i not in banned and i not in chosen], np.int64)
        if not cand.size:
            break
        u = values[cand] / max(values[cand].max(), 1e-12)
        d = (1 - f[cand] @ f[anchors].T).min(axis=1) if anchors else np.ones(len(cand))
        d = np.clip(d, 0, None)
        d = d / d.max() if d.max() > 1e-9 else np.ones(len(cand))  # nothing new left: uncertainty decides
        weight = np.clip(typical[cand], 0, 1) ** represent
        pick = int(cand[np.argmax(u**power * (d + 1e-3) * weight)])  # among equals, the more uncertain
        chosen.append(pick)
        anchors.append(pick)
    out = []
    for rank, i in enumerate(chosen, start=1):
        box, rscore = umap.region(i, region)
        out.append(Suggestion(rank, umap.axis, i, float(values[i]), box, rscore))
    return out


def slice_features(model: nn.Module, image: Any, *, side: int = 256, device: str = "auto",
                   max_slices: int = 256) -> np.ndarray:
    """One feature vector per z-slice: the model's deepest activation, averaged over a centre window.

    The deepest activation is the 4D/5D module output with the fewest voxels (the bottleneck of a
    U-Net, the last block of a ViT); 2D models see the slice, 3D models a tile's depth around it.
    At most ``max_slices`` slices are computed (evenly spaced); the others take their nearest.
    """
    import torch

    from .data.normalize import intensity_range, normalize
    from .device import select_device
    from .inference.predict import as_volume

    data = as_volume(image, None)[0]
    info = model.info
    nz, ny, nx = data.shape
    dev = select_device(device)
    model = model.to(dev).eval()
    mult = info.input_multiple
    hy, hx = (max(m, min(s, side) // m * m) for s, m in zip((ny, nx), mult[1:]))
    y0, x0 = max(0, (ny - hy) // 2), max(0, (nx - hx) // 2)
    lo, hi = intensity_range(data, info.norm)
    dz = info.tile[0] if info.spatial_dims == 3 else 1
    deepest: dict[str, Any] = {}

    def hook(_module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.dim() in (4, 5):
            size = int(np.prod(output.shape[2:]))
            if "size" not in deepest or size <= deepest["size"]:
                deepest.update(size=size, value=output.mean(dim=tuple(range(2, output.dim())))[0])

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    computed = np.unique(np.linspace(0, nz - 1, min(nz, max_slices)).round().astype(int))
    rows = []
    try:
        with torch.no_grad():
            for z in computed:
                z0 = int(np.clip(z - dz // 2, 0, max(0, nz - dz)))
                block = np.asarray(data[z0:z0 + dz, y0:y0 + hy, x0:x0 + hx])
                block = normalize(block, lo, hi, info.norm.invert)
                pad = [(0, dz - block.shape[0]), (0, hy - block.shape[1]), (0, hx - block.shape[2])]
                block = np.pad(block, [(0, max(0, p[1])) for p in pad], mode="edge")
                x = torch.from_numpy(np.ascontiguousarray(block)).to(dev)
                deepest.clear()
                model(x[None] if info.spatial_dims == 2 else x[None, None])
                rows.append(deepest["value"].float().cpu().numpy())
    finally:
        for h in handles:
            h.remove()
    feats = np.stack(rows)
    nearest = np.abs(np.arange(nz)[:, None] - computed[None]).argmin(axis=1)
    return feats[nearest]
