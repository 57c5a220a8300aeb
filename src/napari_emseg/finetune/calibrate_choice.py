"""How calibration scores and chooses a post-processing setting: near-best, closest to the
defaults, kept only when it beats the defaults on held-out painted slices (see :mod:`.calibrate`)."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..config import Config
from ..progress import Progress


def choose_setting(
    fold_scores: Any,
    distance: Any,
    objects: Any,
    *,
    lower_is_better: bool,
    tolerance: float = 0.01,
    base: int = 0,
) -> dict[str, Any]:
    """The calibration's choice among scored settings (row ``base`` holds the defaults).

    ``fold_scores`` is ``(settings, folds)``; ``distance`` how far each setting lies from the
    defaults; ``objects`` what each finds on the painted slices. The rule: pick, on a set of
    folds, the setting closest to the defaults among those within ``tolerance`` of the best mean
    score. With two or more folds, pick on all folds but one and score on the held-out one, for
    each fold: the tuned setting (picked on all folds) is used only if these held-out scores
    beat the defaults' on the same folds. Last, a setting that finds no object on the painted
    slices is never kept when another finds some.

    Returns ``{"index", "choice", "cv_score", "cv_default_score"}``.
    """
    s = np.asarray(fold_scores, float)
    if s.ndim == 1:
        s = s[:, None]
    d = np.asarray(distance, float)
    obj = np.asarray(objects)
    sign = 1.0 if lower_is_better else -1.0
    n_set, n_fold = s.shape

    def mean(cols: Sequence[int], rows: np.ndarray | None = None) -> np.ndarray:
        sub = s[:, list(cols)]
        with warnings.catch_warnings():  # all-NaN rows (no scorable slice) stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            m = np.nanmean(sub, axis=1)
        if rows is not None:
            m = np.where(rows, m, np.nan)
        return m

    def pick(cols: Sequence[int], rows: np.ndarray | None = None) -> int:
        m = sign * mean(cols, rows)
        if np.isnan(m).all():
            return base
        best = np.nanmin(m)
        near = np.flatnonzero(~np.isnan(m) & (m <= best + tolerance))
        return int(min(near, key=lambda i: (round(float(d[i]), 9), float(m[i]), int(i))))

    chosen = pick(range(n_fold))
    cv = cv_default = None
    label = "calibrated"
    if n_fold >= 2:
        held = [s[pick([j for j in range(n_fold) if j != k]), k] for k in range(n_fold)]
        held_default = [s[base, k] for k in range(n_fold)]
        cv, cv_default = _nanmean(held), _nanmean(held_default)
        better = cv is not None and (cv_default is None or sign * cv < sign * cv_default - 1e-12)
        if chosen != base and not better:
            chosen, label = base, "defaults"
    if chosen == base:
        label = "defaults"
    if obj[chosen] == 0 and (obj > 0).any():  # never a setting that finds nothing when another finds objects
        chosen = pick(range(n_fold), rows=obj > 0)
        label = "calibrated (the defaults find no objects)" if obj[base] == 0 else "calibrated"
    return {"index": int(chosen), "choice": label, "cv_score": cv, "cv_default_score": cv_default}


def objects_touch(reference: np.ndarray) -> bool:
    """Whether two different painted objects share a face in any painted slice ``(n, h, w)``."""
    for a in (1, 2):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[a], hi[a] = slice(None, -1), slice(1, None)
        p, q = reference[tuple(lo)], reference[tuple(hi)]
        if np.any((p > 0) & (q > 0) & (p != q)):
            return True
    return False


def grid_fields(table: list[dict[str, Any]]) -> list[str]:
    return [k for k in table[0] if k not in ("score", "folds", "objects")]


def _folds(n_slices: int, width: int, max_folds: int):
    """Held-out folds as functions of a ``(n, h, w)`` stack: groups of painted slices, or the two
    halves of a single painted slice."""
    if n_slices >= 2:
        groups = [g for g in np.array_split(np.arange(n_slices), min(n_slices, max_folds)) if len(g)]
        return [lambda st, g=g: st[g] for g in groups]
    half = max(1, width // 2)
    return [lambda st: st[:, :, :half], lambda st: st[:, :, half:]]


def _span(values: Sequence[Any]) -> float:
    nums = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return float(max(nums) - min(nums)) if len(nums) == len(values) and len(nums) > 1 and max(nums) > min(nums) else 0.0


def _distance(value: Any, default: Any, span: float) -> float:
    if span > 0:
        return abs(float(value) - float(default)) / span
    return 0.0 if value == default else 1.0


def _get(cfg: Config, path: str) -> Any:
    from ..tuning import _get as get

    return get(cfg, path)


def _with_values(cfg: Config, values: Mapping[str, Any]) -> Any:
    from ..tuning import _with

    return _with(cfg, values)


def _nanmean(values: Sequence[float]) -> float | None:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return float(np.mean(vals)) if vals else None


def _round(v: Any) -> Any:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _score_grid(predictions, target, info, voxel_size, task, base, grid, ax, slices, reference, metric, folds, done):
    """Every grid setting scored on the painted slices: pooled and per fold, with object counts."""
    from ..painted import score_stack
    from ..tuning import CHEAP_FIELDS, _plan, _Source, distinct_builds

    expensive, cheap = _plan(base, grid, CHEAP_FIELDS[task])
    builds = distinct_builds(base, expensive)
    source = _Source(predictions, target, tuple(info.offsets), voxel_size, task)
    fields = [*expensive, *cheap]
    spans = {k: _span(v) for k, v in {**expensive, **cheap}.items()}
    table: list[dict[str, Any]] = []
    fold_scores: list[list[float]] = []
    objects: list[int] = []
    dist: list[float] = []
    for step, values in enumerate(builds, start=1):  # the base values first: row 0 is the defaults
        cfg = _with_values(base, dict(zip(expensive, values)))
        scorer = source.build(cfg, ax, slices)
        for cvals in itertools.product(*cheap.values()):
            row = {**dict(zip(expensive, values)), **dict(zip(cheap, cvals))}
            stack = scorer(_with_values(cfg, dict(zip(cheap, cvals))))
            per = [score_stack(f(stack), f(reference), metric) for f in folds]
            n_obj = int(sum(np.count_nonzero(np.unique(s)) for s in stack))
            table.append({**row, "score": score_stack(stack, reference, metric), "folds": per, "objects": n_obj})
            fold_scores.append(per)
            objects.append(n_obj)
            dist.append(sum(_distance(row[k], _get(base, k), spans[k]) for k in fields))
        del scorer
        yield Progress(done + step, done + len(builds), "calibrate",
                       f"post-processing build {step}/{len(builds)} on the painted slices")
    return table, np.asarray(fold_scores, float), np.asarray(objects), np.asarray(dist), len(builds)
