"""The WebDataset sink: rollover, commit records, manifest parts, keys, reading back with webdataset."""

from __future__ import annotations

import itertools
import json
import tarfile

import pyarrow as pa
import pytest
import webdataset as wds

from dataprep.sink import ShardWriter


def _rows(n, payload=b"x" * 100):
    return pa.table(
        {
            "key": [f"sample-{i:03d}" for i in range(n)],
            "source": [f"/src/{i}.mp4" for i in range(n)],
            "caption": [f"caption {i}" for i in range(n)],
            "width": pa.array([64 + i for i in range(n)], pa.int32()),
            "media": pa.array([payload] * n, pa.large_binary()),
            "media_ext": ["mp4"] * n,
            "frames": pa.array([[b"jpg"]] * n, pa.list_(pa.binary())),
        }
    )


def _writer(tmp_path, **kw):
    counter = itertools.count()
    defaults = {"max_samples": 4, "max_bytes": 10**9}
    return ShardWriter(str(tmp_path), next_index=lambda: next(counter), **{**defaults, **kw})


def test_rollover_by_count_and_read_back(tmp_path):
    writer = _writer(tmp_path)
    writer.write_table(_rows(10))
    shards = writer.close()
    assert shards == ["shards/shard-000000.tar", "shards/shard-000001.tar", "shards/shard-000002.tar"]
    samples = list(wds.WebDataset([str(tmp_path / s) for s in shards], shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"sample-{i:03d}" for i in range(10)]
    first = samples[0]
    assert first["mp4"] == b"x" * 100 and first["txt"] == b"caption 0"
    meta = json.loads(first["json"])
    assert meta["width"] == 64 and meta["source"] == "/src/0.mp4" and "media" not in meta and "frames" not in meta
    stats = json.loads((tmp_path / "shards/shard-000002.stats.json").read_text())
    assert stats["count"] == 2 and stats["keys"] == ["sample-008", "sample-009"]
    assert stats["fields"]["width"]["min"] == 72 and stats["fields"]["width"]["max"] == 73
    assert (tmp_path / "_work/manifest/shard-000000.parquet").exists()


def test_rollover_by_bytes(tmp_path):
    writer = _writer(tmp_path, max_samples=100, max_bytes=2500)
    writer.write_table(_rows(10, payload=b"y" * 1000))
    shards = writer.close()
    assert len(shards) == 5
    for shard in shards:
        assert json.loads((tmp_path / shard.replace(".tar", ".stats.json")).read_text())["count"] == 2


def test_no_partial_files_remain_and_members_stay_inside(tmp_path):
    writer = _writer(tmp_path)
    writer.write_table(_rows(3))
    writer.close()
    assert not list(tmp_path.rglob("*.partial"))
    with tarfile.open(tmp_path / "shards/shard-000000.tar") as tar:
        for member in tar.getmembers():
            assert "/" not in member.name and not member.name.startswith(".")


def test_unsafe_key_is_refused(tmp_path):
    rows = _rows(1).set_column(0, "key", pa.array(["../escape"]))
    with pytest.raises(ValueError, match="unsafe sample key"):
        _writer(tmp_path).write_table(rows)


def test_bucket_column_writes_subfolders(tmp_path):
    rows = _rows(5).append_column("bucket", pa.array(["16x9", "9x16", "16x9", "9x16", None]))
    writer = _writer(tmp_path, bucket_path="{bucket}")
    writer.write_table(rows)
    shards = writer.close()
    assert sorted(shards) == ["shards/16x9/shard-000000.tar", "shards/9x16/shard-000001.tar",
                              "shards/shard-000002.tar"]


def test_bucket_path_nests_folders_by_shape_and_keeps_values_inside_shards(tmp_path):
    rows = _rows(4).append_column("bucket", pa.array(["640x360", "640x360", "640x360", "../up"])) \
        .append_column("frames_n", pa.array([121, 49, 121, 121]))
    writer = _writer(tmp_path, bucket_path="{bucket}/f{frames_n}")
    writer.write_table(rows)
    shards = sorted(writer.close())
    assert shards[:2] == ["shards/640x360/f121/shard-000000.tar", "shards/640x360/f49/shard-000001.tar"]
    # A value cannot climb out of shards/: every path part is made safe.
    assert len(shards) == 3 and shards[2].startswith("shards/") and ".." not in shards[2]


def test_source_bytes_used_when_no_media_column(tmp_path):
    src = tmp_path / "pic.jpeg"
    src.write_bytes(b"\xff\xd8jpegdata")
    rows = pa.table({"key": ["pic-1"], "source": [str(src)], "caption": [None]})
    writer = _writer(tmp_path / "out")
    writer.write_table(rows)
    writer.close()
    (sample,) = list(wds.WebDataset(str(tmp_path / "out/shards/shard-000000.tar"), shardshuffle=False))
    assert sample["jpg"] == b"\xff\xd8jpegdata" and "txt" not in sample


def test_a_sample_larger_than_max_bytes_gets_a_shard_of_its_own(tmp_path):
    sizes = [100, 100, 5000, 100, 100]  # the third alone exceeds max_bytes
    rows = pa.concat_tables([_rows(1, payload=b"z" * n).set_column(0, "key", pa.array([f"s{i}"]))
                             for i, n in enumerate(sizes)])
    writer = _writer(tmp_path, max_samples=100, max_bytes=1000)
    writer.write_table(rows)
    shards = writer.close()
    keys = [json.loads((tmp_path / s.replace(".tar", ".stats.json")).read_text())["keys"] for s in shards]
    assert keys == [["s0", "s1"], ["s2"], ["s3", "s4"]]
    big = json.loads((tmp_path / shards[1].replace(".tar", ".stats.json")).read_text())
    assert big["payload_bytes"] > 1000  # written whole, not refused or split
    for shard in (shards[0], shards[2]):
        assert json.loads((tmp_path / shard.replace(".tar", ".stats.json")).read_text())["payload_bytes"] <= 1000
