"""The inputs of live fine-tuning: what is painted now, which slice is in view, its preview.

:class:`LiveFeed` re-reads the painted labels (an array napari paints into, or a callable that
returns it) and, when they changed, rebuilds the training patches and the score the live loop
keeps its best model by; it records each change (slices added, edited, erased; voxels) for the
model card. :class:`ViewSource` is a thread-safe "slice in view" that a front end sets and the
loop reads. :func:`predict_window` predicts a window of that slice (and its neighbours).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import Config, ConfigError
from ..data.normalize import normalize
from .annotations import AnnotationError, Annotations, find_annotations
from .dataset import AnnotatedPatches
from .holdout import holdout_validator
from .recipe import crop_context

__all__ = ["LiveConfig", "ViewSource", "LiveFeed", "predict_window"]


@dataclass(frozen=True)
class LiveConfig(Config):
    """How live fine-tuning re-reads the labels, previews and calibrates.

    Attributes
    ----------
    reread_every, reread_s
        Re-read the painted labels every ``reread_every`` training steps, or sooner when
        ``reread_s`` seconds have passed (a new stroke teaches from the next step on).
    refresh_s
        Least seconds between two previews of the slice in view (``None``: 1 s on a GPU, 3 s
        on the CPU); ``0`` previews after every step. Moving to another slice previews it at
        the next step. Previews are held to ``preview_budget`` of the time: when one costs
        more, the window shrinks (down to ``min_side``), then the refresh slows.
    preview_side, min_side
        In-plane side of the previewed window, centred where the view is (``None``: 768 on a
        GPU, 384 on the CPU).
    neighbours
        Slices previewed on each side of the one in view (``None``: 1 on a GPU, 0 on the CPU).
    labels
        Also post-process the previewed slices into instance labels (with the latest
        calibrated thresholds, else the model's stored ones, else the defaults).
    calibrate_every_s, calibrate_voxels
        Re-tune the post-processing thresholds on the painted slices when the labels changed
        and this many seconds passed since the last tuning (``None``: 20 s on a GPU, 90 s on
        the CPU; ``0``: never while live), on at most ``calibrate_voxels`` voxels (a quick one).
    calibrate_on_stop
        Calibrate fully (as ``fine_tune`` does) when the loop stops, before saving.
    validate_every
        Score the model on fixed patches of all painted voxels every this many steps; the
        best-scoring weights since the labels last changed are the ones kept at stop.
    poll_s
        Seconds between reads while nothing usable is painted (training waits meanwhile).
    """

    reread_every: int = 5
    reread_s: float = 2.0
    refresh_s: float | None = None
    preview_side: int | None = None
    min_side: int = 128
    preview_budget: float = 0.2
    neighbours: int | None = None
    labels: bool = True
    calibrate_every_s: float | None = None
    calibrate_voxels: int = 200_000
    calibrate_on_stop: bool = True
    validate_every: int = 25
    poll_s: float = 0.5

    def __post_init__(self) -> None:
        if self.reread_every < 1:
            raise ConfigError(f"reread_every must be at least 1 step, got {self.reread_every}")
        if not 0 < self.preview_budget <= 1:
            raise ConfigError(f"preview_budget is a fraction of the time in (0, 1], got {self.preview_budget}")

    def resolved(self, device: torch.device) -> LiveConfig:
        """The ``None`` (automatic) fields filled in for ``device``: CPUs preview less, and smaller."""
        fast = device.type != "cpu"
        auto = {"refresh_s": 1.0 if fast else 3.0, "preview_side": 768 if fast else 384,
                "neighbours": 1 if fast else 0, "calibrate_every_s": 20.0 if fast else 90.0}
        return self.replace(**{k: v for k, v in auto.items() if getattr(self, k) is None})


class ViewSource:
    """Which slice is in view (and where its centre is): set by a front end, read by the loop.

    ``view.set(z)`` or ``view.set(z, (y, x))``; calling ``view()`` returns ``(z, (y, x) | None)``.
    Thread-safe: napari sets it on the UI thread while the loop reads it in a worker.
    """

    def __init__(self, z: int = 0, center: tuple[float, float] | None = None) -> None:
        self._lock = threading.Lock()
        self._value: tuple[int, tuple[float, float] | None] = (int(z), center)

    def set(self, z: int, center: tuple[float, float] | None = None) -> None:
        with self._lock:
            self._value = (int(z), None if center is None else (float(center[0]), float(center[1])))

    def __call__(self) -> tuple[int, tuple[float, float] | None]:
        with self._lock:
            return self._value


def read_view(view: Any, nz: int) -> tuple[int, tuple[float, float] | None]:
    """``(z, centre)`` from a :class:`ViewSource`, a callable returning ``z`` or ``(z, centre)``, or ``None``."""
    value = view() if callable(view) else view
    if value is None:
        return nz // 2, None
    z, center = (value if isinstance(value, tuple) else (value, None))
    return int(np.clip(int(z), 0, nz - 1)), center


@dataclass
class Snapshot:
    """One reading of the labels that could train: crop, annotations, patches, scorer."""

    version: int
    ann: Annotations
    data: AnnotatedPatches
    validate: Callable[[nn.Module, int], dict[str, float]] | None
    counts: dict[int, int]


class LiveFeed:
    """The painted labels as last read, as training patches (see the module docstring).

    ``read()`` returns ``None`` when nothing changed, else the change (a history row); after
    it, ``current`` is the newest usable snapshot or ``None`` (nothing usable is painted now:
    the reason is in ``problem``).
    """

    def __init__(self, image: Any, labels: Any, cfg: Any, *, kind: str, patch: tuple[int, int, int],
                 lo: float, hi: float, model: nn.Module, target_kwargs: dict[str, Any], batch_size: int,
                 permute: bool, resample: Callable[[np.ndarray, Annotations], tuple[np.ndarray, Annotations]]
                 | None = None, t0: float | None = None) -> None:
        self.image, self.cfg, self.kind, self.patch = image, cfg, kind, patch
        self.get_labels = labels if callable(labels) else (lambda: labels)
        self.lo, self.hi, self.model = lo, hi, model
        self.target_kwargs, self.batch_size, self.permute, self.resample = target_kwargs, batch_size, permute, resample
        self.context = crop_context(patch, cross=permute and model.info.spatial_dims == 2,
                                    shape=tuple(image.shape))
        self.current: Snapshot | None = None
        self.problem = ""
        self.version = 0
        self.t0 = time.perf_counter() if t0 is None else t0
        self._last: tuple[Any, ...] | None = None
        self.read_at = 0.0

    def labels(self) -> np.ndarray:
        """The painted labels now (not copied: a stroke half read while painted is read whole next time)."""
        lab = np.asarray(self.get_labels())
        return lab[None] if lab.ndim == 2 else lab

    def read(self, step: int = 0) -> dict[str, Any] | None:
        """Re-read the labels; rebuild the patches when they changed. Returns the change, if any."""
        self.read_at = time.perf_counter()
        lab = self.labels()
        cfg = self.cfg
        try:
            ann = find_annotations(lab, tuple(self.image.shape), mode=cfg.mode, background_label=cfg.background_label,
                                   axis=cfg.axis, context=self.context)
        except AnnotationError as err:
            return self._unusable(str(err), step, {})
        key = (ann.box, ann.axis)
        if self._last is not None and self._last[0] == key and np.array_equal(self._last[1], ann.labels) \
                and np.array_equal(self._last[2], ann.mask):
            return None
        self._last = (key, ann.labels, ann.mask)
        counts = slice_counts(ann)
        try:
            if cfg.task == "semantic" and int(ann.labels.max()) >= self.model.info.out_channels:
                raise AnnotationError(f"class {int(ann.labels.max())} is painted but the live model has "
                                      f"{self.model.info.out_channels} classes; set n_classes before going live")
            snap = self._snapshot(lab, ann, counts)
        except AnnotationError as err:
            return self._unusable(str(err), step, counts)
        old = self.current.counts if self.current is not None else {}
        self.current, self.problem = snap, ""
        return {"t": round(time.perf_counter() - self.t0, 2), "step": int(step), "event": "labels",
                "version": snap.version, "axis": ann.axis, "slices": sorted(counts),
                **diff_counts(old, counts), "voxels": ann.n_annotated}

    def _snapshot(self, lab: np.ndarray, ann: Annotations, counts: dict[int, int]) -> Snapshot:
        crop = self.image[ann.box]
        crop = np.asarray(crop.compute() if hasattr(crop, "compute") else crop)
        if self.resample is not None:
            crop, ann = self.resample(crop, ann)
        img = normalize(crop, self.lo, self.hi, self.model.info.norm.invert)
        info = self.model.info
        data = AnnotatedPatches(img, ann, self.kind, self.patch, batch_size=self.batch_size, seed=self.cfg.seed,
                                augmentation=self.cfg.augment, spatial_dims=info.spatial_dims,
                                permute_planes=self.permute, target_kwargs=self.target_kwargs)
        validate = holdout_validator(img, ann, self.kind, self.patch, self.model, self.target_kwargs)
        self.version += 1
        return Snapshot(self.version, ann, data, validate, counts)

    def _unusable(self, why: str, step: int, counts: dict[int, int]) -> dict[str, Any] | None:
        if self.current is None and self.problem == why:
            return None
        old = self.current.counts if self.current is not None else {}
        self.current, self.problem = None, why
        self._last = None
        self.version += 1
        return {"t": round(time.perf_counter() - self.t0, 2), "step": int(step), "event": "paused",
                "version": self.version, "reason": why, **diff_counts(old, counts)}

    def batches(self, start_step: int = 0):
        """The trainer's batches: each from the newest snapshot (the loop never pulls one without)."""
        step = start_step
        while True:
            snap = self.current
            if snap is None:
                raise RuntimeError("live fine-tuning asked for a batch while nothing usable is painted")
            yield snap.data.batch(step)
            step += 1


def slice_counts(ann: Annotations) -> dict[int, int]:
    """Labelled voxels per painted slice (along the painted axis; z for scribbles)."""
    axis = ann.axis if ann.axis is not None else 0
    others = tuple(a for a in range(3) if a != axis)
    painted = ann.mask.any(axis=others)
    labelled = (ann.mask & (ann.labels != 0)).sum(axis=others)
    start = ann.box[axis].start or 0
    return {int(start + i): int(n) for i, (p, n) in enumerate(zip(painted, labelled)) if p}


def diff_counts(old: dict[int, int], new: dict[int, int]) -> dict[str, list[int]]:
    """Slices added, erased and edited between two readings."""
    return {"added": sorted(set(new) - set(old)), "erased": sorted(set(old) - set(new)),
            "edited": sorted(i for i in set(new) & set(old) if new[i] != old[i])}


def predict_window(model: nn.Module, image: Any, z: int, lo: float, hi: float, *, side: int = 384,
                   center: tuple[float, float] | None = None, neighbours: int = 0) -> dict[str, Any]:
    """The model's maps on a ``side`` x ``side`` window of slices ``z - neighbours .. z + neighbours``.

    The window is centred on ``center`` (``(y, x)`` voxels; default the slice's centre) and kept
    inside the image. Returns ``{"z", "z0", "offset", "maps" (C, k, h, w) float32, "channel_names"}``.
    """
    from ..models.info import apply_activation

    info = model.info
    nz, ny, nx = image.shape
    mult = info.input_multiple
    hy, hx = (max(m, min(n, side) // m * m) for n, m in zip((ny, nx), mult[1:]))
    cy, cx = center if center is not None else (ny / 2, nx / 2)
    y0 = int(np.clip(round(cy - hy / 2), 0, max(0, ny - hy)))
    x0 = int(np.clip(round(cx - hx / 2), 0, max(0, nx - hx)))
    z0, z1 = max(0, z - neighbours), min(nz, z + neighbours + 1)
    dz = info.tile[0] if info.spatial_dims == 3 else 1
    b0 = int(np.clip((z0 + z1) // 2 - dz // 2, 0, max(0, nz - dz))) if info.spatial_dims == 3 else z0
    b1 = max(b0 + dz, z1) if info.spatial_dims == 3 else z1
    block = image[b0:b1, y0:y0 + hy, x0:x0 + hx]
    block = normalize(np.asarray(block.compute() if hasattr(block, "compute") else block), lo, hi, info.norm.invert)
    pad = [(0, max(0, hy - block.shape[1])), (0, max(0, hx - block.shape[2]))]
    if info.spatial_dims == 3 and block.shape[0] < dz:
        pad = [(0, dz - block.shape[0])] + pad
    else:
        pad = [(0, 0)] + pad
    block = np.pad(block, pad, mode="edge") if any(p[1] for p in pad) else block
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(block)).to(device)
        if info.spatial_dims == 2:
            maps = apply_activation(model(x[:, None]), info).transpose(0, 1)  # (C, k, h, w)
        else:
            maps = apply_activation(model(x[None, None]), info)[0][:, z0 - b0:z1 - b0]
    model.train(was_training)
    maps = maps[:, :, :min(hy, ny), :min(hx, nx)].float().cpu().numpy()
    return {"z": int(z), "z0": int(z0), "offset": (y0, x0), "maps": maps, "channel_names": tuple(info.channel_names)}
