"""Manifest rows made column-wise: the same keys, sources and reasons as one row at a time."""

from __future__ import annotations

import os

import pyarrow as pa

from dataprep import columns
from dataprep.stages.ingest import SCHEMA
from dataprep.stages.manifest_rows import file_rows
from dataprep.stages.media_types import extension, media_type_of

ITEMS = ["a.mp4", " sub/b.JPG ", "/abs/c.tar.gz", "s3://bucket/x/é ü.webm", "file:///tmp/d.png", "noext",
         "dir/.hidden.mov", "e.", None, "", "ünï/çødé-名前.jpeg/", "a" * 80 + ".gif", "f.txt"]


def _expected(manifest: str, item: str | None, number: int, wanted: list[str]) -> dict:
    item = (item or "").strip()
    name = manifest.rsplit("/", 1)[-1]
    if not item:
        source = f"{manifest}#{number}"
        return {"key": columns.source_key(source, stem=f"{name.split('.', 1)[0]}_{number}"), "source": source,
                "media_type": None, "_reject": f"input:no_uri: row {number} of {name} has no 'uri'"}
    base = manifest.rsplit("/", 1)[0] if manifest.startswith("s3://") else os.path.dirname(manifest)
    absolute = item.startswith(("s3://", "/", "file://"))
    source = item if absolute else ("/".join([base, item.strip("/")]) if manifest.startswith("s3://")
                                    else os.path.join(base, item))
    kind = media_type_of(source)
    if kind is None:
        reject = f"unsupported:extension: {extension(source) or '(none)'!r} is not a known video or image type"
    elif kind not in wanted:
        reject = f"input:media_type: {kind}, this job takes {', '.join(wanted)} (ingest option `media_types`)"
    else:
        reject = None
    return {"key": columns.source_key(source), "source": source, "media_type": kind, "_reject": reject}


def test_rows_match_the_row_by_row_rules():
    for manifest in ("/data/lists/m.parquet", "s3://bucket/lists/m.csv", "m.jsonl"):
        for wanted in (["video", "image"], ["video"]):
            table = file_rows(manifest, pa.array(ITEMS, pa.string()), pa.array([f"c{i}" for i in range(len(ITEMS))]),
                              first_row=41, media_types=wanted, uri_column="uri", schema=SCHEMA)
            got = table.select(["key", "source", "media_type", "_reject"]).to_pylist()
            assert got == [_expected(manifest, item, 41 + i, wanted) for i, item in enumerate(ITEMS)]
            assert table.column("caption").to_pylist()[:2] == ["c0", "c1"]
