"""Predict one block on the compute device: tiles in batches, blending, OOM back-off.

:class:`BlockPredictor` owns the network and the device. For each block it cuts the (already
normalised, already on-device) input into tiles, runs them in batches under
``torch.inference_mode`` and autocast, multiplies each tile's probabilities by its blending
window in the thread that ran the network (while they are in cache), accumulates the weighted
sums over the block in float32 and divides by the (separable)
weight sum, writing the quotient straight into the output type. On the CPU, batches run in
several worker threads at once when PyTorch's intra-op threads leave cores idle
(:func:`~.fastpath.resolve_workers`); the block's sum is still accumulated in tile order, so the
result does not depend on the number of workers. Out of GPU memory, it halves the batch, then
the tile, warns, and redoes the block.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import logging
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
import torch

from ..errors import EmsegError
from ..models.info import ModelInfo, apply_activation
from .blending import outer, weight_sum_1d, window_1d
from .config import InferenceConfig
from .fastpath import CompiledNet, resolve_precision, resolve_workers
from .planes import predict_planes
from .tiling import Block, block_tile_starts, overlap_voxels, round_tile
from .tta import predict_tta

__all__ = ["BlockPredictor", "is_oom", "OutOfMemory", "to_output_dtype"]

logger = logging.getLogger(__name__)


class OutOfMemory(EmsegError, MemoryError):
    """The device ran out of memory even with one tile of the smallest shape."""


def is_oom(err: BaseException) -> bool:
    """Whether ``err`` is a device out-of-memory error (CUDA, or MPS/other backends' message)."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def to_output_dtype(p: torch.Tensor, dtype: str) -> torch.Tensor:
    """Probabilities in [0, 1] as float16, or as uint8 ``round(255 p)``."""
    if p.dtype == getattr(torch, dtype):
        return p
    if dtype == "uint8":
        return p.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return p.to(torch.float16)


class BlockPredictor:
    """Runs a model over blocks of a volume on one device.

    Parameters
    ----------
    model
        An ``nn.Module`` with ``.info`` (:class:`~napari_emseg.models.info.ModelInfo`); moved to
        ``device``, set to eval mode and, with ``config.channels_last``, its convolution weights
        made channels-last; with ``config.compile``, compiled (:class:`~.fastpath.CompiledNet`).
    info
        The model's info.
    config
        Inference settings (batch, blending, precision, TTA, ...).
    device
        Where to compute.
    mode
        ``"3d"``, ``"slices"`` or ``"ortho"`` (resolved, never ``"auto"``).
    tile
        Initial tile ``(z, y, x)``, already rounded to ``info.input_multiple``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        info: ModelInfo,
        config: InferenceConfig,
        device: torch.device,
        mode: str,
        tile: tuple[int, ...],
    ) -> None:
        self.info, self.config, self.device, self.mode = info, config, device, mode
        self.tile = tuple(int(t) for t in tile)
        self.batch = max(1, int(config.batch or (4 if mode == "3d" else 16)))
        self.oom_events = 0
        self.model = model.to(device).eval()
        self.amp = resolve_precision(device, config.precision)
        self._format = None
        if config.channels_last:
            self._format = torch.channels_last_3d if mode == "3d" else torch.channels_last
            _channels_last(self.model)
        self.compiled = CompiledNet(self.model, device) if config.compile else None
        self.workers = resolve_workers(config.workers, device)
        self._pool: ThreadPoolExecutor | None = None
        self._weights: dict[Any, Any] = {}
        self._acc: torch.Tensor | None = None
        self._checked = False

    def close(self) -> None:
        """Stop the worker threads and free the block buffer (a later block makes both again)."""
        self._acc = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    # -- geometry --------------------------------------------------------------------------
    @property
    def overlap(self) -> tuple[int, ...]:
        """Overlap in voxels for the current tile (none along z for slice-wise 2D)."""
        ov = overlap_voxels(self.tile, self.config.overlap3())
        return (0, *ov[1:]) if self.mode == "slices" else ov

    @property
    def multiple(self) -> tuple[int, ...]:
        m = tuple(int(v) for v in self.info.input_multiple)
        if self.mode == "slices":
            return (1, *m[1:])
        if self.mode == "ortho":  # every axis is some plane's y or x
            return (max(m[1:]),) * 3
        return m

    def _weight(self, tile: tuple[int, ...], overlap: tuple[int, ...], flags: tuple) -> tuple[Any, torch.Tensor]:
        """A tile's separable blending weight: ``(z vector (Z, 1, 1) or None when constant along
        z, (Y, X) plane)``, both cached (kilobytes per variant, whatever the tile). Called in the
        thread that plans the block; the workers only read the tensors it returns.
        """
        cfg = self.config
        kz, kyx = (tile[0], overlap[0], flags[0]), (tile[1:], overlap[1:], flags[1:])
        if kz not in self._weights:
            wz = window_1d(tile[0], overlap[0], cfg.blend, cfg.sigma_scale, *flags[0])
            const = bool((wz == 1).all())  # e.g. no overlap along z: nothing to multiply
            self._weights[kz] = None if const else torch.from_numpy(wz).to(self.device).view(-1, 1, 1)
        if kyx not in self._weights:
            wins = [window_1d(t, o, cfg.blend, cfg.sigma_scale, *f) for t, o, f in zip(tile[1:], overlap[1:], flags[1:])]
            self._weights[kyx] = torch.from_numpy(outer(wins).astype(np.float32)).to(self.device)
        return self._weights[kz], self._weights[kyx]

    # -- networks --------------------------------------------------------------------------
    def _net(self, x: torch.Tensor) -> torch.Tensor:
        """Network forward on a batch, probabilities as float32."""
        if self._format is not None:
            x = x.contiguous(memory_format=self._format)
        amp = (
            torch.autocast(device_type=self.device.type, dtype=self.amp)
            if self.amp is not None
            else contextlib.nullcontext()
        )
        with amp:
            y = self.model(x) if self.compiled is None else self.compiled(x)
        if not self._checked:
            self._check_output(x, y)
        y = y.float()
        if self.info.activation == "sigmoid" and y.is_contiguous() and not _shares_memory(x, y):
            return y.sigmoid_()  # in place: no second (B, C, Z, Y, X) tensor per pass
        return apply_activation(y, self.info)

    def _check_output(self, x: torch.Tensor, y: Any) -> None:
        if not isinstance(y, torch.Tensor):
            raise EmsegError(f"{type(self.model).__name__} returned {type(y).__name__}, expected a tensor")
        want = (x.shape[0], self.info.out_channels, *x.shape[2:])
        if tuple(y.shape) != want:
            raise EmsegError(
                f"{type(self.model).__name__}: input {tuple(x.shape)} gave output {tuple(y.shape)}, "
                f"expected {want} (model.info lists {self.info.out_channels} channels "
                f"{list(self.info.channel_names)}); the checkpoint's info does not match its network"
            )
        self._checked = True

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tiles ``(B, 1, Z, Y, X)`` -> probabilities ``(B, C, Z, Y, X)``."""
        if self.mode == "3d":
            return self._net(x)
        return predict_planes(self._net, x, self.info, self.mode, self.batch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tiles -> probabilities, averaged over flips when TTA is on."""
        if not self.config.tta:
            return self._forward(x)
        axes = (1, 2) if self.mode == "slices" else (0, 1, 2)
        return predict_tta(self._forward, x, axes, self.info)

    # -- blocks ----------------------------------------------------------------------------
    def predict_block(self, x: torch.Tensor, block: Block, dtype: str = "float32",
                      out: torch.Tensor | None = None) -> torch.Tensor:
        """Blended probabilities ``(C, *written shape)`` for ``block``, whose normalised, padded
        input region ``x`` ``(Z, Y, X)`` is on the device, as ``dtype`` (``"float32"``, or an
        output type of :func:`to_output_dtype`); written into ``out`` (that shape and type, on
        the device; may be a strided view of the whole output) when given, and returned.

        An out-of-memory error halves the batch (then the tile), logs a warning and redoes
        the block; :class:`OutOfMemory` when nothing is left to shrink.
        """
        while True:
            failure = None
            try:
                with torch.inference_mode():
                    return self._predict_block(x, block, dtype, out)
            except Exception as err:  # noqa: BLE001 - only OOM is handled, the rest re-raised
                if not is_oom(err):
                    raise
                failure = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            # outside the except block, so the failed attempt's tensors can be freed
            self._back_off(failure)

    def _back_off(self, failure: str) -> None:
        self.oom_events += 1
        self._acc = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.batch > 1:
            self.batch //= 2
            logger.warning("out of memory (%s); retrying with batch %d", failure, self.batch)
            return
        smaller = round_tile([t // 2 for t in self.tile], self.multiple)
        if self.mode == "slices":
            smaller = (self.tile[0], *smaller[1:])
        if smaller == self.tile:
            raise OutOfMemory(
                f"out of memory on {self.device} even with batch 1 and tile {self.tile} ({failure}); "
                "use a smaller model, --precision bf16/fp16, or --device cpu"
            )
        self.tile = smaller
        logger.warning("out of memory (%s); retrying with batch 1 and tile %s", failure, self.tile)

    def group(self, tile: tuple[int, ...]) -> int:
        """Tiles per forward pass: ``batch`` (3D) or ``batch // tile[0]`` (2D planes); with
        several workers split between them, keeping 2 tiles a pass (a 3D convolution runs
        4-8x slower per tile on one), so the tiles in flight, and memory, stay about ``batch``."""
        group = self.batch if self.mode == "3d" else max(1, self.batch // tile[0])
        return max(min(2, group), group // self.workers) if self.workers > 1 else group

    def _accumulator(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The block's weighted sum, zeroed: one buffer reused while blocks keep their shape."""
        key = (self.info.out_channels, *shape)
        acc = self._acc
        if acc is None or tuple(acc.shape) != key:
            self._acc = None  # free the old one before the new one is allocated
            self._acc = acc = torch.zeros(key, dtype=torch.float32, device=self.device)
        else:
            acc.zero_()
        return acc

    def _predict_block(self, x: torch.Tensor, block: Block, dtype: str, out: torch.Tensor | None) -> torch.Tensor:
        shape = tuple(int(s) for s in x.shape)
        crop = block.crop
        tile = tuple(min(t, s) for t, s in zip(self.tile, shape))
        overlap = tuple(min(o, t - 1) for o, t in zip(self.overlap, tile))
        cfg = self.config
        starts = block_tile_starts(shape, crop, tile, overlap)
        # whether each tile is flush with the volume's edge (no neighbour to blend with there)
        flags = [
            [(bool(bb and s == 0), bool(ba and s + t == n)) for s in st]
            for st, t, n, bb, ba in zip(starts, tile, shape, block.border_before, block.border_after)
        ]
        positions = list(itertools.product(*[range(len(st)) for st in starts]))
        group = self.group(tile)
        chunks = []
        for i in range(0, len(positions), group):
            chunk = positions[i : i + group]
            regions = [tuple(slice(starts[a][j], starts[a][j] + tile[a]) for a, j in enumerate(p)) for p in chunk]
            weights = [self._weight(tile, overlap, tuple(flags[a][j] for a, j in enumerate(p))) for p in chunk]
            chunks.append((regions, weights))
        acc = self._accumulator(shape)
        for regions, y in self._batches(x, chunks):
            for k, r in enumerate(regions):  # already weighted: add in tile order
                acc[(slice(None), *r)].add_(y[k])
            del y
        wz, wy, wx = (
            torch.from_numpy(weight_sum_1d(n, st, [window_1d(t, o, cfg.blend, cfg.sigma_scale, *f) for f in fl])[c])
            .float()
            .to(self.device)
            for n, st, t, o, fl, c in zip(shape, starts, tile, overlap, flags, crop)
        )
        wsum = wz.view(-1, 1, 1) * wy.view(1, -1, 1) * wx.view(1, 1, -1)
        p = acc[(slice(None), *crop)]
        if dtype in ("float16", "float32"):  # divide straight into the output type: one pass
            if out is None:
                out = torch.empty(p.shape, dtype=getattr(torch, dtype), device=self.device)
            return torch.div(p, wsum, out=out)
        q = to_output_dtype(p.div_(wsum), dtype)
        return q if out is None else out.copy_(q)

    def _probs(self, x: torch.Tensor, regions: list, weights: list) -> torch.Tensor:
        """Blending-weighted probabilities ``(B, C, *tile)`` of a batch of tiles of ``x``: each
        tile multiplied by its weight right after the network, while it is still in cache."""
        with torch.inference_mode():
            y = self.forward(torch.stack([x[r] for r in regions]).unsqueeze(1))
            y = y.contiguous()  # a fresh tensor (or a view of the fresh stack): safe to scale in place
            for k, (wz, wyx) in enumerate(weights):
                y[k].mul_(wyx)
                if wz is not None:
                    y[k].mul_(wz)
            return y

    def _batches(self, x: torch.Tensor, chunks: list):
        """``(regions, weighted probabilities)`` of each chunk of tiles, in order.

        With one worker, batches run in this thread; with more, up to ``workers + 1`` batches
        are in flight in the pool while this thread adds finished ones to the block's sum.
        """
        if self.workers <= 1 or len(chunks) <= 1:
            for regions, weights in chunks:
                yield regions, self._probs(x, regions, weights)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="emseg-net")
        pending: deque[tuple[list, Future]] = deque()
        try:
            for regions, weights in chunks:
                pending.append((regions, self._pool.submit(self._probs, x, regions, weights)))
                if len(pending) > self.workers:
                    regions0, fut = pending.popleft()
                    yield regions0, fut.result()
            while pending:
                regions0, fut = pending.popleft()
                yield regions0, fut.result()
        finally:  # an error (or OOM) in one batch: let the others finish before the block is redone
            for _, fut in pending:
                fut.cancel()
            wait([fut for _, fut in pending])


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``b`` lives in ``a``'s storage (a network that returns its input or a view of it)."""
    return a.device == b.device and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _channels_last(model: torch.nn.Module) -> None:
    """Make 5D (3D conv) and 4D (2D conv) weights channels-last, in place."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 5:
                p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
            elif p.dim() == 4:
                p.data = p.data.contiguous(memory_format=torch.channels_last)
