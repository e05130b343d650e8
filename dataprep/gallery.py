"""Samples for the report's galleries: a few kept rows read from shard tars, a few rejected rows per reason.

Both are sampled, so the report's size does not grow with the job: at most
`KEPT_LIMIT` kept samples, read from the start of a few evenly spaced shards,
and at most `PER_REASON` rejected rows for each of at most `MAX_REASONS` reason
codes. Thumbnails are small JPEGs as `data:` URIs, so the page needs no file.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dataprep import paths, storage
from dataprep.finalize import reason_detail, reason_group
from dataprep.stats_view import StatsView
from dataprep.thresholds import THRESHOLDS, column_value, threshold_of

log = logging.getLogger(__name__)

KEPT_LIMIT = 48
PER_REASON = 8
MAX_REASONS = 24
# Shards the kept gallery reads: spread over the job, few enough that S3 reads stay short.
KEPT_SHARDS = 6
# Longer side of a thumbnail (px) and its JPEG quality: ~5 KB each, sharp enough to judge a sample.
THUMB_SIDE = 160
THUMB_QUALITY = 70
IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
VIDEO_SUFFIXES = ("mp4", "webm", "mkv", "mov", "avi", "m4v")


@dataclass(frozen=True)
class KeptSample:
    """One kept sample as the gallery shows it."""

    key: str
    shard: str
    caption: str
    scores: dict[str, Any]
    thumbnail: str | None  # data: URI


@dataclass(frozen=True)
class RejectedSample:
    """One rejected row as the gallery shows it."""

    key: str
    stage: str
    reason: str
    detail: str | None
    against: str | None  # "short_side 48 < min_side 64": the score against the threshold it failed
    scores: dict[str, Any]
    thumbnail: str | None


@dataclass
class Gallery:
    """Kept samples and rejected rows by reason code (with each code's total count)."""

    kept: list[KeptSample] = field(default_factory=list)
    rejected: dict[str, list[RejectedSample]] = field(default_factory=dict)
    rejected_counts: dict[str, int] = field(default_factory=dict)


def thumbnail_of_image(data: bytes) -> str:
    """A small JPEG `data:` URI of an image, upright per its EXIF orientation."""
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        return _jpeg_uri(ImageOps.exif_transpose(img))


def thumbnail_of_video(data_or_path: bytes | str) -> str:
    """A small JPEG `data:` URI of a video's first frame (PyAV)."""
    import av

    source = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    with av.open(source) as container:
        frame = next(container.decode(video=0))
        return _jpeg_uri(frame.to_image())


def _jpeg_uri(img: Any) -> str:
    img = img.convert("RGB")
    img.thumbnail((THUMB_SIDE, THUMB_SIDE))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=THUMB_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def sample_thumbnail(members: dict[str, bytes]) -> str | None:
    """A kept sample's thumbnail: its first sampled frame, else its image, else its video's first frame."""
    try:
        if "frames.0.jpg" in members:
            return thumbnail_of_image(members["frames.0.jpg"])
        for suffix in IMAGE_SUFFIXES:
            if suffix in members:
                return thumbnail_of_image(members[suffix])
        for suffix in VIDEO_SUFFIXES:
            if suffix in members:
                return thumbnail_of_video(members[suffix])
    except Exception as exc:  # a sample the gallery cannot preview still shows, with a placeholder
        log.debug("no thumbnail for a sample: %s", exc)
    return None


def source_thumbnail(source: str | None) -> str | None:
    """A rejected row's thumbnail from its source file; None when it cannot be read or decoded."""
    if not source:
        return None
    suffix = source.rsplit(".", 1)[-1].lower()
    try:
        if suffix in IMAGE_SUFFIXES:
            return thumbnail_of_image(storage.read_bytes(source))
        with storage.open_local(source) as path:
            return thumbnail_of_video(path)
    except Exception as exc:  # unreadable or corrupt sources are common among rejects: show a placeholder
        log.debug("no thumbnail for %s: %s", source, exc)
        return None


def _samples(shard_uri: str, limit: int) -> Iterator[tuple[str, dict[str, bytes]]]:
    """The first `limit` samples of a tar, members by suffix (`mp4`, `json`, `frames.0.jpg`), read as a stream."""
    with storage.open_local(shard_uri) as path, tarfile.open(path, mode="r|") as tar:
        key, members, count = None, {}, 0
        for info in tar:
            if not info.isfile():
                continue
            name = info.name.rsplit("/", 1)[-1]
            member_key, _, suffix = name.partition(".")
            if member_key != key:
                if key is not None:
                    yield key, members
                    count += 1
                    if count >= limit:
                        return
                key, members = member_key, {}
            members[suffix] = tar.extractfile(info).read()
        if key is not None:
            yield key, members


def _score_fields(meta: dict[str, Any], score_columns: set[str]) -> dict[str, Any]:
    shown = {c: meta[c] for c in ("duration", "fps") if isinstance(meta.get(c), (int, float))}
    if meta.get("width") and meta.get("height"):
        shown["size"] = f"{meta['width']}x{meta['height']}"
    shown.update({c: meta[c] for c in sorted(score_columns - {"width", "height", "duration", "fps"})
                  if isinstance(meta.get(c), (int, float))})
    return shown


def kept_samples(view: StatsView, limit: int = KEPT_LIMIT) -> list[KeptSample]:
    """Up to `limit` kept samples from the start of up to `KEPT_SHARDS` evenly spaced committed shards."""
    shards = view.shards
    if not shards:
        return []
    step = max(1, len(shards) // KEPT_SHARDS)
    chosen = shards[::step][:KEPT_SHARDS]
    per_shard = -(-limit // len(chosen))
    out: list[KeptSample] = []
    for shard in chosen:
        for key, members in _samples(paths.under(view.output, shard.shard), per_shard):
            if len(out) >= limit:
                return out
            meta = json.loads(members["json"]) if "json" in members else {}
            caption = members["txt"].decode("utf-8", errors="replace") if "txt" in members else meta.get("caption", "")
            out.append(KeptSample(key, shard.shard, caption, _score_fields(meta, set(view.score_columns)),
                                  sample_thumbnail(members)))
    return out


def _against(stage: str, reason: str, scores: dict[str, Any], view: StatsView) -> str | None:
    """`short_side 48 < min_side 64`: the value a threshold rejected, next to the threshold."""
    bound = threshold_of(stage, reason)
    if bound is None:
        return None
    column, option = bound
    value = column_value(column, scores)
    limit = next((t for h in view.histograms if h.column == column for t in h.thresholds
                  if t.stage == stage and t.option == option), None)
    if value is None or limit is None:
        return None
    sign = "<" if THRESHOLDS[stage][option][1] == "min" else ">"
    return f"{column} {value:.4g} {sign} {option} {limit.value:.4g}"


def rejected_samples(view: StatsView, per_reason: int = PER_REASON,
                     max_reasons: int = MAX_REASONS) -> tuple[dict[str, list[RejectedSample]], dict[str, int]]:
    """Up to `per_reason` rejected rows of each reason code (the first the ledger holds), and every code's count."""
    picked: dict[str, list[dict[str, Any]]] = {}
    counts: dict[str, int] = {}
    for uri in storage.list_files(paths.under(view.output, paths.LEDGER_PARTS_DIR)):
        if not uri.endswith(".parquet"):
            continue
        table = storage.read_parquet(uri).select(["key", "source", "stage", "reason", "scores"])
        for row in table.to_pylist():
            group = reason_group(row["reason"])
            counts[group] = counts.get(group, 0) + 1
            rows = picked.setdefault(group, [])
            if len(rows) < per_reason and all(r["key"] != row["key"] for r in rows):
                rows.append(row)
    groups = sorted(picked, key=lambda g: (-counts[g], g))[:max_reasons]
    out: dict[str, list[RejectedSample]] = {}
    for group in groups:
        out[group] = []
        for row in sorted(picked[group], key=lambda r: r["key"]):
            scores = json.loads(row["scores"] or "{}")
            out[group].append(RejectedSample(
                key=row["key"], stage=row["stage"], reason=row["reason"], detail=reason_detail(row["reason"]),
                against=_against(row["stage"], row["reason"], scores, view), scores=scores,
                thumbnail=source_thumbnail(row["source"]),
            ))
    return out, counts


def build_gallery(view: StatsView) -> Gallery:
    """Both galleries of the report."""
    rejected, counts = rejected_samples(view)
    return Gallery(kept=kept_samples(view), rejected=rejected, rejected_counts=counts)
