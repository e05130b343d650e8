"""Ingest: list the input (a folder, an s3:// prefix, one media file, or a csv/jsonl/parquet manifest) as rows.

    stages:
      - stage: ingest
        media_types: [video]   # a text-to-video job: images in the input are rejected, not sharded

Captions come from the manifest's caption column or from a sidecar `NAME.txt`
beside `NAME.mp4`. A manifest without a file column is a text-only dataset: each
row's caption is the sample (`media_type` "text"). Every listed thing becomes a row;
what cannot be a sample (not media, a manifest row naming no file, a media type the
job does not take) is a rejected row with its reason, not silence.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field

from dataprep import columns, storage
from dataprep.stage import Source, StageParams
from dataprep.stages.manifest_reads import RowGroupRead, layout, read_rows, row_group_reads
from dataprep.stages.manifest_rows import file_rows, row_key, row_source, where
from dataprep.stages.media_types import SIDECAR_EXTENSIONS, TEXT, extension, media_type_of

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
MediaType = Literal["video", "image", "text"]


class IngestParams(StageParams):
    """Options of `ingest`."""

    uri_column: str = Field("uri", description="Manifest column with each file's path or URI. A manifest without "
                                               "it (when this option is not set) is a text-only dataset whose "
                                               "rows are the texts of `caption_column`.")
    caption_column: str = Field("caption", description="Manifest column with the caption; may be absent from a "
                                                       "manifest of files. In a text-only manifest, the text.")
    key_column: str | None = Field(None, description="Text-only manifests: column with each row's id, used as its "
                                                     "key (made safe as a file name). None: the key hashes the "
                                                     "manifest's URI and the row number.")
    sidecar_captions: bool = Field(True, description="Read NAME.txt beside NAME.ext as the caption of a listed file.")
    media_types: list[MediaType] = Field(["video", "image", "text"], min_length=1,
                                         description="Media types the job takes (video, image, text: a text-only "
                                                     "manifest's rows). A listed item of another type is rejected "
                                                     "(`input:media_type`), so a video job's shards hold no stills. "
                                                     "Default: all.")
    batch_rows: int = Field(10_000, gt=0, description="Rows per listed block; bounds driver memory per block.")


class Ingest(Source):
    """Rows of `key`, `source`, `caption` and `media_type` (by extension, or "text") for each input item."""

    name = "ingest"
    writes = (columns.KEY, columns.SOURCE, columns.CAPTION, "media_type")
    Params = IngestParams

    def read(self, uri: str) -> Iterator[pa.Table]:
        """Yield tables of rows listing `uri`; a file listed twice is kept the first time."""
        seen: set[str] = set()
        duplicates = 0
        for page in self.pages(uri):
            table = self.rows(page)
            sources = table.column(columns.SOURCE).to_pylist()
            first = [s not in seen and not seen.add(s) for s in sources]
            duplicates += len(first) - sum(first)
            yield table.filter(pa.array(first, pa.bool_()))
        if duplicates:
            log.warning("ingest: %d listed URIs appeared more than once; each is processed once", duplicates)

    def pages(self, uri: str) -> Iterator[pa.Table]:
        """The listing in pages of at most `batch_rows` rows, for `rows` to turn into rows anywhere (a worker).

        A manifest of files is read a batch at a time and never whole; each page holds its
        rows' numbers, so keys do not depend on how it was cut. Other inputs (folders,
        text-only manifests) come as finished rows. A file named twice is not removed here:
        `read` and the runner keep the first of each key.
        """
        if extension(uri) not in MANIFEST_EXTENSIONS:
            yield from _tables(self._folder_rows(uri), self.params.batch_rows)
            return
        if self._is_text_only(uri, _manifest_columns(uri)):
            yield from _tables(self._text_rows(uri, _read_manifest(uri)), self.params.batch_rows)
            return
        self._check_file_manifest(uri)
        start = 1
        text = {self.params.uri_column: pa.string(), self.params.caption_column: pa.string()}
        for batch in _manifest_batches(uri, self.params.batch_rows, text):
            names = [c for c in (self.params.uri_column, self.params.caption_column) if c in batch.column_names]
            page = batch.select(names)
            yield page.replace_schema_metadata({_PAGE_URI: uri, _PAGE_START: str(start)})
            start += batch.num_rows

    def page_reads(self, uri: str, rows: int) -> list[RowGroupRead] | None:
        """The listing cut into reads of about `rows` rows each, for `read_page` to read anywhere (a worker);
        None when it cannot be cut so: only a Parquet manifest of files can, by row group."""
        if extension(uri) != ".parquet":
            return None
        names, sizes = layout(uri)
        if self.params.uri_column not in names:  # a text-only manifest, or a mistake `pages` explains
            return None
        self._check_file_manifest(uri)
        return row_group_reads(uri, sizes, rows)

    def read_page(self, read: RowGroupRead) -> pa.Table:
        """The page of `page_reads`' `read`, as `pages` makes pages: for `rows`."""
        page = read_rows(read, [self.params.uri_column, self.params.caption_column])
        return page.replace_schema_metadata({_PAGE_URI: read.uri, _PAGE_START: str(read.first_row)})

    def rows(self, page: pa.Table) -> pa.Table:
        """The listed rows of one page from `pages`."""
        meta = page.schema.metadata or {}
        if _PAGE_URI.encode() not in meta:
            return page
        p = self.params
        uri, start = meta[_PAGE_URI.encode()].decode(), int(meta[_PAGE_START.encode()])
        has_caption = p.caption_column in page.column_names
        captions = page.column(p.caption_column).combine_chunks() if has_caption else pa.nulls(page.num_rows, pa.string())
        table = file_rows(uri, page.column(p.uri_column).combine_chunks(), captions, first_row=start,
                          media_types=list(p.media_types), uri_column=p.uri_column, schema=SCHEMA)
        if has_caption or not p.sidecar_captions:
            return table
        # Without a caption column, each file's caption is its sidecar NAME.txt, if there is one.
        sidecars = [self._sidecar_caption(s) if t is not None else None
                    for s, t in zip(table.column(columns.SOURCE).to_pylist(), table.column("media_type").to_pylist(),
                                    strict=True)]
        return table.set_column(table.schema.get_field_index(columns.CAPTION), columns.CAPTION,
                                pa.array(sidecars, pa.string()))

    def _row(self, uri: str, caption: str | None) -> dict[str, Any]:
        media_type = media_type_of(uri)
        if media_type is None:
            reject = f"unsupported:extension: {extension(uri) or '(none)'!r} is not a known video or image type"
        else:
            reject = self._unwanted(media_type)
        return _listed(columns.source_key(uri), uri, caption, media_type, reject)

    def _unwanted(self, media_type: str) -> str | None:
        """The rejection of an item whose media type the job does not take, else None."""
        wanted = self.params.media_types
        if media_type in wanted:
            return None
        return f"input:media_type: {media_type}, this job takes {', '.join(wanted)} (ingest option `media_types`)"

    def _folder_rows(self, uri: str) -> Iterator[dict[str, Any]]:
        """Rows of one file, or of a folder's files, listed one subfolder at a time (sidecars sit beside media)."""
        if not storage.is_s3(uri) and os.path.isfile(storage.local_path(uri)):
            yield self._row(uri, self._sidecar_caption(uri))
            return
        for files in storage.iter_folders(uri):
            present = set(files)
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

    def _check_file_manifest(self, uri: str) -> None:
        """Raise when an option meant for text-only manifests is set for a manifest of files."""
        p = self.params
        if p.key_column is not None:
            raise ValueError(f"ingest option `key_column` ({p.key_column!r}) names the keys of a text-only manifest, "
                             f"but {uri!r} lists files (column {p.uri_column!r}), whose keys hash their URIs; "
                             "fix: remove `key_column`")

    def _is_text_only(self, uri: str, names: list[str]) -> bool:
        """Whether the manifest's rows are texts rather than files; raise when it is neither."""
        p = self.params
        if p.uri_column in names:
            return False
        if "uri_column" in p.model_fields_set:  # named by the user: its absence is a mistake, not a text dataset
            raise ValueError(f"manifest {uri!r} has no column {p.uri_column!r} (columns: {names}); fix: set the "
                             "ingest option `uri_column` to the column of file paths, or remove it to read a "
                             f"text-only manifest from `caption_column` ({p.caption_column!r})")
        if p.caption_column not in names:
            raise ValueError(f"manifest {uri!r} has neither a file column {p.uri_column!r} nor a text column "
                             f"{p.caption_column!r} (columns: {names}); fix: set the ingest option `uri_column` "
                             "to the column of file paths, or `caption_column` to the column of texts")
        log.warning("ingest: manifest %s has no %r column: its rows are text-only samples, the text from %r; "
                    "if it lists files, set the ingest option `uri_column`", uri, p.uri_column, p.caption_column)
        return True

    def _text_rows(self, uri: str, table: pa.Table) -> Iterator[dict[str, Any]]:
        p = self.params
        if p.key_column is not None and p.key_column not in table.column_names:
            raise ValueError(f"manifest {uri!r} has no column {p.key_column!r} (columns: {table.column_names}); "
                             "fix: set the ingest option `key_column` to the column of row ids, or remove it")
        texts = table.column(p.caption_column).to_pylist()
        ids = table.column(p.key_column).to_pylist() if p.key_column is not None else [None] * len(texts)
        first_row: dict[str, int] = {}  # key -> the row that has it, so a repeated id is rejected, not merged
        for number, (text, ident) in enumerate(zip(texts, ids, strict=True), start=1):
            place = where(uri, number)
            ident = str(ident).strip() if ident is not None else ""
            key = row_key(uri, number) if p.key_column is None else columns.safe_key(ident) if ident else ""
            if not isinstance(text, str) or not text.strip():
                yield _manifest_reject(uri, number, f"no_text: {place} has no {p.caption_column!r}")
            elif not key:
                yield _manifest_reject(uri, number, f"no_key: {place} has no {p.key_column!r}")
            elif key in first_row:
                yield _manifest_reject(uri, number, f"duplicate_key: {place} repeats {p.key_column!r} {ident!r} "
                                                    f"of row {first_row[key]}")
            else:
                first_row[key] = number
                yield _listed(key, row_source(uri, number), text, TEXT, self._unwanted(TEXT))


def _tables(rows: Iterator[dict[str, Any]], size: int) -> Iterator[pa.Table]:
    """Rows as tables of at most `size` rows."""
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield pa.Table.from_pylist(batch, schema=SCHEMA)
            batch = []
    if batch:
        yield pa.Table.from_pylist(batch, schema=SCHEMA)


def _listed(key: str, source: str, caption: str | None, media_type: str | None,
            reject: str | None) -> dict[str, Any]:
    return {columns.KEY: key, columns.SOURCE: source, columns.CAPTION: caption, "media_type": media_type,
            columns.REJECT: reject}


def _manifest_reject(uri: str, number: int, reason: str) -> dict[str, Any]:
    """A manifest row that cannot be a sample, as a rejected row keyed by its place in the manifest."""
    return _listed(row_key(uri, number), row_source(uri, number), None, None, f"input:{reason}")


# Schema metadata of a page of manifest rows: the manifest's URI and the number of the page's first row.
_PAGE_URI, _PAGE_START = "dataprep.manifest", "dataprep.first_row"


def _manifest_columns(uri: str) -> list[str]:
    """The column names of a manifest, from its first rows."""
    for batch in _manifest_batches(uri, 1, {}):
        return batch.column_names
    return []


def _manifest_batches(uri: str, rows: int, text: dict[str, pa.DataType]) -> Iterator[pa.Table]:
    """The manifest's rows in tables of at most `rows`, read as a stream (an s3:// one is downloaded first).

    CSV columns named in `text` are read as those types, so a first block of numbers cannot fix a wrong type.
    """
    ext = extension(uri)
    with storage.open_local(uri) as path:
        if ext == ".parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=rows):
                yield pa.Table.from_batches([batch])
            return
        if ext == ".csv":
            import pyarrow.csv as pcsv

            reader = pcsv.open_csv(path, convert_options=pcsv.ConvertOptions(column_types=text))
        else:
            import pyarrow.json as pjson

            reader = pjson.open_json(path)
        pending: list[pa.RecordBatch] = []
        count = 0
        for batch in reader:
            pending.append(batch)
            count += batch.num_rows
            while count >= rows:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, rows)
                rest = table.slice(rows)
                pending, count = rest.to_batches(), rest.num_rows
        if count:
            yield pa.Table.from_batches(pending)


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
