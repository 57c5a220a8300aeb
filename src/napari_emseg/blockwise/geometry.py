"""Block geometry for blockwise instance extraction: a grid of cores, each read with a halo.

A volume is cut into **cores** (the regions a block owns and writes) on a regular grid; each
block is computed on its core grown by a **halo** on every side (clipped to the volume), so
objects near a core's faces are seen with context, and the halo overlaps the neighbouring
cores, where stitching compares the two blocks' answers. Pure numpy, no I/O.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

__all__ = ["Box", "block_grid", "grid_shape", "neighbour", "face_pairs", "FACES"]

FACES: tuple[tuple[int, int], ...] = tuple((axis, side) for axis in range(3) for side in (-1, 1))
"""The six faces of a block as ``(axis, side)``, ``side`` -1 (before) or +1 (after)."""


@dataclass(frozen=True)
class Box:
    """One block of the grid.

    Attributes
    ----------
    index
        Position in :func:`block_grid`'s list (C order, z slowest).
    position
        ``(i, j, k)`` on the block grid.
    start, stop
        The core: the region this block owns, ``(z, y, x)``.
    ext_start, ext_stop
        The core grown by the halo, clipped to the volume: what the block reads and computes on.
    """

    index: int
    position: tuple[int, int, int]
    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    ext_start: tuple[int, int, int]
    ext_stop: tuple[int, int, int]

    @property
    def core(self) -> tuple[slice, ...]:
        """The core, in volume coordinates."""
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))

    @property
    def ext(self) -> tuple[slice, ...]:
        """The core plus halo, in volume coordinates."""
        return tuple(slice(a, b) for a, b in zip(self.ext_start, self.ext_stop))

    @property
    def inner(self) -> tuple[slice, ...]:
        """The core, in coordinates of the extended region."""
        return tuple(slice(a - e, b - e) for a, b, e in zip(self.start, self.stop, self.ext_start))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.start, self.stop))

    def halo_slab(self, axis: int, side: int) -> tuple[slice, ...] | None:
        """The part of the halo beyond one face (volume coordinates), over the core's extent in
        the other axes; ``None`` where the halo is empty there (volume edge or zero halo)."""
        lo, hi = (self.ext_start[axis], self.start[axis]) if side < 0 else (self.stop[axis], self.ext_stop[axis])
        if hi <= lo:
            return None
        sl = list(self.core)
        sl[axis] = slice(lo, hi)
        return tuple(sl)

    def face_slice(self, axis: int, side: int) -> tuple[slice, ...]:
        """The core's outermost section at one face (volume coordinates)."""
        sl = list(self.core)
        i = self.start[axis] if side < 0 else self.stop[axis] - 1
        sl[axis] = slice(i, i + 1)
        return tuple(sl)


def grid_shape(shape: Sequence[int], blocks: Sequence[int]) -> tuple[int, int, int]:
    """Number of blocks along each axis."""
    return tuple(max(1, math.ceil(int(n) / max(1, int(b)))) for n, b in zip(shape, blocks))  # type: ignore[return-value]


def block_grid(shape: Sequence[int], blocks: Sequence[int], halo: Sequence[int]) -> list[Box]:
    """All blocks of a ``(z, y, x)`` volume cut into cores of ``blocks`` with ``halo`` around.

    Every voxel lies in exactly one core. ``blocks`` larger than the volume give one block.
    """
    if len(shape) != 3 or len(blocks) != 3 or len(halo) != 3:
        raise ValueError("shape, blocks and halo must each have three values (z, y, x)")
    if min(int(b) for b in blocks) < 1 or min(int(h) for h in halo) < 0:
        raise ValueError(f"blocks must be positive and halo non-negative, got {blocks}, {halo}")
    grid = grid_shape(shape, blocks)
    out = []
    for index, pos in enumerate(itertools.product(*[range(g) for g in grid])):
        start = tuple(p * int(b) for p, b in zip(pos, blocks))
        stop = tuple(min(s + int(b), int(n)) for s, b, n in zip(start, blocks, shape))
        ext_start = tuple(max(0, s - int(h)) for s, h in zip(start, halo))
        ext_stop = tuple(min(int(n), e + int(h)) for e, h, n in zip(stop, halo, shape))
        out.append(Box(index, pos, start, stop, ext_start, ext_stop))  # type: ignore[arg-type]
    return out


def neighbour(boxes: Sequence[Box], grid: Sequence[int], box: Box, axis: int, side: int) -> Box | None:
    """The block across one face of ``box``, or ``None`` at the volume's edge."""
    pos = list(box.position)
    pos[axis] += side
    if not 0 <= pos[axis] < grid[axis]:
        return None
    return boxes[(pos[0] * grid[1] + pos[1]) * grid[2] + pos[2]]


def face_pairs(boxes: Sequence[Box], grid: Sequence[int]) -> Iterator[tuple[Box, Box, int]]:
    """Every pair of face-adjacent blocks once, as ``(before, after, axis)``."""
    for box in boxes:
        for axis in range(3):
            other = neighbour(boxes, grid, box, axis, 1)
            if other is not None:
                yield box, other, axis
