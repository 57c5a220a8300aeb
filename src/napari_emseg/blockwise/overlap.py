"""Instances stitched by overlap (mitochondria from BCD maps, semantic instances).

Per block (:func:`extract_block`): the usual extraction
(:func:`napari_emseg.postprocess.extract_instances`, size filter off) on the core plus halo;
the core's objects are numbered ``1..n`` and written to a scratch array; the labels the block
sees in its halo beyond each face are kept with the same numbers.

Per block again (:func:`match_block`): beyond each face, the block's halo labels are compared
with the neighbour's core labels; two objects whose intersection over union there reaches
``match_iou`` are one. Only the half of the halo next to the face is compared (farther out a
block lacks context: a seed beyond its halo), and each face is judged from both sides: a link
counts when both blocks find it, so one block's mistake near its edge does not merge objects
(measured: ARAND against the single-block result 0.02 with either view, 0.003 with both, on
noisy maps of an untrained model). The driver joins the links with union-find (:func:`stitch_lut`), filters objects by
their global size and numbers them ``1..N``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from ..postprocess.cleanup import (
    consecutive_lut,
    face_contacts,
    region_adjacency,
    small_objects_lut,
)
from .geometry import FACES, Box
from .maps import open_map, read_map_region

__all__ = ["extract_block", "match_block", "stitch_lut", "face_contacts", "local_numbering"]


def local_numbering(ext_labels: np.ndarray, inner: tuple[slice, ...]) -> tuple[np.ndarray, int]:
    """Table ext id -> ``1..n`` for the ids present in the core (others -> 0), and ``n``."""
    ids = np.unique(ext_labels[inner])
    ids = ids[ids > 0]
    lut = np.zeros(int(ext_labels.max()) + 1 if ext_labels.size else 1, np.uint32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.uint32)
    return lut, len(ids)


def extract_block(spec: dict[str, Any], box: Box) -> int:
    """Extract the instances of one block and store them (a task); returns the object count."""
    import zarr

    from ..postprocess import extract_instances
    from .store import Stage

    probs = open_map(spec["probs"])
    labels = extract_instances(read_map_region(probs, box.ext), spec["target"], spec["config"].replace(min_size=0))
    lut, n = local_numbering(labels, box.inner)
    core = lut[labels[box.inner]]
    zarr.open_array(spec["local"], mode="r+")[box.core] = core
    result: dict[str, Any] = {"n": n, "sizes": np.bincount(core.ravel(), minlength=n + 1)}
    if spec["contacts"]:
        result["adj_u"], result["adj_v"], result["adj_c"] = region_adjacency(core)
    for axis, side in FACES:
        slab = box.halo_slab(axis, side)
        if slab is not None:
            rel = tuple(slice(s.start - e, s.stop - e) for s, e in zip(slab, box.ext_start))
            result[f"halo_{axis}_{side}"] = lut[labels[rel]]
    Stage(spec["stage"]).save(box.index, **result)
    return n


def _iou_links(own: np.ndarray, other: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(own id, other id)`` whose intersection over union in this region reaches ``min_iou``."""
    both = (own > 0) & (other > 0)
    if not both.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    a, b = own[both].astype(np.int64), other[both].astype(np.int64)
    base = int(b.max()) + 1
    keys, inter = np.unique(a * base + b, return_counts=True)
    ua, ub = np.divmod(keys, base)
    size_a = np.bincount(own.ravel().astype(np.int64))
    size_b = np.bincount(other.ravel().astype(np.int64))
    iou = inter / (size_a[ua] + size_b[ub] - inter)
    keep = iou >= min_iou
    return ua[keep], ub[keep]


def match_block(spec: dict[str, Any], box: Box, neighbours: dict[tuple[int, int], Box]) -> int:
    """Links between this block's objects and its neighbours' across every face (a task).

    Stores ``(own id, other block, other id)`` links and, when the size filter merges small
    objects, the voxel-face contacts across the faces after the core. Returns the link count.
    """
    import zarr

    from .store import Stage

    data = Stage(spec["stage"]).load(box.index)
    local = zarr.open_array(spec["local"], mode="r")
    own_ids, other_blocks, other_ids = [], [], []
    cu, cb, cv, cc = [], [], [], []
    for (axis, side), nb in neighbours.items():
        halo = data.get(f"halo_{axis}_{side}")
        if halo is not None and axis not in spec["skip_axes"]:
            slab = box.halo_slab(axis, side)
            # compare only the half of the halo next to the face: farther out, this block lacks
            # context (a seed beyond its halo), and the neighbour's view there counts instead
            depth = -(-(slab[axis].stop - slab[axis].start) // 2)
            if side > 0:
                lo, hi = slab[axis].start, min(slab[axis].start + depth, nb.stop[axis])
            else:
                lo, hi = max(slab[axis].stop - depth, nb.start[axis]), slab[axis].stop
            region = list(slab)
            region[axis] = slice(lo, hi)
            off = lo - slab[axis].start
            sub = [slice(None)] * 3
            sub[axis] = slice(off, off + hi - lo)
            a, b = _iou_links(halo[tuple(sub)], np.asarray(local[tuple(region)]), spec["match_iou"])
            own_ids.append(a)
            other_ids.append(b)
            other_blocks.append(np.full(len(a), nb.index, np.int64))
        if spec["contacts"] and side > 0:
            u, v, c = face_contacts(np.asarray(local[box.face_slice(axis, 1)]),
                                    np.asarray(local[nb.face_slice(axis, -1)]))
            cu.append(u)
            cv.append(v)
            cc.append(c)
            cb.append(np.full(len(u), nb.index, np.int64))
    cat = _cat
    Stage(spec["faces"]).save(box.index, own=cat(own_ids), other_block=cat(other_blocks), other=cat(other_ids),
                              cu=cat(cu), cb=cat(cb), cv=cat(cv), cc=cat(cc))
    return int(sum(len(a) for a in own_ids))


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def stitch_lut(
    counts: np.ndarray,
    sizes: list[np.ndarray],
    links: list[dict[str, np.ndarray]],
    adjacency: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None,
    min_size: int,
    small: str,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Global numbering of stitched objects.

    Parameters
    ----------
    counts
        Objects per block (block ``i``'s object ``k`` has global id ``offsets[i] + k``).
    sizes
        Core voxel count per object, per block (index 0: background).
    links
        Per block, the ``match_block`` results (``own``, ``other_block``, ``other``; with
        contacts ``cu``, ``cb``, ``cv``, ``cc``).
    adjacency
        Per block, contacts inside the core ``(u, v, faces)``, or ``None`` (no merging of
        small objects).
    min_size, small
        Size filter on the stitched objects (``"drop"`` or ``"merge"``).

    Returns
    -------
    (lut, offsets, n)
        ``lut`` maps global ids (``0..sum(counts)``) to final ids ``1..n``; block ``i``'s
        table is ``lut[offsets[i] + local]`` with local 0 -> 0.
    """
    counts = np.asarray(counts, np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    total = int(counts.sum()) + 1
    g_sizes = np.zeros(total, np.int64)
    for i, s in enumerate(sizes):
        g_sizes[offsets[i] + 1 : offsets[i] + len(s)] += s[1:]
    ua, ub = [], []
    for i, lk in enumerate(links):
        ua.append(offsets[i] + lk["own"])
        ub.append(offsets[lk["other_block"]] + lk["other"])
    ua, ub = _cat(ua), _cat(ub)
    # a link counts when both blocks of the face found it (each from its own halo)
    keys, seen = np.unique(np.minimum(ua, ub) * total + np.maximum(ua, ub), return_counts=True)
    ua, ub = np.divmod(keys[seen >= 2], total)
    graph = sparse.coo_matrix((np.ones(len(ua)), (ua, ub)), shape=(total, total))
    _, comp = connected_components(graph, directed=False)
    comp = comp.astype(np.int64)
    comp = np.unique(comp, return_inverse=True)[1].astype(np.int64) + 1
    comp[0] = 0
    comp_sizes = np.bincount(comp, weights=g_sizes, minlength=int(comp.max()) + 1).astype(np.int64)
    lut = np.arange(len(comp_sizes), dtype=np.int64)
    if min_size > 1:
        u = v = w = np.zeros(0, np.int64)
        if adjacency is not None and small == "merge":
            us, vs, ws = [], [], []
            for i, (au, av, ac) in enumerate(adjacency):
                us.append(_global(au, offsets[i]))
                vs.append(_global(av, offsets[i]))
                ws.append(ac)
            for i, lk in enumerate(links):
                us.append(_global(lk["cu"], offsets[i]))
                vs.append(np.where(lk["cv"] > 0, offsets[lk["cb"]] + lk["cv"], 0))
                ws.append(lk["cc"])
            u, v, w = comp[_cat(us)], comp[_cat(vs)], _cat(ws)
        lut = small_objects_lut(comp_sizes, np.minimum(u, v), np.maximum(u, v), w, min_size, small)
    final, n = consecutive_lut(lut, comp_sizes)
    return final[comp], offsets, n


def _global(local: np.ndarray, offset: int) -> np.ndarray:
    local = np.asarray(local, np.int64)
    return np.where(local > 0, local + offset, 0)
