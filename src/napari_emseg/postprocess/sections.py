"""Whether adjacent sections of a stack continue each other, or are separate images.

A 2D network predicts serial sections and a stack of unrelated micrographs alike; only the
post-processing should treat them differently: an object may run through serial sections but
never from one micrograph into the next. :func:`sections_apart` compares a map of each section
(boundaries, a foreground mask) with the next section's, and with the next section turned by
180 degrees and rolled by half its height or width (three placements that unrelated images
match as well by chance): a pair that correlates no more than ``margin`` above the best of
those, and less than ``sure`` outright, is apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

__all__ = ["sections_apart", "chance_placements", "correlation", "centre", "MIN_SIDE", "MAX_SIDE"]

#: sections smaller than this along y or x are too small to judge: they count as continuing
MIN_SIDE = 96
#: at most this many pixels along y and x of each section are read (the centre)
MAX_SIDE = 1024


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays (0 when either is constant)."""
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt(float((a * a).sum()) * float((b * b).sum())))
    return float((a * b).sum()) / den if den > 0 else 0.0


def centre(shape: tuple[int, int], skip: int = 0) -> tuple[slice, slice]:
    """The centre window, at most :data:`MAX_SIDE` square, of a ``(Y, X)`` section whose first
    ``skip`` rows and columns are left out."""
    ny, nx = (int(s) - skip for s in shape)
    hy, hx = min(ny, MAX_SIDE), min(nx, MAX_SIDE)
    y0, x0 = skip + (ny - hy) // 2, skip + (nx - hx) // 2
    return slice(y0, y0 + hy), slice(x0, x0 + hx)


def chance_placements(b: np.ndarray) -> Iterator[np.ndarray]:
    """Section ``b`` turned by 180 degrees, then rolled by half its height, then by half its
    width (made one at a time): where an unrelated image's structures would lie."""
    ny, nx = b.shape
    yield b[::-1, ::-1]
    yield np.roll(b, ny // 2, 0)
    yield np.roll(b, nx // 2, 1)


def sections_apart(section: Callable[[int], np.ndarray], nz: int, side: int, margin: float,
                   sure: float = 0.5) -> list[int]:
    """``z`` of every pair ``(z, z + 1)`` of ``nz`` sections that do not continue each other.

    ``section(z)`` returns the float map of section ``z`` to compare; ``side`` is the smaller
    of the sections' height and width (under :data:`MIN_SIDE`: nothing is judged apart).
    """
    if nz < 2 or side < MIN_SIDE:
        return []
    apart, nxt = [], None
    for z in range(nz - 1):
        cur = nxt if nxt is not None else section(z)
        nxt = section(z + 1)
        real = correlation(cur, nxt)
        if real >= sure:
            continue
        chance = max(correlation(cur, moved) for moved in chance_placements(nxt))
        if real < chance + margin:
            apart.append(z)
    return apart
