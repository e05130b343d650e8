"""Ingest: folders with sidecar captions, manifests in three formats, files that are not media."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataprep.stages.ingest import Ingest


def _rows(source, uri, **params):
    tables = list(source(Ingest.Params(**params)).read(uri) if params else Ingest().read(uri))
    return pa.concat_tables(tables).to_pylist() if tables else []


def _tree(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.mp4").write_bytes(b"v")
    (tmp_path / "a.txt").write_text("a cat on a mat\n")
    (tmp_path / "sub" / "b.JPG").write_bytes(b"i")
    (tmp_path / "notes.xyz").write_bytes(b"?")
    (tmp_path / ".hidden.mp4").write_bytes(b"h")
    (tmp_path / "meta.json").write_text("{}")
    return tmp_path


def test_folder_with_sidecars_and_unsupported_files(tmp_path):
    rows = {r["source"].rsplit("/", 1)[-1]: r for r in _rows(Ingest, str(_tree(tmp_path)))}
    assert set(rows) == {"a.mp4", "b.JPG", "notes.xyz"}
    assert rows["a.mp4"]["caption"] == "a cat on a mat" and rows["a.mp4"]["media_type"] == "video"
    assert rows["b.JPG"]["media_type"] == "image" and rows["b.JPG"]["caption"] is None
    assert rows["notes.xyz"]["_reject"].startswith("unsupported:extension")
    assert all(r["_reject"] is None for n, r in rows.items() if n != "notes.xyz")


def test_keys_are_deterministic_unique_and_safe(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "clip one.mp4").write_bytes(b"1")
    (tmp_path / "y" / "clip one.mp4").write_bytes(b"2")
    first = [r["key"] for r in _rows(Ingest, str(tmp_path))]
    again = [r["key"] for r in _rows(Ingest, str(tmp_path))]
    assert first == again and len(set(first)) == 2
    for key in first:
        assert key.replace("-", "").replace("_", "").isalnum()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_manifest_formats_resolve_relative_paths(tmp_path, fmt):
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "c.mp4").write_bytes(b"v")
    rows = [{"uri": "media/c.mp4", "caption": "hello"}, {"uri": "/abs/d.png", "caption": "world"},
            {"uri": "media/c.mp4", "caption": "hello"}]
    path = tmp_path / f"list.{fmt}"
    if fmt == "csv":
        path.write_text("uri,caption\n" + "".join(f"{r['uri']},{r['caption']}\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    out = _rows(Ingest, str(path))
    assert [r["source"] for r in out] == [str(tmp_path / "media" / "c.mp4"), "/abs/d.png"]
    assert [r["caption"] for r in out] == ["hello", "world"]


def test_manifest_without_uri_column_says_which_option(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text(json.dumps({"path": "a.mp4"}) + "\n")
    with pytest.raises(ValueError, match="uri_column"):
        _rows(Ingest, str(path))
    assert _rows(Ingest, str(path), uri_column="path")[0]["source"].endswith("a.mp4")


def test_single_media_file_is_one_row(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"v")
    (tmp_path / "clip.txt").write_text("a caption")
    (row,) = _rows(Ingest, str(tmp_path / "clip.mp4"))
    assert row["source"] == str(tmp_path / "clip.mp4") and row["caption"] == "a caption"
