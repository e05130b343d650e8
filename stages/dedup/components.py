"""Connected components of a partitioned edge list: alternating large-star / small-star.

Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014): every step
groups edges by one endpoint, so each step is one hash shuffle of the edges and one
vectorized pass per partition; it converges in O(log^2 n) rounds (a handful in practice,
since LSH clusters are tight) into stars: every node points at the smallest node id of
its component. Nothing here imports Ray: these functions are the per-partition work that
`stage.MinHashDedup.run` ships to Ray tasks, and tests call them directly.

Edges are (u, v) uint64 node ids. A partition holds the directed edges (u, v) for the
nodes u it owns, both orientations of every undirected edge being routed.
"""

from __future__ import annotations

import numpy as np

from dataprep.stages.dedup.shingles import splitmix64


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer on a uint64 array (a bijection that spreads every bit)."""
    return splitmix64(np.asarray(x, dtype=np.uint64).copy())


def part_of(nodes: np.ndarray, n_parts: int) -> np.ndarray:
    """(N,) partition index of each node id: a hash, so partitions are balanced."""
    return (mix64(nodes) % np.uint64(n_parts)).astype(np.int64)


def split_directed(u: np.ndarray, v: np.ndarray, n_parts: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Route undirected edges: (u, v) to part(u) and (v, u) to part(v)."""
    su = np.concatenate([u, v])
    sv = np.concatenate([v, u])
    parts = part_of(su, n_parts)
    order = np.argsort(parts, kind="stable")
    bounds = np.searchsorted(parts[order], np.arange(n_parts + 1))
    return [(su[order[a:b]], sv[order[a:b]]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _dedup(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (u, v) pairs without self-loops, sorted by u then v."""
    keep = u != v
    u, v = u[keep], v[keep]
    if len(u) == 0:
        return u, v
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    first = np.ones(len(u), dtype=bool)
    first[1:] = (u[1:] != u[:-1]) | (v[1:] != v[:-1])
    return u[first], v[first]


def _groups(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For u sorted: start index of each run and the run index of each element."""
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    run = np.cumsum(np.r_[True, u[1:] != u[:-1]]) - 1
    return starts, run


def large_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each u: m = min(u, N(u)); connect every larger neighbour v > u to m."""
    u, v = _dedup(u, v)
    if len(u) == 0:
        return u, v
    starts, run = _groups(u)
    m = np.minimum(u[starts], np.minimum.reduceat(v, starts))    # (groups,)
    sel = v > u
    return v[sel], m[run][sel]


def small_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each u: m = min(u, smaller neighbours); connect u and its smaller neighbours to m."""
    u, v = _dedup(u, v)
    sel = v < u
    u, v = u[sel], v[sel]
    if len(u) == 0:
        return u, v
    starts, run = _groups(u)
    m = np.minimum(u[starts], np.minimum.reduceat(v, starts))
    out_u = np.concatenate([v, u[starts]])
    out_v = np.concatenate([m[run], m])
    return out_u, out_v


def checksum(u: np.ndarray, v: np.ndarray) -> int:
    """An order-free fingerprint of a set of distinct directed edges (sum of pair hashes)."""
    u, v = _dedup(u, v)
    with np.errstate(over="ignore"):
        return int(mix64(mix64(u) ^ v).sum(dtype=np.uint64))


def roots(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """After convergence (stars): (node, root) for every node u in this partition's edges."""
    u, v = _dedup(u, v)
    if len(u) == 0:
        return u, v
    starts, _ = _groups(u)
    m = np.minimum(u[starts], np.minimum.reduceat(v, starts))
    return u[starts], m


def local_components(u: np.ndarray, v: np.ndarray, *, max_rounds: int = 100) -> dict[int, int]:
    """node -> smallest node of its component, in one process (reference for tests)."""
    u = np.asarray(u, dtype=np.uint64)
    v = np.asarray(v, dtype=np.uint64)
    prev = None
    for _ in range(max_rounds):
        a, b = large_star(np.concatenate([u, v]), np.concatenate([v, u]))
        u, v = small_star(np.concatenate([a, b]), np.concatenate([b, a]))
        cur = checksum(u, v)
        if cur == prev:
            break
        prev = cur
    n, r = roots(np.concatenate([u, v]), np.concatenate([v, u]))
    return dict(zip(n.tolist(), r.tolist(), strict=True))
