"""Live fine-tuning: train while the user paints; the slice in view is re-predicted every few seconds.

:func:`live_fine_tune` runs the shared trainer (:func:`napari_emseg.pretrain.trainer.train`, the
one ``fine_tune`` uses) without an end of its own and, between its steps:

* re-reads the painted labels every ``reread_every`` steps (or ``reread_s`` seconds,
  :class:`~.live_feed.LiveFeed`): a new stroke or slice teaches from the next step, an erased
  one no longer does; while nothing usable is painted, training waits (it is paused, not ended);
* every ``refresh_s`` seconds, and as soon as the view moves, predicts a window of the slice in
  view (``view``: a :class:`~.live_feed.ViewSource` or a callable) and its neighbours where
  cheap, and post-processes it into instance labels with the latest calibrated thresholds
  (a quick calibration on the painted slices every ``calibrate_every_s`` seconds once the
  labels changed); the preview rides on the step's :class:`~napari_emseg.progress.Progress`;
* scores the model on fixed patches of all painted voxels every ``validate_every`` steps and
  keeps the best weights since the labels last changed.

It stops on Cancel (the front end's Stop), Ctrl-C, ``config.steps`` or ``config.time_limit_min``,
then calibrates fully (``calibrate_on_stop``) and writes the checkpoint atomically, its card
holding the loop's history: each change of the labels (when, at which step, which slices were
added, edited or erased), each calibration and the preview settings.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._lock import locks_output
from .._signals import deferred_sigterm
from ..data.normalize import intensity_range
from ..device import select_device
from ..models.registry import AUTO, default_encoder
from ..progress import Cancelled, Job, Progress, relay_each
from .annotations import AnnotationError, find_annotations
from .job import FineTuneConfig, FineTuneResult, MaskedObjective
from .layout import detect_layout
from .live_feed import LiveConfig, LiveFeed, ViewSource, predict_window, read_view
from .model_setup import freeze_and_group, prepare_model
from .recipe import (
    batch_size,
    encoder_name,
    patch_shape,
    permute_planes,
    target_kind,
    target_kwargs,
)
from .working_grid import resample_crop, voxel_plan

__all__ = ["LiveConfig", "ViewSource", "LiveResult", "live_fine_tune"]

logger = logging.getLogger(__name__)


@dataclass
class LiveResult(FineTuneResult):
    """:class:`~.job.FineTuneResult` plus the loop's ``live_history`` and preview figures."""

    live_history: list[dict[str, Any]] = field(default_factory=list)
    previews: int = 0
    preview_side: int = 0
    refresh_s: float = 0.0


@locks_output("out")
def live_fine_tune(
    encoder: Any,
    image: Any,
    labels: Any,
    config: FineTuneConfig = FineTuneConfig(),
    live: LiveConfig = LiveConfig(),
    *,
    view: Any = None,
    out: Any = None,
    voxel_size: tuple[float, float, float] | None = None,
    source: str = "",
) -> Job[LiveResult]:
    """Fine-tune ``encoder`` continuously on ``labels`` as they are painted (a generator job).

    Parameters
    ----------
    encoder, image, config, out, voxel_size, source
        As for :func:`~.job.fine_tune`; ``config.steps`` / ``time_limit_min`` end the loop (no
        default: it runs until cancelled); its holdout is not used (every stroke teaches).
        Without ``batch_size``, the CPU trains half the recipe's batch (shorter steps).
        Neurons train in-plane boundaries (``target="auto"``), as painting may add any slice.
    labels
        The array being painted (napari ``Labels.data``, read again and again) or a callable
        returning the current one.
    live
        Re-reading, preview, calibration and best-model settings (:class:`LiveConfig`).
    view
        The slice in view: a :class:`ViewSource`, a callable returning ``z`` or
        ``(z, (y, x))``, or ``None`` (the middle slice).

    Yields
    ------
    Progress
        ``stage="live"`` per training step (``metrics``: loss, ``val_loss`` when scored);
        ``preview`` (when refreshed) is a dict ``{"z", "z0", "offset", "maps" (C, k, h, w),
        "labels" (k, h, w) or None, "channel_names", "step", "version", "steps_on_version",
        "side", "refresh_s", "cost_s"}``; ``stage="waiting"`` while nothing usable is painted;
        ``stage="calibrate"`` while thresholds are tuned.
    """
    from .._outputs import check_output_space, guard_foreign
    from ..pretrain.trainer import TrainConfig, train

    t0 = time.perf_counter()
    cfg = config.replace(holdout=False)
    if out is not None:
        guard_foreign(out, option="out")
    get_labels = labels if callable(labels) else (lambda: labels)
    shape = tuple(image.shape)
    while True:  # nothing trains before something usable is painted
        try:
            ann = find_annotations(np.asarray(get_labels()), shape, mode=cfg.mode,
                                   background_label=cfg.background_label, axis=cfg.axis)
            break
        except AnnotationError as err:
            yield Progress(0, None, stage="waiting", message=f"waiting for paint: {err}")
            time.sleep(live.poll_s)
    kind = "boundaries" if cfg.task == "neurons" and cfg.target == "auto" else target_kind(cfg, ann)
    plan = voxel_plan(encoder, voxel_size, cfg, ann)
    train_vs = (plan.target_voxel_size if plan.unit == "nm" else None) or voxel_size
    layout = detect_layout(image, train_vs, cfg.dims, task=cfg.task)
    if isinstance(encoder, str) and encoder == AUTO:
        encoder = default_encoder(layout.dims, cfg.task)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model, report = prepare_model(encoder, cfg, kind, ann, train_vs, dims=layout.dims)
    if out is not None:
        check_output_space(out, 1.25 * 4 * sum(p.numel() for p in model.state_dict().values()) + 2**20,
                           what="the checkpoint")
    patch = patch_shape(cfg, model, ann, layout)
    lo, hi = intensity_range(image, model.info.norm)
    permute = permute_planes(cfg, train_vs, layout, patch, zoom=plan.zoom if plan.unit != "nm" else None)
    batch = batch_size(cfg, model)
    if cfg.batch_size is None and select_device(cfg.device).type == "cpu":
        batch = max(1, batch // 2)  # shorter steps: a stroke reaches the model sooner
    resample = (lambda crop, a: resample_crop(crop, a, plan, cfg.voxel_match.antialias)) if plan.resample else None
    feed = LiveFeed(image, get_labels, cfg, kind=kind, patch=patch, lo=lo, hi=hi, model=model,
                    target_kwargs=target_kwargs(kind, model), batch_size=batch, permute=permute,
                    resample=resample, t0=t0)
    objective = MaskedObjective(model, kind)
    tcfg = TrainConfig(
        optimizer="adamw", lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay, schedule="constant",
        warmup_steps=0 if report and report.get("continued") else cfg.warmup_steps,
        max_steps=cfg.steps or 10**12, time_limit_min=cfg.time_limit_min, grad_clip=1.0,
        precision=cfg.precision, device=cfg.device, seed=cfg.seed, checkpoint_every=10**12, log_every=10,
        preview_every=0, validate_every=0, tensorboard=False,
    )
    job = train(objective, feed.batches, tcfg, None, param_groups=freeze_and_group(model, cfg, report is not None),
                meta={"kind": f"live-{kind}"}, stage="live")
    loop = _Loop(feed, objective, image, view, live, cfg, lo, hi, plan)
    history = loop.history
    first = feed.read(0)
    if first is not None:
        history.append(first)
    if feed.current is None:  # the first reading was usable but building its patches was not
        yield from loop.wait()
    result = yield from loop.run(job)
    if loop.best_state is not None and loop.best_version == (feed.current.version if feed.current else -1):
        objective.load_state_dict(loop.best_state)
    model = objective.model.cpu().eval()
    if train_vs is not None:
        model.info = model.info.replace(voxel_size=tuple(train_vs))
    ann = feed.current.ann if feed.current is not None else ann
    card = {
        "method": f"fine-tuned live ({kind}) from {getattr(encoder, 'name', None) or encoder_name(encoder)}",
        "data": source or "user data",
        "annotated": {"axis": ann.axis, "slices": sorted(feed.current.counts) if feed.current else [],
                      "voxels": ann.n_annotated, "mode": cfg.mode, "held_out": []},
        "steps": result.step, "stopped": result.stopped, "final_loss": result.metrics.get("loss"),
        "best_val_loss": loop.best_score if loop.best_state is not None else None,
        "wall_time_s": round(time.perf_counter() - t0, 1), "transplant": report,
        "layout": {**layout.to_dict(), "arch": model.config.arch, "spatial_dims": model.info.spatial_dims},
        "intensity_range": [lo, hi], "voxel_size": list(train_vs) if train_vs is not None else None,
        "voxel_size_match": plan.to_dict(),
        "live": {"history": history, "config": loop.live.to_dict(), "previews": loop.previews,
                 "best_step": loop.best_step, "kept": "best" if loop.best_state is not None else "last"},
    }
    if live.calibrate_on_stop and feed.current is not None:
        calibration = yield from loop.calibrate(model, quick=False, final=True)
        card["postprocess"] = calibration.to_card()
    target_path = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="emseg-")) / "live.safetensors"
    from ..models.checkpoint import save_checkpoint

    with deferred_sigterm():
        path = save_checkpoint(target_path, model, job=cfg, card=card)
    yield Progress(result.step, None, stage="done", message=f"saved {path}", metrics=dict(result.metrics))
    return LiveResult(Path(path), model, result.stopped, result.step, dict(result.metrics),
                      loop.best_score if loop.best_state is not None else None, result.history,
                      time.perf_counter() - t0, history, loop.previews, loop.side, loop.interval)


class _Loop:
    """What happens between the trainer's steps (see the module docstring)."""

    def __init__(self, feed: LiveFeed, objective, image, view, live: LiveConfig, cfg, lo, hi, plan) -> None:
        self.feed, self.objective, self.model = feed, objective, objective.model
        self.image, self.view, self.cfg = image, view, cfg
        self.live = live.resolved(select_device(cfg.device))
        self.lo, self.hi, self.plan = lo, hi, plan
        self.side, self.interval = int(self.live.preview_side), float(self.live.refresh_s)
        self.history: list[dict[str, Any]] = []
        self.previews, self.last_preview, self.last_view, self.preview_version = 0, -np.inf, None, 0
        self.version_step = 0  # the step at which the current labels started teaching
        self.best_state, self.best_score, self.best_version, self.best_step = None, np.inf, -1, None
        self.post = None  # the post-processing config of the previews (calibrated when possible)
        self.calibrated_version, self.calibrated_at = 0, time.perf_counter() - self.live.calibrate_every_s / 2
        self.stop = False

    def run(self, job):
        """Relay the trainer's events with the live work between steps; Stop reaches the trainer."""
        return relay_each(job, self.between)

    def between(self, event: Progress):
        """The live work after one trainer event (a Stop raised here reaches the trainer)."""
        if self.stop:
            raise Cancelled("stopped while calibrating")
        step = event.step
        metrics = dict(event.metrics)
        snap = self.feed.current
        if self.live.validate_every and step % self.live.validate_every == 0 and snap and snap.validate:
            metrics.update(self.score(snap, step))
        if (self.live.calibrate_every_s and self.live.labels and snap is not None
                and self.calibrated_version != snap.version
                and time.perf_counter() - self.calibrated_at >= self.live.calibrate_every_s):
            cal = yield from self.calibrate(self.model, quick=True)
            if cal.stopped == "cancelled":
                self.stop = True
        moved = read_view(self.view, self.image.shape[0]) != self.last_view
        changed = False
        if moved and self.last_view is not None:  # a new slice in view may just have been painted: read first
            changed = (yield from self.reread(step))
        seen = self.feed.current.version if self.feed.current else 0
        fresh = seen != self.preview_version and step > self.version_step  # a step trained on new labels
        due = (moved and not changed) or fresh or time.perf_counter() - self.last_preview >= self.interval
        preview = self.preview(step) if due else None
        endless = self.cfg.steps is None and self.cfg.time_limit_min is None
        yield replace(event, total=self.cfg.steps, metrics=metrics, preview=preview,
                      eta_s=None if endless else event.eta_s)
        # the labels are read last, just before the next step draws its batch
        if step % self.live.reread_every == 0 or time.perf_counter() - self.feed.read_at >= self.live.reread_s:
            yield from self.reread(step)

    def reread(self, step: int):
        """Read the labels; record a change; wait while nothing usable is painted. Returns: changed."""
        change = self.feed.read(step)
        if change is not None:
            self.history.append(change)
            self.version_step = step
            logger.info("live: labels changed at step %d: %s", step, change)
        if self.feed.current is None:
            yield from self.wait(step)
        return change is not None

    def wait(self, step: int = 0):
        """Training pauses (the trainer is not advanced) until something usable is painted."""
        while self.feed.current is None:
            yield Progress(step, None, stage="waiting", message=f"training paused: {self.feed.problem}")
            time.sleep(self.live.poll_s)
            change = self.feed.read(step)
            if change is not None:
                self.history.append(change)
                self.version_step = step

    def score(self, snap, step: int) -> dict[str, float]:
        with torch.no_grad():
            self.model.eval()
            value = snap.validate(self.objective, step)["val_loss"]
            self.model.train()
        if snap.version != self.best_version:
            self.best_score, self.best_version = np.inf, snap.version
        if value < self.best_score:
            self.best_score, self.best_step = value, step
            self.best_state = {f"model.{k}": v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        return {"val_loss": float(value)}

    def preview(self, step: int) -> dict[str, Any]:
        from ..calibration import resolve_postprocess
        from ..postprocess import extract_instances

        t = time.perf_counter()
        z, center = self.last_view = read_view(self.view, self.image.shape[0])
        out = self.predict(z, center)
        out["labels"] = None
        if self.live.labels:
            info = self.model.info
            if self.post is None:
                self.post = resolve_postprocess(getattr(self.model, "card", None), info.target)[0]
            try:
                out["labels"] = extract_instances(out["maps"], info.target, self.post, offsets=info.offsets or None)
            except Exception as err:  # a preview never stops training
                logger.debug("live labels failed: %s", err)
        cost = time.perf_counter() - t
        self.previews += 1
        self.last_preview = time.perf_counter()
        if self.interval > 0 and cost > self.live.preview_budget * self.interval:  # CPU-bound: smaller, then rarer
            if self.side > self.live.min_side:
                self.side = max(self.live.min_side, int(self.side * 0.75))
            else:
                self.interval = cost / self.live.preview_budget
        snap = self.feed.current
        self.preview_version = snap.version if snap else 0
        out.update(step=step, version=snap.version if snap else 0, steps_on_version=step - self.version_step,
                   side=self.side, refresh_s=round(self.interval, 2), cost_s=round(cost, 3))
        return out

    def predict(self, z: int, center):
        """The window's maps on the image's grid (predicted on the model's, when the crop was resampled)."""
        plan, k = self.plan, int(self.live.neighbours)
        if not plan.resample or abs(plan.zoom[0] - 1) > 1e-6:  # z resampled: previewed as is
            return predict_window(self.model, self.image, z, self.lo, self.hi, side=self.side, center=center,
                                  neighbours=k)
        from .._resampled import Resampled
        from ..resample import resample

        f = np.asarray(plan.zoom, float)  # image voxel / model voxel
        grid = Resampled(self.image, plan.image_voxel_size, plan.target_voxel_size)
        c = None if center is None else (center[0] * f[1], center[1] * f[2])
        out = predict_window(self.model, grid, z, self.lo, self.hi, side=int(self.side * f[1:].max()), center=c,
                             neighbours=k)
        y0, x0 = out["offset"]
        oy, ox = int(round(y0 / f[1])), int(round(x0 / f[2]))
        shape = [out["maps"].shape[1]] + [max(1, int(n / g)) for n, g in zip(out["maps"].shape[2:], f[1:])]
        back = resample(out["maps"], plan.target_voxel_size, plan.image_voxel_size, shape=shape)
        return {**out, "maps": back.astype(np.float32), "offset": (oy, ox)}

    def calibrate(self, model, *, quick: bool, final: bool = False):
        """Tune the thresholds on the painted slices (quick: a small window, 3 slices, 2 folds)."""
        from .calibrate import calibrate_job

        snap = self.feed.current
        kwargs = dict(max_voxels=self.live.calibrate_voxels, max_slices=2, max_folds=2) if quick else {}
        cal = yield from calibrate_job(
            model, self.image, self.feed.labels(), mode=self.cfg.mode, background_label=self.cfg.background_label,
            axis=self.cfg.axis, intensity=(self.lo, self.hi), voxel_size=self.plan.image_voxel_size,
            voxel_match=self.cfg.voxel_match, device=None if final else self.cfg.device, **kwargs)
        self.calibrated_at, self.calibrated_version = time.perf_counter(), snap.version if snap else 0
        if cal.config is not None:
            self.post = cal.config
        if not final:
            model.train()
        self.history.append({"t": round(time.perf_counter() - self.feed.t0, 2), "event": "calibrated",
                             "final": final, "version": self.calibrated_version, "choice": cal.choice,
                             "skipped": cal.skipped, "elapsed_s": round(cal.elapsed_s, 2)})
        return cal

