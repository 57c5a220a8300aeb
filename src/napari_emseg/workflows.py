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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._lock import locks_output
from .config import Config
from .inference.config import InferenceConfig
from .ngff import array_path, in_ome
from .postprocess.mitochondria import MitoConfig
from .postprocess.neurons import NeuronConfig
from .postprocess.semantic import SemanticConfig
from .progress import Job
from .resample import VoxelMatchConfig

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions"
LABELS = "labels"


@dataclass(frozen=True)
class SegmentConfig(Config):
    """Inference settings, the post-processing settings of every target, voxel-size matching."""

    inference: InferenceConfig = InferenceConfig()
    neurons: NeuronConfig = NeuronConfig()
    mitochondria: MitoConfig = MitoConfig()
    semantic: SemanticConfig = SemanticConfig()
    voxel_match: VoxelMatchConfig = VoxelMatchConfig()

    @staticmethod
    def section_for(target: str) -> str:
        """The name of the post-processing section for a model target."""
        sections = {"affinities": "neurons", "boundaries": "neurons", "bcd": "mitochondria", "semantic": "semantic"}
        if target not in sections:
            from .errors import EmsegError

            raise EmsegError(f"a model predicting {target!r} has no instance extraction; pick a segmentation model")
        return sections[target]

    def postprocess_for(self, target: str) -> Config:
        """The post-processing config for a model target."""
        return getattr(self, self.section_for(target))


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
    provenance: dict[str, Any] | None = None  # the bundle written beside ``out`` (see provenance.py)
    postprocess_source: dict[str, Any] | None = None  # which settings made the labels (see calibration.py)
    extents: tuple[tuple[int, int], ...] | None = None  # micrographs of different sizes: labels are 0 outside


def load_segmentation_model(model: Any) -> Any:
    """A checkpoint path (or an already built model) as a model in eval mode."""
    if isinstance(model, (str, os.PathLike)):
        from .models.checkpoint import load_model

        return load_model(model, expect_in_channels=1)
    return model.eval()


@locks_output("out")
def segment_job(
    model: Any,
    image: Any,
    config: SegmentConfig = SegmentConfig(),
    *,
    out: str | os.PathLike | None = None,
    voxel_size: tuple[float, float, float] | None = None,
    postprocess: bool = True,
    attrs: dict[str, Any] | None = None,
    calibrated: bool = True,
    provenance: bool | None = None,
    command: Sequence[str] | None = None,
    overwrite: bool = False,
    extents: Sequence[Sequence[int]] | None = None,
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
        ``out/labels``; ``None`` keeps both in memory. A ``*.ome.zarr`` container holds both as
        NGFF multiscale images (level 0 at ``out/predictions/0`` and ``out/labels/0``, then a
        pyramid; :mod:`napari_emseg.ngff`).
    voxel_size
        ``(z, y, x)`` nm of ``image`` (taken from a ``Volume`` when not given).
    postprocess
        ``False`` stops after prediction.
    calibrated
        When the post-processing section of ``config`` for the model's target is the defaults
        (the user gave none), use the settings calibrated on the painted slices when the model
        was fine-tuned (stored in its card; :mod:`napari_emseg.calibration`). Settings that
        differ from the defaults always win; ``False`` uses ``config`` exactly as given.
        ``Segmentation.postprocess_source`` and the provenance record which was used.
    attrs
        Extra attributes written with both arrays; ``{"source": {"image": path, "channel": c}}``
        names the input file when ``image`` is not a :class:`~napari_emseg.io.Volume`.
    provenance
        With ``out`` (``None`` or ``True``): write the provenance bundle (``out/provenance.json``
        and a zarr attribute; see :mod:`napari_emseg.provenance`), so ``napari-emseg rerun`` can
        make it again. ``True`` without ``out``: build it in memory only (``Segmentation.provenance``;
        the widget writes it when the labels are exported). ``False``: none.
    command
        The command line to record (``None`` from the widget).
    overwrite
        Replace the predictions of another model, input or settings at ``out`` (by default that
        is refused before anything is written; this run's own interrupted output is resumed).
        Files napari-emseg did not write are never replaced. The job holds ``OUT.lock`` while it
        runs (:mod:`napari_emseg._lock`): a second writer of ``out`` is refused.
    extents
        ``(height, width)`` of each slice of a stack of micrographs of different sizes, each at
        the top left of ``image`` (taken from a ``Volume`` when not given: a folder of such
        slices, :attr:`napari_emseg.io.Volume.extents`): maps and labels are 0 outside them.

    When the model's voxel size differs from the image's beyond ``config.voxel_match``, the
    model sees the image resampled to its grid and the maps come back on the image's grid
    (:func:`napari_emseg.inference.matched.predict_matched`).
    """
    from .inference.matched import predict_matched
    from .io import cut_to_extents, extents_of
    from .postprocess import extract_instances_job

    started = time.time()
    net = load_segmentation_model(model)
    info = net.info
    if postprocess:  # a model without an instance extraction fails here, before any output is touched
        config.postprocess_for(info.target)
    if voxel_size is None and hasattr(image, "voxel_size") and getattr(image, "voxel_size_known", True):
        voxel_size = tuple(image.voxel_size)
    extents = extents or extents_of(image)
    if extents:
        attrs = {**(attrs or {}), "extents": [list(map(int, e)) for e in extents]}
    pred_out = str(array_path(out, PREDICTIONS)) if out is not None else None
    predictions = yield from predict_matched(net, image, pred_out, config.inference, config.voxel_match,
                                             voxel_size=voxel_size, attrs=dict(attrs or {}), overwrite=overwrite)
    cut_to_extents(predictions, extents)
    finish_multiscale(pred_out, "maps", voxel_size)
    seg = Segmentation(predictions, None, info.target, tuple(info.channel_names), tuple(info.offsets),
                       tuple(voxel_size) if voxel_size else None,
                       extents=tuple(tuple(int(v) for v in e) for e in extents) if extents else None)
    if pred_out is not None:
        seg.paths[PREDICTIONS] = pred_out
    if not postprocess:
        return (yield from _with_provenance(seg, net, model, image, config, out, provenance, attrs, command, started))
    from .calibration import resolve_postprocess

    pcfg, seg.postprocess_source = resolve_postprocess(getattr(net, "card", None), info.target,
                                                       config.postprocess_for(info.target), use_calibration=calibrated)
    config = config.replace(**{SegmentConfig.section_for(info.target): pcfg})  # recorded as used
    seg.labels = cut_to_extents((yield from extract_instances_job(predictions, info.target, pcfg,
                                                                  offsets=info.offsets, voxel_size=voxel_size)), extents)
    if out is not None:
        seg.paths[LABELS] = write_labels(Path(out) / LABELS, seg.labels, voxel_size,
                                         {**(attrs or {}), "target": info.target, "postprocess": pcfg.to_dict(),
                                          "postprocess_source": seg.postprocess_source})
    return (yield from _with_provenance(seg, net, model, image, config, out, provenance, attrs, command, started))


def _with_provenance(seg: Segmentation, net: Any, model: Any, image: Any, config: SegmentConfig, out: Any,
                     provenance: bool, attrs: dict[str, Any] | None, command: Any, started: float) -> Job[Segmentation]:
    """Write the provenance bundle of a segmentation written to ``out`` (see :mod:`.provenance`)."""
    if provenance is False or (out is None and not provenance):
        return seg
    from .device import select_device
    from .provenance import record_job
    from .resample import plan_voxel_match

    source = (attrs or {}).get("source") or {}
    seg.provenance = yield from record_job(
        out, model=net, config=config, image=image, voxel_size=seg.voxel_size, outputs=seg.paths,
        labels=seg.labels, postprocess=seg.labels is not None,
        model_path=model if isinstance(model, (str, os.PathLike)) else None,
        input_path=source.get("image"), channel=source.get("channel"),
        voxel_plan=plan_voxel_match(net.info.voxel_size, seg.voxel_size, config.voxel_match,
                                    model_zoom=net.info.input_zoom),
        device=select_device(config.inference.device), started=started, command=command,
        postprocess_source=seg.postprocess_source if seg.labels is not None else None)
    return seg


def record_segmentation_job(seg: Segmentation, model: Any, image: Any, config: SegmentConfig,
                            out: str | os.PathLike, *, attrs: dict[str, Any] | None = None,
                            command: Sequence[str] | None = None, started: float | None = None,
                            ) -> Job[Segmentation]:
    """Write the provenance bundle of ``seg`` (written to ``out``) after its labels were made
    outside :func:`segment_job`, e.g. with settings tuned on painted slices: ``config`` must be
    the one that made ``seg.labels``, so ``napari-emseg rerun`` makes the same labels.
    ``attrs={"source": {"image": path}}`` names the input file of an in-memory ``image``."""
    net = load_segmentation_model(model)
    return (yield from _with_provenance(seg, net, model, image, config, out, True, attrs, command,
                                        started or time.time()))


def postprocess_job(seg: Segmentation, config: SegmentConfig) -> Job[Any]:
    """Labels from ``seg.predictions`` with new post-processing settings (no re-prediction)."""
    from .io import cut_to_extents
    from .postprocess import extract_instances_job

    labels = yield from extract_instances_job(seg.predictions, seg.target, config.postprocess_for(seg.target),
                                              offsets=seg.offsets, voxel_size=seg.voxel_size)
    return cut_to_extents(labels, seg.extents)


def write_labels(path: str | os.PathLike, labels: Any, voxel_size: Any, attrs: dict[str, Any] | None = None) -> str:
    """Write instance labels to zarr (atomically), OME-Zarr (a multiscale group, inside or named
    ``*.ome.zarr``) or TIFF, by suffix.

    ``attrs`` go into the zarr attributes, or as JSON into a TIFF's ImageJ ``Info`` property
    (ImageJ: Image > Show Info) or image description (32-bit labels, which ImageJ cannot read).
    """
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import json

        import numpy as np
        import tifffile

        from ._atomic import atomic_path
        from ._outputs import guard_foreign
        from .io import jsonable

        guard_foreign(path, option="output")
        data = np.asarray(labels)
        imagej = data.max(initial=0) < 2**16  # ImageJ reads 16-bit labels, not 32-bit
        meta: dict[str, Any] = {"axes": "ZYX"}
        kwargs: dict[str, Any] = {"photometric": "minisblack"}  # never RGB(A), even with 3 or 4 columns
        if voxel_size:
            kwargs["resolution"] = (1e3 / voxel_size[2], 1e3 / voxel_size[1])
            meta.update(spacing=voxel_size[0] / 1e3, unit="um")
        text = json.dumps({"napari_emseg": jsonable(attrs)}, default=str) if attrs else None
        if text and imagej:
            meta["Info"] = text
        elif text:
            kwargs["description"] = text
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, data.astype(np.uint16) if imagej else data, imagej=imagej,
                             metadata=meta if imagej else None, **kwargs)
        return str(path)
    if in_ome(path):
        from .ngff import write_multiscale

        return write_multiscale(path, labels, kind="labels", voxel_size=voxel_size, attrs=attrs)
    from .io import write_volume

    return write_volume(path, labels, voxel_size=voxel_size, attrs=attrs)


def finish_multiscale(level0: str | os.PathLike | None, kind: str, voxel_size: Any = None) -> None:
    """In an OME-Zarr output, build the pyramid of a complete level-0 array written at
    ``array_path(out, name)`` (:func:`napari_emseg.ngff.build_pyramid`); nothing for plain zarr."""
    from .ngff import build_pyramid, multiscale_group

    group = multiscale_group(level0) if level0 is not None else None
    if group is not None:
        build_pyramid(group, kind=kind, voxel_size=voxel_size)


def export_labels(
    path: str | os.PathLike,
    labels: Any,
    voxel_size: Any,
    segmentation: Segmentation | None = None,
    postprocess: Config | None = None,
    details: dict[str, Any] | None = None,
) -> str:
    """Write labels shown (and perhaps edited) in napari with a record of what made them.

    ``path`` ends in ``.zarr`` or ``.tif`` (anything else becomes ``.zarr``). A summary (version,
    export time, ``details`` such as the model and layer, the target and the ``postprocess``
    settings that made the labels) goes into the file (:func:`write_labels`); when the
    ``segmentation`` carries a provenance bundle, the whole bundle goes beside the file, updated
    with these settings (:func:`napari_emseg.provenance.export_bundle`).
    """
    import numpy as np

    from . import __version__
    from .provenance import export_bundle, now

    path = Path(path)
    if path.suffix.lower() not in (".zarr", ".tif", ".tiff"):
        path = path.with_suffix(".zarr")
    labels = np.asarray(labels)
    made: dict[str, Any] = {"version": __version__, "exported": now(), **(details or {}),
                            "note": "labels as they were when exported (hand edits included)"}
    if segmentation is not None:
        made["target"] = segmentation.target
    if postprocess is not None:
        made["postprocess"] = postprocess.to_dict()
    written = write_labels(path, labels, voxel_size, made)
    bundle = getattr(segmentation, "provenance", None)
    if bundle:
        changes: dict[str, Any] = {"export": {k: v for k, v in made.items() if k not in ("inference", "postprocess")}}
        if postprocess is not None:
            changes["config"] = {SegmentConfig.section_for(segmentation.target): made["postprocess"]}
        export_bundle(written, bundle, labels, changes)
    return written
