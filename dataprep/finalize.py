"""Turning committed parts into `manifest.parquet`, `rejects.parquet` and `summary.json`, by streaming.

The parts are read one at a time and appended to the final files, so the driver holds
one shard's rows, never the whole table, however many rows the job has. The three
files are functions of what is committed: `_work/final.json` records which parts
made them, and a rerun that commits nothing new leaves them as they are.
Rows keep the order of their parts (shard by shard, ledger part by ledger part),
each part sorted by key.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataprep import commit, ledger, paths, storage
from dataprep.field_summary import FieldSummary
from dataprep.funnel import DETAIL_EXAMPLES, FunnelCounter, StageInfo, funnel, reason_detail, reason_group

__all__ = ["DETAIL_EXAMPLES", "StageInfo", "finalize", "funnel", "rates", "reason_detail", "reason_group"]


# Rows per row group of the final Parquet files: large enough for fast scans, small enough to buffer.
ROW_GROUP_ROWS = 65_536


def _parquet_parts(folder: str) -> list[str]:
    return [u for u in storage.list_files(folder) if u.endswith(".parquet")]


def _read_schema(uri: str) -> pa.Schema:
    if storage.is_s3(uri):
        return storage.read_parquet(uri).schema
    return pq.read_schema(storage.local_path(uri))


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with the columns of `schema`, in its order and types; missing columns are nulls."""
    arrays = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
              for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _stream_parts(uris: list[str], target: str, empty: pa.Schema) -> Iterator[pa.Table]:
    """Write the parts, each sorted by key, into one Parquet file at `target`; yields each part as written."""
    schemas = [_read_schema(u) for u in uris]
    schema = pa.unify_schemas(schemas, promote_options="permissive").remove_metadata() if schemas else empty
    local_dir = None if storage.is_s3(target) else os.path.dirname(storage.local_path(target))
    fd, tmp = tempfile.mkstemp(prefix=".final-", suffix=".parquet.partial", dir=local_dir)
    os.close(fd)
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            # Parts hold a batch or a shard each; gathered into large row groups, so a reader of a 100M-row
            # file scans thousands of row groups rather than millions.
            pending: list[pa.Table] = []
            for uri in uris:
                table = _conform(storage.read_columns(uri, None), schema).sort_by("key")
                pending.append(table)
                if sum(t.num_rows for t in pending) >= ROW_GROUP_ROWS:
                    writer.write_table(pa.concat_tables(pending))
                    pending = []
                yield table
            if pending or not uris:
                writer.write_table(pa.concat_tables(pending) if pending else schema.empty_table())
        storage.upload_atomic(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fingerprint(manifest_parts: list[str], ledger_parts: list[str], stats: list[str],
                 stages: list[StageInfo]) -> str:
    """A digest of what the final files are made of: the committed parts (named by content) and the stages."""
    digest = hashlib.sha256()
    for uri in (*manifest_parts, "|", *ledger_parts, "|", *stats):
        digest.update(uri.rsplit("/", 1)[-1].encode("utf-8") + b"\0")
    digest.update(repr(stages).encode("utf-8"))
    return digest.hexdigest()


def rates(manifest: pa.Table, stages: list[StageInfo]) -> dict[str, float]:
    """Each stage's declared rates over the kept rows: the amount column's sum over the seconds column's."""
    totals = _RateTotals(stages)
    totals.add(manifest)
    return totals.result()


class _RateTotals:
    """Sums of each declared rate's amount and seconds over the rows where both are present."""

    def __init__(self, stages: list[StageInfo]) -> None:
        self.pairs = {name: pair for stage in stages for name, pair in stage.rates.items()}
        self.sums: dict[str, list[float]] = {}

    def add(self, batch: pa.Table) -> None:
        for name, (amount, seconds) in self.pairs.items():
            if amount not in batch.column_names or seconds not in batch.column_names:
                continue
            a, s = batch.column(amount), batch.column(seconds)
            both = pc.and_(pc.is_valid(a), pc.is_valid(s))
            sums = self.sums.setdefault(name, [0.0, 0.0])
            sums[0] += pc.sum(a.filter(both)).as_py() or 0
            sums[1] += pc.sum(s.filter(both)).as_py() or 0

    def result(self) -> dict[str, float]:
        return {name: round(a / s, 3) for name, (a, s) in self.sums.items() if s > 0}


def finalize(output: str, stages: list[StageInfo]) -> dict[str, Any]:
    """Write the manifest, the rejects ledger and the summary of everything committed; return the summary."""
    manifest_parts = _parquet_parts(paths.under(output, paths.MANIFEST_PARTS_DIR))
    ledger_parts = _parquet_parts(paths.under(output, paths.LEDGER_PARTS_DIR))
    stats_uris = commit.stats_files(output)
    fingerprint = _fingerprint(manifest_parts, ledger_parts, stats_uris, stages)
    state_uri, summary_uri = paths.under(output, paths.FINAL_STATE), paths.under(output, paths.SUMMARY)
    final = (paths.under(output, paths.MANIFEST), paths.under(output, paths.REJECTS), summary_uri)
    if storage.exists(state_uri) and all(storage.exists(u) for u in final):
        if json.loads(storage.read_bytes(state_uri)).get("fingerprint") == fingerprint:
            return json.loads(storage.read_bytes(summary_uri))

    counter, fields, rate_totals, kept = FunnelCounter(stages), FieldSummary(skip=("shard",)), _RateTotals(stages), 0
    for table in _stream_parts(manifest_parts, final[0], pa.schema([("key", pa.string())])):
        counter.add_kept(table.column("key"))
        fields.add(table)
        rate_totals.add(table)
        kept += table.num_rows
    rejected = 0
    for table in _stream_parts(ledger_parts, final[1], ledger.SCHEMA):
        counter.add_rejects(table.column("key"), table.column("stage_index"), table.column("reason"))
        rejected += table.num_rows
    shards = []
    for uri in stats_uris:
        stats = json.loads(storage.read_bytes(uri))
        shards.append({"shard": stats["shard"], "count": stats["count"], "bytes": stats["bytes"]})
    summary = {
        "totals": {"kept": kept, "rejected": rejected, "shards": len(shards),
                   "shard_bytes": sum(s["bytes"] for s in shards)},
        "funnel": counter.rows(),
        "shards": sorted(shards, key=lambda s: s["shard"]),
        "fields": fields.result(),
        "rates": rate_totals.result(),
    }
    storage.write_atomic(summary_uri, json.dumps(summary, indent=1, sort_keys=True).encode("utf-8"))
    storage.write_atomic(state_uri, json.dumps({"fingerprint": fingerprint}).encode("utf-8"))
    return summary
