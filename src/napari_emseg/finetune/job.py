"""``fine_tune()``: a pretrained encoder plus a few painted slices become a segmentation model.

The job runs on the shared trainer (:func:`napari_emseg.pretrain.trainer.train`) with a masked
loss: only painted voxels teach. It yields :class:`~napari_emseg.progress.Progress` (loss,
validation metric, ETA, and every ``preview_every`` steps the current prediction of one slice)
and returns a :class:`FineTuneResult` whose ``checkpoint`` rebuilds the model with
:func:`napari_emseg.models.load_model`. Cancelling (or Ctrl-C) between steps still saves and
returns the best model so far.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .._finite import check_finite
from .._lock import locks_output
from .._signals import deferred_sigterm
from ..config import Config, ConfigError
from ..data.augment import AugmentConfig
from ..data.normalize import intensity_range, normalize
from ..models.registry import AUTO, default_encoder
from ..progress import Job, Progress
from ..resample import VoxelMatchConfig
from .annotations import Mode, find_annotations
from .dataset import AnnotatedPatches
from .holdout import holdout_validator, split_holdout
from .layout import Dims, detect_layout
from .losses import task_loss
from .model_setup import freeze_and_group, prepare_model
from .preview import with_previews
from .recipe import (
    STEPS_2D,
    STEPS_3D,
    UNTIL_TIME_LIMIT,
    batch_size,
    crop_context,
    encoder_name,
    patch_shape,
    permute_planes,
    target_kind,
    target_kwargs,
)
from .working_grid import resample_crop, voxel_plan, working_plan

logger = logging.getLogger(__name__)

Task = Literal["neurons", "mitochondria", "semantic"]

#: the augmentations fine-tuning uses by default (EM-specific, mild)
FINETUNE_AUGMENT = AugmentConfig(
    flip=0.5, rotate90=0.5, elastic=0.2, misalign=0.1, brightness=0.5, contrast=0.5, gamma=0.3,
    blur=0.2, noise=0.3, missing=0.05,
)


@dataclass(frozen=True)
class FineTuneConfig(Config):
    """Everything a fine-tune needs besides the encoder, the image and the labels.

    Attributes
    ----------
    task
        ``"neurons"`` (affinities or in-plane boundaries, agglomerated by waterz),
        ``"mitochondria"`` (binary/contour/distance, seeded watershed) or ``"semantic"``.
    target
        ``"auto"`` picks boundaries for neurons painted on isolated slices (no z-affinity can
        be learnt from them) and affinities when neighbouring slices or 3D labels were painted;
        ``bcd`` for mitochondria; ``semantic`` for semantic.
    mode, background_label, axis
        How to read the labels (see :mod:`.annotations`).
    patch, batch_size
        Training patch ``(z, y, x)`` and batch; ``None``: 8 patches of 192 x 192 for a 2D
        network, 2 of the model's tile for a 3D one (rounded to the input multiple).
    steps, time_limit_min
        Stop after this many steps or minutes, whichever comes first. ``steps=None``: with a
        time limit, train until it (a faster machine takes more steps); without one, 600 steps
        for a 2D network, 300 for a 3D one (about 10 minutes each on a slow 2-core CPU, one on
        a GPU).
    lr, weight_decay, schedule, warmup_steps, encoder_lr_scale, freeze
        Adam(W) learning rate, weight decay, ``"constant"`` rate or ``"cosine"`` decay (which
        then ends at a low rate whichever of ``steps`` and ``time_limit_min`` stops the run),
        linear warm-up steps; the pretrained encoder's rate is ``lr * encoder_lr_scale``;
        ``freeze`` keeps ``"encoder"`` or (RETINA) only the transferred ``"transformer"``
        layers fixed. The defaults are what trained best per step on real EM from three
        painted sections (docs/benchmarks.md, "What each recipe choice is worth at equal
        steps"): constant 1e-3, no decay, no warm-up.
    transfer
        What of a pretrained encoder is copied in: ``"auto"`` (a RETINA encoder: its
        transformer only, frozen, as the paper does; any other: the whole encoder),
        ``"transformer"`` (the transformer only, trained) or ``"encoder"`` (all of it, trained).
    dims
        ``"auto"`` chooses a 2D network for separate images and serial sections and a 3D one
        for near-isotropic volumes (:func:`~.layout.detect_layout`; recorded in the card under
        ``layout``); ``"2d"``/``"3d"`` force it. A residual U-Net encoder follows the choice
        (its kernels deflated to 2D or inflated to 3D); other encoders keep their own.
    inflate
        How a 2D encoder's kernels become 3D for a 3D network: ``"centre"`` (the middle z tap,
        exact on z-constant volumes) or ``"average"`` (spread over z, I3D); docs/pretraining.md.
    validate_every, patience, holdout, holdout_min_slices
        With at least ``holdout_min_slices`` painted slices and ``holdout``, the last one is held
        out and scored every ``validate_every`` steps; training stops after ``patience`` scores
        without improvement and the best model is kept. With fewer, every painted slice teaches
        (holding one of three out costs a third of the labels) and the schedule runs to its end.
    preview_every, preview_z
        Every ``preview_every`` steps, predict slice ``preview_z`` (of the whole image) and put
        it in ``Progress.preview``.
    voxel_match
        When the encoder (or checkpoint) records a voxel size that differs from the image's
        beyond ``tolerance``, the painted crop is resampled to it (image linear, labels nearest;
        never along the axis of painted slices); see ``docs/voxel-size.md``.
    object_px
        Where the voxel sizes cannot decide (the encoder's or the image's unknown), a 2D network
        learning mitochondria trains on a grid where the painted objects are about this many
        pixels across: coarser in-plane by their median diameter over ``object_px`` when that
        exceeds the tolerance (:mod:`.working_grid`); recorded in the checkpoint
        (``voxel_size``, ``input_zoom``) so ``segment`` sees new images at the same scale.
        ``None`` trains on the image's grid.
    ema
        Keep an exponential moving average of the weights with this decay (about the last
        ``1 / (1 - ema)`` steps, :mod:`napari_emseg.pretrain.ema`) and save it rather than the
        last step's weights; validation (with a held-out slice) scores it too. ``None``: the last
        (or best validated) weights. Measured in docs/finetuning.md.
    calibrate
        After training, tune the post-processing thresholds on the painted slices (guarded
        against overfitting them) and store them in the checkpoint, where ``segment`` finds
        them (:mod:`.calibrate`; skipped when training was cancelled).
    """

    task: Task = "mitochondria"
    target: Literal["auto", "affinities", "boundaries", "bcd", "semantic"] = "auto"
    mode: Mode = "dense"
    background_label: int = 1
    axis: int | None = None
    n_classes: int | None = None
    patch: tuple[int, int, int] | None = None
    batch_size: int | None = None
    steps: int | None = None
    time_limit_min: float | None = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 0
    encoder_lr_scale: float = 0.1
    freeze: Literal["none", "encoder", "transformer"] = "none"
    transfer: Literal["auto", "transformer", "encoder"] = "auto"
    augment: AugmentConfig = FINETUNE_AUGMENT
    permute_planes: Literal["auto", "on", "off"] = "auto"
    validate_every: int = 25
    patience: int = 6
    holdout: bool = True
    holdout_min_slices: int = 4
    dims: Dims = "auto"
    inflate: Literal["centre", "average"] = "centre"
    preview_every: int = 0
    preview_z: int | None = None
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    voxel_match: VoxelMatchConfig = VoxelMatchConfig()
    object_px: float | None = 25.0
    ema: float | None = 0.99
    calibrate: bool = True


@dataclass
class FineTuneResult:
    """What :func:`fine_tune` returns."""

    checkpoint: Path
    model: nn.Module
    stopped: str
    steps: int
    metrics: dict[str, float] = field(default_factory=dict)
    best_metric: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    elapsed_s: float = 0.0


class MaskedObjective(nn.Module):
    """The trainer's objective: the model's logits against targets on annotated voxels only."""

    def __init__(self, model: nn.Module, kind: str) -> None:
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = self.model(batch["image"]).float()
        return task_loss(self.kind, logits, batch["target"], batch["mask"])


@locks_output("out")
def fine_tune(
    encoder: str | os.PathLike | nn.Module,
    image: Any,
    labels: Any,
    config: FineTuneConfig = FineTuneConfig(),
    *,
    out: str | os.PathLike | None = None,
    voxel_size: tuple[float, float, float] | None = None,
    source: str = "",
    live: Any = None,
    view: Any = None,
) -> Job[FineTuneResult]:
    """Fine-tune ``encoder`` on the painted ``labels`` of ``image``.

    Parameters
    ----------
    encoder
        ``"auto"`` (the best encoder for the data's layout, see ``dims``), a catalogue name
        (``napari-emseg encoders``), an encoder or fine-tuned checkpoint path, or a model
        already built (``nn.Module`` with ``.info``).
    image
        Array-like ``(z, y, x)`` (numpy, dask, zarr); only the annotated region plus context is read.
    labels
        Array-like of the same shape, 0 = unlabelled (napari Labels data).
    config
        See :class:`FineTuneConfig`.
    out
        Checkpoint path to write (default: a file in the temporary directory). A file there that
        napari-emseg did not write is refused at once; the folder's writability and free space
        are checked before training; the run holds ``OUT.lock`` (:mod:`napari_emseg._lock`).
    voxel_size
        ``(z, y, x)`` nm of ``image`` (``None``: unknown); the checkpoint records the voxel size
        it was trained at (the image's, or the encoder's where the crop was resampled).
    source
        A description of the data (path) for the model card.
    live, view
        A :class:`~.live_feed.LiveConfig`: train continuously while ``labels`` are painted,
        previewing the slice ``view`` shows, until cancelled (:func:`.live.live_fine_tune`).

    Returns
    -------
    FineTuneResult
        With ``checkpoint`` (written atomically) and the trained ``model``.
    """
    from .._outputs import check_output_space, guard_foreign
    from ..models.checkpoint import save_checkpoint
    from ..pretrain.trainer import TrainConfig, train

    if live is not None:  # train while painting: finetune/live.py, on the same trainer
        from .live import live_fine_tune

        return (yield from live_fine_tune(encoder, image, labels, config, live, view=view, out=out,
                                          voxel_size=voxel_size, source=source))
    t0 = time.perf_counter()
    cfg = config
    if cfg.steps is not None and cfg.steps < 1:
        raise ConfigError(f"steps {cfg.steps}: fine-tuning needs at least one step (e.g. --steps 300)")
    if out is not None:
        guard_foreign(out, option="out")
    yield Progress(0, cfg.steps or 0, stage="prepare", message="reading annotations")
    ann = find_annotations(labels, tuple(image.shape), mode=cfg.mode,
                           background_label=cfg.background_label, axis=cfg.axis)
    kind = target_kind(cfg, ann)
    image_voxel_size = voxel_size
    plan = voxel_plan(encoder, voxel_size, cfg, ann)
    layout = detect_layout(image, plan.target_voxel_size or voxel_size, cfg.dims, task=cfg.task)
    logger.info("data layout: %s", layout.reason)
    plan = working_plan(plan, ann, kind=kind, dims=layout.dims, tolerance=cfg.voxel_match.tolerance,
                        object_px=cfg.object_px if cfg.voxel_match.enabled else None, image_voxel_size=voxel_size)
    if plan.unit == "nm":
        voxel_size = plan.target_voxel_size or voxel_size  # the grid the model is trained on
    if isinstance(encoder, str) and encoder == AUTO:
        encoder = default_encoder(layout.dims, cfg.task)
        logger.info("encoder: %s", encoder)
    with torch.random.fork_rng(devices=[]):  # a new head's initial weights follow cfg.seed (reproducible runs)
        torch.manual_seed(cfg.seed)
        model, report = prepare_model(encoder, cfg, kind, ann, voxel_size, dims=layout.dims)
    if out is not None:  # before training, not after: the checkpoint is about 4 bytes a weight
        check_output_space(out, 1.25 * 4 * sum(p.numel() for p in model.state_dict().values()) + 2**20,
                           what="the checkpoint")
    pretrained = report is not None
    continued = bool(report and report.get("continued"))
    patch = patch_shape(cfg, model, ann, layout)
    permute = permute_planes(cfg, voxel_size, layout, patch, zoom=plan.zoom if plan.unit != "nm" else None)
    cross = permute and model.info.spatial_dims == 2  # planes cut across the painted slices need z-context
    context = crop_context(patch, cross=cross, box=ann.box, shape=tuple(image.shape))
    ann = find_annotations(labels, tuple(image.shape), mode=cfg.mode,
                           background_label=cfg.background_label, axis=cfg.axis, context=context)
    lo, hi = intensity_range(image, model.info.norm)
    crop = image[ann.box]
    crop = np.asarray(crop.compute() if hasattr(crop, "compute") else crop)
    check_finite(crop, offset=[s.start or 0 for s in ann.box], hint="clean the painted region of the image first")
    painted = ann
    if plan.resample:
        crop, ann = resample_crop(crop, ann, plan, cfg.voxel_match.antialias)
    img = normalize(crop, lo, hi, model.info.norm.invert)
    train_ann, val_ann = split_holdout(ann, cfg.holdout and len(ann.slices) >= cfg.holdout_min_slices)
    kwargs = target_kwargs(kind, model)
    validate = holdout_validator(img, val_ann, kind, patch, model, kwargs) if val_ann is not None else None
    if validate is None:  # nothing to score: every painted slice trains
        train_ann, val_ann = ann, None
    batch = batch_size(cfg, model)
    steps = cfg.steps or (UNTIL_TIME_LIMIT if cfg.time_limit_min else STEPS_2D if model.info.spatial_dims == 2 else STEPS_3D)
    data = AnnotatedPatches(img, train_ann, kind, patch, batch_size=batch, seed=cfg.seed,
                            augmentation=cfg.augment, spatial_dims=model.info.spatial_dims,
                            permute_planes=permute, target_kwargs=kwargs)
    objective = MaskedObjective(model, kind)
    groups = freeze_and_group(model, cfg, pretrained)
    tcfg = TrainConfig(
        optimizer="adamw", lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay, schedule=cfg.schedule,
        # a model that continues training (already fine-tuned) needs no second warm-up
        warmup_steps=0 if continued else cfg.warmup_steps, max_steps=steps, time_limit_min=cfg.time_limit_min,
        grad_clip=1.0,
        precision=cfg.precision, device=cfg.device, seed=cfg.seed, checkpoint_every=10**9,
        log_every=max(1, min(25, steps // 10)), preview_every=10**9,
        validate_every=cfg.validate_every if validate else 0,
        early_stop_metric="val_loss" if validate else None, patience=cfg.patience if validate else None,
        tensorboard=False, ema_decay=cfg.ema,
    )
    job = train(objective, data, tcfg, None, param_groups=groups, validate=validate,
                meta={"kind": f"finetune-{kind}"}, stage="fine-tune")
    result = yield from with_previews(job, model, image, lo, hi, cfg)
    # what the checkpoint holds: the best validated or the final weights, each averaged with cfg.ema
    weights = {"step": result.step, "moving_average": cfg.ema}
    if result.best_state is not None:
        objective.load_state_dict(result.best_state)
        weights["step"] = result.best_step
    elif result.ema_state is not None:
        objective.load_state_dict(result.ema_state)
    model = objective.model.cpu().eval()
    if voxel_size is not None:
        model.info = model.info.replace(voxel_size=tuple(voxel_size))
    if plan.resample and plan.model_voxel_size is None:  # a working grid: new images get the same zoom
        model.info = model.info.replace(input_zoom=tuple(plan.zoom))
    elapsed = time.perf_counter() - t0
    card = {
        "method": f"fine-tuned ({kind}) from {getattr(encoder, 'name', None) or encoder_name(encoder)}",
        "data": source or "user data",
        "annotated": {"axis": painted.axis, "slices": list(painted.slices), "voxels": painted.n_annotated,
                      "mode": cfg.mode, "held_out": list(val_ann.slices) if val_ann is not None else []},
        "steps": result.step, "stopped": result.stopped, "weights": weights,
        "final_loss": result.metrics.get("loss"), "best_val_loss": result.best_metric,
        "wall_time_s": round(elapsed, 1),
        "transplant": report,
        "layout": {**layout.to_dict(), "arch": model.config.arch, "spatial_dims": model.info.spatial_dims,
                   "permute_planes": permute, "cross_planes": data.cross is not None},
        "intensity_range": [lo, hi],
        "voxel_size": list(voxel_size) if voxel_size is not None else None,
        "voxel_size_match": plan.to_dict(),
    }
    if cfg.calibrate and result.stopped != "cancelled":  # thresholds tuned on the painted slices (.calibrate)
        from .calibrate import calibrate_job

        card["postprocess"] = (yield from calibrate_job(
            model, image, labels, mode=cfg.mode, background_label=cfg.background_label, axis=cfg.axis,
            intensity=(lo, hi), voxel_size=image_voxel_size, voxel_match=cfg.voxel_match, device=cfg.device,
        )).to_card()
    target_path = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="emseg-")) / "finetuned.safetensors"
    with deferred_sigterm():  # a SIGTERM now still lets the checkpoint be written
        path = save_checkpoint(target_path, model, job=cfg, card=card)
    # done is 100 %: a run to its time limit or a cancelled one stops short of ``steps``
    yield Progress(result.step, result.step, stage="done", message=f"saved {path}", metrics=dict(result.metrics))
    return FineTuneResult(Path(path), model, result.stopped, result.step, dict(result.metrics),
                          result.best_metric, result.history, elapsed)
