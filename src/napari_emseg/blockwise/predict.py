"""Prediction on a dask cluster: every output block of tiled inference is one task.

The driver plans the run with :func:`napari_emseg.inference.predict_tiled` itself (intensity
range once for the volume, tile and block choice, the output array and its attributes, the
resume record) and stops it before it predicts anything; the blocks it would predict become
tasks. Each worker loads the model once (cached by checkpoint path) and predicts its blocks
with the same reader and :class:`~napari_emseg.inference.runner.BlockPredictor` as
``predict_tiled``, so the maps are the same as those of a single process, block for block.
Blocks are aligned with the zarr chunks, so workers never write the same chunk; only the
driver writes the attributes (the record of finished blocks, after each block).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..inference.config import InferenceConfig
from ..inference.output import ResumeRecord, fingerprint, weights_digest
from ..inference.tiling import plan_blocks
from ..progress import Job
from .cluster import open_ref, run_blocks, worker_cache
from .devices import worker_device, worker_index

__all__ = ["predict_blockwise_job", "predict_block"]

logger = logging.getLogger(__name__)

_SETTINGS = ("tile", "overlap", "block", "mode", "blend", "sigma_scale", "tta", "dtype")


def predict_blockwise_job(
    client: Any,
    model_path: str | os.PathLike,
    image: Any,
    out: str | os.PathLike,
    config: InferenceConfig = InferenceConfig(),
    *,
    image_ref: Any = None,
    voxel_size: Any = None,
    attrs: dict[str, Any] | None = None,
    retries: int = 2,
    overwrite: bool = False,
    devices: Sequence[str] | None = None,
    voxel_match: Any = None,
) -> Job[Any]:
    """Write ``(C, Z, Y, X)`` maps of ``image`` to the zarr array ``out``, one task per block.

    Parameters
    ----------
    client
        A ``distributed.Client``.
    model_path
        Checkpoint every worker loads (once) with :func:`napari_emseg.models.load_model`; a
        path the workers can read.
    image
        ``(z, y, x)`` array-like the driver samples for the intensity range.
    out
        Zarr array path (created, or resumed) the workers can write.
    config
        Inference settings; ``config.device`` is the workers' device (``"auto"``: their GPU).
    image_ref
        What the workers read: a :class:`~.cluster.VolumeRef` (opened once per worker) or an
        array-like (sent to them); default ``image``.
    voxel_size, attrs
        As for :func:`~napari_emseg.inference.predict_tiled`.
    retries
        Retries of a failed block task.
    overwrite
        Replace maps at ``out`` that another model, input or settings made (else refused).
    devices
        One device per worker: worker ``i`` predicts on ``devices[i % len(devices)]``
        (:mod:`.devices`); ``None``: ``config.device``, with one GPU per worker where a worker
        sees several and the device is ``auto``/``cuda``. The array's ``inference`` attribute
        records the device each worker used (``workers``).
    voxel_match
        A :class:`~napari_emseg.resample.VoxelMatchConfig`; a model on another grid than the
        image's is refused (nothing is resampled here) unless it is switched off.
    """
    import zarr

    from ..inference import predict_tiled
    from ..models import load_model

    model = load_model(model_path, device="cpu", expect_in_channels=1)
    _refuse_another_grid(model, model_path, voxel_size, voxel_match)
    plan = predict_tiled(model, image, out, config.replace(device="cpu", prefetch=0),
                         voxel_size=voxel_size, attrs=attrs, overwrite=overwrite)
    for event in plan:  # normalise, then create or reopen the output; stop before predicting
        if event.stage == "predict":
            break
        yield event
    plan.close()
    array = zarr.open_array(str(out), mode="r+")
    meta = dict(array.attrs)
    inf = meta["inference"]
    shape = tuple(int(s) for s in array.shape[1:])
    blocks = plan_blocks(shape, inf["tile"], inf["overlap"], inf["block"])
    lo, hi = (float(v) for v in meta["norm_range"])
    # the fingerprint predict_tiled records, so either path resumes the other's output
    fp = fingerprint({"v": 1, "shape": shape, **{k: inf[k] for k in _SETTINGS}, "info": model.info.to_dict(),
                      "norm": [lo, hi], "weights": weights_digest(model)})
    record = ResumeRecord(array, fp, len(blocks), resume=config.resume)
    array.attrs["inference"] = {**inf, "device": config.device, "distributed": True}
    todo = [b for b in blocks if not record.done[b.index]]
    if len(todo) < len(blocks):
        logger.info("resuming: %d of %d prediction blocks already written", len(blocks) - len(todo), len(blocks))
    spec = {
        "model": str(Path(model_path).resolve()), "config": config.to_json(indent=None), "mode": inf["mode"],
        "tile": tuple(inf["tile"]), "lo": lo, "hi": hi, "invert": bool(model.info.norm.invert),
        "out": str(out), "dtype": config.dtype, "devices": list(devices) if devices else None,
    }
    del model
    source = image_ref if image_ref is not None else image
    if not isinstance(source, (str, os.PathLike)) and not hasattr(source, "uri") and todo:
        source = client.scatter(source, broadcast=False)
    workers: dict[str, str] = {}

    def done(index: int, result: tuple[int, int, str]) -> None:
        record.mark(index)
        workers[str(result[1])] = result[2]

    yield from run_blocks(
        client, predict_block, [(b.index, (spec, b, source)) for b in todo], stage="predict",
        total=len(blocks), done=len(blocks) - len(todo), retries=retries, on_done=done,
    )
    record.save(complete=True)
    if workers:
        array.attrs["inference"] = {**dict(array.attrs["inference"]), "devices": list(devices) if devices else None,
                                    "workers": dict(sorted(workers.items()))}
    return array


def _predictor(spec: dict[str, Any]) -> tuple[Any, str]:
    """This worker's predictor for a checkpoint and settings (built on first use), and its device's name."""
    cfg = InferenceConfig.from_json(spec["config"])
    name = worker_device(cfg.device, spec.get("devices"))
    cache = worker_cache()
    key = ("predictor", spec["model"], spec["config"], spec["mode"], spec["tile"], name)
    with cache["lock"]:
        if key not in cache:
            from ..device import select_device
            from ..inference.runner import BlockPredictor
            from ..models import load_model

            device = select_device(name)
            model = load_model(spec["model"], device="cpu", expect_in_channels=1)
            logger.info("worker %d loaded %s on %s", worker_index(), spec["model"], device)
            # workers=1 unless set: dask decides how many blocks run at once on a machine
            local = cfg.replace(device=name or cfg.device, workers=cfg.workers or 1)
            cache[key] = BlockPredictor(model, model.info, local, device, spec["mode"], spec["tile"])
        return cache[key], str(name or cfg.device)


def predict_block(spec: dict[str, Any], block: Any, image: Any) -> tuple[int, int, str]:
    """Predict one output block and write it (a task); returns the voxels written, the
    worker's number and the device it predicted on."""
    import torch
    import zarr

    from ..inference.runner import to_output_dtype

    predictor, name = _predictor(spec)
    device = predictor.device
    with worker_cache()["lock"], torch.inference_mode():  # one block at a time per model
        x = _read_block(open_ref(image), block, spec, device)
        p = predictor.predict_block(x, block)
        arr = to_output_dtype(p, spec["dtype"]).cpu().numpy()
    del p, x
    out = zarr.open_array(spec["out"], mode="r+")
    out[(slice(None), *block.out_slices)] = arr
    return int(np.prod(arr.shape[1:])), worker_index(), name


def _read_block(volume: Any, block: Any, spec: dict[str, Any], device: Any) -> Any:
    """A block's padded input on ``device``, normalised there, exactly as ``predict_tiled`` does."""
    from ..inference.prefetch import BlockReader, normalize_tensor

    x = BlockReader(volume, pin=device.type == "cuda")(block).to(device, non_blocking=True)
    return normalize_tensor(x, spec["lo"], spec["hi"], spec["invert"])


def _refuse_another_grid(model: Any, model_path: Any, voxel_size: Any, match: Any = None) -> None:
    """Scale-out predicts on the image's grid: a model that works on another one is refused
    (``segment`` resamples to it, see docs/voxel-size.md) rather than shown the wrong scale."""
    from ..config import ConfigError
    from ..resample import VoxelMatchConfig, plan_voxel_match

    match = match if match is not None else VoxelMatchConfig()
    grid = plan_voxel_match(model.info.voxel_size, voxel_size, match, model_zoom=model.info.input_zoom)
    if grid.resample:
        raise ConfigError(f"{model_path}: this model works on another grid than the image's ({grid.reason}); "
                          "scale-out does not resample: run `napari-emseg segment` (it resamples block by block), "
                          "or resample the volume to the model's voxel size first (--no-voxel-match predicts on the image's grid anyway)")

