"""The per-block and per-partition work of `SemanticDedup.run`: plain functions on Arrow tables
and numpy arrays that `run` ships to workers through its executor (this module does not import
Ray). Embeddings are read from the materialized blocks by every step that needs them, so no
second copy of the vectors is kept; only `route_block` moves them (to their cluster's
partition) and `gather_block` (rows in a duplicate component, to their component's partition).

A row's node id is (block index << 32 | row index), as in `minhash_dedup`: a decision finds its
block and row again without moving the rows themselves.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from dataprep.stages.dedup import embeddings as emb_mod
from dataprep.stages.dedup import kmeans
from dataprep.stages.dedup.components import part_of, roots, split_directed
from dataprep.stages.dedup.pairwise import components

# Output columns: the key of the kept row of a row's duplicate group (on kept and removed
# members), and a removed row's cosine similarity to the row it duplicates.
CLUSTER, SIMILARITY = "semantic_cluster", "semantic_similarity"
_NODE, _CLUSTER, _VEC, _ROOT, _SCORE, _KEY, _KEPT, _SIM = ("node", "cluster", "vec", "root", "score", "key",
                                                          "kept", "sim")


def _split(table, parts: np.ndarray, n_parts: int) -> list:
    """`table` cut into n_parts tables by the partition index of each row."""
    order = np.argsort(parts, kind="stable")
    bounds = np.searchsorted(parts[order], np.arange(n_parts + 1))
    return [table.take(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _vec_column(vectors: np.ndarray):
    """(N, D) float32 -> fixed_size_list<float32, D> Arrow array (no copy of the values)."""
    import pyarrow as pa

    d = vectors.shape[1] if vectors.ndim == 2 else 0
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors, np.float32).ravel()), d)


def _vec_matrix(table) -> np.ndarray:
    """(N, D) float32 matrix of the `vec` column of a table (concatenated pieces)."""
    col = table.column(_VEC).combine_chunks()
    d = col.type.list_size
    return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, d) if len(col) else np.zeros((0, d), np.float32)


def _node_ids(block_index: int, rows: np.ndarray) -> np.ndarray:
    return (np.uint64(block_index) << np.uint64(32)) | rows.astype(np.uint64)


def _block_of(nodes: np.ndarray) -> np.ndarray:
    return (nodes >> np.uint64(32)).astype(np.int64)


def _runs(values: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of equal values in a sorted array."""
    if len(values) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    return list(zip(starts.tolist(), np.r_[starts[1:], len(values)].tolist(), strict=True))


def _concat(tables):
    import pyarrow as pa

    return pa.concat_tables(tables).combine_chunks()


# -- k-means ---------------------------------------------------------------------------
def scan_block(block, column: str) -> dict:
    """Rows of a block and how many vectors of each length it holds (no float is read)."""
    return {"rows": block.num_rows, "lengths": emb_mod.lengths(block.column(column))}


def sample_block(block, column: str, m: int, seed: list[int]) -> np.ndarray:
    """(m, D) unit vectors drawn without replacement from the block's valid rows."""
    vecs = emb_mod.extract(block.column(column), column=column).vectors
    pick = np.random.default_rng(seed).choice(len(vecs), size=min(m, len(vecs)), replace=False)
    return vecs[np.sort(pick)]


def init_centroids(k: int, seed: int, *samples: np.ndarray) -> np.ndarray:
    """(k', D) k-means++ centroids of the concatenated samples."""
    return kmeans.kmeans_pp(np.concatenate(samples), k, seed)


def lloyd_block(block, column: str, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One block's (sums, counts) for the next Lloyd step."""
    return kmeans.partial_sums(emb_mod.extract(block.column(column), column=column).vectors, centroids)


def update_centroids(centroids: np.ndarray, *partials: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, float]:
    """The next centroids from every block's partial sums, and the largest move (1 - cosine)."""
    sums = np.sum([p[0] for p in partials], axis=0)
    counts = np.sum([p[1] for p in partials], axis=0)
    return kmeans.update(centroids, sums, counts)


def total_counts(*partials: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """(K,) rows nearest each centroid, over every block's partial sums."""
    return np.sum([p[1] for p in partials], axis=0)


def sample_members(block, column: str, centroids: np.ndarray, rate: np.ndarray, seed: list[int]) -> tuple:
    """Rows of the block drawn with probability rate[c] for their nearest centroid c (0 for the
    clusters not being split): ((M, D) vectors, (M,) their cluster)."""
    vecs = emb_mod.extract(block.column(column), column=column).vectors
    label = kmeans.assign(vecs, centroids, 0.0)[0]
    pick = np.flatnonzero(np.random.default_rng(seed).random(len(vecs)) < rate[label])
    return vecs[pick], label[pick]


def split_clusters(centroids: np.ndarray, pieces: dict[int, int], seed: int, *samples: tuple) -> np.ndarray:
    """The centroids with each cluster c of `pieces` replaced by `pieces[c]` centroids fitted on
    the sampled members of c: an oversized cluster would cost its size squared in pairs."""
    vecs = np.concatenate([s[0] for s in samples])
    label = np.concatenate([s[1] for s in samples])
    keep = np.ones(len(centroids), dtype=bool)
    new = []
    for c, k in sorted(pieces.items()):
        members = vecs[label == c]
        if len(members) > k:
            keep[c] = False
            new.append(kmeans.fit_sample(members, k, seed + c))
    return np.concatenate([centroids[keep], *new]) if new else centroids


def assign_block(block, column: str, centroids: np.ndarray, margin: float) -> tuple:
    """((first, second) cluster of each valid row, in row order; (K,) rows per cluster, second
    assignments included: what each cluster's partition will hold)."""
    vecs = emb_mod.extract(block.column(column), column=column).vectors
    first, second = kmeans.assign(vecs, centroids, margin)
    k = len(centroids)
    counts = np.bincount(first, minlength=k) + np.bincount(second[second >= 0], minlength=k)
    return (first.astype(np.int32), second.astype(np.int32)), counts


def plan_partitions(counts: np.ndarray, n_parts: int) -> np.ndarray:
    """(K,) partition of each cluster: largest clusters first, each to the least loaded partition
    (LPT scheduling), so partitions hold about the same number of rows."""
    import heapq

    part = np.zeros(len(counts), dtype=np.int64)
    heap = [(0, p) for p in range(n_parts)]
    for c in np.argsort(-counts, kind="stable"):
        load, p = heapq.heappop(heap)
        part[c] = p
        heapq.heappush(heap, (load + int(counts[c]), p))
    return part


def route_block(block, block_index: int, column: str, assignment: tuple, cluster_part: np.ndarray,
                n_parts: int) -> tuple:
    """The block's (node, cluster, vec) records, one per assignment (two for a row near a
    boundary), cut by the partition of their cluster; and (last) the number of records."""
    import pyarrow as pa

    e = emb_mod.extract(block.column(column), column=column)
    first, second = assignment
    twice = np.flatnonzero(second >= 0)
    idx = np.r_[np.arange(len(first)), twice]                         # (R,) index into e.rows
    cluster = np.r_[first, second[twice]].astype(np.int32)
    t = pa.table({_NODE: _node_ids(block_index, e.rows[idx]), _CLUSTER: cluster, _VEC: _vec_column(e.vectors[idx])})
    return (*_split(t, cluster_part[cluster], n_parts), t.num_rows)


# -- pairs and components ------------------------------------------------------------------
def pairs_partition(threshold: float, n_parts: int, *pieces) -> tuple:
    """The clusters of one partition -> star edges (member, smallest node of its component in
    that cluster) routed for the connected components, and (last) counts of the work done."""
    t = _concat(pieces)
    node, cluster = t.column(_NODE).to_numpy(), t.column(_CLUSTER).to_numpy()
    vecs = _vec_matrix(t)
    order = np.lexsort((node, cluster))            # by cluster, nodes ascending within it
    node, cluster, vecs = node[order], cluster[order], vecs[order]
    spans = _runs(cluster)
    us, vs, compared, largest = [], [], 0, 0
    for lo, hi in spans:
        label, n_cmp = components(vecs[lo:hi], threshold)
        compared += n_cmp
        largest = max(largest, hi - lo)
        linked = label != np.arange(hi - lo)       # rows whose component starts at a smaller row
        us.append(node[lo:hi][linked])
        vs.append(node[lo:hi][label[linked]])
    u = np.concatenate(us) if us else np.zeros(0, np.uint64)
    v = np.concatenate(vs) if vs else np.zeros(0, np.uint64)
    return (*split_directed(u, v, n_parts), {"records": t.num_rows, "clusters": len(spans), "largest": largest,
                                             "pairs_compared": compared, "edges": len(u)})


def members_partition(n_parts: int, *edge_pieces) -> tuple:
    """Converged star edges of one node partition -> (node, root) of every node in a component
    of 2+, routed to the partition of the node's block (block % n_parts); and (last) their number."""
    import pyarrow as pa

    u = np.concatenate([p[0] for p in edge_pieces]) if edge_pieces else np.zeros(0, np.uint64)
    v = np.concatenate([p[1] for p in edge_pieces]) if edge_pieces else np.zeros(0, np.uint64)
    node, root = roots(u, v)
    t = pa.table({_NODE: pa.array(node, pa.uint64()), _ROOT: pa.array(root, pa.uint64())})
    return (*_split(t, _block_of(node) % n_parts, n_parts), t.num_rows)


def gather_block(block, block_index: int, column: str, policy, n_parts: int, *member_pieces) -> tuple:
    """The block's rows that are in a component, with what the decision needs (root, keep-policy
    value, key, vector), routed by the partition of their root; and (last) their number."""
    import pyarrow as pa

    from dataprep.stages.dedup.stage import _policy_values

    m = _concat(member_pieces)
    node = m.column(_NODE).to_numpy()
    mine = np.flatnonzero(_block_of(node) == block_index)
    node, root = node[mine], m.column(_ROOT).to_numpy()[mine]
    rows = (node & np.uint64(0xFFFFFFFF)).astype(np.int64)
    e = emb_mod.extract(block.column(column), column=column)
    at = np.searchsorted(e.rows, rows)                 # members are valid rows: e.rows holds them
    taken = block.take(pa.array(rows, pa.int64()))
    t = pa.table({_NODE: pa.array(node, pa.uint64()), _ROOT: pa.array(root, pa.uint64()),
                  _SCORE: pa.array(_policy_values(taken, policy), pa.float64()),
                  _KEY: taken.column("key").cast(pa.string()), _VEC: _vec_column(e.vectors[at])})
    return (*_split(t, part_of(root, n_parts), n_parts), t.num_rows)


def _greedy(vecs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Representative (index) of each row of one component, rows in keep-policy order, and the
    cosine to it.

    Connected components chain (A~B, B~C puts C with A even when C is unlike A): the best row
    represents the rows similar to it, the best of the rest represents those similar to it,
    and so on, so every removed row is at or above the threshold to the row that replaces it."""
    m = len(vecs)
    rep = np.full(m, -1, dtype=np.int64)
    sim = np.ones(m, dtype=np.float32)
    for i in range(m):
        if rep[i] >= 0:
            continue
        rep[i] = i
        rest = np.flatnonzero(rep[i + 1:] < 0) + i + 1
        if len(rest) == 0:
            break
        s = vecs[rest] @ vecs[i]
        hit = s >= threshold
        rep[rest[hit]] = i
        sim[rest[hit]] = s[hit]
    return rep, sim


def decide_partition(threshold: float, n_parts: int, *pieces) -> tuple:
    """Members grouped by root -> per node: the key of the row it duplicates (its representative;
    null when it ends alone), whether it is removed, and its cosine to the representative; routed
    to the partition of the node's block; and (last) how many rows are removed.
    Order within a component: highest keep-policy value, ties to the smallest key."""
    import pyarrow as pa

    t = _concat(pieces)
    t = t.sort_by([(_ROOT, "ascending"), (_SCORE, "descending"), (_KEY, "ascending")])
    n = t.num_rows
    root = t.column(_ROOT).to_numpy()
    vecs = _vec_matrix(t)
    rep = np.arange(n)
    sim = np.ones(n, dtype=np.float32)
    for lo, hi in _runs(root):
        r, s = _greedy(vecs[lo:hi], threshold)
        rep[lo:hi], sim[lo:hi] = r + lo, s
    isdup = rep != np.arange(n)
    has_members = np.zeros(n, dtype=bool)
    has_members[rep[isdup]] = True
    in_cluster = isdup | has_members
    kept = t.column(_KEY).take(pa.array(rep, mask=~in_cluster))
    out = pa.table({_NODE: t.column(_NODE), _KEPT: kept,
                    _SIM: pa.array(np.where(isdup, sim, np.nan), pa.float32(), from_pandas=True)})
    return (*_split(out, _block_of(t.column(_NODE).to_numpy()) % n_parts, n_parts), int(isdup.sum()))


# -- the output ------------------------------------------------------------------------------
def annotate_block(block, block_index: int, column: str, threshold: float, *decision_pieces):
    """The block with `_reject`, `_duplicate_of`, `semantic_cluster` and `semantic_similarity` set
    from the decisions about its rows (the pieces may hold other blocks' too) and from its rows
    without a usable embedding. A reason set earlier is kept, with its `_duplicate_of`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from dataprep.columns import DUPLICATE_OF, REJECT

    n = block.num_rows
    reason = np.full(n, None, dtype=object)
    dup_of = np.full(n, None, dtype=object)
    cluster = np.full(n, None, dtype=object)
    sim = np.full(n, np.nan, dtype=np.float32)
    e = emb_mod.extract(block.column(column), column=column)
    reason[e.bad_rows] = e.bad_reasons
    for piece in decision_pieces:
        node = piece.column(_NODE).to_numpy()
        mine = np.flatnonzero(_block_of(node) == block_index)
        if len(mine) == 0:
            continue
        row = (node[mine] & np.uint64(0xFFFFFFFF)).astype(np.int64)
        kept = piece.column(_KEPT).take(pa.array(mine)).to_numpy(zero_copy_only=False)
        s = piece.column(_SIM).take(pa.array(mine)).to_numpy(zero_copy_only=False)
        cluster[row] = kept
        dup = ~np.isnan(s)
        sim[row[dup]] = s[dup]
        dup_of[row[dup]] = kept[dup]
        reason[row[dup]] = [f"{emb_mod.FAMILY}:near_duplicate: cosine {c:.4f} >= {threshold} to {k}"
                            for c, k in zip(s[dup].tolist(), kept[dup].tolist(), strict=True)]
    new_reason = pa.array(reason, pa.string())
    new_dup = pa.array(dup_of, pa.string())
    if REJECT in block.column_names:
        earlier = block.column(REJECT).combine_chunks().cast(pa.string())
        had = pc.is_valid(earlier)
        new_reason = pc.coalesce(earlier, new_reason)
        old_dup = (block.column(DUPLICATE_OF).combine_chunks().cast(pa.string()) if DUPLICATE_OF in
                   block.column_names else pa.nulls(n, pa.string()))
        new_dup = pc.if_else(had, old_dup, new_dup)
    out = block.drop_columns([c for c in (REJECT, DUPLICATE_OF, CLUSTER, SIMILARITY) if c in block.column_names])
    return (out.append_column(REJECT, new_reason).append_column(DUPLICATE_OF, new_dup)
            .append_column(CLUSTER, pa.array(cluster, pa.string()))
            .append_column(SIMILARITY, pa.array(sim, pa.float32(), from_pandas=True)))


def dims(scans: list[dict]) -> Counter:
    """Vector lengths over every block's `scan_block` result."""
    total: Counter = Counter()
    for s in scans:
        total.update(s["lengths"])
    return total
