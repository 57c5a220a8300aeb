"""``predict_tiled``: a model over a volume of any size, block by block, without seams.

The job (a generator of :class:`~napari_emseg.progress.Progress`) computes the intensity range
once for the whole volume, plans output blocks (:mod:`.tiling`), reads them ahead in a thread
(:mod:`.prefetch`), predicts each with overlapping blended tiles on the device (:mod:`.runner`)
and writes it in another thread, recording it for resume (:mod:`.output`). Memory depends on the
block, tile and batch sizes, never on the volume's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.normalize import intensity_range
from ..device import select_device
from ..errors import EmsegError
from ..io import DEFAULT_VOXEL_SIZE, Volume
from ..models.info import ModelInfo
from ..progress import Cancelled, Job, Progress
from .budget import auto_block
from .config import InferenceConfig
from .heap import reuse_freed_memory, worth_keeping
from .output import (
    ResumeRecord,
    existing_chunks,
    fingerprint,
    model_summary,
    prepare_output,
    recorded_block,
    weights_digest,
)
from .prefetch import BlockReader, BlockWriter, Prefetcher, normalize_tensor
from .runner import BlockPredictor
from .tiling import choose_block, plan_blocks, round_tile

__all__ = ["predict_tiled", "resolve_mode", "resolve_tile"]

logger = logging.getLogger(__name__)


#: ``auto`` runs a 2D model on xy, xz and yz planes (RETINA's ortho-plane inference) when the
#: voxel size is known and its coarsest axis is under this many times its finest ...
ORTHO_MAX_ANISOTROPY = 1.5
#: ... and the volume has at least this many voxels along every axis (planes cut along y and x
#: are ``z`` voxels tall: a thin stack gives them too little context to be worth the 3x cost)
ORTHO_MIN_SIDE = 32


def resolve_mode(info: ModelInfo, config: InferenceConfig, *, voxel_size: Sequence[float] | None = None,
                 shape: Sequence[int] | None = None) -> str:
    """``"3d"``, ``"slices"`` or ``"ortho"`` for this model and config.

    ``"auto"`` is ``"3d"`` for a 3D model; for a 2D one it is ``"ortho"`` when ``voxel_size``
    (pass it only when it is known) is near-isotropic (:data:`ORTHO_MAX_ANISOTROPY`) and the
    volume ``shape`` is at least :data:`ORTHO_MIN_SIDE` along every axis, else ``"slices"``.
    """
    if config.mode == "auto":
        if info.spatial_dims == 3:
            return "3d"
        return "ortho" if near_isotropic(voxel_size, shape) else "slices"
    if config.mode == "3d" and info.spatial_dims != 3:
        raise EmsegError("mode '3d' needs a 3D model; this model is 2D: use 'slices' or 'ortho'")
    if config.mode in ("slices", "ortho") and info.spatial_dims != 2:
        raise EmsegError(f"mode {config.mode!r} needs a 2D model; this model is 3D: use '3d' (or 'auto')")
    return config.mode


def near_isotropic(voxel_size: Sequence[float] | None, shape: Sequence[int] | None = None) -> bool:
    """Whether a known ``voxel_size`` ``(z, y, x)`` is near-isotropic and ``shape`` (when given)
    large enough along every axis for ortho-plane inference."""
    if voxel_size is None or len(voxel_size) != 3 or min(voxel_size) <= 0:
        return False
    if max(voxel_size) / min(voxel_size) >= ORTHO_MAX_ANISOTROPY:
        return False
    return shape is None or min(int(s) for s in shape) >= ORTHO_MIN_SIDE


def resolve_tile(info: ModelInfo, config: InferenceConfig, mode: str, shape: Sequence[int]) -> tuple[int, ...]:
    """The tile shape: the config's or the model's, rounded to the input multiple, fitted to the volume."""
    mult = tuple(int(m) for m in info.input_multiple)
    tile = tuple(int(t) for t in (config.tile or info.tile))
    if mode == "slices":
        mult = (1, *mult[1:])
        if config.tile is None:
            tile = (1, *tile[1:])
    elif mode == "ortho":
        mult = (max(mult[1:]),) * 3
        if config.tile is None:
            tile = (tile[-1],) * 3
    return round_tile(tile, mult, shape)


def predict_tiled(
    model: Any,
    volume: Any,
    out: Any = None,
    config: InferenceConfig = InferenceConfig(),
    *,
    voxel_size: Sequence[float] | None = None,
    attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Job[Any]:
    """Predict probability maps ``(C, Z, Y, X)`` for a volume of any size (a generator job).

    Parameters
    ----------
    model
        An ``nn.Module`` with ``.info`` (:class:`~napari_emseg.models.info.ModelInfo`).
    volume
        ``(z, y, x)`` (or ``(y, x)``) array-like: numpy, dask, zarr, h5py dataset, or an
        :class:`~napari_emseg.io.Volume` (its voxel size is used). Read block by block.
    out
        Where to write: ``None`` (a numpy array, for outputs under ``config.max_in_memory_gb``),
        a path (a zarr array is created, or an interrupted run's output resumed), a zarr array,
        or any array-like of shape ``(C, Z, Y, X)``.
    config
        Tiling, blending, batch, device, precision, TTA, mode, output type.
    voxel_size
        ``(z, y, x)`` nm, written as the output's ``resolution``.
    attrs
        Extra attributes for a zarr output.
    overwrite
        Replace a prediction at ``out`` that another model, input or settings made (by default
        that is refused before anything is written); the same run's output is always resumed.

    Yields
    ------
    Progress
        One event per written block (``stage="predict"``, ``preview`` = middle slice of the
        block's first channel).

    Returns
    -------
    The output array (the zarr array, numpy array or array-like written into).

    Raises
    ------
    Cancelled
        When cancelled at a yield: finished blocks are written and recorded first, so a later
        run with the same output resumes.
    EmsegError
        Bad model, settings or output (the message says what to change); ``OutOfMemory`` when
        even one tile of the smallest shape does not fit.
    """
    import torch

    info = getattr(model, "info", None)
    if not isinstance(info, ModelInfo):
        raise EmsegError(f"{type(model).__name__} has no .info (ModelInfo); load models with models.load_model")
    data, voxel_size, known = as_volume(volume, voxel_size)
    shape = tuple(int(s) for s in data.shape)
    mode = resolve_mode(info, config, voxel_size=voxel_size if known else None, shape=shape)
    if config.mode == "auto" and mode == "ortho":
        logger.info("near-isotropic voxels %s: the 2D model predicts xy, xz and yz planes, averaged "
                    "(mode 'ortho'; set mode='slices' for xy only)", voxel_size)
    device = select_device(config.device)
    tile = resolve_tile(info, config, mode, shape)
    predictor = BlockPredictor(model, info, config, device, mode, tile)
    overlap = predictor.overlap
    block = pick_block(out, shape, tile, overlap, config, device, info.out_channels, data)
    blocks = plan_blocks(shape, tile, overlap, block)

    yield Progress(0, len(blocks), "normalise", "intensity range of the volume")
    what = f"{Path(volume.path).name}: image" if isinstance(volume, Volume) and volume.path else "image"
    lo, hi = intensity_range(data, info.norm, max_voxels=config.norm_samples, what=what)  # once, not per tile
    c_out = info.out_channels
    settings = {
        "tile": tile, "overlap": overlap, "block": block, "mode": mode, "blend": config.blend,
        "sigma_scale": config.sigma_scale, "tta": config.tta, "dtype": config.dtype,
    }
    fp = fingerprint({
        "v": 1, "shape": shape, **settings, "info": info.to_dict(), "norm": [lo, hi],
        "weights": weights_digest(predictor.model),
    })
    meta = {
        "axes": ["c", "z", "y", "x"],
        "channel_names": list(info.channel_names),
        "task": info.task,
        "target": info.target,
        "activation": info.activation,
        "offsets": [list(o) for o in info.offsets] if info.target == "affinities" else [],
        "resolution": [float(v) for v in voxel_size],
        "voxel_size": [float(v) for v in voxel_size],
        "voxel_size_known": known,
        "unit": "nm",
        **({"scale": 255} if config.dtype == "uint8" else {}),
        "norm_range": [lo, hi],
        "model": model_summary(predictor.model),
        "inference": {**config.to_dict(), **settings, "device": str(device)},
        "complete": False,
        **(attrs or {}),
    }
    if isinstance(out, (str, os.PathLike)):
        from .._outputs import check_output_space

        nbytes = c_out * int(np.prod(shape)) * np.dtype(config.dtype).itemsize
        # compressed maps take a fraction of this: refuse what cannot fit, warn on what may not
        check_output_space(out, nbytes // 10, want_bytes=nbytes, what="the prediction")
    target = prepare_output(
        out, (c_out, *shape), (c_out, *block), config.dtype, meta,
        max_in_memory_gb=config.max_in_memory_gb, zarr_format=config.zarr_format,
        fp=fp, resume=config.resume, overwrite=overwrite,
    )
    record = ResumeRecord(target, fp, len(blocks), resume=config.resume)
    todo = [b for b in blocks if not record.done[b.index]]
    total, done = len(blocks), record.n_done
    if done:
        logger.info("resuming: %d of %d blocks already written", done, total)
    yield Progress(done, total, "predict", f"{len(todo)} blocks of {block} on {device}, tile {tile}")

    reader = BlockReader(data, pin=device.type == "cuda")
    direct = (device.type == "cpu" and type(target) is np.ndarray and target.dtype == np.dtype(config.dtype)
              and target.dtype.isnative and target.flags.writeable)
    start, voxels = time.perf_counter(), 0
    # the output exists already: only transient buffers are served from the kept heap
    keep = worth_keeping(device.type, predictor.group(predictor.tile) * int(np.prod(predictor.tile)))
    with reuse_freed_memory(keep), Prefetcher(reader, todo, config.prefetch) as ahead, BlockWriter(
        target, lambda b: record.mark(b.index)
    ) as writer, contextlib.closing(predictor):  # closing: stops the worker threads
        for blk, x in ahead:
            # an in-memory output on the CPU is divided into in place: no block copy, no writer pass
            view = target[(slice(None), *blk.out_slices)] if direct else None
            with torch.inference_mode():
                x = normalize_tensor(x.to(device, non_blocking=True), lo, hi, info.norm.invert)
                p = predictor.predict_block(x, blk, config.dtype, None if view is None else torch.from_numpy(view))
                arr = to_host(p) if view is None else view
            del p, x
            if view is None:
                writer.submit(blk, arr)
            else:
                record.mark(blk.index)
            done += 1
            voxels += int(np.prod(arr.shape[1:]))
            elapsed = time.perf_counter() - start
            left = total - done
            try:
                yield Progress(
                    done, total, "predict",
                    message=f"tile {predictor.tile} batch {predictor.batch}",
                    metrics={"Mvox/s": voxels / max(elapsed, 1e-9) / 1e6},
                    eta_s=elapsed / max(done - (total - len(todo)), 1) * left,
                    preview=arr[0, arr.shape[1] // 2],
                )
            except (Cancelled, KeyboardInterrupt):
                writer.close()
                logger.warning(
                    "cancelled after %d of %d blocks; run again with the same output to resume", done, total
                )
                raise
    record.save(complete=True)
    return target


def to_host(p: Any) -> np.ndarray:
    """A predicted block as a numpy array: from CUDA by an asynchronous copy into pinned memory
    (the fast DMA path, no pageable staging copy), waited for before it is handed on."""
    import torch

    if p.device.type != "cuda":
        return p.cpu().numpy()
    host = torch.empty(p.shape, dtype=p.dtype, pin_memory=True)
    host.copy_(p, non_blocking=True)
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(p.device))
    done.synchronize()
    return host.numpy()


def pick_block(out: Any, shape: tuple[int, ...], tile: tuple[int, ...], overlap: tuple[int, ...],
               config: InferenceConfig, device: Any, c_out: int, data: Any) -> tuple[int, ...]:
    """The output block: the configured one, sized from free memory with ``auto_block`` (a resumed
    auto-sized run keeps the block it recorded), rounded to tile strides or the output's chunks."""
    chunks = existing_chunks(out)
    target = tuple(int(b) for b in config.block)
    if config.auto_block:
        previous = recorded_block(out) if chunks is not None else None
        if previous is not None:
            return previous
        if chunks is None:
            raw = np.dtype(getattr(data, "dtype", np.float32))
            in_bytes = raw.itemsize if raw.kind in "uif" and raw.itemsize <= 4 else 4
            target = auto_block(target, shape, device, c_out=c_out, in_bytes=in_bytes,
                                out_bytes=np.dtype(config.dtype).itemsize, prefetch=config.prefetch)
    return choose_block(shape, tile, overlap, target, chunks)


def as_volume(volume: Any, voxel_size: Sequence[float] | None) -> tuple[Any, tuple[float, ...], bool]:
    """``(z, y, x)`` array-like, voxel size and whether it is known."""
    known = voxel_size is not None
    if isinstance(volume, Volume):
        if voxel_size is None:
            voxel_size, known = volume.voxel_size, volume.voxel_size_known
        volume = volume.data
    if not hasattr(volume, "shape") or not hasattr(volume, "__getitem__"):
        volume = np.asarray(volume)
    if len(volume.shape) == 2:
        volume = _AddZ(volume)
    if len(volume.shape) != 3:
        raise EmsegError(
            f"expected a (z, y, x) or (y, x) grayscale volume, got shape {tuple(volume.shape)}; "
            "pick one channel first"
        )
    vs = tuple(float(v) for v in (voxel_size or DEFAULT_VOXEL_SIZE))
    if len(vs) == 2:
        vs = (1.0, *vs)
    return volume, vs, known


class _AddZ:
    """A 2D array-like seen as a volume of one slice."""

    def __init__(self, image: Any) -> None:
        self.image = image
        self.shape = (1, *image.shape)
        self.dtype = image.dtype

    def __getitem__(self, key: Any) -> Any:
        if key is Ellipsis:
            return np.asarray(self.image[...])[None]
        zs, *rest = key
        part = self.image[tuple(rest)]
        part = np.asarray(part.compute() if hasattr(part, "compute") else part)
        return part[None][zs]
