"""Turning committed parts into `manifest.parquet`, `rejects.parquet` and `summary.json`.

The three files are functions of what is committed, so a rerun that commits
nothing new writes the same bytes, and they are only rewritten when they change.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dataprep import commit, ledger, paths, sink, storage

_CHILD_SUFFIX = re.compile(r"_c\d{4}$")
# Example details kept per reason code in the summary: enough to see the spread, bounded for 1M rejects.
DETAIL_EXAMPLES = 3


@dataclass(frozen=True)
class StageInfo:
    """What the funnel needs to know of a stage."""

    index: int
    name: str
    expands: bool
    # Summary name -> (amount column, seconds column): e.g. a VLM's output tokens per second of generation.
    rates: dict[str, tuple[str, str]] = field(default_factory=dict)


def _depth(key: str) -> int:
    depth = 0
    while _CHILD_SUFFIX.search(key):
        key = _CHILD_SUFFIX.sub("", key, count=1)
        depth += 1
    return depth


def _truncate(key: str, depth: int) -> str:
    while _depth(key) > depth:
        key = _CHILD_SUFFIX.sub("", key, count=1)
    return key


def funnel(stages: list[StageInfo], kept: list[str], rejects: list[tuple[str, int, str]]) -> list[dict[str, Any]]:
    """Rows in and out of each stage, and reasons, counted in that stage's unit (sources before a split).

    `reasons` counts rows per reason code; `reason_details` keeps a few example details per
    code (the ledger keeps every one).
    """
    depth_after = []
    depth = 0
    for s in stages:
        depth += int(s.expands)
        depth_after.append(depth)
    out_rows = []
    previous_out: int | None = None
    for pos, s in enumerate(stages):
        d = depth_after[pos]
        survivors = {_truncate(k, d) for k in kept}
        survivors.update(_truncate(k, d) for k, idx, _ in rejects if idx > s.index)
        mine = [(k, r) for k, idx, r in rejects if idx == s.index]
        reasons = Counter(reason_group(r) for _, r in mine)
        details: dict[str, list[str]] = {}
        for _, r in sorted(mine):
            examples = details.setdefault(reason_group(r), [])
            detail = reason_detail(r)
            if detail is not None and detail not in examples and len(examples) < DETAIL_EXAMPLES:
                examples.append(detail)
        rows_out = len(survivors)
        rows_in = previous_out if previous_out is not None else rows_out + len(mine)
        out_rows.append(
            {"stage": s.name, "in": rows_in, "out": rows_out, "rejected": len(mine),
             "reasons": dict(sorted(reasons.items())),
             "reason_details": {g: d for g, d in sorted(details.items()) if d}}
        )
        previous_out = rows_out
    return out_rows


def reason_group(reason: str) -> str:
    """The reason's code: all before the first `": "` (`size:min_side`, `brightness:too dark`, `error:ValueError`).

    A reason is `family:code`, optionally followed by `: detail`; the code may hold spaces.
    """
    return reason.split(": ", 1)[0]


def reason_detail(reason: str) -> str | None:
    """What follows the reason's code (`shorter side 48px < 64px`), or None when it has no detail."""
    _, sep, detail = reason.partition(": ")
    return detail if sep else None


def _concat_parts(uris: list[str]) -> pa.Table | None:
    tables = [storage.read_parquet(u) for u in uris if u.endswith(".parquet")]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def _dedupe_sorted(table: pa.Table) -> pa.Table:
    table = table.sort_by("key")
    keys = table.column("key").to_pylist()
    keep = [i for i, k in enumerate(keys) if i == 0 or keys[i - 1] != k]
    return table if len(keep) == len(keys) else table.take(pa.array(keep))


def _write_if_changed(uri: str, data: bytes) -> bool:
    if storage.exists(uri) and storage.read_bytes(uri) == data:
        return False
    storage.write_atomic(uri, data)
    return True


def rates(manifest: pa.Table, stages: list[StageInfo]) -> dict[str, float]:
    """Each stage's declared rates over the kept rows: the amount column's sum over the seconds column's."""
    out = {}
    for stage in stages:
        for name, (amount, seconds) in stage.rates.items():
            if amount not in manifest.column_names or seconds not in manifest.column_names:
                continue
            pairs = [(a, s) for a, s in zip(manifest.column(amount).to_pylist(), manifest.column(seconds).to_pylist(),
                                             strict=True) if a is not None and s is not None]
            total = sum(s for _, s in pairs)
            if total > 0:
                out[name] = round(sum(a for a, _ in pairs) / total, 3)
    return out


def finalize(output: str, stages: list[StageInfo]) -> dict[str, Any]:
    """Write the manifest, the rejects ledger and the summary of everything committed; return the summary."""
    manifest = _concat_parts(storage.list_files(paths.under(output, paths.MANIFEST_PARTS_DIR)))
    rejects = _concat_parts(storage.list_files(paths.under(output, paths.LEDGER_PARTS_DIR)))
    manifest = _dedupe_sorted(manifest) if manifest is not None else pa.table({"key": pa.array([], pa.string())})
    rejects = _dedupe_sorted(rejects) if rejects is not None else ledger.SCHEMA.empty_table()
    _write_if_changed(paths.under(output, paths.MANIFEST), storage.parquet_bytes(manifest))
    _write_if_changed(paths.under(output, paths.REJECTS), storage.parquet_bytes(rejects))

    stats = [json.loads(storage.read_bytes(u)) for u in commit.stats_files(output)]
    kept = manifest.column("key").to_pylist()
    reject_rows = list(
        zip(rejects.column("key").to_pylist(), rejects.column("stage_index").to_pylist(),
            rejects.column("reason").to_pylist(), strict=True)
    )
    fields = sink.summarize_fields([{k: v for k, v in r.items() if k != "shard"} for r in manifest.to_pylist()])
    summary = {
        "totals": {
            "kept": len(kept),
            "rejected": len(reject_rows),
            "shards": len(stats),
            "shard_bytes": sum(s["bytes"] for s in stats),
        },
        "funnel": funnel(stages, kept, reject_rows),
        "shards": sorted(({"shard": s["shard"], "count": s["count"], "bytes": s["bytes"]} for s in stats),
                         key=lambda s: s["shard"]),
        "fields": fields,
        "rates": rates(manifest, stages),
    }
    data = json.dumps(summary, indent=1, sort_keys=True).encode("utf-8")
    _write_if_changed(paths.under(output, paths.SUMMARY), data)
    return summary
