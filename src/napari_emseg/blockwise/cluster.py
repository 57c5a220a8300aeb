"""dask.distributed plumbing: a client for a job, per-block tasks with progress, worker caches.

No home-made scheduler: every block is a ``client.submit`` task; dask retries a task that
raised (``retries``) and reschedules the tasks of a worker that died. The driver consumes the
futures as they finish (:func:`run_blocks`), records each finished block, and yields one
:class:`~napari_emseg.progress.Progress` per block.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import EmsegError
from ..progress import Cancelled, Job, Stopwatch

__all__ = ["dask_client", "run_blocks", "worker_cache", "VolumeRef", "open_ref", "SyncArray"]

logger = logging.getLogger(__name__)

_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCAL: dict[Any, Any] = {"lock": threading.Lock()}
_LOCK = threading.Lock()


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:  # pragma: no cover - a test dependency, optional for users
        raise EmsegError(
            "blockwise segmentation needs dask.distributed: pip install 'napari-emseg[distributed]'"
        ) from None
    return distributed


@contextlib.contextmanager
def dask_client(
    scheduler: Any = None,
    local_workers: int | None = None,
    *,
    processes: bool = True,
    threads_per_worker: int = 1,
) -> Iterator[Any]:
    """A ``distributed.Client`` for one job, closed afterwards unless it was given.

    Parameters
    ----------
    scheduler
        A ``Client`` (used as it is), a scheduler address (``"tcp://host:8786"``), or ``None``
        for a ``LocalCluster`` on this machine.
    local_workers
        Workers of the local cluster (default 1). Each holds its own model.
    processes
        Local workers as processes (default) or as threads of this process.
    threads_per_worker
        Threads per local worker; one keeps one block per worker in memory at a time.
    """
    distributed = _distributed()
    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout="30s")
        except OSError as err:
            raise EmsegError(f"cannot reach the dask scheduler at {scheduler!r} ({err}); start it "
                             "with `dask scheduler` or check the address") from None
        with client:
            yield client
        return
    n = max(1, int(local_workers or 1))
    # no dashboard, and the scheduler's HTTP routes on a free port: a second job on this machine
    # (or a cluster already on 8787) gets no "port in use" warning
    cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=max(1, threads_per_worker),
                                       processes=processes, dashboard_address=None,
                                       scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"})
    try:
        with distributed.Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def run_blocks(
    client: Any,
    fn: Callable[..., Any],
    tasks: Sequence[tuple[int, tuple[Any, ...]]],
    *,
    stage: str,
    total: int,
    done: int = 0,
    retries: int = 2,
    on_done: Callable[[int, Any], None] | None = None,
) -> Job[int]:
    """Run ``fn(*args)`` for every ``(index, args)`` on the cluster; one event per finished block.

    ``on_done(index, result)`` runs on the driver as each block finishes (e.g. to record it).
    A task that fails after its retries stops the job with its error; a cancel (or Ctrl-C)
    cancels the outstanding tasks. Returns the number of blocks run.
    """
    distributed = _distributed()
    token = uuid.uuid4().hex[:8]
    futures = {
        client.submit(fn, *args, key=f"emseg-{stage}-{index}-{token}", retries=retries, pure=False): index
        for index, args in tasks
    }
    watch = Stopwatch()
    ran = 0
    if not futures:
        yield watch.event(done, total, stage=stage, message="all blocks already done")
        return 0
    try:
        for future in distributed.as_completed(futures):
            index = futures[future]
            result = future.result()  # re-raises the task's error here
            if on_done is not None:
                on_done(index, result)
            ran += 1
            event = watch.event(ran, len(futures), stage=stage, message=f"block {index}")
            yield type(event)(done + ran, total, stage, event.message, eta_s=event.eta_s)
    except (Cancelled, KeyboardInterrupt, Exception):
        client.cancel(list(futures))
        raise
    return ran


def worker_cache() -> dict[Any, Any]:
    """A dict private to the dask worker running the caller (or to this process off a worker).

    Models, opened volumes and locks kept here live as long as the worker: a model is loaded
    once per worker, not once per block.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return _LOCAL
    with _LOCK:
        cache = _CACHES.get(worker)
        if cache is None:
            cache = _CACHES[worker] = {"lock": threading.Lock()}
        return cache


class SyncArray:
    """An array-like over a dask array that computes every read in the calling thread.

    Inside a dask worker (or beside a ``Client``) a plain ``.compute()`` would submit a graph to
    the cluster; block reads must not.
    """

    def __init__(self, data: Any) -> None:
        self.data = data
        self.shape = tuple(int(s) for s in data.shape)
        self.dtype = data.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        part = self.data[key]
        if hasattr(part, "compute"):
            part = part.compute(scheduler="synchronous")
        return np.asarray(part)


@dataclass(frozen=True)
class VolumeRef:
    """How a worker opens the input image: a URI for :func:`napari_emseg.io.open_volume`."""

    uri: str
    channel: int | None = None
    voxel_size: tuple[float, float, float] | None = None
    axes: str | None = None


def open_ref(ref: Any) -> Any:
    """The image a task reads: a :class:`VolumeRef` opened once per worker, or the array given."""
    if not isinstance(ref, VolumeRef):
        return SyncArray(ref) if hasattr(ref, "compute") else ref
    cache = worker_cache()
    key = ("volume", ref, os.getpid())
    if key not in cache:
        from ..io import open_volume

        cache[key] = SyncArray(open_volume(ref.uri, channel=ref.channel, voxel_size=ref.voxel_size,
                                                axes=ref.axes).data)
    return cache[key]
