"""Agglomeration of a region graph with waterz's mean-affinity scoring, in numpy and heapq.

waterz (Funke et al., TPAMI 2019) scores an edge between two regions by ``1 - mean affinity``
over all voxel edges of their contact, merges the lowest-scoring edge first, sums the
statistics of the edges the two regions had to a common neighbour, re-scores, and stops when
the lowest score reaches the threshold. :func:`mean_affinity_agglomeration` does the same on a
graph given as edge lists (``u, v, affinity sum, contact count``), which is all a blockwise run
has: the graph of a whole volume's fragments is small next to its voxels.
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = ["mean_affinity_agglomeration"]


def mean_affinity_agglomeration(
    n_nodes: int,
    u: np.ndarray,
    v: np.ndarray,
    affinity_sum: np.ndarray,
    count: np.ndarray,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge regions while ``1 - mean affinity`` of their contact is below ``threshold``.

    Parameters
    ----------
    n_nodes
        Node ids are ``0..n_nodes-1`` (0 may be unused).
    u, v
        Edge end points (one entry per pair of nodes, ``u != v``).
    affinity_sum, count
        Sum of the voxel-edge affinities along each contact and their number.
    threshold
        Merge while the score (compared in float32, as waterz does) is below this.

    Returns
    -------
    (pairs, scores)
        int64 ``(K, 2)`` node ids merged, in order, and float64 ``(K,)`` their scores; the
        segments are the connected components of ``pairs``.
    """
    sums = [float(s) for s in np.asarray(affinity_sum, np.float64)]
    counts = [int(c) for c in np.asarray(count, np.int64)]
    ends = [[int(a), int(b)] for a, b in zip(np.asarray(u), np.asarray(v))]
    alive = [True] * len(ends)
    adjacent: list[dict[int, int]] = [{} for _ in range(int(n_nodes))]
    heap: list[tuple[float, int]] = []
    for e, (a, b) in enumerate(ends):
        if a == b or counts[e] == 0:
            alive[e] = False
            continue
        adjacent[a][b] = e
        adjacent[b][a] = e
        heap.append((1.0 - sums[e] / counts[e], e))
    heapq.heapify(heap)
    limit = np.float32(threshold)
    pairs: list[tuple[int, int]] = []
    scores: list[float] = []
    while heap:
        score, e = heap[0]
        if np.float32(score) >= limit:
            break
        heapq.heappop(heap)
        if not alive[e]:
            continue
        current = 1.0 - sums[e] / counts[e]
        if current != score:  # stale: statistics changed since it was queued
            heapq.heappush(heap, (current, e))
            continue
        a, b = ends[e]
        alive[e] = False
        if len(adjacent[a]) < len(adjacent[b]):
            a, b = b, a  # keep a, fold b (the smaller neighbourhood) into it
        del adjacent[a][b], adjacent[b][a]
        for n, eb in adjacent[b].items():
            del adjacent[n][b]
            ea = adjacent[a].get(n)
            if ea is None:  # re-point the edge b-n to a-n
                ends[eb] = [a, n]
                adjacent[a][n] = eb
                adjacent[n][a] = eb
            else:  # a and b both touched n: one edge with the summed statistics
                sums[ea] += sums[eb]
                counts[ea] += counts[eb]
                alive[eb] = False
                heapq.heappush(heap, (1.0 - sums[ea] / counts[ea], ea))
        adjacent[b] = {}
        pairs.append((a, b))
        scores.append(score)
    return np.array(pairs, np.int64).reshape(-1, 2), np.array(scores, np.float64)
