"""Keep freed memory for reuse while predicting (glibc's malloc, Linux).

glibc serves every allocation above its mmap threshold (at most 32 MB) with a fresh ``mmap``
and unmaps it when freed, so each forward pass whose activations exceed it faults in new pages,
one per 4 KB: on the 2-core benchmark VM a fresh 33 MB tensor cost 150 ms to fill against 3-11 ms
for reused memory, and the network of the pointwise benchmark (batch 4) spent half its CPU time
in those faults. :func:`reuse_freed_memory` turns ``mmap`` allocation off and raises the trim
threshold for the duration of a run whose passes are that large (:func:`worth_keeping`), so freed buffers are reused from the heap; on leaving it
restores ``mmap`` for large allocations (at glibc's own dynamic ceiling: threshold 32 MB, trim
64 MB, where glibc's adaptive rule puts them once a large array has been freed) and gives the
heap's free pages back to the system (``malloc_trim``). Elsewhere (musl, macOS, Windows) it does
nothing. ``NAPARI_EMSEG_REUSE_MEMORY=0`` turns it off.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
import threading
from collections.abc import Iterator

__all__ = ["reuse_freed_memory", "worth_keeping"]

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
#: kept free at the heap's top before it is trimmed, during a run
TRIM_WHILE_RUNNING = 1 << 30
#: values on leaving (glibc's dynamic maximum for the threshold, and twice it for trimming)
MMAP_THRESHOLD_AFTER, TRIM_AFTER, MMAP_MAX_AFTER = 32 << 20, 64 << 20, 65536

_lock = threading.Lock()
_depth = 0


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or os.environ.get("NAPARI_EMSEG_REUSE_MEMORY", "1") == "0":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl has mallopt without the same meaning)
        return libc
    except (OSError, AttributeError):
        return None


#: a forward pass whose float32 input is this large: with 8 or more channels its activations
#: pass glibc's 32 MiB ``mmap`` ceiling (smaller ones are reused from the heap anyway)
LARGE_PASS_BYTES = 4 << 20


def worth_keeping(device_type: str, pass_voxels: int) -> bool:
    """Whether keeping the heap pays: on the CPU, for passes of at least :data:`LARGE_PASS_BYTES`.
    (Kept on for small passes it only adds fragmentation: 70 MB against 35 MB in the streamed
    memory test.)"""
    return device_type == "cpu" and 4 * int(pass_voxels) >= LARGE_PASS_BYTES


@contextlib.contextmanager
def reuse_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """While inside, freed memory stays in the heap for the next allocation; yields whether
    that is in effect (glibc only). Nested and concurrent uses share one setting."""
    global _depth
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    with _lock:
        if _depth == 0:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_WHILE_RUNNING)
        _depth += 1
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(M_MMAP_MAX, MMAP_MAX_AFTER)
                libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_AFTER)
                libc.mallopt(M_TRIM_THRESHOLD, TRIM_AFTER)
                libc.malloc_trim(0)
