"""One-call jobs that the CLI and the widgets share: predict, then extract instances.

:func:`segment_job` runs tiled inference (:func:`napari_emseg.inference.predict_tiled`) and the
post-processing the model's target calls for (:func:`napari_emseg.postprocess.extract_instances_job`),
writing both into one zarr container when asked. :func:`postprocess_job` redoes only the second
step with new thresholds, without re-predicting.

>>> seg = drain(segment_job("mito.safetensors", volume, out="seg.zarr"))   # doctest: +SKIP
>>> seg.labels.max(), seg.paths                                             # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import Config
from .inference.config import InferenceConfig
from .postprocess.mitochondria import MitoConfig
from .postprocess.neurons import NeuronConfig
from .postprocess.semantic import SemanticConfig
from .progress import Job

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions"
LABELS = "labels"


@dataclass(frozen=True)
class SegmentConfig(Config):
    """Inference settings and the post-processing settings of every target."""

    inference: InferenceConfig = InferenceConfig()
    neurons: NeuronConfig = NeuronConfig()
    mitochondria: MitoConfig = MitoConfig()
    semantic: SemanticConfig = SemanticConfig()

    def postprocess_for(self, target: str) -> Config:
        """The post-processing config for a model target."""
        if target in ("affinities", "boundaries"):
            return self.neurons
        if target == "bcd":
            return self.mitochondria
        if target == "semantic":
            return self.semantic
        from .errors import EmsegError

        raise EmsegError(f"a model predicting {target!r} has no instance extraction; pick a segmentation model")


@dataclass
class Segmentation:
    """What :func:`segment_job` returns."""

    predictions: Any  # (C, Z, Y, X) zarr or numpy
    labels: Any  # (Z, Y, X) uint32 numpy (or None without post-processing)
    target: str
    channel_names: tuple[str, ...]
    offsets: tuple[tuple[int, int, int], ...]
    voxel_size: tuple[float, float, float] | None
    paths: dict[str, str] = field(default_factory=dict)


def load_segmentation_model(model: Any) -> Any:
    """A checkpoint path (or an already built model) as a model in eval mode."""
    if isinstance(model, (str, os.PathLike)):
        from .models.checkpoint import load_model

        return load_model(model, expect_in_channels=1)
    return model.eval()


def segment_job(
    model: Any,
    image: Any,
    config: SegmentConfig = SegmentConfig(),
    *,
    out: str | os.PathLike | None = None,
    voxel_size: tuple[float, float, float] | None = None,
    postprocess: bool = True,
    attrs: dict[str, Any] | None = None,
) -> Job[Segmentation]:
    """Predict maps over ``image`` with ``model`` and turn them into instance labels.

    Parameters
    ----------
    model
        Checkpoint path or a model with ``.info``.
    image
        ``(z, y, x)`` array-like or :class:`~napari_emseg.io.Volume` (read block by block).
    config
        Inference and post-processing settings (:class:`SegmentConfig`).
    out
        A zarr container: maps go to ``out/predictions`` (resumable) and labels to
        ``out/labels``; ``None`` keeps both in memory.
    voxel_size
        ``(z, y, x)`` nm of ``image`` (taken from a ``Volume`` when not given).
    postprocess
        ``False`` stops after prediction.
    attrs
        Extra attributes written with both arrays (provenance).
    """
    from .inference import predict_tiled
    from .postprocess import extract_instances_job

    net = load_segmentation_model(model)
    info = net.info
    if voxel_size is None and hasattr(image, "voxel_size") and getattr(image, "voxel_size_known", True):
        voxel_size = tuple(image.voxel_size)
    pred_out = str(Path(out) / PREDICTIONS) if out is not None else None
    predictions = yield from predict_tiled(net, image, pred_out, config.inference,
                                           voxel_size=voxel_size, attrs=dict(attrs or {}))
    seg = Segmentation(predictions, None, info.target, tuple(info.channel_names), tuple(info.offsets),
                       tuple(voxel_size) if voxel_size else None)
    if pred_out is not None:
        seg.paths[PREDICTIONS] = pred_out
    if not postprocess:
        return seg
    pcfg = config.postprocess_for(info.target)
    seg.labels = yield from extract_instances_job(predictions, info.target, pcfg, offsets=info.offsets,
                                                  voxel_size=voxel_size)
    if out is not None:
        seg.paths[LABELS] = write_labels(Path(out) / LABELS, seg.labels, voxel_size,
                                         {**(attrs or {}), "target": info.target, "postprocess": pcfg.to_dict()})
    return seg


def postprocess_job(seg: Segmentation, config: SegmentConfig) -> Job[Any]:
    """Labels from ``seg.predictions`` with new post-processing settings (no re-prediction)."""
    from .postprocess import extract_instances_job

    labels = yield from extract_instances_job(seg.predictions, seg.target, config.postprocess_for(seg.target),
                                              offsets=seg.offsets, voxel_size=seg.voxel_size)
    return labels


def write_labels(path: str | os.PathLike, labels: Any, voxel_size: Any, attrs: dict[str, Any] | None = None) -> str:
    """Write instance labels to zarr (atomically) or TIFF, by suffix."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import numpy as np
        import tifffile

        from ._atomic import atomic_path

        data = np.asarray(labels)
        imagej = data.max(initial=0) < 2**16  # ImageJ reads 16-bit labels, not 32-bit
        meta: dict[str, Any] = {"axes": "ZYX"}
        kwargs: dict[str, Any] = {}
        if voxel_size:
            kwargs["resolution"] = (1e3 / voxel_size[2], 1e3 / voxel_size[1])
            meta.update(spacing=voxel_size[0] / 1e3, unit="um")
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, data.astype(np.uint16) if imagej else data, imagej=imagej,
                             metadata=meta if imagej else None, **kwargs)
        return str(path)
    from .io import write_volume

    return write_volume(path, labels, voxel_size=voxel_size, attrs=attrs)
