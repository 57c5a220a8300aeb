"""PyTorch fast paths for tiled inference: compute workers, precision checks, optional compile.

* :func:`resolve_workers`: how many threads run forward passes at once. PyTorch parallelises
  one operator over its intra-op threads (``torch.get_num_threads()``); with fewer threads than
  cores, the cores left idle run other batches of tiles. On a GPU one thread feeds the device.
* :func:`resolve_precision`: the autocast dtype, with reduced precision on the CPU only where
  the CPU has native instructions for it (bf16: AVX512-BF16 or AMX; fp16: AVX512-FP16 or AMX),
  since emulating it is slower than float32.
* :class:`CompiledNet`: ``torch.compile`` of the network for fixed tile shapes (CUDA graphs on
  a CUDA device), falling back to the eager network, with a warning, when compiling fails.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["usable_cores", "resolve_workers", "cpu_supports", "resolve_precision", "CompiledNet"]

logger = logging.getLogger(__name__)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None, device: torch.device) -> int:
    """Threads that run forward passes concurrently: ``workers`` when given, else 1 on a GPU
    and ``usable_cores() // torch.get_num_threads()`` (at least 1) on the CPU."""
    if workers is not None:
        return max(1, int(workers))
    if device.type != "cpu":
        return 1
    return max(1, usable_cores() // max(1, torch.get_num_threads()))


def cpu_supports(dtype: torch.dtype) -> bool:
    """Whether oneDNN runs ``dtype`` (bf16 or fp16) natively on this CPU."""
    check = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}.get(dtype)
    try:
        return bool(check and getattr(torch.ops.mkldnn, check)())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (``None``: float32).

    On the CPU a requested bf16 or fp16 without native support falls back to float32 with a
    warning; ``"auto"`` is float32 there.
    """
    from ..device import autocast_dtype

    dtype = autocast_dtype(device, precision)
    if dtype is not None and device.type == "cpu" and not cpu_supports(dtype):
        logger.warning("precision %s: this CPU has no native %s instructions (emulated it is slower than "
                       "float32); running in float32", precision, dtype)
        return None
    return dtype


class CompiledNet:
    """``torch.compile(model)`` called like the model, or the model itself once compiling failed.

    Each new input shape compiles (or is traced into CUDA graphs) under a lock, so worker threads
    never compile at once; later calls with a known shape run concurrently. Any error from the
    compiler, at any call, switches to the eager model for good, logging the reason once, and
    that call is answered by the eager model.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model
        self.failed: str | None = None
        self._lock = threading.Lock()
        self._shapes: set[tuple[int, ...]] = set()
        mode = "reduce-overhead" if device.type == "cuda" else None  # CUDA graphs for fixed shapes
        try:
            self._fn: Callable[..., Any] = torch.compile(model, mode=mode, dynamic=False)
        except Exception as err:  # noqa: BLE001 - any failure means eager
            self._fail(err)

    @property
    def active(self) -> bool:
        """Whether calls go through the compiled network."""
        return self.failed is None

    def _fail(self, err: BaseException) -> None:
        self.failed = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        logger.warning("torch.compile failed (%s); running the network uncompiled", self.failed)

    def __call__(self, x: torch.Tensor) -> Any:
        if self.failed is not None:
            return self.model(x)
        shape = tuple(x.shape)
        try:
            if shape in self._shapes:
                return self._fn(x)
            with self._lock:
                y = self._fn(x)
                self._shapes.add(shape)
                return y
        except Exception as err:  # noqa: BLE001 - compiler errors of any type; OOM is re-raised
            from .runner import is_oom

            if is_oom(err):
                raise
            if self.failed is None:
                self._fail(err)
            return self.model(x)

