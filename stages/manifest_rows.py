"""The listed rows of a page of a manifest of files, made column-wise so 10M rows list in seconds.

    table = file_rows(manifest_uri, page_of_uris, captions, first_row=1, media_types=["video", "image"])

Keys equal `dataprep.columns.source_key` of each resolved URI (a slug of its name plus a
hash of the URI); only the hash is computed row by row. Rows naming no file are rejected
(`input:no_uri`) and keyed by their row number, as `ingest` keys every manifest row that
names no file.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dataprep import columns, storage
from dataprep.stages.media_types import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

_VIDEO = pa.array([e.lstrip(".") for e in VIDEO_EXTENSIONS])
_IMAGE = pa.array([e.lstrip(".") for e in IMAGE_EXTENSIONS])


def where(uri: str, number: int) -> str:
    """How a message names row `number` (1-based) of the manifest at `uri`."""
    return f"row {number} of {uri.rstrip('/').rsplit('/', 1)[-1]}"


def row_source(uri: str, number: int) -> str:
    """The source of a manifest row that names no file: the manifest's URI and its 1-based row number."""
    return f"{uri}#{number}"


def row_key(uri: str, number: int) -> str:
    """The key of a manifest row that names no file: from the manifest's URI and row number, never a batch position."""
    stem = uri.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0]
    return columns.source_key(row_source(uri, number), stem=f"{stem}_{number}")


def resolve(items: pa.Array, manifest_uri: str) -> pa.Array:
    """Each item as a URI: absolute ones as they are, relative ones joined to the manifest's folder."""
    absolute = pc.or_(pc.or_(pc.starts_with(items, "s3://"), pc.starts_with(items, "/")),
                      pc.starts_with(items, "file://"))
    if storage.is_s3(manifest_uri):
        joined = pc.binary_join_element_wise(manifest_uri.rsplit("/", 1)[0].rstrip("/"), pc.utf8_trim(items, "/"), "/")
    else:
        base = os.path.dirname(storage.local_path(manifest_uri))  # as os.path.join(base, item) joins
        joined = pc.binary_join_element_wise(base.rstrip("/"), items, "/") if base else items
    return pc.if_else(absolute, items, joined)


def extensions(uris: pa.Array) -> pa.Array:
    """The lower-case extension of each URI without its dot; null when the name has no dot."""
    name = pc.replace_substring_regex(pc.utf8_rtrim(uris, "/"), "^.*/", "")
    found = pc.extract_regex(name, r"(?s)\.(?P<ext>[^.]*)$")
    return pc.utf8_lower(pc.struct_field(found, [0]))


def source_keys(uris: pa.Array) -> pa.Array:
    """`columns.source_key` of each URI."""
    name = pc.replace_substring_regex(pc.replace_substring_regex(pc.utf8_rtrim(uris, "/"), "^.*/", ""),
                                      r"(?s)\..*$", "")
    slug = pc.utf8_slice_codeunits(pc.utf8_trim(pc.replace_substring_regex(name, "[^A-Za-z0-9_-]+", "_"), "_"), 0, 40)
    slug = pc.if_else(pc.equal(slug, ""), "item", slug)
    digests = pa.array([hashlib.sha1(u.encode("utf-8")).hexdigest()[:12] for u in uris.to_pylist()], pa.string())
    return pc.binary_join_element_wise(slug, digests, "-")


def file_rows(manifest_uri: str, items: pa.Array, captions: pa.Array, *, first_row: int,
              media_types: list[str], uri_column: str, schema: pa.Schema) -> pa.Table:
    """Rows of `key`, `source`, `caption`, `media_type` and `_reject` for one page of a manifest of files."""
    items = pc.utf8_trim_whitespace(items.cast(pa.string()))
    missing = pc.fill_null(pc.equal(items, ""), True)
    uris = resolve(pc.if_else(missing, "", items), manifest_uri)
    ext = extensions(uris)
    kind = pc.if_else(pc.is_in(ext, value_set=_VIDEO), "video", pc.if_else(pc.is_in(ext, value_set=_IMAGE), "image",
                                                                          pa.scalar(None, pa.string())))
    unwanted = pc.invert(pc.fill_null(pc.is_in(kind, value_set=pa.array(media_types)), True))
    wanted_text = f", this job takes {', '.join(media_types)} (ingest option `media_types`)"
    reject = pc.if_else(unwanted, pc.binary_join_element_wise("input:media_type: ", kind, wanted_text, ""),
                        pa.scalar(None, pa.string()))
    unknown = np.flatnonzero(pc.and_(pc.is_null(kind), pc.invert(missing)).to_numpy(zero_copy_only=False))
    if len(unknown):  # rare: built row by row, with Python's repr of the extension as ingest words it
        exts = ext.take(pa.array(unknown)).to_pylist()
        texts = [None] * len(items)
        for row, e in zip(unknown, exts, strict=True):
            texts[row] = f"unsupported:extension: {('.' + e) if e is not None else '(none)'!r} is not a known " \
                         "video or image type"
        reject = pc.coalesce(pa.array(texts, pa.string()), reject)
    keys, sources = source_keys(uris), uris
    rejected_rows = np.flatnonzero(missing.to_numpy(zero_copy_only=False))
    if len(rejected_rows):  # rows naming no file: keyed by their place in the manifest
        by_row: dict[str, list] = {"key": [None] * len(items), "source": [None] * len(items),
                                   "reject": [None] * len(items)}
        for row in rejected_rows:
            number = first_row + int(row)
            by_row["key"][row] = row_key(manifest_uri, number)
            by_row["source"][row] = row_source(manifest_uri, number)
            by_row["reject"][row] = f"input:no_uri: {where(manifest_uri, number)} has no {uri_column!r}"
        keys = pc.coalesce(pa.array(by_row["key"], pa.string()), keys)
        sources = pc.coalesce(pa.array(by_row["source"], pa.string()), sources)
        reject = pc.coalesce(pa.array(by_row["reject"], pa.string()), reject)
        kind = pc.if_else(missing, pa.scalar(None, pa.string()), kind)
        captions = pc.if_else(missing, pa.scalar(None, pa.string()), captions)
    return pa.Table.from_arrays([keys, sources, captions.cast(pa.string()), kind, reject], schema=schema)
