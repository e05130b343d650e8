"""The per-partition work of `MinHashDedup.run`: plain functions on Arrow tables and numpy
arrays that `run` ships to Ray tasks (this module does not import Ray)."""

from __future__ import annotations

import numpy as np

from dataprep.stages.dedup._jit import njit
from dataprep.stages.dedup.candidates import TEXT, VISUAL, Verify, candidate_pairs, verify_pairs
from dataprep.stages.dedup.components import checksum, large_star, part_of, roots, small_star, split_directed

_NODE, _SCORE, _TBANDS, _TPAY, _VBANDS, _VPAY = ("_dd_node", "_dd_score", "_dd_tbands", "_dd_tpay",
                                                "_dd_vbands", "_dd_vpay")
_KEPT, _ISDUP = "_dd_kept", "_dd_isdup"


def make_verify(p) -> Verify:
    """The verification thresholds of a `MinHashDedupParams`."""
    from dataprep.stages.dedup.phash import WINDOWS

    return Verify(enabled=p.verify, text_threshold=p.threshold, max_hamming=p.max_hamming,
                  frame_match=p.frame_match, windows=WINDOWS)


def _take_parts(table, parts: np.ndarray, n_parts: int) -> list:
    order = np.argsort(parts, kind="stable")
    bounds = np.searchsorted(parts[order], np.arange(n_parts + 1))
    return [table.take(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def scatter_block(block, n_parts: int) -> tuple:
    """One block of features -> n_parts bucket-record tables (by band key) + n_parts
    attribute tables (node, score, key; by node)."""
    import pyarrow as pa

    node = block.column(_NODE).to_numpy()
    recs = []
    for kind, bands_col in ((TEXT, _TBANDS), (VISUAL, _VBANDS)):
        bands = block.column(bands_col).combine_chunks()
        counts = np.diff(bands.offsets.to_numpy())
        if counts.sum() == 0:
            continue
        row = np.repeat(np.arange(block.num_rows), counts)
        recs.append(pa.table({
            "bucket": bands.values.to_numpy(),
            "node": node[row],
            "kind": np.full(len(row), kind, dtype=np.int8),
        }))
    if recs:
        rec = pa.concat_tables(recs)
        bucket_parts = _take_parts(rec, part_of(rec.column("bucket").to_numpy(), n_parts), n_parts)
    else:
        empty = pa.table({"bucket": pa.array([], pa.uint64()), "node": pa.array([], pa.uint64()),
                          "kind": pa.array([], pa.int8())})
        bucket_parts = [empty] * n_parts
    attrs = pa.table({"node": block.column(_NODE), "score": block.column(_SCORE), "key": block.column("key"),
                      "tpay": block.column(_TPAY), "vpay": block.column(_VPAY)})
    attr_parts = _take_parts(attrs, part_of(node, n_parts), n_parts)
    return (*bucket_parts, *attr_parts)


def candidates_partition(n_parts: int, max_bucket: int, *tables):
    """Bucket records of one partition -> distinct candidate pairs (lo, hi, kind) routed by
    part(lo), and (last) the partition's counts."""
    import os

    import pyarrow as pa

    t = pa.concat_tables(tables).combine_chunks()
    lo, hi, kind = candidate_pairs(t.column("bucket").to_numpy(), t.column("node").to_numpy(),
                                   t.column("kind").to_numpy(), max_bucket=max_bucket)
    pairs = pa.table({"lo": lo, "hi": hi, "kind": kind})
    parts = _take_parts(pairs, part_of(lo, n_parts), n_parts)
    return (*parts, {"records": t.num_rows, "candidates": len(lo), "pid": os.getpid()})


@njit(cache=True)
def _gather_lists(values_t, offsets_t, values_v, offsets_v, pos, visual, out_offsets):
    """Concatenated lists: for each i, list pos[i] of the visual source when visual[i], else of the text one."""
    out = np.empty(out_offsets[-1], dtype=np.uint64)
    for i in range(pos.shape[0]):
        p, o = pos[i], out_offsets[i]
        if visual[i]:
            out[o:out_offsets[i + 1]] = values_v[offsets_v[p]:offsets_v[p + 1]]
        else:
            out[o:out_offsets[i + 1]] = values_t[offsets_t[p]:offsets_t[p + 1]]
    return out


def _payloads(attrs, nodes: np.ndarray, kind: np.ndarray):
    """list<uint64> payload of each (node, kind) from an attribute table that holds the nodes:
    the text payload for TEXT pairs, the visual one for VISUAL pairs.

    Gathered by a compiled loop: a visual payload is a few KB (hundreds of window hashes per
    frame), which pyarrow's take of list arrays copies several times slower."""
    import pyarrow as pa

    a_node = attrs.column("node").to_numpy()
    order = np.argsort(a_node)
    pos = order[np.searchsorted(a_node[order], nodes)] if len(nodes) else np.zeros(0, np.int64)
    text, vis = attrs.column("tpay").combine_chunks(), attrs.column("vpay").combine_chunks()
    values_t, offsets_t = text.values.to_numpy(zero_copy_only=False), text.offsets.to_numpy().astype(np.int64)
    values_v, offsets_v = vis.values.to_numpy(zero_copy_only=False), vis.offsets.to_numpy().astype(np.int64)
    visual = kind == VISUAL
    lengths = np.where(visual, offsets_v[pos + 1] - offsets_v[pos], offsets_t[pos + 1] - offsets_t[pos])
    out_offsets = np.zeros(len(pos) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_offsets[1:])
    flat = _gather_lists(values_t.astype(np.uint64, copy=False), offsets_t, values_v.astype(np.uint64, copy=False),
                         offsets_v, pos.astype(np.int64), visual, out_offsets)
    return pa.ListArray.from_arrays(pa.array(out_offsets.astype(np.int32)), pa.array(flat, pa.uint64()))


def attach_partition(n_parts: int, n_pair_pieces: int, *args):
    """Candidate pairs owned by lo's partition + that partition's attributes -> pairs with
    lo's payload, routed by part(hi), and (last) the number of pairs."""
    import pyarrow as pa

    pairs = pa.concat_tables(args[:n_pair_pieces]).combine_chunks()
    attrs = pa.concat_tables(args[n_pair_pieces:]).combine_chunks()
    kind = pairs.column("kind").to_numpy()
    pairs = pairs.append_column("pay_lo", _payloads(attrs, pairs.column("lo").to_numpy(), kind))
    return (*_take_parts(pairs, part_of(pairs.column("hi").to_numpy(), n_parts), n_parts), pairs.num_rows)


def verify_partition(n_parts: int, verify: Verify, n_pair_pieces: int, *args):
    """Pairs owned by hi's partition + its attributes -> verified edges routed for the
    connected components, and (last) the number of verified edges."""
    import pyarrow as pa

    pairs = pa.concat_tables(args[:n_pair_pieces]).combine_chunks()
    attrs = pa.concat_tables(args[n_pair_pieces:]).combine_chunks()
    kind = pairs.column("kind").to_numpy()
    lo, hi = pairs.column("lo").to_numpy(), pairs.column("hi").to_numpy()
    pay_lo = pairs.column("pay_lo").combine_chunks() if pairs.num_rows else pa.array([], pa.list_(pa.uint64()))
    ok = verify_pairs(kind, pay_lo, _payloads(attrs, hi, kind), verify)
    return (*split_directed(lo[ok], hi[ok], n_parts), int(ok.sum()))


def star_partition(large: bool, n_parts: int, *pieces):
    """One large-star or small-star step on one partition's directed edges; returns the
    new edges routed by partition and the checksum of the input edge set."""
    u = np.concatenate([p[0] for p in pieces]) if pieces else np.zeros(0, dtype=np.uint64)
    v = np.concatenate([p[1] for p in pieces]) if pieces else np.zeros(0, dtype=np.uint64)
    fp = checksum(u, v)
    a, b = (large_star if large else small_star)(u, v)
    return (*split_directed(a, b, n_parts), fp)


def members_partition(n_parts: int, n_edge_pieces: int, *args):
    """Star edges + attribute tables of one node partition -> (node, root, score, key,
    payloads) for every node in a component of 2+, routed by root's partition, and (last)
    their number."""
    import pyarrow as pa

    pieces, attr_tables = args[:n_edge_pieces], args[n_edge_pieces:]
    u = np.concatenate([p[0] for p in pieces])
    v = np.concatenate([p[1] for p in pieces])
    node, root = roots(u, v)
    attrs = pa.concat_tables(attr_tables).combine_chunks()
    a_node = attrs.column("node").to_numpy()
    order = np.argsort(a_node)
    pos = order[np.searchsorted(a_node[order], node)] if len(node) else np.zeros(0, dtype=np.int64)
    take = pa.array(pos, pa.int64())
    t = pa.table({"node": node, "root": root, **{c: attrs.column(c).take(take)
                                                  for c in ("score", "key", "tpay", "vpay")}})
    return (*_take_parts(t, part_of(root, n_parts), n_parts), t.num_rows)


def _similar(verify: Verify, tpay: list, vpay: list, a: int, b: int) -> bool:
    """Whether rows a and b pass verification on either signal."""
    from dataprep.stages.dedup.candidates import frame_match_fraction, text_jaccard

    if tpay[a] and tpay[b] and text_jaccard(np.array(tpay[a], np.uint64),
                                            np.array(tpay[b], np.uint64)) >= verify.text_threshold:
        return True
    return bool(vpay[a] and vpay[b] and frame_match_fraction(
        np.array(vpay[a], np.uint64), np.array(vpay[b], np.uint64), windows=verify.windows,
        max_hamming=verify.max_hamming) >= verify.frame_match)


def _greedy_reps(verify: Verify, tpay: list, vpay: list, lo: int, hi: int) -> list[int]:
    """Representative (row index) of each row lo..hi-1 of one component, rows in policy order.

    Connected components chain: A~B and B~C put C with A even when C is unlike A. With
    verification on, the best row becomes the representative of the rows similar to it;
    the best of the rest represents those similar to it; and so on. So every removed row
    is verified-similar to the row named in its `_duplicate_of`."""
    rep = [-1] * (hi - lo)
    for i in range(hi - lo):
        if rep[i] >= 0:
            continue
        rep[i] = lo + i
        for j in range(i + 1, hi - lo):
            if rep[j] < 0 and _similar(verify, tpay, vpay, lo + i, lo + j):
                rep[j] = lo + i
    return rep


def decide_partition(verify: Verify, *tables):
    """Members grouped by root -> per node: its representative's key and whether it is a duplicate.
    Order: highest score, ties broken by the smallest key (deterministic)."""
    import pyarrow as pa

    t = pa.concat_tables(tables).combine_chunks()
    t = t.sort_by([("root", "ascending"), ("score", "descending"), ("key", "ascending")])
    root = t.column("root").to_numpy()
    n = len(root)
    first = np.r_[True, root[1:] != root[:-1]] if n else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(first)
    rep = (starts[np.cumsum(first) - 1] if n else np.zeros(0, np.int64)).astype(np.int64)
    if verify.enabled and n:
        tpay, vpay = t.column("tpay").to_pylist(), t.column("vpay").to_pylist()
        for lo, hi in zip(starts.tolist(), np.r_[starts[1:], n].tolist(), strict=True):
            rep[lo:hi] = _greedy_reps(verify, tpay, vpay, lo, hi)
    isdup = rep != np.arange(n)
    # A representative that ended up alone is no longer in a cluster.
    has_members = np.zeros(n, dtype=bool)
    has_members[rep[isdup]] = True
    in_cluster = isdup | has_members
    kept = t.column("key").take(pa.array(rep, mask=~in_cluster))
    return pa.table({_NODE: t.column("node"), _KEPT: kept, _ISDUP: pa.array(isdup)})


def decide_and_route(n_parts: int, verify: Verify, *tables):
    """`decide_partition`, its rows routed to the partition of their block (block index %
    n_parts), and (last) the number of rows."""
    dec = decide_partition(verify, *tables)
    block = (dec.column(_NODE).to_numpy() >> np.uint64(32)).astype(np.int64)
    return (*_take_parts(dec, block % n_parts, n_parts), dec.num_rows)


def features_block(stage, block, block_index: int):
    """The slim features table of one materialized block (see `MinHashDedup.features`)."""
    return stage.features(block, node_base=block_index << 32)


def annotate_block(block, block_index: int, *decision_pieces):
    """The block with `_reject`, `_duplicate_of` and `dup_cluster` set from the decisions
    about its rows (the pieces may hold other blocks' decisions too)."""
    import pyarrow as pa

    n = block.num_rows
    kept = np.full(n, None, dtype=object)
    isdup = np.zeros(n, dtype=bool)
    for piece in decision_pieces:
        node = piece.column(_NODE).to_numpy()
        mine = np.flatnonzero((node >> np.uint64(32)) == np.uint64(block_index))
        if len(mine) == 0:
            continue
        row = (node[mine] & np.uint64(0xFFFFFFFF)).astype(np.int64)
        kept[row] = piece.column(_KEPT).take(pa.array(mine)).to_numpy(zero_copy_only=False)
        isdup[row] = piece.column(_ISDUP).take(pa.array(mine)).to_numpy(zero_copy_only=False)
    return finish(block, pa.array(kept, pa.string()), isdup)


def finish(block, kept, isdup: np.ndarray):
    """`block` with `_reject`, `_duplicate_of` and `dup_cluster` from each row's kept key
    (null when in no cluster) and duplicate flag; an earlier `_reject` reason is kept."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from dataprep.columns import DUPLICATE_OF, REJECT

    flag = pa.array(isdup, pa.bool_())
    reject = pc.if_else(flag, pa.scalar("duplicate"), pa.scalar(None, pa.string()))
    if REJECT in block.column_names:
        reject = pc.coalesce(block.column(REJECT).cast(pa.string()), reject)
    dup_of = pc.if_else(flag, kept, pa.scalar(None, pa.string()))
    drop = [c for c in (REJECT, DUPLICATE_OF, "dup_cluster") if c in block.column_names]
    out = block.drop_columns(drop)
    return (out.append_column(REJECT, reject).append_column(DUPLICATE_OF, dup_of)
            .append_column("dup_cluster", kept))
