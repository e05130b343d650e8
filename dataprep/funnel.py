"""The funnel of a job, counted from kept keys and ledger rows fed in batches, whatever their number.

    counter = FunnelCounter(stages)
    counter.add_kept(keys)                    # pyarrow string arrays, any number of times
    counter.add_rejects(keys, stage_index, reasons)
    counter.rows()                            # one dict per stage: in, out, rejected, reasons, reason_details

Each stage counts in its own unit: sources before a split, clips after it (a key's
depth is its number of `_cNNNN` suffixes, see `dataprep.columns.child_key`). Only
keys deeper than a stage's unit need a set (of their truncated keys: the parents);
a job without splits holds counters only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

# Example details kept per reason code in the summary: enough to see the spread, bounded for 1M rejects.
DETAIL_EXAMPLES = 3
_SUFFIX_CHARS = len("_c0000")
_SUFFIXES = r"(_c\d{4})+$"


@dataclass(frozen=True)
class StageInfo:
    """What the funnel needs to know of a stage."""

    index: int
    name: str
    expands: bool
    # Summary name -> (amount column, seconds column): e.g. a VLM's output tokens per second of generation.
    rates: dict[str, tuple[str, str]] = field(default_factory=dict)


def reason_group(reason: str) -> str:
    """The reason's code: all before the first `": "` (`size:min_side`, `brightness:too dark`, `error:ValueError`).

    A reason is `family:code`, optionally followed by `: detail`; the code may hold spaces.
    """
    return reason.split(": ", 1)[0]


def reason_detail(reason: str) -> str | None:
    """What follows the reason's code (`shorter side 48px < 64px`), or None when it has no detail."""
    _, sep, detail = reason.partition(": ")
    return detail if sep else None


def _depths(keys: pa.Array) -> pa.Array:
    """The number of child suffixes of each key."""
    roots = pc.replace_substring_regex(keys, _SUFFIXES, "")
    return pc.divide(pc.subtract(pc.utf8_length(keys), pc.utf8_length(roots)), _SUFFIX_CHARS)


class _Survivors:
    """How many distinct units (keys truncated to one depth) survive a stage."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.shallow = 0  # keys at most `depth` deep are their own unit, and keys are unique
        self.parents: set[str] = set()

    def add(self, keys: pa.Array, depths: pa.Array) -> None:
        deep = pc.greater(depths, self.depth)
        self.shallow += len(keys) - pc.sum(deep).as_py() if len(keys) else 0
        if not pc.any(deep).as_py():
            return
        for key, depth in zip(keys.filter(deep).to_pylist(), depths.filter(deep).to_pylist(), strict=True):
            self.parents.add(key[: len(key) - _SUFFIX_CHARS * (depth - self.depth)])

    def count(self) -> int:
        return self.shallow + len(self.parents)


class FunnelCounter:
    """Rows in and out of each stage and its reasons, from batches of kept keys and ledger rows."""

    def __init__(self, stages: list[StageInfo]) -> None:
        self.stages = stages
        depth, depths = 0, []
        for s in stages:
            depth += int(s.expands)
            depths.append(depth)
        self._survivors = [_Survivors(d) for d in depths]
        self._reasons: Counter[tuple[int, str]] = Counter()
        # (stage index, code) -> detail -> smallest key that has it; at most DETAIL_EXAMPLES details each.
        self._examples: dict[tuple[int, str], dict[str, str]] = {}

    def add_kept(self, keys: pa.Array) -> None:
        """Count kept keys: they survive every stage."""
        keys = _plain(keys)
        depths = _depths(keys)
        for survivors in self._survivors:
            survivors.add(keys, depths)

    def add_rejects(self, keys: pa.Array, stage_index: pa.Array, reasons: pa.Array) -> None:
        """Count ledger rows: each survives the stages before the one that rejected it."""
        keys, stage_index, reasons = _plain(keys), _plain(stage_index), _plain(reasons)
        depths = _depths(keys)
        for s, survivors in zip(self.stages, self._survivors, strict=True):
            later = pc.greater(stage_index, s.index)
            survivors.add(keys.filter(later), depths.filter(later))
        parts = pc.split_pattern(reasons, ": ", max_splits=1)
        table = pa.table({"key": keys, "stage": stage_index, "code": pc.list_element(parts, 0),
                          "detail": _second(parts)})
        for row in table.group_by(["stage", "code"]).aggregate([("key", "count")]).to_pylist():
            self._reasons[(row["stage"], row["code"])] += row["key_count"]
        firsts = table.filter(pc.is_valid(table.column("detail"))).group_by(["stage", "code", "detail"]) \
            .aggregate([("key", "min")])
        for row in firsts.to_pylist():
            self._example(row["stage"], row["code"], row["detail"], row["key_min"])

    def _example(self, stage: int, code: str, detail: str, key: str) -> None:
        """Keep the details whose first key (in key order) comes first; exact however the rows are batched."""
        kept = self._examples.setdefault((stage, code), {})
        if detail in kept:
            kept[detail] = min(kept[detail], key)
            return
        kept[detail] = key
        if len(kept) > DETAIL_EXAMPLES:
            del kept[max(kept, key=lambda d: (kept[d], d))]

    def rows(self) -> list[dict[str, Any]]:
        """One row per stage: `in`, `out`, `rejected`, `reasons` (rows per code) and `reason_details` (examples)."""
        out_rows = []
        previous_out: int | None = None
        for s, survivors in zip(self.stages, self._survivors, strict=True):
            reasons = {code: n for (idx, code), n in self._reasons.items() if idx == s.index}
            rejected = sum(reasons.values())
            details = {code: sorted(d, key=lambda x, d=d: (d[x], x))
                       for (idx, code), d in self._examples.items() if idx == s.index and d}
            rows_out = survivors.count()
            rows_in = previous_out if previous_out is not None else rows_out + rejected
            out_rows.append({"stage": s.name, "in": rows_in, "out": rows_out, "rejected": rejected,
                             "reasons": dict(sorted(reasons.items())), "reason_details": dict(sorted(details.items()))})
            previous_out = rows_out
        return out_rows


def _plain(values: Any) -> pa.Array:
    """One contiguous array from a chunked array or a list."""
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    return values if isinstance(values, pa.Array) else pa.array(values)


def _second(parts: pa.Array) -> pa.Array:
    """The second element of each list, null where a list has one."""
    has_two = pc.greater(pc.list_value_length(parts), 1)
    padded = pc.if_else(has_two, parts, pa.scalar([None, None], parts.type))
    return pc.list_element(padded, 1)


def funnel(stages: list[StageInfo], kept: list[str], rejects: list[tuple[str, int, str]]) -> list[dict[str, Any]]:
    """Rows in and out of each stage, and reasons, counted in that stage's unit (sources before a split).

    `reasons` counts rows per reason code; `reason_details` keeps a few example details per
    code (the ledger keeps every one).
    """
    counter = FunnelCounter(stages)
    counter.add_kept(pa.array(kept, pa.string()))
    if rejects:
        keys, indexes, reasons = zip(*rejects, strict=True)
        counter.add_rejects(pa.array(keys, pa.string()), pa.array(indexes, pa.int32()), pa.array(reasons, pa.string()))
    return counter.rows()
