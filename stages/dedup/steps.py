"""The data-parallel work of `MinHashDedup.run`: plain functions on Arrow tables that `run` hands
to its executor (Ray Data under the runner; this module does not import Ray).

Three kinds, by how they are called:
- per piece of the input, `fn(table, piece_index, ...)`: `features_piece`, `annotate_piece`;
- on any table of a collection (`Executor.map`): the `*_rows` and `bucket_records` functions, which
  shape rows for the next exchange;
- per partition after an `Executor.exchange` on a column, so that rows with equal keys meet:
  `candidates` (by bucket), `attach` and `verify_edges` (by node), `star` (by edge source),
  `members` (by node), `decide` (by component root).
A join is one exchange of a tagged union: the rows of both sides carry the join key in `_dd_k`, their
side in `_dd_side`, in one schema where the columns a side lacks are null.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataprep.stages.dedup._jit import njit
from dataprep.stages.dedup.candidates import (TEXT, VISUAL, Verify, candidate_pairs, edit_windows, similar,
                                              verify_pairs)
from dataprep.stages.dedup.components import checksum, large_star, mix64, roots, small_star, split_directed

_NODE, _SCORE, _TBANDS, _TPAY, _VBANDS, _VPAY = ("_dd_node", "_dd_score", "_dd_tbands", "_dd_tpay",
                                                "_dd_vbands", "_dd_vpay")
_KEPT, _ISDUP = "_dd_kept", "_dd_isdup"
PIECE = "_dd_piece"   # the input piece a decision goes back to (node >> 32)
K, SIDE = "_dd_k", "_dd_side"
ATTR, OTHER = 0, 1    # sides of a join: the rows' attributes, and the pairs or edges that look them up

_LIST = pa.list_(pa.uint64())
RECORDS = pa.schema([("bucket", pa.uint64()), ("node", pa.uint64()), ("kind", pa.int8())])
PAIRS = pa.schema([("lo", pa.uint64()), ("hi", pa.uint64()), ("kind", pa.int8())])
EDGES = pa.schema([("u", pa.uint64()), ("v", pa.uint64())])
# Candidate pairs keyed by one end, joined with the payloads of that end's row.
PAIR_JOIN = pa.schema([(K, pa.uint64()), (SIDE, pa.int8()), ("lo", pa.uint64()), ("hi", pa.uint64()),
                       ("kind", pa.int8()), ("pay_lo", _LIST), ("tpay", _LIST), ("vpay", _LIST)])
# Component edges keyed by their source, joined with the attributes of that node's row.
MEMBER_JOIN = pa.schema([(K, pa.uint64()), (SIDE, pa.int8()), ("v", pa.uint64()), ("score", pa.float64()),
                         ("key", pa.string()), ("tpay", _LIST), ("vpay", _LIST)])
MEMBERS = pa.schema([("node", pa.uint64()), ("root", pa.uint64()), ("score", pa.float64()),
                     ("key", pa.string()), ("tpay", _LIST), ("vpay", _LIST)])
DECISIONS = pa.schema([(_NODE, pa.uint64()), (_KEPT, pa.string()), (_ISDUP, pa.bool_()), (PIECE, pa.int64())])


def make_verify(p) -> Verify:
    """The verification thresholds of a `MinHashDedupParams`."""
    from dataprep.stages.dedup.phash import WINDOWS

    return Verify(enabled=p.verify, text_threshold=p.threshold, max_hamming=p.max_hamming,
                  frame_match=p.frame_match, windows=WINDOWS)


def _conform(columns: dict, schema: pa.Schema, n: int) -> pa.Table:
    """A table of `schema` with `n` rows: the given columns (arrays, or one int for every row) cast to
    it, the others null."""
    arrays = []
    for field in schema:
        value = columns.get(field.name)
        if value is None:
            arrays.append(pa.nulls(n, field.type))
        elif isinstance(value, int):
            arrays.append(pa.array(np.full(n, value), field.type))
        else:
            arrays.append(pa.array(value, field.type) if isinstance(value, np.ndarray) else value.cast(field.type))
    return pa.table(arrays, schema=schema)


def _sides(t: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The ATTR rows and the OTHER rows of a join partition."""
    side = t.column(SIDE).to_numpy()
    return t.filter(side == ATTR), t.filter(side == OTHER)


def _positions(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index into `keys` (distinct) of each value of `wanted` (each present in `keys`)."""
    order = np.argsort(keys)
    return order[np.searchsorted(keys[order], wanted)] if len(wanted) else np.zeros(0, np.int64)


def _directed(u: np.ndarray, v: np.ndarray) -> pa.Table:
    """EDGES rows of undirected edges, both orientations: each end meets the edge in its own partition."""
    return pa.table([np.concatenate([u, v]), np.concatenate([v, u])], schema=EDGES)


def features_piece(table: pa.Table, index: int, stage) -> pa.Table:
    """The slim features of input piece `index` (see `MinHashDedup.features`); its node ids are
    index << 32 | row, so a decision finds its way back to the piece and row."""
    return stage.features(table, node_base=index << 32)


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


def payload_rows(feats: pa.Table) -> pa.Table:
    """PAIR_JOIN rows of the ATTR side: each row's text and visual payloads, keyed by its node."""
    node = feats.column(_NODE)
    return _conform({K: node, SIDE: ATTR, "tpay": feats.column(_TPAY), "vpay": feats.column(_VPAY)},
                    PAIR_JOIN, feats.num_rows)


def pair_rows(pairs: pa.Table, end: str) -> pa.Table:
    """PAIR_JOIN rows of the OTHER side: candidate pairs (with `pay_lo` once attached) keyed by `end`."""
    columns = {name: pairs.column(name) for name in pairs.column_names}
    return _conform({**columns, K: pairs.column(end), SIDE: OTHER}, PAIR_JOIN, pairs.num_rows)


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


def _payloads(attrs: pa.Table, nodes: np.ndarray, kind: np.ndarray) -> pa.ListArray:
    """list<uint64> payload of each (node, kind), from the ATTR rows of a join partition (which holds the
    nodes): the text payload for TEXT pairs, the visual one for VISUAL pairs.

    Gathered by a compiled loop: a visual payload is a few KB (hundreds of window hashes per
    frame), which pyarrow's take of list arrays copies several times slower."""
    pos = _positions(attrs.column(K).to_numpy(), nodes)
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


def attach(t: pa.Table) -> pa.Table:
    """A PAIR_JOIN partition keyed by `lo` -> its distinct pairs (lo, hi, kind) with `pay_lo`, lo's payload.

    Near-duplicates share several bands, whose buckets lie in different partitions: each of those
    found the pair. Every copy has the same lo, so they all meet here, and only one goes on."""
    attrs, pairs = _sides(t)
    lo, hi, kind = (pairs.column(c).to_numpy() for c in ("lo", "hi", "kind"))
    order = np.lexsort((kind, hi, lo))
    first = order[np.r_[True, (np.diff(lo[order]) != 0) | (np.diff(hi[order]) != 0) | (np.diff(kind[order]) != 0)]] \
        if len(order) else order
    pairs = pa.table([lo[first], hi[first], kind[first]], schema=PAIRS)
    return pairs.append_column("pay_lo", _payloads(attrs, lo[first], kind[first]))


def verify_edges(t: pa.Table, verify: Verify) -> pa.Table:
    """A PAIR_JOIN partition keyed by `hi` (pairs carrying `pay_lo`) -> EDGES of the pairs that pass the
    exact check, against hi's payload."""
    attrs, pairs = _sides(t)
    kind = pairs.column("kind").to_numpy()
    lo, hi = pairs.column("lo").to_numpy(), pairs.column("hi").to_numpy()
    ok = verify_pairs(kind, pairs.column("pay_lo").combine_chunks(), _payloads(attrs, hi, kind), verify)
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


def edge_rows(edges: pa.Table) -> pa.Table:
    """MEMBER_JOIN rows of the OTHER side: star edges keyed by their source."""
    return _conform({K: edges.column("u"), SIDE: OTHER, "v": edges.column("v")}, MEMBER_JOIN, edges.num_rows)


def member_rows(feats: pa.Table) -> pa.Table:
    """MEMBER_JOIN rows of the ATTR side: each row's policy value, key and payloads, keyed by its node."""
    return _conform({K: feats.column(_NODE), SIDE: ATTR, "score": feats.column(_SCORE), "key": feats.column("key"),
                     "tpay": feats.column(_TPAY), "vpay": feats.column(_VPAY)}, MEMBER_JOIN, feats.num_rows)


def members(t: pa.Table) -> pa.Table:
    """A MEMBER_JOIN partition keyed by node (star edges after convergence, and attributes) -> MEMBERS:
    each node of a component of 2+ with its root and attributes."""
    attrs, edges = _sides(t)
    node, root = roots(edges.column(K).to_numpy(), edges.column("v").to_numpy())
    mine = attrs.take(pa.array(_positions(attrs.column(K).to_numpy(), node), pa.int64()))
    return pa.table([node, root, *(mine.column(c) for c in ("score", "key", "tpay", "vpay"))], schema=MEMBERS)


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


def _csr(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(values uint64, offsets int64) of a list<uint64> column; row i's list is values[offsets[i]:offsets[i+1]]."""
    lists = column.combine_chunks()
    return (lists.values.to_numpy(zero_copy_only=False).astype(np.uint64, copy=False),
            lists.offsets.to_numpy().astype(np.int64))


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
