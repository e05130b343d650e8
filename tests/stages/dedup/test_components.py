"""Connected components by large-star / small-star (stages/dedup/components.py)."""

from __future__ import annotations

import numpy as np

from dataprep.stages.dedup.components import local_components, part_of, split_directed


def test_matches_scipy_on_random_graphs():
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(0)
    for _ in range(25):
        n, m = 400, int(rng.integers(50, 500))
        u = rng.integers(0, n, m).astype(np.uint64)
        v = rng.integers(0, n, m).astype(np.uint64)
        got = local_components(u, v)
        _, lab = connected_components(sp.coo_matrix((np.ones(m), (u.astype(int), v.astype(int))), shape=(n, n)),
                                      directed=False)
        loop = u == v
        in_edges = set(np.concatenate([u[~loop], v[~loop]]).tolist())   # self-loops alone join nothing
        assert set(got) == in_edges
        for node in in_edges:
            comp = [x for x in in_edges if lab[x] == lab[node]]
            if len(comp) > 1:
                assert got[node] == min(comp)


def test_long_chain_converges_to_its_minimum():
    nodes = np.random.default_rng(2).permutation(2000).astype(np.uint64) + np.uint64(10)
    got = local_components(nodes[:-1], nodes[1:])
    assert set(got.values()) == {10}


def test_partitions_route_both_directions():
    u = np.array([1, 2, 3], np.uint64)
    v = np.array([4, 5, 6], np.uint64)
    parts = split_directed(u, v, 3)
    assert sum(len(p[0]) for p in parts) == 6
    for i, (a, _) in enumerate(parts):
        assert np.all(part_of(a, 3) == i)
