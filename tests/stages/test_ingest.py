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
    assert rows["notes.xyz"]["_reject"] == "unsupported:extension: '.xyz' is not a known video or image type"
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


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_manifest_rows_without_uri_are_rejected_with_keys_from_their_row(tmp_path, fmt):
    uris = ["a.mp4", None, "", "  ", "b.jpg"]
    path = tmp_path / f"list.{fmt}"
    if fmt == "jsonl":
        _jsonl(path, [{"uri": u, "caption": f"c{i}"} for i, u in enumerate(uris)])
    else:
        path.write_text("uri,caption\n" + "".join(f"{u or ''},c{i}\n" for i, u in enumerate(uris)))
    rows = _rows(Ingest, str(path))
    assert len(rows) == len(uris)  # every manifest row is listed once, kept or rejected
    empty = [r for r in rows if r["_reject"] is not None]
    assert [r["_reject"] for r in empty] == [f"input:no_uri: row {n} of list.{fmt} has no 'uri'" for n in (2, 3, 4)]
    assert [r["source"] for r in empty] == [f"{path}#{n}" for n in (2, 3, 4)]
    # The key comes from the manifest and the row number, not from where the row fell in a block.
    one_per_block = _rows(Ingest, str(path), batch_rows=1)
    assert [r["key"] for r in one_per_block] == [r["key"] for r in rows]
    assert len({r["key"] for r in rows}) == len(uris)
    other = tmp_path / "other" / f"list.{fmt}"
    other.parent.mkdir()
    other.write_bytes(path.read_bytes())
    assert {r["key"] for r in _rows(Ingest, str(other))}.isdisjoint(r["key"] for r in empty)


def test_text_only_manifest_lists_its_texts(tmp_path):
    path = _jsonl(tmp_path / "captions.jsonl", [{"caption": "a dog on a beach"}, {"caption": "two cats"},
                                                {"caption": None}, {"caption": "   "}, {"caption": "two cats"}])
    rows = _rows(Ingest, path)
    assert [r["source"] for r in rows] == [f"{path}#{n}" for n in range(1, 6)]
    kept = [r for r in rows if r["_reject"] is None]
    assert [(r["caption"], r["media_type"]) for r in kept] == [("a dog on a beach", "text"), ("two cats", "text"),
                                                               ("two cats", "text")]
    assert [r["_reject"] for r in rows if r["_reject"]] == ["input:no_text: row 3 of captions.jsonl has no 'caption'",
                                                            "input:no_text: row 4 of captions.jsonl has no 'caption'"]
    keys = [r["key"] for r in rows]
    assert len(set(keys)) == 5 and keys == [r["key"] for r in _rows(Ingest, path, batch_rows=2)]
    assert keys[0].startswith("captions_1-") and all(r["key"].replace("-", "").replace("_", "").isalnum() for r in rows)


def test_text_only_manifest_takes_keys_from_a_named_id_column(tmp_path):
    path = _jsonl(tmp_path / "coco.jsonl", [{"id": 38, "text": "a motorcycle"}, {"id": 182, "text": "a cubicle"},
                                            {"id": 38, "text": "again"}, {"id": None, "text": "no id"}])
    rows = _rows(Ingest, path, caption_column="text", key_column="id")
    assert [(r["key"], r["caption"], r["_reject"]) for r in rows[:2]] == [("38", "a motorcycle", None),
                                                                         ("182", "a cubicle", None)]
    assert rows[2]["_reject"] == "input:duplicate_key: row 3 of coco.jsonl repeats 'id' '38' of row 1"
    assert rows[3]["_reject"] == "input:no_key: row 4 of coco.jsonl has no 'id'"
    assert len({r["key"] for r in rows}) == 4
    with pytest.raises(ValueError, match="no column 'ident'.*key_column"):
        _rows(Ingest, path, caption_column="text", key_column="ident")


def test_manifest_with_neither_files_nor_texts_names_both_options(tmp_path):
    path = _jsonl(tmp_path / "list.jsonl", [{"path": "a.mp4", "text": "t"}])
    with pytest.raises(ValueError) as err:
        _rows(Ingest, path)
    message = str(err.value)
    assert "`uri_column`" in message and "`caption_column`" in message and "['path', 'text']" in message


def test_a_named_uri_column_that_is_missing_is_an_error_not_a_text_dataset(tmp_path):
    path = _jsonl(tmp_path / "list.jsonl", [{"path": "a.mp4", "caption": "a caption"}])
    with pytest.raises(ValueError, match="no column 'file'.*`uri_column`"):
        _rows(Ingest, path, uri_column="file")


def test_key_column_is_refused_for_a_manifest_of_files(tmp_path):
    path = _jsonl(tmp_path / "list.jsonl", [{"uri": "a.mp4", "id": 1}])
    with pytest.raises(ValueError, match="key_column"):
        _rows(Ingest, path, key_column="id")


def test_media_types_rejects_what_the_job_does_not_take(tmp_path):
    """A video-only job lists every file once: its videos kept, its stills rejected with the option to change."""
    rows = {r["source"].rsplit("/", 1)[-1]: r for r in _rows(Ingest, str(_tree(tmp_path)), media_types=["video"])}
    assert set(rows) == {"a.mp4", "b.JPG", "notes.xyz"}  # nothing dropped silently
    assert rows["a.mp4"]["_reject"] is None
    assert rows["b.JPG"]["_reject"] == "input:media_type: image, this job takes video (ingest option `media_types`)"
    assert rows["b.JPG"]["media_type"] == "image"  # the ledger still tells what it was
    assert rows["notes.xyz"]["_reject"].startswith("unsupported:extension: ")
    images = {r["source"].rsplit("/", 1)[-1]: r["_reject"] for r in _rows(Ingest, str(tmp_path), media_types=["image"])}
    assert images["b.JPG"] is None and images["a.mp4"].startswith("input:media_type: video, this job takes image")


def test_media_types_applies_to_manifests_and_text_rows(tmp_path):
    files = _jsonl(tmp_path / "files.jsonl", [{"uri": "a.mp4"}, {"uri": "b.png"}])
    assert [r["_reject"] is None for r in _rows(Ingest, files, media_types=["image"])] == [False, True]
    texts = _jsonl(tmp_path / "captions.jsonl", [{"caption": "a dog"}])
    assert _rows(Ingest, texts)[0]["_reject"] is None  # the default takes every type
    (row,) = _rows(Ingest, texts, media_types=["video", "image"])
    assert row["_reject"] == "input:media_type: text, this job takes video, image (ingest option `media_types`)"


def test_media_types_refuses_unknown_or_empty_lists():
    with pytest.raises(ValueError, match="media_types"):
        Ingest.Params(media_types=["audio"])
    with pytest.raises(ValueError, match="media_types"):
        Ingest.Params(media_types=[])


def test_row_group_reads_list_a_parquet_manifest_as_its_pages_do(tmp_path):
    uris = [f"/media/{i:03d}.jpg" for i in range(30)]
    uris[4], uris[17], uris[23] = None, uris[3], "/media/notes.xyz"  # no file, a repeat, not media
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"uri": uris, "caption": [f"c{i}" for i in range(30)]}), manifest, row_group_size=7)
    ingest = Ingest()
    paged = pa.concat_tables([ingest.rows(p) for p in ingest.pages(str(manifest))])
    reads = ingest.page_reads(str(manifest), 10)
    assert [r.row_groups for r in reads] == [(0, 1), (2, 3), (4,)]
    read = pa.concat_tables([ingest.rows(ingest.read_page(r)) for r in reads])
    assert read.to_pylist() == paged.to_pylist()


def test_only_a_parquet_manifest_of_files_with_small_row_groups_is_cut_into_reads(tmp_path):
    files = tmp_path / "files.parquet"
    pq.write_table(pa.table({"uri": [f"/m/{i}.mp4" for i in range(50)]}), files, row_group_size=50)
    texts = tmp_path / "texts.parquet"
    pq.write_table(pa.table({"caption": ["a", "b"]}), texts)
    ingest = Ingest()
    assert ingest.page_reads(str(files), 10) is None  # a row group over 4 reads: one task would hold it all
    assert len(ingest.page_reads(str(files), 20)) == 1
    assert ingest.page_reads(str(texts), 10) is None
    assert ingest.page_reads(str(tmp_path), 10) is None
