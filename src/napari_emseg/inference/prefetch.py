"""Overlap reading with computing: a reader thread ahead of the network, a writer thread behind.

:class:`BlockReader` reads a block's region from any array-like (numpy, dask, zarr, h5py),
reflect-pads it where the volume is smaller than a tile, and pins it for a fast asynchronous
copy to a CUDA device; :func:`normalize_tensor` applies the volume-wide intensity range there. :class:`Prefetcher` runs it
``depth`` blocks ahead in a background thread; :class:`BlockWriter` writes finished blocks in
another, so the network waits for neither the disk nor the decompressor.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from .._finite import check_finite
from .tiling import Block

__all__ = ["BlockReader", "Prefetcher", "BlockWriter", "read_region", "normalize_tensor"]

T = TypeVar("T")
R = TypeVar("R")


def read_region(volume: Any, slices: tuple[slice, ...]) -> np.ndarray:
    """``volume[slices]`` as a numpy array, whatever the array-like (dask is computed)."""
    part = volume[slices]
    if hasattr(part, "compute"):
        part = part.compute()
    return np.asarray(part)


_TORCH_DTYPES = {np.dtype(t) for t in ("uint8", "int8", "int16", "int32", "float16", "float32")}


class BlockReader:
    """Reads and pads one block's input region; returns a CPU tensor in the volume's own type.

    Raw data travel as they are stored (an 8-bit volume as uint8: a quarter of the memory of
    float32 in the read-ahead queue and across PCIe); :func:`normalize_tensor` makes them
    network input on the device. Types torch cannot take become float32 here. NaN or infinite
    voxels raise :class:`~napari_emseg._finite.NonFiniteError` naming the first one (each block
    is checked as it is read, never the whole volume up front).
    """

    def __init__(self, volume: Any, pin: bool = False) -> None:
        self.volume, self.pin = volume, pin

    def __call__(self, block: Block) -> torch.Tensor:
        x = read_region(self.volume, block.read_slices)
        check_finite(x, offset=[s.start for s in block.read_slices], region=block.read_slices)
        if x.dtype not in _TORCH_DTYPES:
            x = x.astype(np.float32)
        pads = list(zip(block.pad_before, block.pad_after))
        if any(p or q for p, q in pads):
            x = np.pad(x, pads, mode="reflect")
        t = torch.from_numpy(np.ascontiguousarray(x))
        return t.pin_memory() if self.pin else t


def normalize_tensor(x: torch.Tensor, lo: float, hi: float, invert: bool = False) -> torch.Tensor:
    """``2 (x - lo) / (hi - lo) - 1`` (negated when ``invert``) as float32, on ``x``'s device.

    The same map as :func:`napari_emseg.data.normalize.normalize`, for tensors: it runs where the
    network does, as ``x * a + b`` in two passes (the raw block read once, converted on the fly,
    into one new float32 tensor; then the offset added in place).
    """
    scale = (-2.0 if invert else 2.0) / (hi - lo)
    offset = -lo * scale + (1.0 if invert else -1.0)
    y = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    torch.mul(x, scale, out=y)
    return y.add_(offset)


_DONE = object()


class Prefetcher(Generic[T, R]):
    """Iterate ``(item, fn(item))`` with ``fn`` running up to ``depth`` items ahead in a thread.

    ``depth=0`` calls ``fn`` in the caller's thread. An exception in ``fn`` is re-raised by the
    iteration; :meth:`close` (or leaving the ``with`` block) stops the thread.
    """

    def __init__(self, fn: Callable[[T], R], items: Iterable[T], depth: int = 2) -> None:
        self.fn, self.items, self.depth = fn, list(items), int(depth)
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, self.depth))
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Prefetcher[T, R]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _work(self) -> None:
        try:
            for item in self.items:
                if self._stop.is_set():
                    return
                self._put((item, self.fn(item), None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self._put((None, None, err))
            return
        self._put(_DONE)

    def _put(self, value: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[tuple[T, R]]:
        if self.depth <= 0:
            for item in self.items:
                yield item, self.fn(item)
            return
        self._thread = threading.Thread(target=self._work, name="emseg-prefetch", daemon=True)
        self._thread.start()
        while True:
            value = self._queue.get()
            if value is _DONE:
                return
            item, result, err = value
            if err is not None:
                raise err
            yield item, result

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a producer waiting on a full queue
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                self._thread.join(timeout=0.1)


class BlockWriter:
    """Writes blocks into ``array`` in a background thread, then calls ``on_written(block)``.

    At most ``depth`` writes wait at once (bounding memory); :meth:`close` waits for all and
    re-raises the first error.
    """

    def __init__(self, array: Any, on_written: Callable[[Block], None], depth: int = 2) -> None:
        self.array, self.on_written, self.depth = array, on_written, max(1, int(depth))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emseg-write")
        self._pending: list[Future] = []

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _write(self, block: Block, data: np.ndarray) -> None:
        self.array[(slice(None), *block.out_slices)] = data
        self.on_written(block)

    def submit(self, block: Block, data: np.ndarray) -> None:
        while len(self._pending) >= self.depth:
            self._pending.pop(0).result()
        self._pending.append(self._pool.submit(self._write, block, data))

    def close(self) -> None:
        try:
            while self._pending:
                self._pending.pop(0).result()
        finally:
            self._pool.shutdown(wait=True)
