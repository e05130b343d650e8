"""Which listed rows are new: an anti-join of the listing against what is committed, by hash partition.

    committed = committed_buckets(executor, output, buckets)        # one handle per bucket
    todo, info = anti_join(executor, page_handles, committed, buckets, dedupe=True)

Every key goes to the bucket of a hash of its root (the key without `_cNNNN` child
suffixes), so a video, its clips and its lineage land in one bucket: a task holds one
bucket of the listing and of the committed keys, never the whole key set, and a video
whose clips are all committed is done without listing its clips anywhere else.
Functions run through an `Executor` (`dataprep.executor`): in this process for a small
job, as Ray tasks for a large one; the handles between them are object refs there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataprep import columns, commit, paths, storage
from dataprep.arrow import concat

# Record files read by one task: a shard's stats file commits a shard of keys, a ledger or lineage part a batch.
SHARDS_PER_TASK = 8
PARTS_PER_TASK = 512
# And at least this many parts per bucket: a task's share of one bucket is then a few thousand keys, over
# Ray's 100 kB limit for returning a value inline. Smaller shares are kept in the driver's own memory.
PARTS_PER_BUCKET = 64
_SUFFIXES = r"(_c\d{4})+$"
_COMMITTED = pa.schema([(columns.KEY, pa.string()), ("record", pa.int32())])
_LINEAGE = pa.schema([("parent", pa.string()), ("children", pa.list_(pa.string()))])


@dataclass
class Outcome:
    """What an anti-join found, summed over buckets: small, whatever the number of rows."""

    rows: int = 0
    rejected: int = 0
    duplicates: int = 0
    # Committed keys of rows that are still to do: clips of a video that was split and partly committed.
    partial: set[str] = field(default_factory=set)

    def add(self, other: dict[str, Any]) -> None:
        self.rows += other["rows"]
        self.rejected += other["rejected"]
        self.duplicates += other["duplicates"]
        self.partial.update(other["partial"])


def roots(keys: pa.Array) -> pa.Array:
    """Each key without its child suffixes: the key of the source row it was split from."""
    return pc.replace_substring_regex(keys, _SUFFIXES, "")


def bucket_ids(keys: pa.Array, buckets: int) -> np.ndarray:
    """The bucket of each key, by a hash of its root that is the same in every process."""
    from pandas.util import hash_array

    if buckets == 1 or len(keys) == 0:
        return np.zeros(len(keys), dtype=np.int64)
    # Keys are mostly distinct: categorizing them first (pandas' default) costs 8x the hashing, for the same hashes.
    hashed = hash_array(np.asarray(roots(keys).to_numpy(zero_copy_only=False), dtype=object), categorize=False)
    return (hashed % np.uint64(buckets)).astype(np.int64)


def split(table: pa.Table, buckets: int, column: str = columns.KEY) -> list[pa.Table] | pa.Table:
    """`table` cut into `buckets` tables by the bucket of `column` (the table itself when there is one bucket)."""
    if buckets == 1:
        return table
    ids = bucket_ids(table.column(column).combine_chunks(), buckets)
    order = np.argsort(ids, kind="stable")
    ordered = table.take(pa.array(order))
    bounds = np.concatenate([[0], np.cumsum(np.bincount(ids, minlength=buckets))])
    return [ordered.slice(int(bounds[b]), int(bounds[b + 1] - bounds[b])) for b in range(buckets)]


def record_files(output: str) -> list[str]:
    """Every commit record (shard stats, ledger parts) and lineage part of `output`."""
    stats = [u for u in storage.list_files(paths.under(output, paths.SHARDS_DIR)) if u.endswith(".stats.json")]
    parts = [u for folder in (paths.LEDGER_PARTS_DIR, paths.LINEAGE_DIR)
             for u in storage.list_files(paths.under(output, folder)) if u.endswith(".parquet")]
    return stats + parts


def read_records(output: str, uris: list[str], first: int, buckets: int) -> list[pa.Table]:
    """Committed keys with the number of the record holding each (`first` for `uris[0]`), cut into buckets;
    then lineage rows, cut the same way.

    A shard's keys are read from its manifest part (Parquet) when it has one, else from its stats file.
    """
    committed, lineage = [], []
    for number, uri in enumerate(uris, start=first):
        if uri.endswith(".stats.json"):
            part = paths.under(output, paths.manifest_part(paths.shard_index(uri)))
            keys = (storage.read_columns(part, [columns.KEY]).column(columns.KEY) if storage.exists(part)
                    else pa.array(json.loads(storage.read_bytes(uri))["keys"], pa.string()))
        elif f"/{paths.LINEAGE_DIR.rsplit('/', 1)[-1]}/" in uri:
            lineage.append(storage.read_columns(uri, ["parent", "children"]).cast(_LINEAGE))
            continue
        else:
            keys = storage.read_columns(uri, [columns.KEY]).column(columns.KEY)
        committed.append(pa.table({columns.KEY: keys, "record": pa.nulls(len(keys), pa.int32()).fill_null(number)}))
    committed_table = concat(committed) if committed else _COMMITTED.empty_table()
    lineage_table = concat(lineage) if lineage else _LINEAGE.empty_table()
    cut = [split(committed_table.cast(_COMMITTED), buckets), split(lineage_table, buckets, "parent")]
    return [t for tables in cut for t in ([tables] if buckets == 1 else tables)]


def merge_committed(*parts: pa.Table) -> tuple[pa.Table, list[list[int]]]:
    """One bucket's done keys (committed, and parents whose children all are); numbers of records sharing a key.

    `parts` are the bucket's committed tables followed by its lineage tables, as `read_records` cut them.
    """
    committed = concat([p for p in parts if p.schema.names == _COMMITTED.names] or [_COMMITTED.empty_table()])
    lineage = [p for p in parts if p.schema.names == _LINEAGE.names and p.num_rows]
    keys = committed.column(columns.KEY)
    conflicts: list[list[int]] = []
    if len(keys) != pc.count_distinct(keys).as_py():
        grouped = committed.group_by(columns.KEY).aggregate([("record", "distinct")])
        shared = grouped.filter(pc.greater(pc.list_value_length(grouped.column("record_distinct")), 1))
        conflicts = [list(c) for c in sorted({tuple(sorted(r)) for r in shared.column("record_distinct").to_pylist()})]
        keys = pc.unique(keys)
    if not lineage:
        return pa.table({columns.KEY: keys}), conflicts
    done = _done_parents(concat(lineage), set(keys.to_pylist()))
    return pa.table({columns.KEY: pa.concat_arrays([keys.combine_chunks() if isinstance(keys, pa.ChunkedArray)
                                                    else keys, pa.array(sorted(done), pa.string())])}), conflicts


def _done_parents(lineage: pa.Table, committed: set[str]) -> set[str]:
    """Parents every one of whose children is committed or itself a done parent."""
    children: dict[str, set[str]] = {}
    for parent, kids in zip(lineage.column("parent").to_pylist(), lineage.column("children").to_pylist(), strict=True):
        children.setdefault(parent, set()).update(kids)
    return commit.parents_done(children, committed)


def new_in_bucket(done: pa.Table, dedupe: bool, *listed: pa.Table) -> tuple[pa.Table, dict[str, Any]]:
    """One bucket's listed rows that `done` does not hold, and what was found (see `Outcome`).

    With `dedupe`, a key listed twice (one file named twice in a manifest) is kept once, the first time.
    """
    table = concat([t for t in listed if t.num_rows]) if any(t.num_rows for t in listed) else None
    info: dict[str, Any] = {"rows": 0, "rejected": 0, "duplicates": 0, "partial": []}
    if table is None:
        return (listed[0] if listed else pa.table({columns.KEY: pa.array([], pa.string())})), info
    if dedupe:
        numbered = table.append_column("__row", pa.array(np.arange(table.num_rows)))
        firsts = numbered.group_by(columns.KEY, use_threads=False).aggregate([("__row", "min")]).column("__row_min")
        info["duplicates"] = table.num_rows - len(firsts)
        if info["duplicates"]:
            table = table.take(pa.array(np.sort(firsts.to_numpy())))
    done_keys = done.column(columns.KEY)
    table = table.filter(pc.invert(pc.is_in(table.column(columns.KEY), value_set=done_keys)))
    if columns.REJECT in table.column_names:
        info["rejected"] = table.num_rows - table.column(columns.REJECT).null_count
    info["rows"] = table.num_rows - info["rejected"]
    if len(done_keys) and table.num_rows:
        # Committed clips of a row still to do: the stages after its split must not make them again.
        partial = pc.is_in(roots(done_keys), value_set=table.column(columns.KEY).combine_chunks())
        info["partial"] = done_keys.filter(pc.and_(partial, pc.not_equal(done_keys, roots(done_keys)))).to_pylist()
    return table, info


def committed_buckets(executor: Any, output: str, buckets: int) -> tuple[list[Any], list[list[str]]]:
    """One handle per bucket to its done keys, and the records that share a key (see `commit.superseded_records`)."""
    uris = record_files(output)
    shards = sum(u.endswith(".stats.json") for u in uris)  # record_files lists the shards' stats first
    chunks = [(i, uris[i:min(i + SHARDS_PER_TASK, shards)]) for i in range(0, shards, SHARDS_PER_TASK)]
    per_task = max(PARTS_PER_TASK, PARTS_PER_BUCKET * buckets)
    chunks += [(i, uris[i:i + per_task]) for i in range(shards, len(uris), per_task)]
    committed_parts: list[list[Any]] = [[] for _ in range(buckets)]
    lineage_parts: list[list[Any]] = [[] for _ in range(buckets)]
    for first, chunk in chunks or [(0, [])]:
        handles = executor.call(read_records, output, chunk, first, buckets, num_returns=2 * buckets)
        for b in range(buckets):
            committed_parts[b].append(handles[b])
            lineage_parts[b].append(handles[buckets + b])
    merged = [executor.call(merge_committed, *committed_parts[b], *lineage_parts[b], num_returns=2)
              for b in range(buckets)]
    conflicts = {tuple(c) for part in executor.get([m[1] for m in merged]) for c in part}
    return [m[0] for m in merged], [[uris[i] for i in c] for c in sorted(conflicts)]


def split_many(buckets: int, *tables: pa.Table) -> list[pa.Table] | pa.Table:
    """The rows of several tables cut into `buckets` tables (see `split`)."""
    present = [t for t in tables if t.num_rows]
    return split(concat(present) if present else tables[0], buckets)


def split_pages(executor: Any, groups: Sequence[Sequence[Any]], buckets: int) -> list[list[Any]]:
    """Per bucket, handles to its rows of every group of pages (pages as handles or tables)."""
    parts: list[list[Any]] = [[] for _ in range(buckets)]
    for group in groups:
        handles = executor.call(split_many, buckets, *group, num_returns=buckets)
        for b, handle in enumerate([handles] if buckets == 1 else handles):
            parts[b].append(handle)
    return parts


def anti_join(executor: Any, parts: list[list[Any]], done: list[Any], *, dedupe: bool) -> tuple[list[Any], Outcome]:
    """Per bucket, a handle to its rows that are not done (`done`: per bucket, or empty); and what was found."""
    nothing = pa.table({columns.KEY: pa.array([], pa.string())})
    results = [executor.call(new_in_bucket, done[b] if done else nothing, dedupe, *parts[b], num_returns=2)
               if parts[b] else None for b in range(len(parts))]
    results = [r for r in results if r is not None]
    outcome = Outcome()
    for info in executor.get([r[1] for r in results]):
        outcome.add(info)
    return [r[0] for r in results], outcome
