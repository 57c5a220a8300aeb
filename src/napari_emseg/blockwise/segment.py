"""Blockwise segmentation of a volume: predict, then extract instances, on one dask cluster.

>>> from napari_emseg.blockwise import BlockwiseConfig, segment_blockwise_job   # doctest: +SKIP
>>> from napari_emseg.progress import drain
>>> result = drain(segment_blockwise_job("mito.safetensors", "raw.zarr", "seg.zarr",
...                                      blockwise=BlockwiseConfig(blocks=(32, 256, 256)),
...                                      local_workers=2))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._lock import locks_output
from ..config import Config
from ..inference.config import InferenceConfig
from ..ngff import array_path
from ..progress import Job
from .cluster import SyncArray, VolumeRef, dask_client
from .config import BlockwiseConfig
from .instances import instances_blockwise_job
from .predict import predict_blockwise_job

__all__ = ["BlockwiseSegmentation", "segment_blockwise_job", "PREDICTIONS", "LABELS"]

logger = logging.getLogger(__name__)

PREDICTIONS = "predictions"
LABELS = "labels"


@dataclass(frozen=True)
class BlockwiseSegmentation:
    """What :func:`segment_blockwise_job` returns: the written arrays' paths and the target."""

    predictions: str
    labels: str | None
    target: str


@locks_output("out")
def segment_blockwise_job(
    model: str | os.PathLike,
    image: Any,
    out: str | os.PathLike,
    inference: InferenceConfig = InferenceConfig(),
    postprocess: Config | None = None,
    blockwise: BlockwiseConfig = BlockwiseConfig(),
    *,
    extract: bool = True,
    scheduler: Any = None,
    local_workers: int | None = None,
    processes: bool = True,
    channel: int | None = None,
    voxel_size: tuple[float, float, float] | None = None,
    axes: str | None = None,
    attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
    devices: Sequence[str] | None = None,
    voxel_match: Any = None,
) -> Job[BlockwiseSegmentation]:
    """Predict ``OUT/predictions`` and extract ``OUT/labels`` block by block on a dask cluster.

    Parameters
    ----------
    model
        Checkpoint path; every worker loads it once (it must be readable there).
    image
        A volume path/URI (``"raw.zarr"``, ``"data.h5:raw"``; opened lazily by each worker) or
        an array-like (sent to the workers: for small volumes and tests).
    out
        Zarr container on storage every worker can write (a shared file system on a cluster).
    inference
        Tiled inference settings; ``inference.block`` is replaced by ``blockwise.blocks``.
    postprocess
        Settings of the model target's extraction (default: its defaults).
    blockwise
        Blocks, halo, matching, retries.
    extract
        ``False`` stops after prediction.
    scheduler, local_workers, processes
        A ``distributed.Client``, a scheduler address, or ``None`` for a ``LocalCluster`` of
        ``local_workers`` workers (processes, or threads with ``processes=False``).
    channel, voxel_size, axes
        For a path: the channel of a multi-channel image, the voxel size when the file
        has none, and the stored axes when the file is ambiguous (see ``open_volume``).
    attrs
        Extra attributes for both arrays.
    overwrite
        Replace the maps of another model, input or settings at ``out`` (else refused).
    devices
        One device per worker (``"cuda:0"``, ``"cuda:1"``, ``"cpu"`` ...): worker ``i`` predicts
        on ``devices[i % len(devices)]``; a local cluster gets ``len(devices)`` workers unless
        ``local_workers`` says otherwise (:mod:`.devices`).
    voxel_match
        A :class:`~napari_emseg.resample.VoxelMatchConfig`: scale-out cannot resample, so a model
        on another grid is refused unless matching is switched off (``enabled=False``,
        ``--no-voxel-match``: predict on the image's grid anyway).

    The run holds ``OUT.lock`` (:mod:`napari_emseg._lock`): a second writer of ``out`` is refused.
    """
    from ..io import open_volume
    from ..workflows import finish_multiscale

    out = Path(os.fspath(out))
    extents = None
    pred_path = str(array_path(out, PREDICTIONS))
    if isinstance(image, (str, os.PathLike)):
        vol = open_volume(image, channel=channel, voxel_size=voxel_size, axes=axes)
        ref: Any = VolumeRef(os.fspath(image), channel, tuple(voxel_size) if voxel_size else None, axes)
        local, vs = SyncArray(vol.data), (vol.voxel_size if vol.voxel_size_known else None)
        extents = vol.extents  # micrographs of different sizes on one canvas: cut back to each
    else:
        ref, local, vs = image, (SyncArray(image) if hasattr(image, "compute") else image), voxel_size
    inference = inference.replace(block=blockwise.blocks)
    meta = {"source": {"image": os.fspath(image) if isinstance(image, (str, os.PathLike)) else "array",
                       "model": os.fspath(model)}, **(attrs or {})}
    if devices and scheduler is None and not local_workers:
        local_workers = len(devices)  # one worker per device
    with dask_client(scheduler, local_workers, processes=processes) as client:
        pred = yield from predict_blockwise_job(client, model, local, pred_path, inference, image_ref=ref,
                                                voxel_size=vs, attrs=meta, retries=blockwise.retries,
                                                overwrite=overwrite, devices=devices, voxel_match=voxel_match)
        target = str(pred.attrs["target"])
        _cut(pred_path, extents)
        finish_multiscale(pred_path, "maps", vs)
        if not extract:
            return BlockwiseSegmentation(pred_path, None, target)
        labels = yield from instances_blockwise_job(pred_path, array_path(out, LABELS), postprocess, blockwise,
                                                    target=target, scheduler=client, attrs=meta, resume=inference.resume)
    _cut(labels, extents)
    finish_multiscale(labels, "labels", vs)
    return BlockwiseSegmentation(pred_path, labels, target)


def _cut(path: Any, extents: Any) -> None:
    """Zero the written zarr array at ``path`` outside each slice's extent (:func:`napari_emseg.io.cut_to_extents`)."""
    if extents:
        import zarr

        from ..io import cut_to_extents

        cut_to_extents(zarr.open_array(os.fspath(path), mode="r+"), extents)
