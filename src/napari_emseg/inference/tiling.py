"""Tiling geometry in pure numpy: tile shapes, tile positions, output blocks with context.

A volume is processed in **output blocks** (the unit read, predicted, written and recorded for
resume). A block that writes ``[r0, r1)`` along an axis reads ``[r0 - O//2, r1 + O - O//2)``
(``O`` = tile overlap in voxels), clipped to the volume, so a block's edge sits in the middle of
an overlap zone, as every tile seam does. Inside that read region tiles start every
``S = T - O`` voxels and the last one is snapped to the end (as in MONAI's sliding window).
Blocks are ``m * S`` long, so a block's read region ``m * S + O`` holds exactly ``m`` tiles and
blocking costs no more tiles than one sliding window over the whole volume.

Where a read region is shorter than a tile it grows into the volume; where the volume itself
is shorter than a tile the region is reflect-padded (by less than ``input_multiple``: tiles are
first shrunk to the volume).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Block",
    "round_tile",
    "overlap_voxels",
    "tile_starts",
    "tile_grid",
    "block_tile_starts",
    "choose_block",
    "plan_blocks",
]


@dataclass(frozen=True)
class Block:
    """One output block.

    Attributes
    ----------
    index
        Position in :func:`plan_blocks`' list (C order over the block grid).
    out_start, out_stop
        The volume region this block writes, ``(z, y, x)``.
    read_start, read_stop
        The volume region it reads (the written region plus context, clipped to the volume).
    pad_before, pad_after
        Reflect padding added around the read region (only where the volume is smaller than a tile).
    border_before, border_after
        Whether the padded read region starts / ends at the volume's edge (no neighbour there to
        blend with).
    """

    index: int
    out_start: tuple[int, ...]
    out_stop: tuple[int, ...]
    read_start: tuple[int, ...]
    read_stop: tuple[int, ...]
    pad_before: tuple[int, ...]
    pad_after: tuple[int, ...]
    border_before: tuple[bool, ...] = (False, False, False)
    border_after: tuple[bool, ...] = (False, False, False)

    @property
    def read_slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.read_start, self.read_stop))

    @property
    def out_slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.out_start, self.out_stop))

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the padded read region (what the network tiles)."""
        return tuple(
            b - a + p + q
            for a, b, p, q in zip(self.read_start, self.read_stop, self.pad_before, self.pad_after)
        )

    @property
    def crop(self) -> tuple[slice, ...]:
        """Where the written region lies inside the padded read region."""
        return tuple(
            slice(o0 - r0 + p, o1 - r0 + p)
            for o0, o1, r0, p in zip(self.out_start, self.out_stop, self.read_start, self.pad_before)
        )


def round_tile(
    tile: Sequence[int], multiple: Sequence[int], shape: Sequence[int] | None = None
) -> tuple[int, ...]:
    """Round ``tile`` down to multiples of ``multiple`` (at least one multiple each); where
    ``shape`` is smaller, shrink the tile to ``shape`` rounded up to the multiple."""
    out = []
    for i, (t, m) in enumerate(zip(tile, multiple)):
        m = max(1, int(m))
        t = max(m, (int(t) // m) * m)
        if shape is not None:
            t = min(t, int(math.ceil(shape[i] / m)) * m)
        out.append(int(t))
    return tuple(out)


def overlap_voxels(tile: Sequence[int], overlap: Sequence[float]) -> tuple[int, ...]:
    """Overlap in voxels: ``tile - stride`` with ``stride = max(1, int(tile * (1 - overlap)))``."""
    out = []
    for t, f in zip(tile, overlap):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {f}")
        out.append(int(t) - max(1, int(t * (1.0 - f))))
    return tuple(out)


def tile_starts(length: int, tile: int, stride: int) -> np.ndarray:
    """Start offsets of tiles covering ``[0, length)``: ``0, S, 2S, ...``, the last at ``length - tile``."""
    if length < tile:
        raise ValueError(f"region of {length} voxels is shorter than the tile ({tile})")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    last = length - tile
    starts = np.arange(0, last + 1, stride, dtype=np.int64)
    if starts[-1] != last:
        starts = np.append(starts, last)
    return starts


def tile_grid(shape: Sequence[int], tile: Sequence[int], overlap: Sequence[int]) -> list[np.ndarray]:
    """Per-axis tile starts for a region of ``shape`` (tiles are their product)."""
    return [tile_starts(int(n), int(t), int(t) - int(o)) for n, t, o in zip(shape, tile, overlap)]


def block_tile_starts(
    shape: Sequence[int], crop: Sequence[slice], tile: Sequence[int], overlap: Sequence[int]
) -> list[list[int]]:
    """Per-axis starts of the tiles of a block's read region (``shape``) that reach into its
    written region ``crop`` (a read region grown to a tile's length may hold others)."""
    return [
        [int(s) for s in st if s < c.stop and s + t > c.start]
        for st, c, t in zip(tile_grid(shape, tile, overlap), crop, tile)
    ]


def choose_block(
    shape: Sequence[int],
    tile: Sequence[int],
    overlap: Sequence[int],
    target: Sequence[int],
    chunks: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Output block shape: a multiple of the stride (or of ``chunks`` when the output already
    exists), at least one stride.

    Per axis, among the multiples from half of ``target`` up to ``target`` (and the whole axis
    when it is at most twice ``target``), the one that needs the fewest tiles in all, then the
    closest to ``target``. Blocks then cost at most one tile per axis more than one sliding
    window over the whole volume (none on short axes), and never exceed twice ``target``.
    """
    out = []
    for i, (n, t, o, g) in enumerate(zip(shape, tile, overlap, target)):
        n, t, o = int(n), int(t), int(o)
        s = max(1, t - o)
        unit = max(1, int(chunks[i])) if chunks is not None else s
        first = max(1, math.ceil(s / unit))
        ideal = max(first, round(g / unit))
        sizes = {min(unit * m, n) for m in range(max(first, ideal // 2), ideal + 1)}
        if n <= 2 * g:  # a short axis in one block: no last-block waste, bounded (<= 2 * target)
            sizes.add(n)
        best = min(sizes, key=lambda b: (_axis_tile_count(n, t, o, b), abs(b - g)))
        out.append(int(best))
    return tuple(out)


def _axis_tile_count(n: int, tile: int, overlap: int, block: int) -> int:
    """Tiles needed along one axis when it is cut into blocks of ``block``."""
    t = min(tile, n)
    count = 0
    for r0, r1, e0, e1, p0, p1 in _axis_regions(n, t, overlap, block):
        crop = slice(r0 - e0 + p0, r1 - e0 + p0)
        (starts,) = block_tile_starts((e1 - e0 + p0 + p1,), (crop,), (t,), (min(overlap, t - 1),))
        count += len(starts)
    return count


def _axis_regions(n: int, tile: int, overlap: int, block: int) -> list[tuple[int, int, int, int, int, int]]:
    """``(r0, r1, e0, e1, pad0, pad1)`` for each block along one axis."""
    left, right = overlap // 2, overlap - overlap // 2
    regions = []
    for r0 in range(0, n, block):
        r1 = min(r0 + block, n)
        e0 = 0 if r0 == 0 else r0 - left
        e1 = n if r1 == n else r1 + right
        pad0 = pad1 = 0
        if e1 - e0 < tile:
            if n >= tile:  # grow into the volume, keeping the written region inside
                e0 = min(max((e0 + e1 - tile) // 2, 0), n - tile)
                e1 = e0 + tile
            else:  # the whole volume is shorter than a tile: reflect-pad
                e0, e1 = 0, n
                pad0 = (tile - n) // 2
                pad1 = tile - n - pad0
        regions.append((r0, r1, e0, e1, pad0, pad1))
    return regions


def plan_blocks(
    shape: Sequence[int], tile: Sequence[int], overlap: Sequence[int], block: Sequence[int]
) -> list[Block]:
    """All output blocks of a volume, in C order (z slowest).

    Every voxel lies in exactly one block's written region; each block's padded read region is
    at least one tile along every axis.
    """
    per_axis = [
        _axis_regions(int(n), int(t), int(o), int(b))
        for n, t, o, b in zip(shape, tile, overlap, block)
    ]
    blocks = []
    for index, combo in enumerate(itertools.product(*per_axis)):
        blocks.append(
            Block(
                index=index,
                out_start=tuple(c[0] for c in combo),
                out_stop=tuple(c[1] for c in combo),
                read_start=tuple(c[2] for c in combo),
                read_stop=tuple(c[3] for c in combo),
                pad_before=tuple(c[4] for c in combo),
                pad_after=tuple(c[5] for c in combo),
                border_before=tuple(c[2] == 0 and c[4] == 0 for c in combo),
                border_after=tuple(c[3] == n and c[5] == 0 for c, n in zip(combo, shape)),
            )
        )
    return blocks
