"""The WebDataset sink: shards of whole samples, each committed only when complete.

A shard is committed in three steps: its tar is moved into place, its rows go to
a manifest part under `_work/manifest/`, and last its `*.stats.json` is written.
The stats file is the commit record: a tar without one is an orphan of a killed
run and is removed before the next run starts (`dataprep.commit`).
"""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from dataprep import columns, commit, storage

SHARDS_DIR = "shards"
MANIFEST_PARTS_DIR = "_work/manifest"
# Same bytes for the same sample whenever it is written: no wall-clock times in tars.
_MTIME = 0
_EXTENSION_ALIASES = {"jpeg": "jpg", "tif": "tiff"}


def shard_name(index: int) -> str:
    """File stem of the index-th shard."""
    return f"shard-{index:06d}"


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
    name: str
    subdir: str
    tmp_path: str
    tar: tarfile.TarFile
    keys: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    bytes: int = 0


class ShardWriter:
    """Writes samples into rolling shards under `OUTPUT/shards/[BUCKET/]` and commits each when full.

    `next_index` hands out shard numbers that no other writer uses (a counter shared by all writers).
    """

    def __init__(
        self,
        output: str,
        *,
        max_samples: int,
        max_bytes: int,
        next_index: Callable[[], int],
        bucket_column: str | None = None,
        token: str | None = None,
    ) -> None:
        self.output = output
        self.token = token
        self.max_samples = max_samples
        self.max_bytes = max_bytes
        self.next_index = next_index
        self.bucket_column = bucket_column
        self._open: dict[str, _OpenShard] = {}
        self.committed: list[str] = []

    def write_table(self, table: pa.Table) -> None:
        """Add every row of `table` as one sample."""
        if table.num_rows == 0:
            return
        meta_columns = columns.scalar_columns(table.schema)
        media = table.column(columns.MEDIA).to_pylist() if columns.MEDIA in table.column_names else None
        exts = table.column(columns.MEDIA_EXT).to_pylist() if columns.MEDIA_EXT in table.column_names else None
        meta = table.select(meta_columns).to_pylist()
        for i, row in enumerate(meta):
            key = row[columns.KEY]
            if not columns.is_safe_key(key):
                raise ValueError(f"unsafe sample key {key!r} reached the sink; keys must match [A-Za-z0-9_-]")
            if media is not None and media[i] is not None:
                payload, ext = media[i], (exts[i] if exts and exts[i] else "bin")
            else:
                payload, ext = storage.read_bytes(row[columns.SOURCE]), _extension(row[columns.SOURCE])
            self._add(key, payload, ext.lstrip("."), row)

    def _add(self, key: str, payload: bytes, ext: str, row: dict[str, Any]) -> None:
        subdir = ""
        bucket = row.get(self.bucket_column) if self.bucket_column else None
        if bucket is not None:  # rows without a bucket (images in a video job) stay at the top
            subdir = columns.safe_key(str(bucket))
        members = {f"{key}.{ext}": payload}
        meta = {k: columns.json_value(v) for k, v in row.items()}
        members[f"{key}.json"] = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
        caption = row.get(columns.CAPTION)
        if caption is not None:
            members[f"{key}.txt"] = str(caption).encode("utf-8")
        size = sum(len(data) for data in members.values())
        shard = self._open.get(subdir)
        if shard is not None and shard.keys and shard.bytes + size > self.max_bytes:
            self._commit(shard)
            shard = None
        shard = shard or self._start(subdir)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = _MTIME
            info.mode = 0o444
            shard.tar.addfile(info, io.BytesIO(data))
            shard.bytes += len(data)
        shard.keys.append(key)
        shard.rows.append({**meta, "shard": self._relative(shard)})
        if len(shard.keys) >= self.max_samples:
            self._commit(shard)

    def _start(self, subdir: str) -> _OpenShard:
        name = shard_name(self.next_index())
        fd, tmp_path = tempfile.mkstemp(prefix=f"{name}-", suffix=".tar.partial", dir=self._tmp_dir())
        os.close(fd)
        shard = _OpenShard(name=name, subdir=subdir, tmp_path=tmp_path, tar=tarfile.open(tmp_path, "w", format=tarfile.USTAR_FORMAT))
        self._open[subdir] = shard
        return shard

    def _tmp_dir(self) -> str | None:
        if storage.is_s3(self.output):
            return None
        path = storage.join(self.output, SHARDS_DIR)
        os.makedirs(path, exist_ok=True)
        return path

    def _relative(self, shard: _OpenShard) -> str:
        return "/".join(p for p in (SHARDS_DIR, shard.subdir, f"{shard.name}.tar") if p)

    def _commit(self, shard: _OpenShard) -> None:
        shard.tar.close()
        del self._open[shard.subdir]
        relative = self._relative(shard)
        commit.assert_owner(self.output, self.token)
        tar_bytes = os.path.getsize(shard.tmp_path)
        storage.upload_atomic(shard.tmp_path, storage.join(self.output, relative))
        storage.write_atomic(storage.join(self.output, MANIFEST_PARTS_DIR, f"{shard.name}.parquet"),
                             storage.parquet_bytes(pa.Table.from_pylist(shard.rows)))
        stats = {
            "shard": relative,
            "count": len(shard.keys),
            "bytes": tar_bytes,
            "payload_bytes": shard.bytes,
            "keys": shard.keys,
            "fields": summarize_fields([{k: v for k, v in r.items() if k != "shard"} for r in shard.rows]),
        }
        stats_uri = storage.join(self.output, relative[: -len(".tar")] + ".stats.json")
        commit.assert_owner(self.output, self.token)
        storage.write_atomic(stats_uri, json.dumps(stats, indent=1, sort_keys=True).encode("utf-8"))
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
