"""Ingest: list the input (a folder, an s3:// prefix, one media file, or a csv/jsonl/parquet manifest) as rows.

Captions come from the manifest's caption column or from a sidecar `NAME.txt`
beside `NAME.mp4`. Files that are not media become rejected rows, not silence.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from dataprep import columns, storage
from dataprep.stage import Source
from dataprep.stages.media_types import SIDECAR_EXTENSIONS, extension, media_type_of

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        (columns.KEY, pa.string()),
        (columns.SOURCE, pa.string()),
        (columns.CAPTION, pa.string()),
        ("media_type", pa.string()),
        (columns.REJECT, pa.string()),
    ]
)
MANIFEST_EXTENSIONS = (".csv", ".jsonl", ".parquet")


class IngestParams(BaseModel):
    """Options of `ingest`."""

    model_config = ConfigDict(extra="forbid")
    uri_column: str = Field("uri", description="Manifest column with each file's path or URI.")
    caption_column: str = Field("caption", description="Manifest column with the caption; may be absent.")
    sidecar_captions: bool = Field(True, description="Read NAME.txt beside NAME.ext as the caption of a listed file.")
    batch_rows: int = Field(10_000, gt=0, description="Rows per listed block; bounds driver memory per block.")


class Ingest(Source):
    """Rows of `key`, `source`, `caption` and `media_type` (by extension) for each input file."""

    name = "ingest"
    writes = (columns.KEY, columns.SOURCE, columns.CAPTION, "media_type")
    Params = IngestParams

    def read(self, uri: str) -> Iterator[pa.Table]:
        """Yield tables of rows listing `uri`."""
        rows = self._manifest_rows(uri) if extension(uri) in MANIFEST_EXTENSIONS else self._folder_rows(uri)
        seen: set[str] = set()
        batch: list[dict[str, Any]] = []
        duplicates = 0
        for row in rows:
            if row[columns.SOURCE] in seen:
                duplicates += 1
                continue
            seen.add(row[columns.SOURCE])
            batch.append(row)
            if len(batch) >= self.params.batch_rows:
                yield pa.Table.from_pylist(batch, schema=SCHEMA)
                batch = []
        if batch:
            yield pa.Table.from_pylist(batch, schema=SCHEMA)
        if duplicates:
            log.warning("ingest: %d listed URIs appeared more than once; each is processed once", duplicates)

    def _row(self, uri: str, caption: str | None) -> dict[str, Any]:
        media_type = media_type_of(uri)
        reject = None if media_type else f"unsupported:extension {extension(uri) or '(none)'!r} is not a known video or image type"
        return {
            columns.KEY: columns.source_key(uri),
            columns.SOURCE: uri,
            columns.CAPTION: caption,
            "media_type": media_type,
            columns.REJECT: reject,
        }

    def _folder_rows(self, uri: str) -> Iterator[dict[str, Any]]:
        single_file = not storage.is_s3(uri) and os.path.isfile(storage.local_path(uri))
        files = [uri] if single_file else storage.list_files(uri)
        present = None if single_file else set(files)
        for path in files:
            name = path.rsplit("/", 1)[-1]
            if name.startswith(".") or extension(path) in SIDECAR_EXTENSIONS:
                continue
            yield self._row(path, self._sidecar_caption(path, present))

    def _sidecar_caption(self, path: str, present: set[str] | None = None) -> str | None:
        if not self.params.sidecar_captions:
            return None
        stem = path[: len(path) - len(extension(path))] if extension(path) else path
        sidecar = stem + ".txt"
        if (present is not None and sidecar not in present) or (present is None and not storage.exists(sidecar)):
            return None
        return storage.read_bytes(sidecar).decode("utf-8", errors="replace").strip()

    def _manifest_rows(self, uri: str) -> Iterator[dict[str, Any]]:
        table = _read_manifest(uri)
        if self.params.uri_column not in table.column_names:
            raise ValueError(
                f"manifest {uri!r} has no column {self.params.uri_column!r} (columns: {table.column_names}); "
                "fix: set the ingest option `uri_column`"
            )
        base = os.path.dirname(storage.local_path(uri)) if not storage.is_s3(uri) else uri.rsplit("/", 1)[0]
        uris = table.column(self.params.uri_column).to_pylist()
        has_caption = self.params.caption_column in table.column_names
        captions = table.column(self.params.caption_column).to_pylist() if has_caption else [None] * len(uris)
        for item, caption in zip(uris, captions, strict=True):
            if not item:
                continue
            resolved = _resolve(str(item), base)
            if caption is None and not has_caption:
                caption = self._sidecar_caption(resolved)
            yield self._row(resolved, caption)


def _resolve(item: str, base: str) -> str:
    if storage.is_s3(item) or os.path.isabs(item) or item.startswith("file://"):
        return item
    return storage.join(base, item)


def _read_manifest(uri: str) -> pa.Table:
    import io

    data = storage.read_bytes(uri)
    ext = extension(uri)
    if ext == ".csv":
        import pyarrow.csv as pcsv

        return pcsv.read_csv(io.BytesIO(data))
    if ext == ".jsonl":
        import pyarrow.json as pjson

        return pjson.read_json(io.BytesIO(data))
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data))
