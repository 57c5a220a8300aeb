"""The one training loop of napari-emseg, shared by pretraining and fine-tuning.

Public API
----------
``TrainConfig``
    Frozen :class:`~napari_emseg.config.Config`: optimiser (``"adamw" | "adam" | "sgd"``,
    ``lr``, ``betas``, ``momentum``, ``weight_decay``), schedule (``"cosine" | "constant"``,
    linear warmup of ``warmup_steps`` steps, or ``warmup_fraction`` of ``max_steps`` when
    ``warmup_steps`` is ``None``, decaying to ``min_lr_ratio * lr``), ``max_steps``,
    ``time_limit_min``, ``grad_clip`` (max global L2 norm or ``None``), ``precision``
    (``"auto" | "bf16" | "fp16" | "fp32"``; autocast on CUDA only under ``"auto"``),
    ``device``, ``seed``, ``checkpoint_every`` / ``keep_last``, ``log_every``,
    ``preview_every``, ``validate_every``, ``early_stop_metric`` / ``early_stop_mode`` /
    ``patience``, ``tensorboard``, ``find_unused_parameters`` (DDP), ``ema_decay``
    (``None``, or keep an exponential moving average of the weights, :mod:`.ema`: validated in
    place of the raw weights, saved in checkpoints, returned as ``TrainResult.ema_state``).

``train(objective, batches, cfg, out_dir=None, *, resume=False, param_groups=None, validate=None, meta=None, stage="train") -> Job[TrainResult]``
    A generator job: ``yield``\\ s one :class:`~napari_emseg.progress.Progress` per step
    (``metrics`` = the step's metrics plus ``lr``) and returns a :class:`TrainResult`.

    * ``objective``: an ``nn.Module`` whose ``forward(batch) -> (loss, metrics)`` returns a
      scalar loss tensor and a dict of floats/0-d tensors. Optional method
      ``preview(batch) -> dict[str, np.ndarray]`` (2D images) is called every
      ``preview_every`` steps for TensorBoard and ``Progress.preview``.
    * ``batches``: an iterable of batches (dicts/tuples/tensors, moved to the device), or a
      callable ``batches(start_step) -> iterable``; the callable form lets ``resume`` continue
      the data stream exactly (``lambda s: make_loader(patch_batches.starting_at(s), workers)``).
    * ``out_dir``: where ``checkpoints/step_*.pt`` (every ``checkpoint_every`` steps and at
      exit, newest ``keep_last`` kept), ``best_state.pt`` and ``tensorboard/`` go;
      ``None`` keeps everything in memory.
    * ``resume``: continue from the newest checkpoint in ``out_dir/checkpoints`` (model,
      optimiser, scheduler, grad scaler, step, RNG states), exactly: 10 steps equal 5 steps
      plus a resumed 5. A checkpoint whose ``meta["kind"]`` differs from ``meta["kind"]``
      raises :class:`~napari_emseg.pretrain.state.CheckpointError`.
    * ``param_groups``: ``[{"params": [...], "lr": 1e-5, "weight_decay": ...}, ...]`` as for
      ``torch.optim``; a group without ``"lr"`` gets ``cfg.lr``; the schedule scales every
      group. Only listed parameters with ``requires_grad`` are trained (frozen parameters are
      skipped). Default: all trainable parameters, no weight decay on biases/norms/1-D tensors.
    * ``validate(model, step) -> dict[str, float]``: called on rank 0 in ``eval`` mode under
      ``torch.no_grad`` every ``validate_every`` steps and at the end. With
      ``early_stop_metric`` set, the best state (a CPU copy of ``state_dict``) is kept,
      written to ``out_dir/best_state.pt`` and returned; training stops after ``patience``
      validations without improvement.
    * ``meta``: JSON-able dict stored in every checkpoint (e.g. ``{"kind": "pretrain-mae3d",
      "job": job.to_dict()}``).

    Stopping: ``max_steps``, ``time_limit_min``, early stopping, or cancellation.
    :class:`~napari_emseg.progress.Cancelled` or ``KeyboardInterrupt`` at a ``yield`` (or a
    Ctrl-C outside the optimiser update) saves a checkpoint and returns the result with
    ``stopped="cancelled"``; a crash leaves the last good checkpoint as it was. Under
    :func:`napari_emseg._signals.sigterm_as_interrupt` (the CLI) SIGTERM is Ctrl-C, except that
    one arriving during the optimiser update or a checkpoint write waits for it to finish. A
    step cut short is saved as not taken (weights, optimiser and RNG as at its start), so a
    resumed run continues exactly. A non-finite
    loss raises :class:`TrainingError`.

    Distributed: launched by ``torchrun`` (``WORLD_SIZE > 1``) the objective is wrapped in
    ``DistributedDataParallel``; each rank must feed its own batches (per-rank seeding, e.g.
    ``PatchBatches(rank=...)``, or a ``DistributedSampler``); rank 0 alone logs, validates,
    previews and writes checkpoints (holding every rank's RNG state); stop decisions are
    agreed by all ranks each step.

``TrainResult``
    ``model`` (the unwrapped objective, last weights), ``step``, ``stopped``
    (``"max_steps" | "time_limit" | "early_stop" | "cancelled"``), ``metrics`` (mean over the
    last logging window), ``history`` (one row per ``log_every``), ``validations``,
    ``checkpoint`` (last training checkpoint path), ``best_state`` / ``best_step`` /
    ``best_metric`` (of the averaged weights with ``ema_decay``), ``ema_state`` (the averaged
    weights at the end, or ``None``), ``elapsed_s`` (including the time before a resume). ``metrics`` and the
    history rows are means over their logging window; ``lr`` is the rate of the first group.

Example (fine-tuning with a lower encoder learning rate and a validation hook)::

    groups = [{"params": model.encoder.parameters(), "lr": 1e-5},
              {"params": model.decoder.parameters()}]
    cfg = TrainConfig(optimizer="adamw", lr=1e-4, max_steps=2000, validate_every=100,
                      early_stop_metric="val_loss", patience=5)
    result = drain(train(objective, batches, cfg, out_dir, param_groups=groups, validate=val))
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .._signals import deferred_sigterm
from ..config import Config
from ..device import autocast_dtype, select_device
from ..progress import Cancelled, Job, Progress
from . import distributed as D
from .ema import WeightAverage
from .hooks import EarlyStopping, run_preview, run_validation
from .optim import TrainingError, build_optimizer, lr_factor
from .state import (
    CheckpointError,
    capture_rng,
    latest_checkpoint,
    read_meta,
    restore_rng,
    save_training_checkpoint,
)
from .tracking import Tracker

__all__ = ["TrainConfig", "TrainResult", "TrainingError", "train", "build_optimizer", "lr_factor"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig(Config):
    """Optimiser, schedule, stopping, precision, checkpoints and logging of one training run."""

    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int | None = None
    warmup_fraction: float = 0.0
    min_lr_ratio: float = 0.0
    max_steps: int = 1000
    time_limit_min: float | None = None
    grad_clip: float | None = None
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 1000
    keep_last: int = 3
    log_every: int = 50
    preview_every: int = 500
    validate_every: int = 0
    early_stop_metric: str | None = None
    early_stop_mode: Literal["min", "max"] = "min"
    patience: int | None = None
    tensorboard: bool = True
    find_unused_parameters: bool = False
    ema_decay: float | None = None

    @property
    def warmup(self) -> int:
        """Warmup steps in effect."""
        if self.warmup_steps is not None:
            return int(self.warmup_steps)
        return int(round(self.warmup_fraction * self.max_steps))


@dataclass
class TrainResult:
    """What :func:`train` returns (see the module docstring)."""

    model: nn.Module
    step: int
    stopped: str
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    validations: list[dict[str, float]] = field(default_factory=list)
    checkpoint: Path | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_step: int | None = None
    best_metric: float | None = None
    ema_state: dict[str, torch.Tensor] | None = None
    elapsed_s: float = 0.0


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seed the legacy global state too)
    torch.manual_seed(seed)


def train(
    objective: nn.Module,
    batches: Iterable[Any] | Callable[[int], Iterable[Any]],
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    param_groups: Sequence[Mapping[str, Any]] | None = None,
    validate: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
    meta: Mapping[str, Any] | None = None,
    stage: str = "train",
) -> Job[TrainResult]:
    """Train ``objective`` on ``batches``; see the module docstring for every argument."""
    device = select_device(cfg.device)
    dinfo = D.setup_distributed(device)
    if dinfo.enabled and device.type == "cuda":
        device = torch.device("cuda", dinfo.local_rank)
    main = dinfo.is_main
    out = Path(out_dir) if out_dir is not None else None
    ckpt_dir = out / "checkpoints" if out is not None else None
    meta = dict(meta or {})
    _seed_all(cfg.seed + dinfo.rank)
    objective.to(device)
    opt = build_optimizer(objective, cfg, param_groups)
    clock = {"t0": None, "before": 0.0}  # the run's clock, for a schedule cut by time_limit_min

    def time_fraction() -> float:
        if cfg.time_limit_min is None or clock["t0"] is None:
            return 0.0
        return (clock["before"] + time.perf_counter() - clock["t0"]) / (60 * cfg.time_limit_min)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg, time_fraction()))
    amp = autocast_dtype(device, cfg.precision)
    if device.type != "cuda" and cfg.precision == "auto":
        amp = None
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    step, elapsed_before, history, best = 0, 0.0, [], EarlyStopping(cfg.early_stop_metric, cfg.early_stop_mode, cfg.patience)
    ema = WeightAverage(objective, cfg.ema_decay) if cfg.ema_decay else None
    scored = ema.module if ema is not None else objective  # what validation sees
    ckpt_path: Path | None = None
    if resume:
        found = latest_checkpoint(ckpt_dir) if ckpt_dir is not None else None
        if found is None:
            logger.info("resume: no checkpoint in %s, starting from scratch", ckpt_dir)
        else:
            path, state = found
            old = read_meta(state)
            if "kind" in meta and old.get("kind") not in (None, meta["kind"]):
                raise CheckpointError(f"{path}: written by a {old.get('kind')!r} run, not {meta['kind']!r}; "
                                      "resume it with the same method or use another --out folder")
            objective.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            step, elapsed_before = int(state["step"]), float(state.get("elapsed_s", 0.0))
            history = list(state.get("history", []))
            best.load(state.get("best", {}))
            if ema is not None and "ema" in state:
                ema.load(state["ema"])
            rngs = state.get("rng", [])
            if dinfo.rank < len(rngs) and rngs[dinfo.rank] is not None:
                restore_rng(rngs[dinfo.rank])
            else:
                _seed_all(cfg.seed + dinfo.rank + 1000003 * step)
            ckpt_path = path
            logger.info("resumed from %s at step %d", path, step)
    model: nn.Module = objective
    if dinfo.enabled:
        model = nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.find_unused_parameters)
    tracker = Tracker(out / "tensorboard" if (out is not None and main and cfg.tensorboard) else None)
    with torch.random.fork_rng(devices=[]):  # a DataLoader draws its base seed: keep it off our stream
        data = iter(batches(step) if callable(batches) else batches)
    params = [p for g in opt.param_groups for p in g["params"]]
    t0, start_step = time.perf_counter(), step
    clock["t0"] = t0
    window: dict[str, list[float]] = {}
    last_saved, stopped, in_update = step, None, False
    validations: list[dict[str, float]] = []
    metrics: dict[str, float] = {}

    def save(gather: bool = True) -> Path | None:
        nonlocal last_saved, ckpt_path
        rng = D.gather_objects(capture_rng(), dinfo) if gather else [capture_rng()]
        if main and ckpt_dir is not None:
            with deferred_sigterm():  # a SIGTERM while writing: the file first, then stop
                ckpt_path = save_training_checkpoint(ckpt_dir, {
                "step": step, "meta": json.dumps(meta), "train_config": cfg.to_json(),
                    "model": objective.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "scaler": scaler.state_dict(), "rng": rng,
                    "elapsed_s": elapsed_before + time.perf_counter() - t0,
                    "history": history[-1000:], "best": best.dump(),
                    **({"ema": ema.dump()} if ema is not None else {})}, cfg.keep_last)
        last_saved = step
        return ckpt_path

    rng_at_step = None  # RNG state at the start of an unfinished step (restored if it is interrupted)
    try:
        while step < cfg.max_steps:
            rng_at_step = capture_rng() if ckpt_dir is not None else None
            batch = _to_device(next(data), device)
            model.train()
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss, step_metrics = model(batch)
            if not torch.isfinite(loss.detach()).all():
                raise TrainingError(f"the loss became {float(loss.detach())} at step {step + 1}; lower the "
                                    "learning rate (train.lr), set train.grad_clip, or check the data. The "
                                    "last checkpoint is kept.")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            with deferred_sigterm():  # SIGTERM (as Ctrl-C) waits for the update to finish
                in_update = True
                if cfg.grad_clip:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                lr = opt.param_groups[0]["lr"]  # the rate this step used
                scaler.step(opt)
                scaler.update()
                sched.step()
                if ema is not None:
                    ema.update(objective)
                step += 1
                in_update = False
                rng_at_step = None
            metrics = {"loss": float(loss.detach()), **{k: float(v) for k, v in step_metrics.items()}, "lr": lr}
            for k, v in metrics.items():
                window.setdefault(k, []).append(v)
            if main and cfg.log_every and step % cfg.log_every == 0:
                row = {"step": step, **{k: float(np.mean(v)) for k, v in window.items()}}
                history.append(row)
                tracker.scalars(row, step)
                logger.info("%s step %d %s", stage, step, " ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "step"))
                window = {}
            preview = None
            if main and cfg.preview_every and step % cfg.preview_every == 0 and hasattr(objective, "preview"):
                preview = run_preview(objective, batch, device)
                tracker.images(preview, step)
            want_stop = False
            if main and validate is not None and cfg.validate_every and step % cfg.validate_every == 0:
                want_stop = run_validation(scored, validate, step, best, validations, tracker, out)
                if validations and validations[-1].get("step") == step:  # report the score with the step
                    metrics.update({k: v for k, v in validations[-1].items() if k != "step"})
            elapsed = time.perf_counter() - t0
            timed_out = cfg.time_limit_min is not None and elapsed >= 60 * cfg.time_limit_min
            per_step = elapsed / max(1, step - start_step)
            eta, total = per_step * (cfg.max_steps - step), cfg.max_steps
            if cfg.time_limit_min is not None and eta > 60 * cfg.time_limit_min - elapsed:
                # the clock stops the run first: the bar's total is the steps it will reach
                eta = max(0.0, 60 * cfg.time_limit_min - elapsed)
                total = min(cfg.max_steps, step + int(round(eta / per_step)))
            try:
                yield Progress(step=step, total=total, stage=stage, metrics=metrics, eta_s=eta,
                               preview=preview, message="")
            except (Cancelled, KeyboardInterrupt):
                stopped = "cancelled"
            if D.any_flag(stopped is not None or timed_out or want_stop, dinfo, device):
                if stopped is None:
                    stopped = "early_stop" if want_stop else "time_limit" if timed_out else "cancelled"
                break
            if ckpt_dir is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                save()
        stopped = stopped or "max_steps"
        if main and validate is not None and (not validations or validations[-1]["step"] != step):
            run_validation(scored, validate, step, best, validations, tracker, out)
        if ckpt_dir is not None and step != last_saved:
            save()
    except KeyboardInterrupt:
        if in_update:
            raise
        logger.warning("interrupted at step %d: saving a checkpoint", step)
        stopped = "cancelled"
        if rng_at_step is not None:  # cut inside a step: save the RNG as it was when the step began
            restore_rng(rng_at_step)
        if ckpt_dir is not None and step != last_saved:
            save(gather=False)
    finally:
        tracker.close()
        D.teardown_distributed(dinfo)
    final = {k: float(np.mean(v)) for k, v in window.items()} or (
        {k: v for k, v in history[-1].items() if k != "step"} if history else metrics)
    return TrainResult(
        model=objective, step=step, stopped=stopped or "max_steps", metrics=final, history=history,
        validations=validations, checkpoint=ckpt_path, best_state=best.state, best_step=best.step,
        best_metric=best.value, ema_state=ema.state() if ema is not None else None, elapsed_s=elapsed_before + time.perf_counter() - t0)
