"""Affinity helpers: affinities derived from a boundary map, and per-voxel "inside" maps.

Channel ``c`` of an affinity map at voxel ``p`` is the probability that ``p`` and
``p + offsets[c]`` belong to the same object (:mod:`napari_emseg.models.info`); the first three
offsets are the nearest neighbours ``(-1, 0, 0), (0, -1, 0), (0, 0, -1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..finetune.targets import pair_slices
from ..models.info import NN_OFFSETS
from .maps import MapError, map_scale, read_channel
from .sections import centre, sections_apart

__all__ = ["affinities_from_boundaries", "inside_map", "check_offsets", "zero_at_boundaries",
           "unrelated_sections", "SECTION_MARGIN", "SECTION_SURE"]

#: two adjacent sections continue each other when their in-plane boundary maps correlate by at
#: least this much more than with the second section turned or rolled (chance), or by at least
#: :data:`SECTION_SURE` at all. Predicted ISBI membranes (serial sections, 50 nm): 0.08-0.53,
#: 0.053-0.52 above chance; the same sections turned apart (unrelated micrographs): -0.02-0.03,
#: at most 0.021 above chance
SECTION_MARGIN = 0.035
#: adjacent boundary maps correlating this much are one structure whatever the chance placements
#: give (near-identical sections of a symmetric layout can coincide with a turned one)
SECTION_SURE = 0.5


def check_offsets(offsets: Sequence[Sequence[int]] | None, channels: int, what: str) -> tuple:
    """The offsets of an affinity map with ``channels`` channels; the first three must be NN."""
    offs = tuple(tuple(int(v) for v in o) for o in (offsets or NN_OFFSETS[:channels]))
    if len(offs) != channels:
        raise MapError(f"{what}: {channels} affinity channels but {len(offs)} offsets {offs}")
    if channels < 3 or offs[:3] != NN_OFFSETS:
        raise MapError(
            f"{what}: the first three affinity channels must be the nearest neighbours {NN_OFFSETS} "
            f"(z, y, x), got {offs[:3]}; long-range offsets may follow"
        )
    return offs


def affinities_from_boundaries(
    boundary_map: Any,
    offsets: Sequence[Sequence[int]] = NN_OFFSETS,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Affinities ``1 - max(b(p), b(p + offset))`` from a boundary probability map.

    Parameters
    ----------
    boundary_map
        ``(Z, Y, X)`` or ``(1, Z, Y, X)`` boundary probabilities (float in [0, 1], or uint8 with
        scale 255), any array-like.
    offsets
        Affinity offsets ``(dz, dy, dx)``; default the three nearest neighbours.
    out
        Optional float32 array ``(len(offsets), Z, Y, X)`` to write into.

    Returns
    -------
    numpy.ndarray
        float32 ``(len(offsets), Z, Y, X)``; pairs whose partner lies outside the volume get 0
        (no edge), as in the fine-tuning targets.
    """
    shape = tuple(int(s) for s in boundary_map.shape)
    if len(shape) == 4:
        if shape[0] != 1:
            raise MapError(f"boundary map: expected 1 channel, got {shape[0]} (shape {shape})")
        b = read_channel(boundary_map, 0)
        scale = map_scale(boundary_map)
    elif len(shape) == 3:
        b = np.asarray(boundary_map.compute() if hasattr(boundary_map, "compute") else boundary_map)
        scale = map_scale(boundary_map)
    else:
        raise MapError(f"boundary map: expected (Z, Y, X) or (1, Z, Y, X), got shape {shape}")
    if b.dtype != np.float32 or scale != 1.0:
        b = np.multiply(b, np.float32(1.0 / scale), dtype=np.float32)
    offs = [tuple(int(v) for v in o) for o in offsets]
    if out is None:
        out = np.empty((len(offs), *b.shape), np.float32)
    for c, off in enumerate(offs):
        out[c] = 0.0
        pa, pb = pair_slices(b.shape, off)
        np.maximum(b[pa], b[pb], out=out[c][pa])
        np.subtract(1.0, out[c][pa], out=out[c][pa])
    return out


def inside_map(affs: np.ndarray, axes: Sequence[int], z: int | None = None) -> np.ndarray:
    """Per voxel, the lowest nearest-neighbour affinity of the edges that touch it along ``axes``.

    A voxel whose every edge along ``axes`` (0 = z, 1 = y, 2 = x) is likely to join the same
    object is "inside"; one next to a cut edge is on a boundary. Both voxels of a cut edge get
    the low value, so even a one-voxel-thin cut in the affinities separates two objects.
    Edges leaving the volume are ignored.

    Parameters
    ----------
    affs
        float32 ``(C >= 3, Z, Y, X)`` affinities, channels 0-2 the nearest neighbours.
    axes
        Which nearest-neighbour edges to consider, e.g. ``(1, 2)`` for in-plane.
    z
        If given, only section ``z`` (then ``axes`` must not contain 0) and a 2D result.
    """
    if z is not None and 0 in axes:
        raise ValueError("a single section has no z edges")
    spatial = affs.shape[1:] if z is None else affs.shape[2:]
    m = np.ones(spatial, np.float32)
    for ax in axes:
        a = affs[ax] if z is None else affs[ax, z]
        k = ax if z is None else ax - 1
        hi = [slice(None)] * m.ndim
        lo = [slice(None)] * m.ndim
        hi[k], lo[k] = slice(1, None), slice(None, -1)
        hi_t, lo_t = tuple(hi), tuple(lo)
        edge = a[hi_t]  # edge between p (hi) and p - e (lo), stored at p
        np.minimum(m[hi_t], edge, out=m[hi_t])
        np.minimum(m[lo_t], edge, out=m[lo_t])
    return m


def zero_at_boundaries(affs: np.ndarray, boundary: np.ndarray) -> np.ndarray:
    """Set the nearest-neighbour affinities (channels 0-2) of edges touching ``boundary`` to 0, in place.

    Used before agglomeration: a contact between two fragments through boundary voxels (where
    voxels were assigned to a fragment only by proximity) is evidence against merging them,
    whatever the affinity map says there; contacts through their interiors keep their values.
    """
    for c, off in enumerate(NN_OFFSETS):
        pa, pb = pair_slices(boundary.shape, off)
        edge = affs[c][pa]
        edge[boundary[pa] | boundary[pb]] = 0.0
    return affs


def unrelated_sections(affs: np.ndarray, margin: float = SECTION_MARGIN) -> list[int]:
    """``z`` of every pair of sections ``(z, z + 1)`` of nearest-neighbour affinities
    ``(C >= 3, Z, Y, X)`` that do not continue each other: separate micrographs in one stack.

    Each section's in-plane boundaries (``1 - min`` of its y and x affinities, first row and
    column left out: they have no partner; the centre 1024 pixels square at most) are
    correlated with the next section's, and with the next section turned by 180 degrees and
    rolled by half its height or width; a pair whose real correlation is not ``margin`` above
    the highest of those three, nor :data:`SECTION_SURE`, is unrelated
    (:func:`~.sections.sections_apart`). Serial sections and volumes continue each other;
    separate images do not. Waterz must not join objects across such a pair: their
    z-affinities are noise. Sections under 96 pixels along y or x are not judged.
    """
    win = centre(tuple(affs.shape[2:]), skip=1)

    def boundaries(z: int) -> np.ndarray:
        return 1.0 - np.minimum(np.asarray(affs[(1, z, *win)], np.float32), np.asarray(affs[(2, z, *win)], np.float32))

    return sections_apart(boundaries, int(affs.shape[1]), min(affs.shape[2:]), margin, SECTION_SURE)
