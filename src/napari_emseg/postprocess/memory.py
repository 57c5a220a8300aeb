"""Say "too large for the in-memory path" before running out of memory, not after.

Each post-processing path knows roughly how many bytes per voxel it holds at its peak (maps
read as needed, fragments, watershed temporaries). :func:`check_memory` compares that estimate
with the memory the machine has available now and raises :class:`VolumeTooLargeError`, which
points the user to blockwise mode, instead of letting the operating system kill the process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..errors import EmsegError

__all__ = ["VolumeTooLargeError", "available_memory", "estimate_bytes", "check_memory", "BYTES_PER_VOXEL"]

logger = logging.getLogger(__name__)

# Peak bytes per voxel of each in-memory path beyond its input map: peak RSS measured on a
# 64x256x256 synthetic volume (affinities/2d 31, /3d 68, boundaries/2d 31, /3d 66, bcd/2d 12,
# bcd/3d 31, semantic 14), rounded up by ~25 % (2d neuron paths by more, for waterz's own C++
# memory). "3d" variants hold whole-volume watershed temporaries (float64 heights, int32
# markers, distance transforms), "2d" ones a section's worth. Paths that read whole channels of
# a map add them with ``extra_per_voxel``.
BYTES_PER_VOXEL: dict[str, int] = {
    "affinities/2d": 48,
    "affinities/3d": 84,
    "boundaries/2d": 48,
    "boundaries/3d": 84,
    "bcd/2d": 16,
    "bcd/linked": 24,  # bcd/2d and the joined copy of the labels
    "bcd/3d": 40,
    "semantic/2d": 18,
    "semantic/3d": 18,
}

MEMORY_FRACTION = 0.8
"""Use at most this fraction of the available memory; the rest is left to napari and the OS."""


class VolumeTooLargeError(EmsegError, MemoryError):
    """The volume needs more memory than this machine has free for the in-memory path."""


def available_memory() -> int:
    """Bytes of memory available to new allocations now (``psutil.virtual_memory().available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def estimate_bytes(shape: Sequence[int], path: str, extra_per_voxel: float = 0.0) -> int:
    """Peak bytes of ``path`` (a key of :data:`BYTES_PER_VOXEL`) for a volume of ``shape``."""
    n = 1
    for s in shape:
        n *= int(s)
    return int(n * (BYTES_PER_VOXEL[path] + extra_per_voxel))


def check_memory(shape: Sequence[int], path: str, *, extra_per_voxel: float = 0.0, what: str = "") -> int:
    """Raise :class:`VolumeTooLargeError` when ``path`` would not fit in available memory.

    Parameters
    ----------
    shape
        Spatial shape ``(z, y, x)`` of the volume.
    path
        Key of :data:`BYTES_PER_VOXEL`, e.g. ``"affinities/2d"``.
    extra_per_voxel
        Bytes per voxel on top of the path's own, e.g. for several thresholds' outputs.
    what
        Name of the job, used in the message.

    Returns
    -------
    int
        The estimate in bytes (logged at debug level).
    """
    need = estimate_bytes(shape, path, extra_per_voxel)
    have = available_memory()
    logger.debug("%s: in-memory %s needs ~%.2f GB, %.2f GB available", what or path, path, need / 1e9, have / 1e9)
    if need > MEMORY_FRACTION * have:
        shape_txt = "x".join(str(int(s)) for s in shape)
        raise VolumeTooLargeError(
            f"{what or 'post-processing'}: the volume ({shape_txt} voxels) is too large for the "
            f"in-memory path: it needs about {need / 1e9:.1f} GB and this machine has "
            f"{have / 1e9:.1f} GB available. Use blockwise mode (--blocks), process a crop, "
            "or free memory"
        )
    return need
