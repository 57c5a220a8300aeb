"""Label clean-up: small objects merged into their best neighbour or dropped; consecutive ids.

Everything works on lookup tables over label ids and on the region adjacency (which labels touch,
over how many voxel faces), so the same code cleans a full volume and a cached agglomeration
at a new threshold without touching the voxels until the final ``lut[labels]``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

__all__ = [
    "SmallMode",
    "label_sizes",
    "region_adjacency",
    "small_objects_lut",
    "consecutive_lut",
    "apply_lut",
    "relabel_consecutive",
    "remove_small_objects",
]

SmallMode = Literal["merge", "drop"]

_MAX_ROUNDS = 32


def label_sizes(labels: np.ndarray, n: int | None = None) -> np.ndarray:
    """Voxel count per id ``0..max`` (or ``0..n-1``) as int64, counted section by section."""
    top = int(labels.max()) if labels.size else 0
    if top >= 2**62:
        raise ValueError("label ids above 2**62 are not supported; relabel first")
    size = max(top + 1, n or 0)
    sizes = np.zeros(size, np.int64)
    for section in labels.reshape(labels.shape[0], -1) if labels.ndim > 1 else [labels]:
        flat = section.view(np.int64) if section.dtype == np.uint64 else section
        sizes += np.bincount(flat, minlength=size)
    return sizes


def face_contacts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(id in a, id in b, voxel faces)`` of two facing sections (0 included)."""
    a = a.ravel().astype(np.int64)
    b = b.ravel().astype(np.int64)
    base = int(b.max()) + 1 if b.size else 1
    keys, counts = np.unique(a * base + b, return_counts=True)
    u, v = np.divmod(keys, base)
    return u, v, counts


def region_adjacency(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of touching labels ``(u, v)`` with ``u < v`` and their contact area in voxel faces.

    Background (0) is included as a label, so callers decide whether touching 0 counts.
    Counted section by section along axis 0, so memory stays proportional to one section
    (with per-section fragments every voxel face between sections is a contact).
    """
    if labels.ndim == 1:
        labels = labels[None]
    top = int(labels.max()) if labels.size else 0
    if top >= 2**31:
        raise ValueError("region adjacency needs label ids below 2**31; relabel first")
    base = top + 1
    keys, counts = [], []

    def add(a: np.ndarray, b: np.ndarray) -> None:
        diff = a != b
        if not diff.any():
            return
        a = a[diff].astype(np.int64)
        b = b[diff].astype(np.int64)
        k, c = np.unique(np.minimum(a, b) * base + np.maximum(a, b), return_counts=True)
        keys.append(k)
        counts.append(c)

    for z in range(labels.shape[0]):
        section = labels[z]
        for ax in range(section.ndim):
            lo = [slice(None)] * section.ndim
            hi = [slice(None)] * section.ndim
            lo[ax], hi[ax] = slice(None, -1), slice(1, None)
            add(section[tuple(lo)], section[tuple(hi)])
        if z:
            add(labels[z - 1], section)
    if not keys:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    k, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    c = np.bincount(inverse, weights=np.concatenate(counts)).astype(np.int64)
    u, v = np.divmod(k, base)
    return u, v, c


def _coalesce(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum ``w`` over duplicate ``(u, v)`` pairs."""
    if u.size == 0:
        return u, v, w
    n = int(max(u.max(), v.max())) + 1
    m = sparse.coo_matrix((w, (u, v)), shape=(n, n)).tocsr()
    m.sum_duplicates()
    m = m.tocoo()
    return m.row.astype(np.int64), m.col.astype(np.int64), m.data.astype(np.int64)


def small_objects_lut(
    sizes: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    contact: np.ndarray,
    min_size: int,
    mode: SmallMode = "merge",
) -> np.ndarray:
    """A lookup table (old id -> new id) that removes objects smaller than ``min_size``.

    ``mode="merge"``: each small object joins the non-background neighbour it shares the largest
    contact with (ties: the larger neighbour), repeated until no small object has a neighbour
    left; small objects without neighbours are dropped. ``mode="drop"``: small objects become 0.
    Id 0 (background) always maps to 0. The result is not consecutive (see :func:`consecutive_lut`).
    """
    n = len(sizes)
    lut = np.arange(n, dtype=np.int64)
    if min_size <= 1 or n <= 1:
        return lut
    sizes = np.asarray(sizes, np.int64).copy()
    if mode == "merge":
        keep = (u != 0) & (v != 0) & (u != v)
        u, v, w = u[keep], v[keep], contact[keep]
        u, v, w = _coalesce(np.minimum(u, v), np.maximum(u, v), w)  # one entry per pair, summed
        for _ in range(_MAX_ROUNDS):
            small = (sizes < min_size) & (sizes > 0)
            small[0] = False
            src = np.concatenate([u, v])
            dst = np.concatenate([v, u])
            ww = np.concatenate([w, w])
            sel = small[src]
            if not sel.any():
                break
            src, dst, ww = src[sel], dst[sel], ww[sel]
            order = np.lexsort((sizes[dst], ww, src))
            src, dst = src[order], dst[order]
            last = np.r_[src[1:] != src[:-1], True]
            graph = sparse.coo_matrix((np.ones(int(last.sum())), (src[last], dst[last])), shape=(n, n))
            ncomp, comp = connected_components(graph, directed=False)
            comp = comp.astype(np.int64) + 1
            comp[comp == comp[0]] = 0  # background's own component stays 0
            lut = comp[lut]
            sizes = np.bincount(comp, weights=sizes, minlength=ncomp + 1).astype(np.int64)
            u, v = comp[u], comp[v]
            keep = u != v
            u, v, w = _coalesce(np.minimum(u[keep], v[keep]), np.maximum(u[keep], v[keep]), w[keep])
            n = len(sizes)
    small = (sizes < min_size) & (sizes > 0)
    small[0] = True
    return np.where(small[lut], 0, lut)


def consecutive_lut(lut: np.ndarray, sizes: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Compose ``lut`` with a relabelling to ``1..n`` (0 stays 0); ids of size 0 are skipped.

    Returns the new lookup table (uint32 if ``n`` fits, else uint64) and ``n``.
    """
    present = np.zeros(int(lut.max()) + 1 if lut.size else 1, bool)
    if sizes is None:
        present[lut] = True
    else:
        present[lut[np.asarray(sizes) > 0]] = True
    present[0] = False
    new = np.cumsum(present)
    new[~present] = 0
    n = int(present.sum())
    dtype = np.uint32 if n < 2**32 - 1 else np.uint64
    return new[lut].astype(dtype), n


def apply_lut(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``lut[labels]`` section by section (keeps the temporary index array small)."""
    out = np.empty(labels.shape, lut.dtype)
    flat_ok = labels.dtype in (np.uint8, np.uint16, np.uint32, np.int32, np.int64, np.intp)
    for z in range(labels.shape[0]):
        sec = labels[z] if flat_ok else labels[z].astype(np.int64)
        np.take(lut, sec, out=out[z])
    return out


def relabel_consecutive(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels renumbered ``1..n`` in order of their old ids (0 stays 0), and ``n``."""
    if labels.size == 0:
        return labels.astype(np.uint32), 0
    top = int(labels.max())
    if top < 4 * labels.size + 1024:
        sizes = label_sizes(labels, top + 1)
        lut, n = consecutive_lut(np.arange(top + 1, dtype=np.int64), sizes)
        return apply_lut(labels, lut), n
    ids, inverse = np.unique(labels, return_inverse=True)
    offset = 0 if ids[0] == 0 else 1
    dtype = np.uint32 if len(ids) < 2**32 - 1 else np.uint64
    return (inverse.reshape(labels.shape) + offset).astype(dtype), int(len(ids) - (1 - offset))


def remove_small_objects(labels: np.ndarray, min_size: int, mode: SmallMode = "merge") -> tuple[np.ndarray, int]:
    """Remove objects smaller than ``min_size`` voxels (see :func:`small_objects_lut`), relabel 1..n."""
    labels, _ = relabel_consecutive(labels)
    sizes = label_sizes(labels)
    if min_size > 1:
        u, v, w = region_adjacency(labels) if mode == "merge" else (np.empty(0, np.int64),) * 3
        lut = small_objects_lut(sizes, u, v, w, min_size, mode)
    else:
        lut = np.arange(len(sizes), dtype=np.int64)
    lut, n = consecutive_lut(lut, sizes)
    return apply_lut(labels, lut), n
