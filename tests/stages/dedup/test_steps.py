"""The per-partition work of `minhash_dedup` (stages/dedup/steps.py, candidates.py) against plain references."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

from dataprep.executor import LocalExecutor
from dataprep.stages.dedup import steps
from dataprep.stages.dedup.candidates import TEXT, bucket_pairs, jaccard
from dataprep.stages.dedup.components import local_components, roots
from dataprep.stages.dedup.stage import connected_stars


def test_jaccard_is_the_set_jaccard_of_lists_with_repeats():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = rng.integers(0, 30, rng.integers(0, 15)).astype(np.uint64)
        b = rng.integers(0, 30, rng.integers(0, 15)).astype(np.uint64)
        sa, sb = set(a.tolist()), set(b.tolist())
        want = len(sa & sb) / len(sa | sb) if sa | sb else 0.0
        assert jaccard(a, b) == want


@pytest.mark.parametrize("wide", [False, True])
def test_bucket_pairs_are_every_pair_of_small_buckets_and_a_star_of_large_ones(wide):
    rng = np.random.default_rng(1)
    bucket = rng.integers(0, 400, 1000).astype(np.uint64)
    if wide:   # real band keys are 64-bit hashes: the first sort sees their high bits only
        bucket = (rng.integers(0, 2**63, 400, dtype=np.int64).astype(np.uint64) << np.uint64(1))[bucket]
    bucket[:40] = bucket[0]                                # one bucket larger than max_bucket
    node = rng.permutation(1000).astype(np.uint64)
    i, j = bucket_pairs(bucket, node, max_bucket=8)
    got = {frozenset((int(node[a]), int(node[b]))) for a, b in zip(i.tolist(), j.tolist(), strict=True)}
    assert all(bucket[a] == bucket[b] for a, b in zip(i.tolist(), j.tolist(), strict=True))
    want = set()
    for key in np.unique(bucket):
        members = sorted(node[bucket == key].tolist())
        if len(members) <= 8:
            want |= {frozenset(p) for p in itertools.combinations(members, 2)}
        else:
            want |= {frozenset((members[0], m)) for m in members[1:]}
    assert got == want


def test_attach_keeps_one_copy_of_a_pair_found_in_several_buckets():
    piece = 3 << 32                                      # nodes 5 and 9 of piece 3 are its rows 5 and 9
    feats = pa.table({"_dd_tpay": pa.array([[r, r + 1] for r in range(10)], steps._LIST),
                      "_dd_vpay": pa.array([[]] * 10, steps._LIST)})
    other = 7 << 32
    pairs = pa.table([np.array([piece + 5] * 3 + [other + 1], np.uint64), np.array([piece + 9] * 3 + [other + 2],
                      np.uint64), np.full(4, TEXT, np.int8)], schema=steps.PAIRS)
    routed = steps.by_piece(pairs, "lo")                 # a route's table may hold other pieces' pairs
    out = steps.attach(routed, feats, 3)
    assert out.column("lo").to_pylist() == [piece + 5] and out.column("hi").to_pylist() == [piece + 9]
    assert out.column("pay_lo").to_pylist() == [[5, 6]]


def test_members_look_their_attributes_up_by_row_of_their_piece():
    piece = 2 << 32
    feats = pa.table({"_dd_score": pa.array([0.5, 1.5, 2.5], pa.float64()), "key": ["a", "b", "c"],
                      "_dd_tpay": pa.array([[0], [1], [2]], steps._LIST), "_dd_vpay": pa.array([[]] * 3, steps._LIST)})
    star_edges = steps._directed(np.array([piece + 1, piece + 2], np.uint64), np.array([7, 7], np.uint64))
    out = steps.members(steps.by_piece(star_edges, "u"), feats, 2)
    assert out.column("node").to_pylist() == [piece + 1, piece + 2] and out.column("root").to_pylist() == [7, 7]
    assert out.column("key").to_pylist() == ["b", "c"] and out.column("tpay").to_pylist() == [[1], [2]]
    assert out.column("score").to_pylist() == [1.5, 2.5]


def test_edge_checksum_ignores_order_and_block_boundaries():
    edges = steps._directed(np.array([1, 2, 3], np.uint64), np.array([4, 5, 6], np.uint64))
    whole = steps.edge_checksum(edges).column("checksum")[0].as_py()
    flipped = steps.edge_checksum(edges.take(np.arange(edges.num_rows)[::-1])).column("checksum")[0].as_py()
    parts = sum(steps.edge_checksum(edges.slice(a, 2)).column("checksum")[0].as_py() for a in (0, 2, 4)) % 2**64
    assert whole == flipped == parts
    assert steps.edge_checksum(edges.slice(1)).column("checksum")[0].as_py() != whole


def test_connected_stars_over_exchanges_match_the_reference_on_a_long_chain():
    ex = LocalExecutor()
    nodes = np.random.default_rng(2).permutation(500).astype(np.uint64) + np.uint64(10)
    rng = np.random.default_rng(3)
    extra = rng.integers(1000, 1100, (60, 2)).astype(np.uint64)        # and a few small random graphs
    u, v = np.r_[nodes[:-1], extra[:, 0]], np.r_[nodes[1:], extra[:, 1]]
    edges = steps._directed(u, v)
    stars, rounds = connected_stars(ex, edges, partitions=4, max_rounds=64)
    node, root = roots(stars.column("u").to_numpy(), stars.column("v").to_numpy())
    assert dict(zip(node.tolist(), root.tolist(), strict=True)) == local_components(u, v)
    assert 2 <= rounds < 64                                          # it stopped at a fixpoint
