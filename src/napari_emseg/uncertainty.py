"""How unsure a fine-tuned model is, voxel by voxel, streamed over a whole volume.

:func:`uncertainty_job` runs the model over the volume with
:func:`~napari_emseg.inference.predict_tiled` (tiled, block by block) and measures, for every
voxel:

* ``"entropy"``: the predictive entropy of the (flip-averaged) probabilities, in bits per
  channel (binary entropy for sigmoid maps: affinities, boundaries, BCD foreground and
  contour; the class entropy divided by ``log2(K)`` for softmax maps), in ``[0, 1]``;
* ``"disagreement"``: how much the flipped predictions disagree (test-time augmentation):
  twice the standard deviation over the flips, averaged over the channels, in ``[0, 1]``;
* ``"combined"`` (default): the mean of the two.

The map is reduced as it streams: only a coarse map (mean per cell of ``cell`` x ``cell``
voxels in each slice along ``axis``) and a score per slice are kept, so memory does not grow with
the volume; pass ``out`` to also write the full-resolution map. :mod:`napari_emseg.active` turns
it into slices to paint next.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .config import Config, ConfigError
from .inference.config import InferenceConfig
from .inference.tta import flip_sets, unflip
from .models.info import ModelInfo, apply_activation
from .progress import Job, Progress

__all__ = ["UncertaintyConfig", "UncertaintyMap", "UncertaintyNet", "uncertainty_job"]

logger = logging.getLogger(__name__)

Measure = Literal["entropy", "disagreement", "combined"]
_EPS = 1e-6
_MAX_CELLS = 64_000_000  # the coarse map's float32 sums stay under ~256 MB


@dataclass(frozen=True)
class UncertaintyConfig(Config):
    """How the uncertainty map is computed and reduced.

    Attributes
    ----------
    measure
        ``"entropy"``, ``"disagreement"`` (between flips) or ``"combined"`` (their mean).
    flips
        Test-time flips: ``"auto"`` (all three axes for 3D models, ``y`` and ``x`` for 2D ones:
        8 or 4 passes), ``"yx"`` (4 passes), or ``"none"`` (one pass; entropy only).
    axis
        The axis whose slices are scored (the painted axis; 0 = z). :func:`suggest_job` takes it
        from the labels.
    cell
        In-plane size (voxels) of the cells of the coarse map kept for regions; grown
        automatically for huge volumes.
    inference
        Tiling, device and precision (its ``tta`` and ``dtype`` are set here). Tiles overlap by
        half along z by default: a 3D network is often less sure near a tile's z-faces, and with
        little z-overlap that shows up as a periodic pattern in the slice scores.
    """

    measure: Measure = "combined"
    flips: Literal["auto", "yx", "none"] = "auto"
    axis: int = 0
    cell: int = 16
    inference: InferenceConfig = InferenceConfig(overlap=(0.5, 0.25, 0.25))

    def __post_init__(self) -> None:
        if self.axis not in (0, 1, 2):
            raise ConfigError(f"axis must be 0 (z), 1 (y) or 2 (x), got {self.axis}")
        if self.cell < 1:
            raise ConfigError(f"cell must be at least 1 voxel, got {self.cell}")
        if self.flips == "none" and self.measure != "entropy":
            raise ConfigError(f"measure {self.measure!r} needs test-time flips; use flips='auto' or measure='entropy'")


class UncertaintyNet(nn.Module):
    """Wraps a model: one channel, the per-voxel uncertainty of its flip-augmented predictions.

    Used inside :func:`uncertainty_job` (so tiling, blending and batching are
    :func:`~napari_emseg.inference.predict_tiled`'s); its ``info`` says 1 channel, activation
    ``"none"``. Inputs are 3D tiles ``(B, 1, Z, Y, X)`` or 2D planes ``(B, 1, Y, X)``.
    """

    def __init__(self, model: nn.Module, measure: Measure = "combined", flips: str = "auto") -> None:
        super().__init__()
        self.model, self.measure, self.flips = model, measure, flips
        self.inner: ModelInfo = model.info
        self.info = self.inner.replace(channel_names=("uncertainty",), activation="none",
                                       target="boundaries", offsets=())

    def _channels(self) -> list[int]:
        if self.inner.target == "bcd":
            return [0, 1]  # foreground and contour are probabilities; distance is a regression
        return list(range(self.inner.out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        planar = x.dim() == 4
        x5 = x.unsqueeze(2) if planar else x
        if self.flips == "none":
            sets: list[tuple[int, ...]] = [()]
        else:  # flipping an axis of length 1 (a one-slice tile) changes nothing: skip it
            axes = (1, 2) if planar or self.flips == "yx" else (0, 1, 2)
            sets = flip_sets(tuple(a for a in axes if x5.shape[2 + a] > 1))
        mean = sq = None
        for s in sets:
            xs = torch.flip(x5, dims=[2 + a for a in s]) if s else x5
            y = self.model(xs.squeeze(2) if planar else xs)
            y = apply_activation(y.float(), self.inner)
            y = unflip(y.unsqueeze(2) if planar else y, s, self.inner)
            mean = y.clone() if mean is None else mean.add_(y)
            sq = y.square() if sq is None else sq.add_(y.square())
        assert mean is not None and sq is not None
        mean.div_(len(sets))
        terms = []
        if self.measure in ("entropy", "combined"):
            terms.append(self._entropy(mean))
        if self.measure in ("disagreement", "combined"):
            var = sq.div_(len(sets)).sub_(mean.square()).clamp_(min=0)
            terms.append(var[:, self._channels()].sqrt().mul(2).clamp(max=1).mean(1, keepdim=True))
        out = terms[0] if len(terms) == 1 else (terms[0] + terms[1]) / 2
        return out.squeeze(2) if planar else out

    def _entropy(self, p: torch.Tensor) -> torch.Tensor:
        if self.inner.activation == "softmax":
            k = max(2, p.shape[1])
            return -(p * p.clamp(min=_EPS).log2()).sum(1, keepdim=True) / math.log2(k)
        p = p[:, self._channels()].clamp(_EPS, 1 - _EPS)
        h = -(p * p.log2() + (1 - p) * (1 - p).log2())
        return h.mean(1, keepdim=True)


@dataclass
class UncertaintyMap:
    """What :func:`uncertainty_job` returns.

    Attributes
    ----------
    axis
        The axis whose slices were scored.
    shape
        The volume's shape ``(z, y, x)``.
    cell
        Pooling factors ``(z, y, x)`` of ``coarse`` (1 along ``axis``).
    coarse
        float32 mean uncertainty per cell (a napari layer with ``scale=cell`` shows it over the image).
    slice_scores
        float64 mean uncertainty of each slice along ``axis``.
    measure
        The measure used.
    full
        The full-resolution map ``(1, Z, Y, X)`` when ``out`` was given, else ``None``.
    """

    axis: int
    shape: tuple[int, int, int]
    cell: tuple[int, int, int]
    coarse: np.ndarray
    slice_scores: np.ndarray
    measure: str
    full: Any = None

    def region(self, index: int, size: Sequence[int] = (128, 128)) -> tuple[tuple[tuple[int, int], ...], float]:
        """The most uncertain ``size`` window (in-plane voxels) of slice ``index``: box and mean.

        The box is ``((z0, z1), (y0, y1), (x0, x1))`` in the volume, aligned to the cells.
        """
        a = self.axis
        plane_axes = [d for d in range(3) if d != a]
        plane = np.take(self.coarse, index, axis=a).astype(np.float64)
        win = [max(1, min(n, int(round(s / self.cell[d])))) for s, n, d in zip(size, plane.shape, plane_axes)]
        csum = np.pad(plane.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        sums = csum[win[0]:, win[1]:] - csum[:-win[0], win[1]:] - csum[win[0]:, :-win[1]] + csum[:-win[0], :-win[1]]
        i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)
        box: list[tuple[int, int]] = [(0, 0)] * 3
        box[a] = (int(index), int(index) + 1)
        for d, start, w in zip(plane_axes, (i, j), win):
            box[d] = (int(start * self.cell[d]), int(min(self.shape[d], (start + w) * self.cell[d])))
        return tuple(box), float(sums[i, j] / (win[0] * win[1]))


class _ReduceSink:
    """An array-like ``(1, Z, Y, X)`` output that keeps per-cell sums of what is written into it."""

    def __init__(self, shape: tuple[int, int, int], cell: tuple[int, int, int], tee: Any = None) -> None:
        self.shape = (1, *shape)
        self.dtype = np.dtype("float16")
        self.cell, self.tee = cell, tee
        self.sums = np.zeros([-(-n // f) for n, f in zip(shape, cell)], np.float32)

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        if self.tee is not None:
            self.tee[key] = value
        data = np.asarray(value[0], np.float32)
        out = []
        for ax, (sl, f) in enumerate(zip(key[1:], self.cell)):
            lo, hi = int(sl.start or 0), int(sl.stop)
            if f > 1:
                cuts = [0] + [k * f - lo for k in range(lo // f + 1, (hi - 1) // f + 1)]
                data = np.add.reduceat(data, cuts, axis=ax)
            out.append(slice(lo // f, (hi - 1) // f + 1))
        self.sums[tuple(out)] += data

    def counts(self, ax: int) -> np.ndarray:
        """Voxels per cell along ``ax``."""
        n, f = self.shape[1 + ax], self.cell[ax]
        return np.minimum(f, n - np.arange(0, n, f)).astype(np.float64)

    def result(self, axis: int, measure: str, full: Any) -> UncertaintyMap:
        cz, cy, cx = (self.counts(a) for a in range(3))
        counts = cz[:, None, None] * cy[None, :, None] * cx[None, None, :]
        others = tuple(a for a in range(3) if a != axis)
        per_slice = self.sums.sum(axis=others, dtype=np.float64) / counts.sum(axis=others)
        coarse = (self.sums / counts).astype(np.float32)
        return UncertaintyMap(axis, tuple(self.shape[1:]), self.cell, coarse, per_slice, measure, full)


def _cells(shape: Sequence[int], axis: int, cell: int) -> tuple[int, int, int]:
    """Pooling factors: 1 along ``axis``, ``cell`` (grown for huge volumes) in-plane."""
    while True:
        f = tuple(1 if a == axis else cell for a in range(3))
        if np.prod([-(-n // c) for n, c in zip(shape, f)]) <= _MAX_CELLS:
            return f  # type: ignore[return-value]
        cell *= 2


def uncertainty_job(
    model: nn.Module,
    image: Any,
    config: UncertaintyConfig = UncertaintyConfig(),
    *,
    out: str | os.PathLike | Any = None,
    voxel_size: Sequence[float] | None = None,
) -> Job[UncertaintyMap]:
    """Uncertainty of ``model`` over ``image``, reduced per slice and per cell (a generator job).

    Parameters
    ----------
    model
        A model with ``.info`` (e.g. ``FineTuneResult.model`` or ``models.load_model(path)``).
    image
        ``(z, y, x)`` array-like (numpy, dask, zarr) or :class:`~napari_emseg.io.Volume`; read
        block by block.
    config
        Measure, flips, scored axis, cell size and tiling (:class:`UncertaintyConfig`).
    out
        Optional: also write the full map ``(1, Z, Y, X)`` float16 here (a zarr path or an array).
    voxel_size
        ``(z, y, x)`` nm, recorded with a zarr ``out``.

    Returns
    -------
    UncertaintyMap
        Per-slice scores along ``config.axis`` and the coarse map.
    """
    from .inference import predict_tiled
    from .inference.output import prepare_output
    from .inference.predict import as_volume

    if getattr(model, "info", None) is None:
        raise ConfigError(f"{type(model).__name__} has no .info; load models with napari_emseg.models.load_model")
    data, vs, _ = as_volume(image, voxel_size)
    shape = tuple(int(s) for s in data.shape)
    net = UncertaintyNet(model, config.measure, config.flips)
    icfg = config.inference.replace(tta=False, dtype="float16")
    cell = _cells(shape, config.axis, config.cell)
    attrs = {"target": "uncertainty", "measure": config.measure, "uncertainty": config.to_dict()}
    tee = None
    if out is not None:
        chunks = (1, *(min(b, s) for b, s in zip(icfg.block, shape)))
        tee = prepare_output(out, (1, *shape), chunks, "float16",
                             {**attrs, "channel_names": ["uncertainty"], "voxel_size": list(vs)},
                             zarr_format=icfg.zarr_format)
    sink = _ReduceSink(shape, cell, tee)
    yield Progress(0, None, "uncertainty", f"{config.measure} over {shape}")
    yield from predict_tiled(net, data, sink, icfg, voxel_size=vs, attrs=attrs)
    if tee is not None and hasattr(tee, "attrs"):
        tee.attrs.update({"complete": True})
    return sink.result(config.axis, config.measure, tee)
