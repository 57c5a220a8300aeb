"""Tune post-processing against what was painted: thresholds that score best on the painted slices.

One prediction, many post-processing settings, each scored on the painted slices only:

* **neurons** (affinities or boundaries): for every fragment setting and merge function, the
  fragments and one waterz pass are built once (:func:`~napari_emseg.postprocess.agglomeration_job`);
  every waterz ``threshold`` and ``min_size`` is then a lookup table applied to the painted
  slices of the fragments (:meth:`~napari_emseg.postprocess.Agglomeration.segment_lut`), which
  takes milliseconds. Metric: adapted Rand error (or VOI), 2D per painted slice, averaged.
* **mitochondria** (BCD): one seeded watershed per seed and foreground setting; every ``min_size``
  is a lookup table on its sizes. Metric: AP (mean over IoU 0.50:0.95; or AP50, AP75, or the
  foreground IoU) of the 2D objects of the painted slices.

The settings not in the grid keep the values of ``base`` (the defaults), whose own score is
reported beside the best one; the base values are always tried, so on the painted slices the
tuned setting is never worse than the base.

>>> res = tune_postprocess(pred, "affinities", painted)        # doctest: +SKIP
>>> print(res.describe()); labels = extract_instances(pred, "affinities", res.config)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .config import Config, ConfigError
from .painted import painted_reference, score_stack, slice_score
from .progress import Cancelled, Job, Progress, drain

__all__ = [
    "TuneResult",
    "DEFAULT_GRIDS",
    "CHEAP_FIELDS",
    "tune_job",
    "tune_postprocess",
    "parse_grid",
    "painted_reference",
    "slice_score",
]

logger = logging.getLogger(__name__)

Metric = Literal["auto", "arand", "voi", "ap", "ap50", "ap75", "iou"]
_LOWER_IS_BETTER = {"arand", "voi"}
_NEURONS = ("affinities", "boundaries")

DEFAULT_GRIDS: dict[str, dict[str, tuple[Any, ...]]] = {
    "neurons": {
        "fragments.boundary_threshold": (0.3, 0.5, 0.7),
        "merge_function": ("mean", "quantile_50", "quantile_75"),
        "threshold": tuple(round(0.05 * i, 2) for i in range(1, 20)),
        "min_size": (0, 100, 400),
    },
    "mitochondria": {
        "seed_foreground": (0.5, 0.7, 0.9),
        "seed_distance": (0.1, 0.3, 0.5),  # a weak model's distance map is flat: no seed passes 0.5
        "foreground_threshold": (0.3, 0.5, 0.7, 0.85),
        "min_size": (0, 32, 128, 512),
        "split": (True, False),  # seeded watershed, or each connected piece one object
    },
}
"""The settings tried by default (dotted :class:`~napari_emseg.postprocess.NeuronConfig` /
:class:`~napari_emseg.postprocess.MitoConfig` fields -> values)."""

CHEAP_FIELDS: dict[str, frozenset[str]] = {
    "neurons": frozenset({"threshold", "min_size", "small"}),
    "mitochondria": frozenset({"min_size", "small"}),
}
"""Fields re-run without rebuilding fragments/agglomeration (neurons) or the watershed (mitochondria)."""


@dataclass
class TuneResult:
    """What :func:`tune_postprocess` returns.

    Attributes
    ----------
    config
        The best post-processing config (pass it to ``extract_instances`` or ``SegmentConfig``).
    score
        Its score on the painted slices (``metric``).
    metric
        ``"arand"``/``"voi"`` (lower is better) or ``"ap"``/``"ap50"``/``"ap75"``/``"iou"`` (higher).
    base, base_score
        The config tuning started from and its score.
    table
        One row per setting tried: the grid fields and ``"score"``.
    axis, slices
        Where the painted slices are (axis 0 = z).
    elapsed_s
        Wall time.
    stopped
        ``"done"``, or ``"cancelled"`` (the best of what was tried by then).
    """

    config: Config
    score: float
    metric: str
    base: Config
    base_score: float
    table: list[dict[str, Any]] = field(default_factory=list)
    axis: int = 0
    slices: tuple[int, ...] = ()
    elapsed_s: float = 0.0
    stopped: str = "done"

    @property
    def lower_is_better(self) -> bool:
        return self.metric in _LOWER_IS_BETTER

    def changes(self) -> dict[str, tuple[Any, Any]]:
        """``{field: (base value, tuned value)}`` for the fields tuning changed."""
        out = {}
        for path in self.base.field_paths():
            old, new = _get(self.base, path), _get(self.config, path)
            if old != new:
                out[path] = (old, new)
        return out

    def describe(self) -> str:
        """Two lines: the chosen values, their score and the untuned (base) score."""
        changed = ", ".join(f"{k}={_fmt(v[1])}" for k, v in self.changes().items()) or "the defaults"
        where = f"{len(self.slices)} painted slice(s) along {'zyx'[self.axis]} ({_short(self.slices)})"
        return (f"tuned on {where}: {len(self.table)} settings in {self.elapsed_s:.1f} s"
                f"{' (cancelled)' if self.stopped == 'cancelled' else ''}\n"
                f"chose {changed}: {self.metric} {self.score:.4f} (untuned: {self.base_score:.4f})")


def tune_job(
    predictions: Any,
    target: str,
    painted_labels: Any,
    *,
    offsets: Sequence[Sequence[int]] | None = None,
    voxel_size: Sequence[float] | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    mode: str = "dense",
    metric: Metric = "auto",
    base: Config | None = None,
    background_label: int = 1,
    axis: int | None = None,
) -> Job[TuneResult]:
    """:func:`tune_postprocess` as a generator of :class:`~napari_emseg.progress.Progress` (one
    event per fragment/watershed build); Cancel returns the best setting found so far."""
    from .postprocess.extract import default_config

    t0 = time.perf_counter()
    task = "neurons" if target in _NEURONS else "mitochondria" if target == "bcd" else None
    if task is None:
        raise ConfigError(f"tuning works on neuron (affinities, boundaries) and mitochondria (bcd) maps, not {target!r}")
    metric = ("arand" if task == "neurons" else "ap") if metric == "auto" else metric
    base = base if base is not None else default_config(target)
    shape = tuple(int(s) for s in predictions.shape[1:])
    ax, slices, ref = painted_reference(painted_labels, shape, task, mode=mode,
                                        background_label=background_label, axis=axis)
    plan = _plan(base, grid if grid is not None else DEFAULT_GRIDS[task], CHEAP_FIELDS[task])
    expensive, cheap = plan
    builds = distinct_builds(base, expensive)
    sign = 1.0 if metric in _LOWER_IS_BETTER else -1.0
    yield Progress(0, len(builds), "tune", f"{len(builds)} builds x {math.prod(len(v) for v in cheap.values())} "
                                           f"settings on {len(slices)} painted slices")
    source = _Source(predictions, target, offsets, voxel_size, task)
    base_row = {k: _get(base, k) for k in (*expensive, *cheap)}
    table: list[dict[str, Any]] = []
    best: tuple[float, Config] | None = None
    base_score = float("nan")
    stopped = "done"
    try:
        for step, values in enumerate(builds, start=1):  # base values first: the base is tried first
            cfg = _with(base, dict(zip(expensive, values)))
            scorer = source.build(cfg, ax, slices)
            for cvals in itertools.product(*cheap.values()):
                trial = _with(cfg, dict(zip(cheap, cvals)))
                score = score_stack(scorer(trial), ref, metric)
                row = {**dict(zip(expensive, values)), **dict(zip(cheap, cvals)), "score": score}
                table.append(row)
                if all(row[k] == base_row[k] for k in base_row):
                    base_score = score
                if not math.isnan(score) and (best is None or sign * score < sign * best[0] - 1e-12):
                    best = (score, trial)
            del scorer
            yield Progress(step, len(builds), "tune", f"best {metric} {best[0]:.4f}" if best else "",
                           metrics={metric: best[0]} if best else {})
    except (Cancelled, KeyboardInterrupt):
        stopped = "cancelled"
        if best is None:
            raise
    if best is None:
        raise ConfigError("no setting gave a score: are the painted slices empty?")
    return TuneResult(best[1], best[0], metric, base, base_score, table, ax, slices,
                      time.perf_counter() - t0, stopped)


def tune_postprocess(predictions: Any, target: str, painted_labels: Any, **options: Any) -> TuneResult:
    """Post-processing settings that score best on the painted slices, from one prediction:
    :func:`tune_job` run to the end (no progress shown); the options after ``painted_labels``
    are its keyword-only ones.

    Parameters
    ----------
    predictions
        ``(C, Z, Y, X)`` maps (numpy, zarr, dask; float or uint8 with scale), e.g.
        ``Segmentation.predictions``. Read once.
    target
        ``"affinities"``, ``"boundaries"`` or ``"bcd"`` (``ModelInfo.target``).
    painted_labels
        The painted Labels volume ``(Z, Y, X)`` (0 = unlabelled), as used for fine-tuning.
    offsets, voxel_size
        As for :func:`~napari_emseg.postprocess.extract_instances`.
    grid
        ``{dotted field: values}`` to try (default :data:`DEFAULT_GRIDS`); every combination
        is tried, fragment/watershed settings in the outer loop.
    mode, background_label, axis
        How the labels were painted (see :func:`painted_reference`).
    metric
        ``"auto"``: ``"arand"`` for neurons, ``"ap"`` for mitochondria.
    base
        The config whose other fields are kept (default: the target's defaults).
    """
    return drain(tune_job(predictions, target, painted_labels, **options), show=False)


class _Source:
    """The prediction, read once, and per build a scorer: config -> labels of the painted slices."""

    def __init__(self, predictions: Any, target: str, offsets: Any, voxel_size: Any, task: str) -> None:
        from .postprocess.neurons import affinities_for_waterz

        self.task, self.voxel_size = task, voxel_size
        if task == "neurons":
            self.data = affinities_for_waterz(predictions, target, offsets)
        else:
            self.data = predictions if isinstance(predictions, np.ndarray) else _read(predictions)

    def build(self, cfg: Any, axis: int, slices: tuple[int, ...]):
        from .postprocess.cleanup import apply_lut, label_sizes, region_adjacency, small_objects_lut

        if self.task == "neurons":
            from .postprocess.neurons import build_agglomeration

            agg = build_agglomeration(self.data, cfg, voxel_size=self.voxel_size)
            frags = _painted(agg.fragments, axis, slices)
            return lambda c: apply_lut(frags, agg.segment_lut(c.threshold, min_size=c.min_size, small=c.small)[0])
        from .postprocess.mitochondria import mitochondria_job

        raw = drain(mitochondria_job(self.data, cfg.replace(min_size=0)), show=False)  # consecutive ids
        sizes, stack, adjacency = label_sizes(raw), _painted(raw, axis, slices), []

        def scorer(c: Any) -> np.ndarray:
            if c.small == "merge" and not adjacency:
                adjacency.append(region_adjacency(raw))
            u, v, w = adjacency[0] if c.small == "merge" else (np.empty(0, np.int64),) * 3
            return apply_lut(stack, small_objects_lut(sizes, u, v, w, c.min_size, c.small))

        return scorer


def _read(arr: Any) -> np.ndarray:
    """A map as numpy in its stored type, or as float32 in [0, 1] when numpy would misread its scale."""
    from .postprocess.maps import MapError, map_scale

    scale = map_scale(arr)
    data = np.asarray(arr.compute() if hasattr(arr, "compute") else arr[...])
    try:
        same = map_scale(data) == scale
    except MapError:
        same = False
    return data if same else np.multiply(data, np.float32(1.0 / scale), dtype=np.float32)


def _painted(volume: np.ndarray, axis: int, slices: tuple[int, ...]) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(np.take(volume, list(slices), axis=axis), axis, 0))


def _plan(base: Config, grid: Mapping[str, Sequence[Any]], cheap_names: frozenset[str]):
    """Grid split into (expensive, cheap) ``{field: values}``, base values added, checked."""
    known = set(base.field_paths())
    expensive: dict[str, list[Any]] = {}
    cheap: dict[str, list[Any]] = {}
    for name, values in grid.items():
        key = name.replace("-", "_")
        if key not in known:
            raise ConfigError(f"cannot tune {name!r}: {type(base).__name__} has no such field; fields: {sorted(known)}")
        vals = list(values if isinstance(values, (list, tuple)) else [values])
        if not vals:
            raise ConfigError(f"tuning grid: no values for {name!r}")
        vals = [_get(base.override([f"{key}={v}"]), key) if isinstance(v, str) else v for v in vals]
        current = _get(base, key)
        vals = [current] + [v for v in vals if v != current]  # the base first: it wins ties
        for v in vals:
            _with(base, {key: v})  # type-checks each value now, not mid-search
        (cheap if key in cheap_names else expensive)[key] = vals
    return expensive, cheap


def distinct_builds(base: Config, expensive: Mapping[str, Sequence[Any]]) -> list[tuple[Any, ...]]:
    """The value tuples of the expensive fields, base first, without the ones that differ only in
    fields the setting does not use (``MitoConfig(split=False)`` ignores its seed thresholds)."""
    out, seen = [], set()
    for values in itertools.product(*expensive.values()):
        cfg = _with(base, dict(zip(expensive, values)))
        unused = set(cfg.unused_fields()) if hasattr(cfg, "unused_fields") else set()
        key = tuple(v for k, v in zip(expensive, values) if k not in unused)
        if key not in seen:
            seen.add(key)
            out.append(values)
    return out


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """``["threshold=0.1,0.2", "min_size=0,100"]`` (the CLI's ``--tune-grid``) as a grid."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        values = [v.strip() for v in raw.split(",") if v.strip()]
        if not sep or not key.strip() or not values:
            raise ConfigError(f"tuning grid {item!r}: expected FIELD=V1,V2,..., e.g. threshold=0.2,0.4,0.6")
        grid[key.strip()] = values
    return grid


def _get(cfg: Config, path: str) -> Any:
    node: Any = cfg
    for part in path.split("."):
        node = getattr(node, part)
    return node


def _with(cfg: Config, values: Mapping[str, Any]) -> Any:
    if not values:
        return cfg
    data = cfg.to_dict()
    for path, value in values.items():
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return type(cfg).from_dict(data)


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _short(slices: Sequence[int]) -> str:
    s = [str(i) for i in slices]
    return ", ".join(s if len(s) <= 8 else [*s[:6], "...", s[-1]])
