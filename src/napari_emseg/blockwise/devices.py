"""One device per dask worker: ``segment --devices 0,1,...`` and ``--local-workers`` on a multi-GPU machine.

Worker ``i`` (dask names the workers of a ``LocalCluster`` 0, 1, ...) predicts on
``devices[i % len(devices)]``. Without ``--devices``, a worker whose inference device is
``auto`` or ``cuda`` and that sees several GPUs takes GPU ``i % n_gpus`` (before, every worker
used GPU 0). The assignment changes where blocks are computed, never what is computed: the
maps are those of a single-device run.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence

from ..errors import EmsegError

__all__ = ["parse_devices", "device_for_worker", "worker_index", "worker_device"]

logger = logging.getLogger(__name__)


def parse_devices(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"0,1"`` -> ``("cuda:0", "cuda:1")``; ``"cuda:2,cpu"`` as written; ``"all"``: every GPU torch sees.

    Raises
    ------
    EmsegError
        An empty list, an unknown device name, or ``all`` without a GPU.
    """
    if text is None:
        return ()
    items = [s.strip() for s in (text.split(",") if isinstance(text, str) else text)]
    if items == ["all"]:
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise EmsegError("--devices all: torch sees no GPU here; name the devices (e.g. cpu) or use --device")
        return tuple(f"cuda:{i}" for i in range(n))
    out = []
    for item in items:
        if item.isdigit():
            item = f"cuda:{int(item)}"
        kind = item.split(":", 1)[0]
        if kind not in ("cuda", "cpu", "mps") or (":" in item and not item.split(":", 1)[1].isdigit()):
            raise EmsegError(f"--devices {text!r}: {item!r} is not a device; give GPU numbers (0,1), "
                             "cuda:N, cpu or mps, comma-separated")
        out.append(item)
    if not out or not all(out):
        raise EmsegError(f"--devices {text!r}: expected a comma-separated list such as 0,1")
    return tuple(out)


def device_for_worker(index: int, devices: Sequence[str]) -> str:
    """The device of worker ``index``: ``devices[index % len(devices)]``."""
    if not devices:
        raise ValueError("no devices to choose from")
    return str(devices[int(index) % len(devices)])


def worker_index() -> int:
    """This dask worker's number (its name in a ``LocalCluster``); 0 off a worker.

    A worker named otherwise (an existing cluster) gets a stable number from its name.
    """
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return 0
    try:
        return int(name)
    except (TypeError, ValueError):
        return zlib.crc32(str(name).encode())


def worker_device(device: str | None, devices: Sequence[str] | None = None) -> str | None:
    """The device name this worker predicts on.

    ``devices`` given: this worker's share of them (:func:`device_for_worker`). Otherwise, for
    ``device`` ``None``/``"auto"``/``"cuda"`` on a worker that sees several GPUs, GPU
    ``worker_index() % n_gpus``; else ``device`` unchanged (for :func:`~napari_emseg.device.select_device`).
    """
    if devices:
        return device_for_worker(worker_index(), devices)
    if device in (None, "auto", "cuda"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n > 1:
            return f"cuda:{worker_index() % n}"
    return device
