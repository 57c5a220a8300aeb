"""Calibrated by default: the post-processing thresholds tuned on the painted slices after a fine-tune.

A model fine-tuned for minutes on a few slices gives maps that are often squeezed towards 0.5;
the default thresholds assume a confident model and can then find nothing at all (the demo once
printed ``objects=0`` with the defaults where tuned thresholds reached IoU 0.58). So at the end
of :func:`~napari_emseg.finetune.job.fine_tune` (``FineTuneConfig.calibrate``, on by default)
:func:`calibrate_job`:

1. **predicts the painted slices only**, each with the context the model needs: the slice itself
   for a 2D model, a tile's depth for a 3D model (so the slice lies in a whole tile, as in a
   full segmentation), and at least ``context`` neighbours on each side for the 3D
   post-processing. In-plane, a window of at most ``max_side`` voxels around the painted
   objects (on the CPU smaller, so that at most ``max_voxels`` are predicted); at most
   ``max_slices`` slices. This uses the same inference as ``segment``
   (:func:`~napari_emseg.inference.matched.predict_matched`, with the fine-tune's intensity
   range), so the maps are those ``segment`` makes there. A 2D model that predicts section by
   section (inference mode ``"auto"`` resolves to ``"slices"``: not near-isotropic data) gets
   mitochondria extracted **per section** and linked to the next section's one to one
   (``MitoConfig.mode="linked"``, stored with the rest): in 3D, two separate pieces of one
   section that both touch an object in the next section become one object (measured in
   docs/tuning.md). The neighbours are still predicted (``context``), so the size filter is
   scored as ``segment`` applies it, on profiles joined through the sections: scored on
   isolated sections, where a mitochondrion's small end profile is a true object, a small
   filter looked harmless and kept one-section specks everywhere else (docs/tuning.md);
2. **scores a small grid** of post-processing settings (:data:`CALIBRATION_GRIDS`) against the
   painted labels with the machinery of :mod:`napari_emseg.tuning` (one fragment/watershed
   build per expensive setting, lookup tables for the cheap ones), once per painted slice;
3. **chooses what generalises**, not what fits (see below) and returns a :class:`Calibration`,
   stored in the checkpoint card as ``card["postprocess"]`` (:mod:`napari_emseg.calibration`).

Guards against overfitting the painted slices (the model was trained on them, and tuning on
two slices alone has been seen to pick settings that fail elsewhere, docs/tuning.md):

* **a reduced grid** of the settings that matter most and are robust (neurons: fragment
  boundary threshold, waterz threshold in steps of 0.1, minimum size; mitochondria: seed
  foreground, seed distance, foreground threshold, minimum size); no merge-function or
  min-seed-size search;
* **near-best, closest to the defaults**: among the settings whose score is within
  ``tolerance`` of the best, the one nearest the defaults (grid steps, normalised) wins, so a
  setting is only moved when that buys more than noise;
* **leave one painted slice out**: with two or more painted slices, the rule above picks a
  setting on all slices but one and scores it on the held-out slice, for every slice (up to
  ``max_folds`` groups). The tuned setting is used only when this held-out score beats the
  defaults' held-out score; otherwise the defaults are kept. A single painted slice is split
  into two halves for the same test;
* **never zero objects by default**: when the kept setting finds no object on the painted
  slices but some setting does, the best-scoring setting that finds objects is used instead;
* **seeds only where the labels need them** (mitochondria): when no two painted objects share
  a face (:func:`~.calibrate_choice.objects_touch`), there is nothing for seeds to split, so only ``split=False``
  (each connected piece one object) is searched and kept. Scored on the slices the model was
  trained on, seeds look better than they generalise (docs/benchmarks.md, "Splitting
  mitochondria").

Cost: one prediction of the painted slabs plus one post-processing build per expensive grid
point on them (27 for mitochondria, 3 without seeds, 3 for neurons); on the CPU the in-plane
window is bounded by the predicted voxels and by the painted area every setting is scored on
(``max_voxels / 5``); measured figures are in docs/tuning.md.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..config import Config
from ..progress import Cancelled, Job, Progress, drain, relay
from .calibrate_choice import (
    _fmt,
    _folds,
    _get,
    _round,
    _score_grid,
    _with_values,
    choose_setting,
    grid_fields,
    objects_touch,
)
from .calibrate_slabs import (
    _centre,
    _default_inference,
    _device_of,
    _plan_slabs,
    _prediction_depth,
    _separator,
    _window,
)

__all__ = ["CALIBRATION_GRIDS", "Calibration", "calibrate_job", "calibrate_postprocess", "calibrate_checkpoint",
           "choose_setting", "objects_touch"]

logger = logging.getLogger(__name__)

CALIBRATION_GRIDS: dict[str, dict[str, tuple[Any, ...]]] = {
    "neurons": {
        "fragments.boundary_threshold": (0.3, 0.5, 0.7),
        "threshold": tuple(round(0.1 * i, 1) for i in range(1, 10)),
        "min_size": (0, 100, 400),
    },
    "mitochondria": {
        "seed_foreground": (0.5, 0.7, 0.9),
        "seed_distance": (0.1, 0.3, 0.5),
        "foreground_threshold": (0.5, 0.7, 0.85),
        "min_size": (0, 32, 128),
        "split": (True, False),  # seeded watershed, or each connected piece one object
    },
}
"""The reduced grids calibration searches (the defaults' values are always added)."""


@dataclass
class Calibration:
    """What :func:`calibrate_job` returns (``skipped`` set and ``config`` ``None`` when it did not run).

    Attributes
    ----------
    config
        The post-processing config to use with this model (the defaults when they were kept).
    target, metric
        The model's target; ``"arand"`` (neurons) or ``"ap"`` (mitochondria) unless asked otherwise.
    choice
        ``"calibrated"``, ``"defaults"`` (tuned settings did not beat them on held-out slices)
        or ``"calibrated (the defaults find no objects)"``.
    score, default_score
        The chosen and the default settings' scores on all calibrated painted slices.
    cv_score, cv_default_score
        Held-out (leave-one-slice-out) scores of the selection rule and of the defaults
        (``None`` with a single fold).
    objects, default_objects
        2D objects the chosen / default settings find on the painted slices.
    axis, slices, window
        Where it was calibrated: painted axis, slice indices, in-plane window shape.
    folds, settings, elapsed_s, stopped
        Number of held-out folds, settings scored, wall time, ``"done"``.
    table
        One row per setting: grid fields, ``score`` (pooled), ``folds`` (per fold), ``objects``.
    """

    config: Config | None
    target: str
    metric: str = ""
    choice: str = ""
    score: float = math.nan
    default_score: float = math.nan
    cv_score: float | None = None
    cv_default_score: float | None = None
    objects: int = 0
    default_objects: int = 0
    axis: int = 0
    slices: tuple[int, ...] = ()
    window: tuple[int, int] | None = None
    folds: int = 0
    settings: int = 0
    elapsed_s: float = 0.0
    stopped: str = "done"
    skipped: str = ""
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    table: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_card(self) -> dict[str, Any]:
        """The checkpoint card entry (``card["postprocess"]``; see :mod:`napari_emseg.calibration`)."""
        from ..calibration import CALIBRATED

        if self.config is None:
            return {"target": self.target, "skipped": self.skipped or "not calibrated"}
        return {
            "target": self.target, "config": self.config.to_dict(), "source": CALIBRATED,
            "choice": self.choice, "metric": self.metric,
            "score": _round(self.score), "default_score": _round(self.default_score),
            "cv_score": _round(self.cv_score), "cv_default_score": _round(self.cv_default_score),
            "objects": int(self.objects), "default_objects": int(self.default_objects),
            "changed": {k: [v[0], v[1]] for k, v in self.changes.items()},
            "axis": int(self.axis), "slices": [int(s) for s in self.slices],
            "window": list(self.window) if self.window else None,
            "folds": int(self.folds), "settings": int(self.settings), "elapsed_s": round(self.elapsed_s, 2),
        }

    def describe(self) -> str:
        """Two lines for logs and the CLI."""
        if self.config is None:
            return f"post-processing not calibrated: {self.skipped}"
        changed = ", ".join(f"{k}={_fmt(v[1])}" for k, v in self.changes.items()) or "the defaults"
        cv = (f"; held out: {self.metric} {self.cv_score:.3f} (defaults {self.cv_default_score:.3f})"
              if self.cv_score is not None and self.cv_default_score is not None else "")
        return (f"calibrated post-processing on {len(self.slices)} painted slice(s) along {'zyx'[self.axis]} "
                f"({self.settings} settings, {self.elapsed_s:.1f} s): {self.choice}, {changed}\n"
                f"{self.metric} {self.score:.3f} (defaults {self.default_score:.3f}){cv}; "
                f"objects {self.objects} (defaults {self.default_objects})")


def calibrate_job(
    model: Any,
    image: Any,
    labels: Any,
    *,
    mode: str = "dense",
    background_label: int = 1,
    axis: int | None = None,
    intensity: tuple[float, float] | None = None,
    voxel_size: Sequence[float] | None = None,
    voxel_match: Any = None,
    inference: Any = None,
    device: str | None = None,
    grid: Mapping[str, Sequence[Any]] | None = None,
    metric: str = "auto",
    tolerance: float = 0.01,
    context: int = 2,
    max_side: int = 1024,
    max_voxels: int | None = 3_000_000,
    max_slices: int = 8,
    max_folds: int = 5,
) -> Job[Calibration]:
    """Tune the post-processing of ``model`` on the painted slices of ``labels`` (a generator job).

    Parameters
    ----------
    model
        A segmentation model with ``.info`` (target ``affinities``, ``boundaries`` or ``bcd``;
        other targets return a skipped :class:`Calibration`). Left on the CPU in eval mode.
    image, labels
        The whole volume and the painted labels (same shape), as given to ``fine_tune``.
    mode, background_label, axis
        How the labels were painted (see :mod:`napari_emseg.finetune.annotations`).
    intensity
        ``(lo, hi)`` of the whole volume (``fine_tune`` passes its own): the slabs are then
        normalised as a segmentation of the whole volume would be.
    voxel_size, voxel_match, inference, device
        The image's voxel size, the voxel-size matching, the
        :class:`~napari_emseg.inference.InferenceConfig` (default: ``segment``'s defaults) and
        the device to predict on (default: the config's).
    grid, metric, tolerance
        Settings to try (default :data:`CALIBRATION_GRIDS`), what to maximise (``"auto"``: ARAND
        for neurons, AP for mitochondria) and how close to the best a setting must score to
        count as tied (then the one closest to the defaults wins).
    context, max_side, max_voxels, max_slices, max_folds
        Neighbour slices post-processed around each painted slice; the largest in-plane window; on the CPU, a
        smaller square window so that at most ``max_voxels`` voxels are predicted and at most a
        fifth of that is painted area scored by every setting (``None``: no limit; never under
        128); the most painted slices used (evenly spaced); the most held-out folds.
        ``grid`` given: searched as given (seeds too, whether or not painted objects touch).

    Yields ``stage="calibrate"`` progress. Cancel (or Ctrl-C) returns a skipped
    :class:`Calibration` (``stopped="cancelled"``); so does any error, which is logged: a
    calibration never costs the fine-tuned model.
    """
    t0 = time.perf_counter()
    target = model.info.target
    task = "neurons" if target in ("affinities", "boundaries") else "mitochondria" if target == "bcd" else None
    if task is None:
        return Calibration(None, target, skipped=f"no instance post-processing to calibrate for {target!r}")
    info0, device0 = model.info, _device_of(model)
    try:
        inference = inference if inference is not None else _default_inference()
        if device is not None:
            inference = inference.replace(device=device)
        return (yield from _calibrate(model, image, labels, task, target, mode, background_label, axis, intensity,
                                      voxel_size, voxel_match, inference, grid, metric, tolerance, context,
                                      max_side, max_voxels, max_slices, max_folds, t0))
    except (Cancelled, KeyboardInterrupt):
        logger.warning("calibration cancelled: the model is kept with the default post-processing")
        return Calibration(None, target, skipped="cancelled", stopped="cancelled", elapsed_s=time.perf_counter() - t0)
    except Exception as err:  # never lose a fine-tuned model to a calibration problem
        logger.warning("calibration skipped: %s", err, exc_info=logger.isEnabledFor(logging.DEBUG))
        return Calibration(None, target, skipped=f"{type(err).__name__}: {err}", elapsed_s=time.perf_counter() - t0)
    finally:
        model.info = info0
        model.to(device0).eval()


def calibrate_postprocess(model: Any, image: Any, labels: Any, **kwargs: Any) -> Calibration:
    """:func:`calibrate_job` run to completion (no progress bar)."""
    return drain(calibrate_job(model, image, labels, **kwargs), show=False)


def calibrate_checkpoint(path: Any, image: Any, labels: Any, *, out: Any = None, **kwargs: Any) -> Calibration:
    """Calibrate a saved checkpoint (e.g. one fine-tuned with ``calibrate=False`` or cancelled)
    on painted ``labels`` of ``image`` and write it again (to ``out``, default ``path``) with the
    calibration in its card. The fine-tune's intensity range is taken from the card."""
    from ..models.checkpoint import load_checkpoint, load_model, save_checkpoint

    ckpt = load_checkpoint(path)
    model = load_model(ckpt)
    rng = ckpt.card.get("intensity_range")
    kwargs.setdefault("intensity", tuple(rng) if rng else None)
    job = ckpt.job or {}
    for key in ("mode", "background_label", "axis"):
        if key in job and key not in kwargs:
            kwargs[key] = job[key]
    result = calibrate_postprocess(model, image, labels, **kwargs)
    save_checkpoint(out or path, model, job=ckpt.job, card={**ckpt.card, "postprocess": result.to_card()})
    return result


# ---------------------------------------------------------------------------------------------
def _calibrate(model, image, labels, task, target, mode, background_label, axis, intensity, voxel_size, voxel_match,
               inference, grid, metric, tolerance, context, max_side, max_voxels, max_slices, max_folds, t0):
    from ..data.normalize import NormConfig
    from ..device import select_device
    from ..inference.matched import predict_matched
    from ..inference.predict import resolve_mode
    from ..painted import painted_reference
    from ..postprocess.extract import default_config
    from ..resample import VoxelMatchConfig

    metric = ("arand" if task == "neurons" else "ap") if metric == "auto" else metric
    lab = np.asarray(labels.compute() if hasattr(labels, "compute") else labels)
    shape = tuple(int(s) for s in image.shape)
    ax, slices, ref = painted_reference(lab, shape, task, mode=mode, background_label=background_label, axis=axis)
    if len(slices) > max_slices:  # evenly spaced, for a bounded cost
        keep = np.unique(np.linspace(0, len(slices) - 1, max_slices).round().astype(int))
        slices, ref = tuple(slices[i] for i in keep), ref[keep]
    plane = [a for a in range(3) if a != ax]
    info = model.info
    base = default_config(target)
    if target == "bcd" and resolve_mode(info, inference, voxel_size=voxel_size, shape=shape) == "slices":
        # a 2D model predicting section by section: mitochondria are extracted per section and
        # linked one to one, so no object joins separate pieces of a section (module docstring)
        base = base.replace(mode="linked")
    need = _prediction_depth(info, ax)
    slabs = _plan_slabs(shape[ax], slices, need, context)
    cpu_voxels = max_voxels if select_device(inference.device).type == "cpu" else None  # a bounded cost on the CPU
    win = _window(shape, plane, slabs, len(slices), max_side, cpu_voxels)
    if intensity is not None:  # normalise as a segmentation of the whole volume does
        model.info = info.replace(norm=NormConfig(lo=float(intensity[0]), hi=float(intensity[1]),
                                                  invert=info.norm.invert))
    inference = inference.replace(resume=False)
    match = voxel_match if voxel_match is not None else VoxelMatchConfig()
    n_total = len(slabs) + 1
    yield Progress(0, n_total, "calibrate", f"predicting {len(slices)} painted slice(s) in {len(slabs)} slab(s)")

    pieces, refs, where = [], [], []
    pos = 0
    for k, (p0, p1, q0, q1, members) in enumerate(slabs):
        # in-plane window around this slab's painted objects
        centre = _centre(lab, ax, members, plane, shape)
        box = [slice(None)] * 3
        box[ax] = slice(p0, p1)
        starts = []
        for a, w, c in zip(plane, win, centre):
            s = int(np.clip(c - w // 2, 0, shape[a] - w))
            starts.append(s)
            box[a] = slice(s, s + w)
        block = image[tuple(box)]
        block = np.asarray(block.compute() if hasattr(block, "compute") else block)
        pred = yield from _as_calibrate(
            predict_matched(model, block, None, inference, match, voxel_size=voxel_size),
            f"predicting slab {k + 1}/{len(slabs)}", k, n_total)
        keep = [slice(None)] * 4
        keep[1 + ax] = slice(q0 - p0, q1 - p0)
        pred = np.asarray(pred[tuple(keep)], dtype=np.float32)
        if pieces:  # a separator slice: no object and no merge crosses from one slab to the next
            pieces.append(_separator(pred, ax, target))
            pos += 1
        pieces.append(pred)
        for s in members:
            i = slices.index(s)
            refs.append(ref[i][starts[0]:starts[0] + win[0], starts[1]:starts[1] + win[1]])
            where.append(pos + s - q0)
        pos += q1 - q0
    predictions = np.concatenate(pieces, axis=1 + ax)
    del pieces
    reference = np.stack(refs)
    if grid is None and task == "mitochondria" and not objects_touch(ref):  # all painted objects, not the window
        # no two painted objects touch: the labels say there is nothing to split, and the seeds,
        # scored on slices the model was trained on, look better there than they generalise
        base = base.replace(split=False)
    grid = dict(grid if grid is not None else CALIBRATION_GRIDS[task])
    if not getattr(base, "split", True):
        grid["split"] = (False,)
    table, fold_scores, objects, dist, n_builds = yield from _score_grid(
        predictions, target, info, voxel_size, task, base, grid, ax, tuple(where), reference, metric,
        _folds(len(where), reference.shape[-1], max_folds), len(slabs))
    sign = 1.0 if metric in ("arand", "voi") else -1.0
    choice = choose_setting(fold_scores, dist, objects, lower_is_better=sign > 0, tolerance=tolerance)
    row = table[choice["index"]]
    cfg = _with_values(base, {k: row[k] for k in grid_fields(table)})
    changes = {k: (v0, row[k]) for k in grid_fields(table) if (v0 := _get(base, k)) != row[k]}
    res = Calibration(
        cfg, target, metric=metric, choice=choice["choice"], score=float(row["score"]),
        default_score=float(table[0]["score"]), cv_score=choice["cv_score"],
        cv_default_score=choice["cv_default_score"], objects=int(row["objects"]),
        default_objects=int(table[0]["objects"]), axis=int(ax), slices=tuple(int(s) for s in slices),
        window=(int(win[0]), int(win[1])), folds=int(fold_scores.shape[1]), settings=len(table),
        elapsed_s=time.perf_counter() - t0, changes=changes, table=table)
    yield Progress(len(slabs) + n_builds, len(slabs) + n_builds, "calibrate", res.describe().replace("\n", "; "),
                   metrics={metric: res.score})
    logger.info("%s", res.describe())
    return res


def _as_calibrate(job: Job[Any], message: str, step: int, total: int) -> Job[Any]:
    """Forward an inner job's events as ``stage="calibrate"`` (Cancel is passed on to it)."""
    return (yield from relay(job, lambda event: replace(
        event, step=step, total=total, stage="calibrate",
        message=f"{message}: {event.stage} {event.step}/{event.total or '?'}", preview=None)))

