"""The data-parallel work of `MinHashDedup.run`: plain functions on Arrow tables that `run` hands
to its executor (Ray Data under the runner; this module does not import Ray).

Four kinds, by how they are called:
- per piece of the input: `features_piece` (a call per piece), `annotate_piece` (`Executor.map_pieces`);
- on any table of a collection (`Executor.map`): `bucket_records`, and `by_piece`, which tags rows
  for `Executor.route`;
- per partition after an `Executor.exchange` on a column, so that rows with equal keys meet:
  `candidates` (by bucket), `star` (by edge source), `decide` (by component root);
- per piece, on the rows routed to it and the piece's features: `attach` (pairs by `lo`),
  `verify_edges` (pairs by `hi`), `members` (star edges by node).
The last kind is a lookup join: a node id is (piece << 32 | row), so the features of a node are row
`node & 0xFFFFFFFF` of its piece's features table, and only the pairs and edges move to them. Payloads
and attributes never go through a shuffle.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataprep.executor import read_piece
from dataprep.stages.dedup._jit import njit
from dataprep.stages.dedup.candidates import (TEXT, VISUAL, Verify, candidate_pairs, edit_windows, similar,
                                              verify_pairs)
from dataprep.stages.dedup.components import checksum, large_star, mix64, roots, small_star, split_directed

_NODE, _SCORE, _TBANDS, _TPAY, _VBANDS, _VPAY = ("_dd_node", "_dd_score", "_dd_tbands", "_dd_tpay",
                                                "_dd_vbands", "_dd_vpay")
_KEPT, _ISDUP = "_dd_kept", "_dd_isdup"
PIECE = "_dd_piece"   # the input piece a row is routed to (node >> 32 of one of its nodes)
_ROW = np.uint64(0xFFFFFFFF)

_LIST = pa.list_(pa.uint64())
RECORDS = pa.schema([("bucket", pa.uint64()), ("node", pa.uint64()), ("kind", pa.int8())])
PAIRS = pa.schema([("lo", pa.uint64()), ("hi", pa.uint64()), ("kind", pa.int8())])
EDGES = pa.schema([("u", pa.uint64()), ("v", pa.uint64())])
MEMBERS = pa.schema([("node", pa.uint64()), ("root", pa.uint64()), ("score", pa.float64()),
                     ("key", pa.string()), ("tpay", _LIST), ("vpay", _LIST)])
DECISIONS = pa.schema([(_NODE, pa.uint64()), (_KEPT, pa.string()), (_ISDUP, pa.bool_()), (PIECE, pa.int64())])


def make_verify(p) -> Verify:
    """The verification thresholds of a `MinHashDedupParams`."""
    from dataprep.stages.dedup.phash import WINDOWS

    return Verify(enabled=p.verify, text_threshold=p.threshold, max_hamming=p.max_hamming,
                  frame_match=p.frame_match, windows=WINDOWS)


def _directed(u: np.ndarray, v: np.ndarray) -> pa.Table:
    """EDGES rows of undirected edges, both orientations: each end meets the edge in its own partition."""
    return pa.table([np.concatenate([u, v]), np.concatenate([v, u])], schema=EDGES)


def features_piece(piece, index: int, stage) -> pa.Table:
    """The slim features of input piece `index` (a file of the segment, or a table; see
    `MinHashDedup.features`); its node ids are index << 32 | row, so a pair, an edge or a decision
    finds its way back to the piece and row."""
    return stage.features(read_piece(piece), node_base=index << 32)


def bucket_records(feats: pa.Table) -> pa.Table:
    """RECORDS: one (bucket, node, kind) per LSH band key of each row's signatures."""
    node = feats.column(_NODE).to_numpy()
    recs = []
    for kind, column in ((TEXT, _TBANDS), (VISUAL, _VBANDS)):
        bands = feats.column(column).combine_chunks()
        row = np.repeat(np.arange(feats.num_rows), pc.list_value_length(bands).to_numpy(zero_copy_only=False))
        recs.append(pa.table([bands.flatten(), node[row], np.full(len(row), kind, np.int8)], schema=RECORDS))
    return pa.concat_tables(recs)


def candidates(records: pa.Table, max_bucket: int) -> pa.Table:
    """PAIRS: the distinct candidate pairs of the buckets in this partition (all of their records)."""
    t = records.combine_chunks()
    lo, hi, kind = candidate_pairs(t.column("bucket").to_numpy(), t.column("node").to_numpy(),
                                   t.column("kind").to_numpy(), max_bucket=max_bucket)
    return pa.table([lo, hi, kind], schema=PAIRS)


def by_piece(t: pa.Table, end: str) -> pa.Table:
    """`t` with PIECE, the input piece of the node in column `end`: what `Executor.route` hands it by."""
    return t.append_column(PIECE, pa.array((t.column(end).to_numpy() >> np.uint64(32)).astype(np.int64)))


def _mine(routed: pa.Table, index: int) -> pa.Table:
    """The rows of a routed table that belong to piece `index` (a route's table may hold other pieces')."""
    return routed.filter(pc.equal(routed.column(PIECE), index)).drop_columns([PIECE])


def _rows(nodes: np.ndarray) -> np.ndarray:
    """Row index of each node in its piece's features."""
    return (nodes & _ROW).astype(np.int64)


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


def _csr(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(values uint64, offsets int64) of a list<uint64> column; row i's list is values[offsets[i]:offsets[i+1]]."""
    lists = column.combine_chunks()
    return (lists.values.to_numpy(zero_copy_only=False).astype(np.uint64, copy=False),
            lists.offsets.to_numpy().astype(np.int64))


def _payloads(feats: pa.Table, nodes: np.ndarray, kind: np.ndarray) -> pa.ListArray:
    """list<uint64> payload of each (node, kind), from the features of the nodes' piece: the text payload
    for TEXT pairs, the visual one for VISUAL pairs.

    Gathered by a compiled loop: a visual payload is a few KB (hundreds of window hashes per
    frame), which pyarrow's take of list arrays copies several times slower."""
    pos = _rows(nodes)
    values_t, offsets_t = _csr(feats.column(_TPAY))
    values_v, offsets_v = _csr(feats.column(_VPAY))
    visual = kind == VISUAL
    lengths = np.where(visual, offsets_v[pos + 1] - offsets_v[pos], offsets_t[pos + 1] - offsets_t[pos])
    out_offsets = np.zeros(len(pos) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_offsets[1:])
    flat = _gather_lists(values_t, offsets_t, values_v, offsets_v, pos, visual, out_offsets)
    return pa.ListArray.from_arrays(pa.array(out_offsets.astype(np.int32)), pa.array(flat, pa.uint64()))


def attach(routed: pa.Table, feats: pa.Table, index: int) -> pa.Table:
    """Candidate pairs routed by the piece of `lo` -> the distinct pairs (lo, hi, kind) whose lo is a row of
    piece `index`, with `pay_lo`, lo's payload (from `feats`, that piece's features).

    Near-duplicates share several bands, whose buckets lie in different partitions: each of those
    found the pair. Every copy has the same lo, so they all meet here, and only one goes on."""
    pairs = _mine(routed, index)
    lo, hi, kind = (pairs.column(c).to_numpy() for c in ("lo", "hi", "kind"))
    order = np.lexsort((kind, hi, lo))
    first = order[np.r_[True, (np.diff(lo[order]) != 0) | (np.diff(hi[order]) != 0) | (np.diff(kind[order]) != 0)]] \
        if len(order) else order
    pairs = pa.table([lo[first], hi[first], kind[first]], schema=PAIRS)
    return pairs.append_column("pay_lo", _payloads(feats, lo[first], kind[first]))


def verify_edges(routed: pa.Table, feats: pa.Table, index: int, verify: Verify) -> pa.Table:
    """Pairs carrying `pay_lo`, routed by the piece of `hi` -> EDGES of those whose hi is a row of piece
    `index` that pass the exact check against hi's payload (from `feats`, that piece's features)."""
    pairs = _mine(routed, index)
    kind = pairs.column("kind").to_numpy()
    lo, hi = pairs.column("lo").to_numpy(), pairs.column("hi").to_numpy()
    ok = verify_pairs(kind, pairs.column("pay_lo").combine_chunks(), _payloads(feats, hi, kind), verify)
    return _directed(lo[ok], hi[ok])


def star(t: pa.Table, large: bool) -> pa.Table:
    """One large-star or small-star step (components.py) on the edges of the sources in this
    partition (after an exchange on `u`) -> the new EDGES."""
    a, b = (large_star if large else small_star)(t.column("u").to_numpy(), t.column("v").to_numpy())
    return _directed(a, b)


def edge_checksum(t: pa.Table) -> pa.Table:
    """One row: an order-free checksum of the rows (u, v) as a multiset.

    A star step's output rows are a function of its input edge set, so the same checksum two rounds
    running means the edges no longer change: the components are stars."""
    u, v = t.column("u").to_numpy(), t.column("v").to_numpy()
    with np.errstate(over="ignore"):
        total = mix64(mix64(u) ^ v).sum(dtype=np.uint64)
    return pa.table({"checksum": pa.array([total], pa.uint64())})


def members(routed: pa.Table, feats: pa.Table, index: int) -> pa.Table:
    """Star edges after convergence, routed by the piece of their source `u` -> MEMBERS: each node of
    piece `index` in a component of 2+, with its root and its attributes (from `feats`, the piece's
    features). Every edge of a node has it as `u` in one orientation, so all of them are here."""
    edges = _mine(routed, index)
    node, root = roots(edges.column("u").to_numpy(), edges.column("v").to_numpy())
    mine = feats.select([_SCORE, "key", _TPAY, _VPAY]).take(pa.array(_rows(node), pa.int64()))
    return pa.Table.from_arrays([node, root, *mine.columns], names=MEMBERS.names).cast(MEMBERS)


def star_partition(large: bool, n_parts: int, *pieces):
    """One large-star or small-star step on one partition's directed edges, for task-routed callers
    (semantic dedup): the new edges routed by partition and the checksum of the input edge set."""
    u = np.concatenate([p[0] for p in pieces]) if pieces else np.zeros(0, dtype=np.uint64)
    v = np.concatenate([p[1] for p in pieces]) if pieces else np.zeros(0, dtype=np.uint64)
    fp = checksum(u, v)
    a, b = (large_star if large else small_star)(u, v)
    return (*split_directed(a, b, n_parts), fp)


@njit(cache=True)
def _greedy_reps(tv, to, vv, vo, starts, ends, text_threshold, windows, same, max_hamming, frame_match, rep):
    """rep[i]: the representative (row index) of each row of each component starts[c]..ends[c]-1, rows
    in policy order.

    Connected components chain: A~B and B~C put C with A even when C is unlike A. With
    verification on, the best row becomes the representative of the rows similar to it;
    the best of the rest represents those similar to it; and so on. So every removed row
    is verified-similar to the row named in its `_duplicate_of`."""
    for c in range(starts.shape[0]):
        for i in range(starts[c], ends[c]):
            if rep[i] >= 0:
                continue
            rep[i] = i
            for j in range(i + 1, ends[c]):
                if rep[j] < 0 and similar(tv[to[i]:to[i + 1]], tv[to[j]:to[j + 1]], vv[vo[i]:vo[i + 1]],
                                          vv[vo[j]:vo[j + 1]], text_threshold, windows, same, max_hamming,
                                          frame_match):
                    rep[j] = i


def decide(t: pa.Table, verify: Verify) -> pa.Table:
    """Members of whole components (MEMBERS, after an exchange on `root`) -> DECISIONS: per node, its
    representative's key and whether it is a duplicate. Order in a component: highest score, ties broken
    by the smallest key (deterministic)."""
    t = t.combine_chunks().sort_by([("root", "ascending"), ("score", "descending"), ("key", "ascending")])
    root = t.column("root").to_numpy()
    n = len(root)
    first = np.r_[True, root[1:] != root[:-1]] if n else np.zeros(0, dtype=bool)
    starts = np.flatnonzero(first)
    rep = (starts[np.cumsum(first) - 1] if n else np.zeros(0, np.int64)).astype(np.int64)
    if verify.enabled and n:
        rep = np.full(n, -1, dtype=np.int64)
        _greedy_reps(*_csr(t.column("tpay")), *_csr(t.column("vpay")), starts, np.r_[starts[1:], n],
                     verify.text_threshold, verify.windows, edit_windows(verify.windows), verify.max_hamming,
                     verify.frame_match, rep)
    isdup = rep != np.arange(n)
    # A representative that ended up alone is no longer in a cluster.
    has_members = np.zeros(n, dtype=bool)
    has_members[rep[isdup]] = True
    in_cluster = isdup | has_members
    kept = t.column("key").take(pa.array(rep, mask=~in_cluster))
    node = t.column("node").to_numpy()
    return pa.table([node, kept, isdup, (node >> np.uint64(32)).astype(np.int64)], schema=DECISIONS)


def annotate_piece(table: pa.Table, index: int, decisions: pa.Table | None) -> pa.Table:
    """Input piece `index` with `_reject`, `_duplicate_of` and `dup_cluster` set from DECISIONS about its
    rows (`decisions` may hold other pieces' too; None: no row of it is in a cluster)."""
    n = table.num_rows
    kept = np.full(n, None, dtype=object)
    isdup = np.zeros(n, dtype=bool)
    if decisions is not None:
        mine = decisions.filter(pc.equal(decisions.column(PIECE), index))
        row = (mine.column(_NODE).to_numpy() & np.uint64(0xFFFFFFFF)).astype(np.int64)
        kept[row] = mine.column(_KEPT).to_numpy(zero_copy_only=False)
        isdup[row] = mine.column(_ISDUP).to_numpy(zero_copy_only=False)
    return finish(table, pa.array(kept, pa.string()), isdup)


def finish(block: pa.Table, kept: pa.Array, isdup: np.ndarray) -> pa.Table:
    """`block` with `_reject`, `_duplicate_of` and `dup_cluster` from each row's kept key
    (null when in no cluster) and duplicate flag; an earlier `_reject` reason is kept."""
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
