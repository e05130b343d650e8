"""The numbers of an output's report, read from committed shards only, so it works while a job runs.

    view = build_view("out/t2v")        # or an s3:// prefix
    view.totals, view.funnel, view.histograms, view.shards

A shard counts once its `*.stats.json` exists; its rows are then in
`_work/manifest/shard-NNNNNN.parquet`. Rejected rows come from the ledger parts.
`summary.json` and `manifest.parquet` are not needed: they appear only at the end
of a run. Histograms are binned here, one column at a time, so a report holds a
few dozen counts per column whatever the number of rows.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataprep import commit, paths, storage
from dataprep.funnel import FunnelCounter, StageInfo
from dataprep.thresholds import DERIVED, Threshold, column_value, job_stages, stage_classes, threshold_of, thresholds
from dataprep.stage import Filter

log = logging.getLogger(__name__)

CAPTION_CHARS = "caption_chars"
# Shown first, in this order; every other numeric column follows by name.
_FIRST = ("duration", "fps", "width", "height", "short_side", "long_side", "aspect", CAPTION_CHARS)
# Text columns whose top values are worth a table (resolution is made from width and height).
_CATEGORIES = ("media_type", "codec", "bucket", "resolution")
_TOP_VALUES = 12
# 30 bins resolve a threshold's neighbourhood; integer columns spanning fewer values get one bin per value.
_BINS = 30


@dataclass
class Histogram:
    """Binned values of one column: kept rows, and rows a threshold on this column rejected."""

    column: str
    edges: list[float]
    kept: list[int]
    rejected: list[int]
    count: int
    nulls: int
    min: float | None
    max: float | None
    mean: float | None
    thresholds: list[Threshold] = field(default_factory=list)


@dataclass(frozen=True)
class ShardRow:
    """One committed shard."""

    shard: str
    count: int
    bytes: int
    video_seconds: float


@dataclass
class StatsView:
    """Everything `dataprep stats` shows, without thumbnails."""

    output: str
    finalized: bool
    totals: dict[str, Any]
    funnel: list[dict[str, Any]]
    histograms: list[Histogram]
    categories: dict[str, dict[str, int]]
    shards: list[ShardRow]
    stages: list[dict[str, Any]]
    score_columns: list[str]  # what the job's filters record as scores
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The view as plain JSON values."""
        return asdict(self)


@dataclass(frozen=True)
class _Part:
    stats: dict[str, Any]
    path: str  # a local path of the shard's manifest part
    schema: pa.Schema


@contextlib.contextmanager
def _committed_parts(output: str) -> Iterator[list[_Part]]:
    """Every committed shard's stats and manifest part, local (S3 parts are downloaded for the duration)."""
    with contextlib.ExitStack() as stack:
        parts = []
        for uri in commit.stats_files(output):
            stats = json.loads(storage.read_bytes(uri))
            index = paths.shard_index(stats["shard"])
            part_uri = paths.under(output, paths.manifest_part(index)) if index is not None else None
            if part_uri is None or not storage.exists(part_uri):
                continue
            path = stack.enter_context(storage.open_local(part_uri))
            parts.append(_Part(stats, path, pq.read_schema(path)))
        yield sorted(parts, key=lambda p: p.stats["shard"])


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _numeric_columns(parts: list[_Part]) -> list[str]:
    names: set[str] = set()
    for part in parts:
        names.update(f.name for f in part.schema if _is_number(f.type))
    if {"width", "height"} <= names:
        names.update(DERIVED)
    if any("caption" in p.schema.names for p in parts):
        names.add(CAPTION_CHARS)
    return sorted(names, key=lambda c: (_FIRST.index(c) if c in _FIRST else len(_FIRST), c))


def _read_column(part: _Part, column: str) -> tuple[np.ndarray, int]:
    """(finite values, rows) of `column` in one part, nulls dropped; derived columns computed here."""
    names = part.schema.names
    if column == CAPTION_CHARS:
        text = "caption" in names and pa.types.is_string(part.schema.field("caption").type)
        array = pc.utf8_length(pq.read_table(part.path, columns=["caption"]).column(0)) if text else None
    elif column in DERIVED:
        inputs, fn = DERIVED[column]
        if not all(c in names and _is_number(part.schema.field(c).type) for c in inputs):
            array = None
        else:
            table = pq.read_table(part.path, columns=list(inputs))
            cols = [table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in inputs]
            with np.errstate(divide="ignore", invalid="ignore"):
                values = fn(*cols)
            return values[np.isfinite(values) & (np.minimum(*cols) > 0)], table.num_rows
    else:
        array = (pq.read_table(part.path, columns=[column]).column(0)
                 if column in names and _is_number(part.schema.field(column).type) else None)
    rows = part.stats["count"]
    if array is None:
        return np.empty(0), rows
    values = array.to_numpy(zero_copy_only=False).astype(np.float64)
    return values[np.isfinite(values)], rows


def _edges(values: np.ndarray, integer: bool) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if integer and hi - lo < _BINS:
        return np.arange(lo - 0.5, hi + 1.5)
    if lo == hi:
        return np.array([lo - 0.5, hi + 0.5])
    return np.linspace(lo, hi, _BINS + 1)


def histogram(column: str, kept: np.ndarray, rows: int, rejected: np.ndarray,
              bounds: list[Threshold]) -> Histogram:
    """Bin kept values and the values a threshold rejected on common edges."""
    both = np.concatenate([kept, rejected])
    if both.size == 0:
        return Histogram(column, [], [], [], 0, rows, None, None, None, bounds)
    integer = bool(np.all(both == np.round(both)))
    edges = _edges(both, integer)
    kept_counts = np.histogram(kept, edges)[0] if kept.size else np.zeros(len(edges) - 1, int)
    rejected_counts = np.histogram(rejected, edges)[0] if rejected.size else np.zeros(len(edges) - 1, int)
    return Histogram(
        column=column, edges=[float(e) for e in edges], kept=[int(c) for c in kept_counts],
        rejected=[int(c) for c in rejected_counts], count=int(kept.size), nulls=rows - int(kept.size),
        min=float(kept.min()) if kept.size else None, max=float(kept.max()) if kept.size else None,
        mean=float(kept.mean()) if kept.size else None, thresholds=bounds,
    )


@dataclass
class LedgerRows:
    """The ledger parts read once: what the funnel and the histograms need of each rejected row."""

    keys: list[str] = field(default_factory=list)
    stage_index: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    # column -> values of rows rejected by a threshold on that column
    rejected_values: dict[str, list[float]] = field(default_factory=dict)


def read_ledger(output: str) -> LedgerRows:
    """Every committed rejection (each key once)."""
    out = LedgerRows()
    seen: set[str] = set()
    for uri in storage.list_files(paths.under(output, paths.LEDGER_PARTS_DIR)):
        if not uri.endswith(".parquet"):
            continue
        table = storage.read_parquet(uri).select(["key", "stage", "stage_index", "reason", "scores"])
        for key, stage, index, reason, scores in zip(*(table.column(c).to_pylist() for c in table.column_names),
                                                     strict=True):
            if key in seen:
                continue
            seen.add(key)
            out.keys.append(key)
            out.stage_index.append(index)
            out.reasons.append(reason)
            bound = threshold_of(stage, reason)
            if bound is not None:
                value = column_value(bound[0], json.loads(scores or "{}"))
                if value is not None and math.isfinite(value):
                    out.rejected_values.setdefault(bound[0], []).append(value)
    return out


def _categories(parts: list[_Part]) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for part in parts:
        names = part.schema.names
        for column in _CATEGORIES:
            if column == "resolution":
                if not {"width", "height"} <= set(names):
                    continue
                table = pq.read_table(part.path, columns=["width", "height"])
                values = [f"{w}x{h}" for w, h in zip(table.column(0).to_pylist(), table.column(1).to_pylist(),
                                                      strict=True) if w and h]
            elif column in names:
                values = [str(v) for v in pq.read_table(part.path, columns=[column]).column(0).to_pylist()
                          if v is not None]
            else:
                continue
            counts.setdefault(column, Counter()).update(values)
    out: dict[str, dict[str, int]] = {}
    for column in (c for c in _CATEGORIES if c in counts):
        top = dict(counts[column].most_common(_TOP_VALUES))
        rest = sum(counts[column].values()) - sum(top.values())
        out[column] = {**top, "(other)": rest} if rest else top
    return out


def _video_seconds(part: _Part) -> float:
    names = part.schema.names
    if "duration" not in names or not _is_number(part.schema.field("duration").type):
        return 0.0
    table = pq.read_table(part.path, columns=[c for c in ("duration", "media_type") if c in names])
    durations = table.column("duration")
    if "media_type" in names and pa.types.is_string(part.schema.field("media_type").type):
        durations = pc.filter(durations, pc.equal(table.column("media_type"), "video"))
    return float(pc.sum(durations).as_py() or 0.0)


def _funnel(infos: list[StageInfo], parts: list[_Part], ledger_rows: LedgerRows) -> list[dict[str, Any]]:
    """The funnel, reading the kept keys one shard's part at a time."""
    counter = FunnelCounter(infos)
    for part in parts:
        counter.add_kept(pq.read_table(part.path, columns=["key"]).column(0))
    counter.add_rejects(pa.array(ledger_rows.keys, pa.string()), pa.array(ledger_rows.stage_index, pa.int32()),
                        pa.array(ledger_rows.reasons, pa.string()))
    return counter.rows()


def _finalized(output: str, kept: int, rejected: int) -> bool:
    """Whether `summary.json` exists and counts what is committed (a run in progress has not written it yet)."""
    uri = paths.under(output, paths.SUMMARY)
    if not storage.exists(uri):
        return False
    totals = json.loads(storage.read_bytes(uri)).get("totals", {})
    return totals.get("kept") == kept and totals.get("rejected") == rejected


def build_view(output: str) -> StatsView:
    """Totals, funnel, histograms, categories and shards of everything committed in `output`."""
    stages = job_stages(output)
    classes, notes = stage_classes(output, stages)
    bounds = thresholds(stages, classes)
    ledger_rows = read_ledger(output)
    with _committed_parts(output) as parts:
        shard_rows = [ShardRow(p.stats["shard"], p.stats["count"], p.stats["bytes"], _video_seconds(p)) for p in parts]
        histograms = []
        for column in _numeric_columns(parts):
            chunks, rows = [], 0
            for part in parts:
                values, n = _read_column(part, column)
                chunks.append(values)
                rows += n
            kept = np.concatenate(chunks) if chunks else np.empty(0)
            rejected = np.asarray(ledger_rows.rejected_values.get(column, []), dtype=np.float64)
            histograms.append(histogram(column, kept, rows, rejected, bounds.get(column, [])))
            del chunks, kept  # one column at a time
        categories = _categories(parts)
        infos = [StageInfo(i, s["stage"], bool(getattr(c, "expands", False)))
                 for i, (s, c) in enumerate(zip(stages, classes, strict=True))]
        funnel_rows = _funnel(infos, parts, ledger_rows) if infos else []
    kept_count = sum(s.count for s in shard_rows)
    totals = {
        "kept": kept_count,
        "rejected": len(ledger_rows.keys),
        "shards": len(shard_rows),
        "shard_bytes": sum(s.bytes for s in shard_rows),
        "video_hours": sum(s.video_seconds for s in shard_rows) / 3600,
    }
    finalized = _finalized(output, kept_count, len(ledger_rows.keys))
    if not finalized:
        notes.append("no final summary matches what is committed: a run is in progress or was interrupted; "
                     "these numbers cover the committed shards and ledger parts so far")
    return StatsView(
        output=output, finalized=finalized, totals=totals,
        funnel=funnel_rows,
        histograms=histograms, categories=categories, shards=shard_rows,
        stages=[{"stage": s["stage"], "options": s.get("options", {})} for s in stages],
        score_columns=sorted({c for cls in classes if cls is not None and issubclass(cls, Filter)
                              for c in cls.score_columns()}),
        notes=notes,
    )


def fields_summary(view: StatsView) -> dict[str, dict[str, Any]]:
    """The view's columns in `summary.json`'s `fields` shape (count, nulls, min, mean, max, top)."""
    out: dict[str, dict[str, Any]] = {}
    for h in view.histograms:
        out[h.column] = {"count": h.count, "nulls": h.nulls, "min": h.min, "mean": h.mean, "max": h.max}
    for column, top in view.categories.items():
        out[column] = {"count": sum(top.values()), "top": top}
    return out
