"""Annotate here next, by region: the ``size`` windows to paint next, across all slices.

:func:`suggest_regions` ranks every ``size`` window (aligned to the cells of the
:class:`~napari_emseg.uncertainty.UncertaintyMap`'s coarse map) of every slice that is not
painted or excluded by its mean uncertainty, and takes them greedily: no two overlap, none
overlaps what is painted, and each further window in a slice (or in a slice next to one)
counts less, so the windows spread over the volume. Painting a suggested region trains:
fill it with the background label and the objects in it (scribbles, see
:mod:`napari_emseg.finetune.annotations`). :func:`random_regions` draws windows the same way
at random (the baseline of ``bench/active.py``).

>>> umap = drain(uncertainty_job(model, image))                           # doctest: +SKIP
>>> [s.box for s in suggest_regions(umap, n=9, painted=(4,))]             # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .active import Suggestion
from .uncertainty import UncertaintyMap

__all__ = ["suggest_regions", "random_regions", "painted_cells", "region_boxes_mask"]


def painted_cells(umap: UncertaintyMap, known: Any) -> np.ndarray:
    """Which cells of ``umap.coarse`` hold any painted voxel (``known``: a boolean volume)."""
    known = np.asarray(known, bool)
    if known.shape != tuple(umap.shape):
        raise ValueError(f"painted mask has shape {known.shape}, the map's volume {umap.shape}")
    pad = [(0, -n % c) for n, c in zip(known.shape, umap.cell)]
    k = np.pad(known, pad)
    (z, y, x), (cz, cy, cx) = k.shape, umap.cell
    return k.reshape(z // cz, cz, y // cy, cy, x // cx, cx).any(axis=(1, 3, 5))


def _window(umap: UncertaintyMap, size: Sequence[int]) -> tuple[list[int], list[int]]:
    plane_axes = [d for d in range(3) if d != umap.axis]
    cells = [umap.coarse.shape[d] for d in plane_axes]
    win = [max(1, min(n, int(round(s / umap.cell[d])))) for s, n, d in zip(size, cells, plane_axes)]
    return plane_axes, win


def _window_sums(plane: np.ndarray, win: Sequence[int]) -> np.ndarray:
    c = np.pad(plane.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    return c[win[0]:, win[1]:] - c[:-win[0], win[1]:] - c[win[0]:, :-win[1]] + c[:-win[0], :-win[1]]


def _box(umap: UncertaintyMap, index: int, start: tuple[int, int], plane_axes, win) -> tuple:
    box: list[tuple[int, int]] = [(0, 0)] * 3
    box[umap.axis] = (int(index), int(index) + 1)
    for d, s, w in zip(plane_axes, start, win):
        box[d] = (int(s * umap.cell[d]), int(min(umap.shape[d], (s + w) * umap.cell[d])))
    return tuple(box)


def suggest_regions(
    umap: UncertaintyMap,
    n: int = 5,
    size: Sequence[int] = (128, 128),
    *,
    painted: Sequence[int] = (),
    painted_mask: np.ndarray | None = None,
    exclude: Sequence[int] = (),
    decay: float = 0.5,
    reach: int = 1,
    weights: Sequence[float] | np.ndarray | None = None,
) -> list[Suggestion]:
    """The ``n`` regions to paint next: uncertain, not overlapping, spread over the slices.

    Greedy: each round takes the window with the highest mean uncertainty times
    ``decay ** k``, where ``k`` counts the windows already taken in its slice and in the
    slices up to ``reach`` away (so the second window in a slice counts half by default).

    Parameters
    ----------
    umap
        The uncertainty map (its coarse map is searched).
    n
        How many regions.
    size
        In-plane size of a region, in voxels (rounded to cells).
    painted
        Slices painted whole (never suggested).
    painted_mask
        Cells already painted (:func:`painted_cells`), the shape of ``umap.coarse``: no region
        overlaps them, and a slice that holds some counts as one region taken.
    exclude
        Slices never to suggest (held out, damaged).
    decay, reach
        The spread: a window's score is multiplied by ``decay`` for every region taken in
        a slice at most ``reach`` away (``decay=1``: uncertainty alone).
    weights
        Optional weight per slice (e.g. how unlike the painted slices it looks), multiplied in.
    """
    a = umap.axis
    plane_axes, win = _window(umap, size)
    count = umap.coarse.shape[a]
    taken = np.zeros(umap.coarse.shape, bool) if painted_mask is None else np.array(painted_mask, bool)
    if taken.shape != umap.coarse.shape:
        raise ValueError(f"painted_mask has shape {taken.shape}, the coarse map {umap.coarse.shape}")
    banned = {int(p) for p in painted} | {int(e) for e in exclude}
    near = np.zeros(count)
    for z in range(count):
        if np.take(taken, z, axis=a).any():
            near[max(0, z - reach):z + reach + 1] += 1
    w = np.ones(count) if weights is None else np.asarray(weights, np.float64)
    values = np.nan_to_num(umap.coarse.astype(np.float64), nan=0.0)
    best: dict[int, tuple[float, tuple[int, int]]] = {}

    def best_in(z: int) -> tuple[float, tuple[int, int]]:
        sums = _window_sums(np.take(values, z, axis=a), win) / (win[0] * win[1])
        blocked = _window_sums(np.take(taken, z, axis=a), win) > 0
        sums[blocked] = -np.inf
        i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)
        return float(sums[i, j]), (int(i), int(j))

    for z in range(count):
        if z not in banned:
            best[z] = best_in(z)
    out: list[Suggestion] = []
    while len(out) < n:
        live = {z: v for z, v in best.items() if np.isfinite(v[0])}
        if not live:
            break
        z = max(live, key=lambda k: (live[k][0] * w[k] * decay ** near[k], -k))
        score, start = live[z]
        box = _box(umap, z, start, plane_axes, win)
        out.append(Suggestion(len(out) + 1, a, z, float(umap.slice_scores[z]), box, score))
        index: list[Any] = [slice(None)] * 3
        index[a] = z
        for d, s, wd in zip(plane_axes, start, win):
            index[d] = slice(s, s + wd)
        taken[tuple(index)] = True
        near[max(0, z - reach):z + reach + 1] += 1
        best[z] = best_in(z)
    return out


def random_regions(
    umap_or_shape: UncertaintyMap | Sequence[int],
    n: int,
    size: Sequence[int] = (128, 128),
    *,
    rng: np.random.Generator,
    candidates: Sequence[int],
    painted_boxes: Sequence[tuple] = (),
) -> list[tuple]:
    """``n`` random ``size`` windows (boxes) in the ``candidates`` z-slices, not overlapping each
    other or ``painted_boxes`` (the random baseline at equal painted voxels)."""
    shape = umap_or_shape.shape if isinstance(umap_or_shape, UncertaintyMap) else tuple(umap_or_shape)
    h, w = (min(s, n_) for s, n_ in zip(size, shape[1:]))
    boxes: list[tuple] = []
    for _ in range(200 * n):
        if len(boxes) >= n:
            break
        z = int(rng.choice(list(candidates)))
        y, x = int(rng.integers(0, shape[1] - h + 1)), int(rng.integers(0, shape[2] - w + 1))
        box = ((z, z + 1), (y, y + h), (x, x + w))
        if not any(_overlap(box, b) for b in list(painted_boxes) + boxes):
            boxes.append(box)
    return boxes


def _overlap(a: tuple, b: tuple) -> bool:
    return all(lo1 < hi2 and lo2 < hi1 for (lo1, hi1), (lo2, hi2) in zip(a, b))


def region_boxes_mask(shape: Sequence[int], boxes: Sequence[tuple]) -> np.ndarray:
    """A boolean volume of ``shape``, True inside the ``boxes``."""
    out = np.zeros(tuple(shape), bool)
    for box in boxes:
        out[tuple(slice(lo, hi) for lo, hi in box)] = True
    return out
