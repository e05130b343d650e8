"""The WebDataset sink: shards of whole samples, each committed only when complete.

A shard is committed in three steps: its tar is moved into place, its rows go to
a manifest part under `_work/manifest/`, and last its `*.stats.json` is written.
The stats file is the commit record: a tar without one is an orphan of a killed
run and is removed before the next run starts (`dataprep.commit`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dataprep import columns, owner, paths, storage
from dataprep.arrow import column_or_none
from dataprep.config import bucket_fields
from dataprep.members import SampleLayout

# Same bytes for the same sample whenever it is written: no wall-clock times in tars.
_MTIME = 0.0
_EXTENSION_ALIASES = {"jpeg": "jpg", "tif": "tiff"}
# Rows of these media types carry their bytes in `source` when no stage put them in `media`.
_FILE_MEDIA = ("video", "image")


def _extension(uri: str) -> str:
    name = uri.rsplit("/", 1)[-1]
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else "bin"
    return _EXTENSION_ALIASES.get(ext, ext)


def summarize_fields(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-field summary of metadata rows: min/max/mean for numbers, top values for strings."""
    out: dict[str, Any] = {}
    names = sorted({k for r in rows for k in r})
    for name in names:
        values = [r.get(name) for r in rows]
        present = [v for v in values if v is not None]
        numeric = [v for v in present if isinstance(v, (int, float)) and not isinstance(v, bool)]
        entry: dict[str, Any] = {"count": len(present), "nulls": len(values) - len(present)}
        if numeric and len(numeric) == len(present):
            finite = [float(v) for v in numeric if math.isfinite(float(v))]
            if finite:
                entry.update(min=min(finite), max=max(finite), mean=sum(finite) / len(finite))
        elif name not in (columns.KEY, columns.SOURCE, columns.CAPTION, columns.PARENT):
            top = Counter(str(v) for v in present).most_common(10)
            entry["top"] = {k: n for k, n in top}
        out[name] = entry
    return out


@dataclass
class _OpenShard:
    index: int
    subdir: str
    tmp_path: str
    tar: Any  # webdataset.TarWriter
    keys: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    bytes: int = 0

    @property
    def relative(self) -> str:
        return paths.shard_path(self.subdir, self.index)


class ShardWriter:
    """Writes samples into rolling shards under `OUTPUT/shards/[BUCKET/]` and commits each when full.

    webdataset's `TarWriter` writes the members; this class only rolls shards over and commits them.
    `next_index` hands out shard numbers that no other writer uses (a counter shared by all writers).
    `members` maps columns to the member suffixes the stages declared (see `dataprep.members`).
    """

    def __init__(
        self,
        output: str,
        *,
        max_samples: int,
        max_bytes: int,
        next_index: Callable[[], int],
        bucket_path: str | None = None,
        members: dict[str, str] | None = None,
        token: str | None = None,
    ) -> None:
        self.output = output
        self.token = token
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.next_index = next_index
        self.bucket_path = bucket_path
        self.members = members or {}
        self._open: dict[str, _OpenShard] = {}
        self.committed: list[str] = []

    def write_table(self, table: pa.Table) -> None:
        """Add every row of `table` as one sample."""
        if table.num_rows == 0:
            return
        layout = SampleLayout(table.schema, self.members)
        extra = layout.encode(table)
        meta = table.select(layout.meta).to_pylist()
        manifest = table.select(layout.manifest).to_pylist()
        media, exts = column_or_none(table, columns.MEDIA), column_or_none(table, columns.MEDIA_EXT)
        # Without a media type every row is a file (a job of media only).
        kinds = column_or_none(table, "media_type") if "media_type" in table.column_names else None
        for i, row in enumerate(meta):
            key = row[columns.KEY]
            if not columns.is_safe_key(key):
                raise ValueError(f"unsafe sample key {key!r} reached the sink; keys must match [A-Za-z0-9_-]")
            sample = dict(extra[i])
            if media[i] is not None:
                _add_member(sample, (exts[i] or "bin").lstrip("."), media[i], key)
            elif kinds is None or kinds[i] in _FILE_MEDIA:
                _add_member(sample, _extension(row[columns.SOURCE]), storage.read_bytes(row[columns.SOURCE]), key)
            json_row = {k: columns.json_value(v) for k, v in row.items()}
            _add_member(sample, "json", json.dumps(json_row, sort_keys=True, ensure_ascii=False,
                                                   default=str).encode("utf-8"), key)
            self._add(key, sample, _bucket_folder(self.bucket_path, row) if self.bucket_path else None,
                      {k: columns.json_value(v) for k, v in manifest[i].items()})

    def _add(self, key: str, sample: dict[str, bytes], bucket: str | None, manifest_row: dict[str, Any]) -> None:
        # Rows without a bucket (images in a video job) stay at the top.
        subdir = bucket or ""
        size = sum(len(data) for data in sample.values())
        shard = self._open.get(subdir)
        if shard is not None and shard.keys and shard.bytes + size > self.max_bytes:
            self._commit(shard)
            shard = None
        shard = shard or self._start(subdir)
        shard.bytes += shard.tar.write({"__key__": key, **sample})
        shard.keys.append(key)
        shard.rows.append({**manifest_row, "shard": shard.relative})
        if len(shard.keys) >= self.max_samples:
            self._commit(shard)

    def _start(self, subdir: str) -> _OpenShard:
        import webdataset as wds

        index = self.next_index()
        fd, tmp_path = tempfile.mkstemp(prefix=f"{paths.shard_name(index)}-", suffix=".tar.partial",
                                        dir=self._tmp_dir())
        os.close(fd)
        tar = wds.TarWriter(tmp_path, encoder=False, mtime=_MTIME, user="dataprep", group="dataprep")
        shard = _OpenShard(index=index, subdir=subdir, tmp_path=tmp_path, tar=tar)
        self._open[subdir] = shard
        return shard

    def _tmp_dir(self) -> str | None:
        if storage.is_s3(self.output):
            return None
        path = paths.under(self.output, paths.SHARDS_DIR)
        os.makedirs(path, exist_ok=True)
        return path

    def _commit(self, shard: _OpenShard) -> None:
        shard.tar.close()
        del self._open[shard.subdir]
        relative = shard.relative
        owner.assert_owner(self.output, self.token)
        tar_bytes = os.path.getsize(shard.tmp_path)
        storage.upload_atomic(shard.tmp_path, paths.under(self.output, relative))
        storage.write_atomic(paths.under(self.output, paths.manifest_part(shard.index)),
                             storage.parquet_bytes(pa.Table.from_pylist(shard.rows)))
        stats = {
            "shard": relative,
            "count": len(shard.keys),
            "bytes": tar_bytes,
            "payload_bytes": shard.bytes,
            "keys": shard.keys,
            "token": self.token,
            "fields": summarize_fields([{k: v for k, v in r.items() if k != "shard"} for r in shard.rows]),
        }
        owner.assert_owner(self.output, self.token)
        storage.write_atomic(paths.under(self.output, paths.stats_path(relative)),
                             json.dumps(stats, indent=1, sort_keys=True).encode("utf-8"))
        self.committed.append(relative)

    def close(self) -> list[str]:
        """Commit every open shard; returns all shards this writer committed."""
        for shard in list(self._open.values()):
            if shard.keys:
                self._commit(shard)
            else:
                shard.tar.close()
                os.remove(shard.tmp_path)
                del self._open[shard.subdir]
        return self.committed


def _add_member(sample: dict[str, bytes], suffix: str, data: bytes, key: str) -> None:
    if suffix in sample:
        raise ValueError(f"sample {key!r}: two columns are both written as member {suffix!r}; "
                         "fix: give one of them another suffix in its stage's `members`")
    sample[suffix] = data


def _bucket_folder(template: str, row: dict[str, Any]) -> str | None:
    """The shard folder of `row` under `template` ("{bucket}/f{frame_count}" -> "640x360/f121").

    None when a column it names is null (an image in a video job): such rows stay at the top.
    Each path part is made safe, so a value cannot climb out of shards/.
    """
    values = {name: row.get(name) for name in bucket_fields(template)}
    if any(v is None for v in values.values()):
        return None
    return "/".join(columns.safe_key(part) for part in template.format(**values).split("/") if part)
