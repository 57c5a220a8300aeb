"""Neurons across blocks: fragments per block, one region graph, one global agglomeration.

Per block (:func:`fragment_block`): affinities of the core plus halo, fragments
(:func:`napari_emseg.postprocess.fragments.fragments_job`) cropped to the core and numbered
``1..n``, written to scratch arrays with their boundary mask; then the block's edges: for every
pair of touching fragments, the sum and count of the affinities across their contact, each
edge that touches a boundary voxel counted as 0 (as the in-memory path zeroes them for waterz),
and no edge across two sections that do not continue each other (separate images,
:func:`napari_emseg.postprocess.affinities.unrelated_sections`, judged within the block).

Per block again (:func:`face_block`): the same statistics across each face after the core,
from the two facing sections and the affinities between them.

The driver adds up all edges into one region graph and agglomerates it with waterz's
mean-affinity scoring (:func:`napari_emseg.blockwise.graph.mean_affinity_agglomeration`), so a
neuron cut by a block face is joined like any two fragments.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..models.info import NN_OFFSETS
from ..postprocess.affinities import unrelated_sections
from .geometry import Box
from .maps import open_map, region_affinities
from .overlap import local_numbering

__all__ = ["edge_statistics", "fragment_block", "face_block"]


def edge_statistics(
    fragments: np.ndarray, affs: np.ndarray, boundary: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(u, v, affinity sum, contacts)`` over the nearest-neighbour edges inside a region.

    Channel ``c`` of ``affs`` at voxel ``p`` joins ``p`` and ``p - e_c``; edges touching a
    ``boundary`` voxel count with affinity 0. ``u < v``; pairs of equal ids are skipped.
    """
    us, vs, ss = [], [], []
    for c, off in enumerate(NN_OFFSETS):
        axis = int(np.flatnonzero(off)[0])
        hi = [slice(None)] * 3
        lo = [slice(None)] * 3
        hi[axis], lo[axis] = slice(1, None), slice(None, -1)
        a, b = fragments[tuple(hi)], fragments[tuple(lo)]
        diff = a != b
        if not diff.any():
            continue
        aff = np.where(boundary[tuple(hi)] | boundary[tuple(lo)], np.float32(0), affs[c][tuple(hi)])
        a, b = a[diff].astype(np.int64), b[diff].astype(np.int64)
        us.append(np.minimum(a, b))
        vs.append(np.maximum(a, b))
        ss.append(aff[diff].astype(np.float64))
    return coalesce_edges(us, vs, ss)


def coalesce_edges(
    us: Sequence[np.ndarray], vs: Sequence[np.ndarray], sums: Sequence[np.ndarray],
    counts: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One entry per ``(u, v)``: summed affinities and contacts (each voxel edge counts 1)."""
    if not us:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float64), empty
    u, v, s = (np.concatenate(x) for x in (us, vs, sums))
    n = np.concatenate(counts) if counts is not None else np.ones(len(u), np.int64)
    keep = (u > 0) & (v > 0)  # id 0 (a section without fragments) has no edges, as in waterz
    u, v, s, n = u[keep], v[keep], s[keep], n[keep]
    if not len(u):
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float64), empty
    base = int(max(u.max(), v.max())) + 1
    keys, inverse = np.unique(u * base + v, return_inverse=True)
    su = np.bincount(inverse, weights=s)
    cnt = np.bincount(inverse, weights=n).astype(np.int64)
    ku, kv = np.divmod(keys, base)
    return ku, kv, su, cnt


def fragment_block(spec: dict[str, Any], box: Box) -> int:
    """Fragments and in-block edges of one block (a task); returns the fragment count."""
    import zarr

    from ..postprocess.fragments import fragments_job
    from ..progress import drain
    from .store import Stage

    probs = open_map(spec["probs"])
    affs = region_affinities(probs, spec["target"], box.ext)
    apart = unrelated_sections(affs)
    frags = drain(fragments_job(affs, spec["config"].fragments, voxel_size=spec["voxel_size"]), show=False)
    affs[0, [z + 1 for z in apart]] = 0.0  # separate images: no edge across them (as in memory)
    lut, n = local_numbering(frags.labels, box.inner)
    core = lut[frags.labels[box.inner]]
    boundary = frags.boundary[box.inner]
    del frags
    zarr.open_array(spec["local"], mode="r+")[box.core] = core
    zarr.open_array(spec["boundary"], mode="r+")[box.core] = boundary.astype(np.uint8)
    u, v, s, c = edge_statistics(core, affs[(slice(None), *box.inner)], boundary)
    Stage(spec["stage"]).save(box.index, n=n, sizes=np.bincount(core.ravel(), minlength=n + 1), u=u, v=v, s=s, c=c)
    return n


def face_block(spec: dict[str, Any], box: Box, neighbours: dict[tuple[int, int], Box]) -> int:
    """Edges between this block's fragments and those of the blocks after it (a task)."""
    import zarr

    from .store import Stage

    probs = open_map(spec["probs"])
    local = zarr.open_array(spec["local"], mode="r")
    bnd = zarr.open_array(spec["boundary"], mode="r")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("u", "b", "v", "s", "c")}
    for (axis, side), nb in neighbours.items():
        if side < 0:
            continue
        mine, theirs = box.face_slice(axis, 1), nb.face_slice(axis, -1)
        nb_affs = region_affinities(probs, spec["target"], theirs)
        if axis == 0 and unrelated_sections(np.concatenate([region_affinities(probs, spec["target"], mine), nb_affs], 1)):
            continue  # the two sections are separate images: no edge across them
        fa, fb = np.asarray(local[mine]).ravel(), np.asarray(local[theirs]).ravel()
        cut = (np.asarray(bnd[mine]) > 0).ravel() | (np.asarray(bnd[theirs]) > 0).ravel()
        aff = nb_affs[axis].ravel()  # joins p and p - e_axis
        aff = np.where(cut, np.float32(0), aff).astype(np.float64)
        both = (fa > 0) & (fb > 0)
        fa, fb, aff = fa[both].astype(np.int64), fb[both].astype(np.int64), aff[both]
        if not len(fa):
            continue
        base = int(fb.max()) + 1
        keys, inverse = np.unique(fa * base + fb, return_inverse=True)
        ku, kv = np.divmod(keys, base)
        parts["u"].append(ku)
        parts["v"].append(kv)
        parts["b"].append(np.full(len(ku), nb.index, np.int64))
        parts["s"].append(np.bincount(inverse, weights=aff))
        parts["c"].append(np.bincount(inverse).astype(np.int64))
    out = {k: (np.concatenate(p) if p else np.zeros(0, np.float64 if k == "s" else np.int64)) for k, p in parts.items()}
    Stage(spec["faces"]).save(box.index, **out)
    return len(out["u"])
