"""The funnel: rows in and out of each stage, in source units before a split and clip units after."""

from __future__ import annotations

from dataprep.finalize import StageInfo, funnel, reason_detail, reason_group


def test_funnel_without_splits():
    stages = [StageInfo(0, "ingest", False), StageInfo(1, "probe", False), StageInfo(2, "size", False)]
    rows = funnel(stages, kept=["a", "b"], rejects=[("c", 1, "error:X: y"), ("d", 2, "size:min_side: 3px")])
    assert [(r["stage"], r["in"], r["out"], r["rejected"]) for r in rows] == [
        ("ingest", 4, 4, 0), ("probe", 4, 3, 1), ("size", 3, 2, 1)]
    assert rows[1]["reasons"] == {"error:X": 1}
    assert rows[2]["reason_details"] == {"size:min_side": ["3px"]}


def test_funnel_counts_sources_before_a_split_and_clips_after():
    stages = [StageInfo(0, "ingest", False), StageInfo(1, "split", True), StageInfo(2, "filter", False)]
    kept = ["v_c0000", "v_c0001", "w_c0000"]
    rejects = [("x", 1, "error:Bad"), ("w_c0001", 2, "blur:low")]
    rows = funnel(stages, kept, rejects)
    assert [(r["in"], r["out"]) for r in rows] == [(3, 3), (3, 4), (4, 3)]


def test_reason_group_is_the_code_before_the_detail():
    assert reason_group("error:InvalidDataError: broken: twice") == "error:InvalidDataError"
    assert reason_group("duplicate") == "duplicate"
    assert reason_group("size:min_side: shorter side 3px < 64px") == "size:min_side"
    # A code may hold spaces; only ": " starts the detail.
    assert reason_group("brightness:too dark") == "brightness:too dark"
    assert reason_group("brightness:too dark: mean 3.1 < 16") == "brightness:too dark"
    assert reason_detail("brightness:too dark: mean 3.1 < 16") == "mean 3.1 < 16"
    assert reason_detail("duplicate") is None


def test_declared_rates_are_summed_over_kept_rows():
    import pyarrow as pa

    from dataprep.finalize import StageInfo, rates

    manifest = pa.table({"tokens": [10, 30, None], "seconds": [0.5, 1.5, 2.0]})
    stage = StageInfo(2, "vlm", False, {"tokens_per_s": ("tokens", "seconds"), "missing": ("nope", "seconds")})
    assert rates(manifest, [StageInfo(0, "ingest", False), stage]) == {"tokens_per_s": 20.0}
    assert rates(manifest.slice(2), [stage]) == {}


def test_funnel_fed_in_batches_equals_funnel_of_all_rows():
    import pyarrow as pa

    from dataprep.funnel import FunnelCounter

    stages = [StageInfo(0, "ingest", False), StageInfo(1, "split", True), StageInfo(2, "size", False)]
    kept = [f"v{i}_c000{j}" for i in range(6) for j in range(2)]
    rejects = [(f"x{i}", 1, f"error:Bad: case {i % 4}") for i in range(9)] + \
              [(f"v9_c000{j}", 2, f"size:min_side: {j}px") for j in range(5)]
    counter = FunnelCounter(stages)
    for start in range(0, len(kept), 5):
        counter.add_kept(pa.array(kept[start:start + 5]))
    for start in range(len(rejects) - 1, -1, -4):  # late keys first: examples must still be the smallest keys
        part = rejects[max(0, start - 3):start + 1]
        counter.add_rejects(*(pa.array([r[i] for r in part]) for i in range(3)))
    assert counter.rows() == funnel(stages, kept, rejects)
    assert funnel(stages, kept, rejects)[1]["reason_details"]["error:Bad"] == ["case 0", "case 1", "case 2"]


def test_field_summary_over_batches_equals_the_sink_summary():
    import pyarrow as pa

    from dataprep.field_summary import FieldSummary
    from dataprep.sink import summarize_fields

    rows = [{"key": "a", "width": 3, "score": 0.5, "codec": "h264", "ok": True},
            {"key": "b", "width": None, "score": float("nan"), "codec": "vp9", "ok": False},
            {"key": "c", "width": 7, "score": 1.5, "codec": "h264", "ok": True}]
    summary = FieldSummary()
    summary.add(pa.Table.from_pylist(rows[:1]))
    summary.add(pa.Table.from_pylist(rows[1:]))
    assert summary.result() == summarize_fields(rows)


def test_finalize_streams_parts_of_different_columns_and_skips_an_unchanged_rerun(tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataprep import paths, storage
    from dataprep.finalize import finalize

    out = tmp_path / "out"
    for index, rows in enumerate([[{"key": "b", "width": 2}, {"key": "a", "width": 1}], [{"key": "c", "fps": 2.5}]]):
        shard = paths.shard_path("", index)
        storage.write_atomic(str(out / paths.manifest_part(index)),
                             storage.parquet_bytes(pa.Table.from_pylist([{**r, "shard": shard} for r in rows])))
        storage.write_atomic(str(out / paths.stats_path(shard)),
                             json.dumps({"shard": shard, "count": len(rows), "bytes": 10}).encode())
    stages = [StageInfo(0, "ingest", False)]
    summary = finalize(str(out), stages)
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [(r["key"], r["width"], r["fps"]) for r in manifest] == [("a", 1, None), ("b", 2, None), ("c", None, 2.5)]
    assert summary["totals"] == {"kept": 3, "rejected": 0, "shards": 2, "shard_bytes": 20}
    (out / "manifest.parquet").write_bytes(b"stale")  # an unchanged rerun does not read or rewrite anything
    assert finalize(str(out), stages) == summary and (out / "manifest.parquet").read_bytes() == b"stale"


def test_final_parquet_gathers_small_parts_into_large_row_groups(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataprep import finalize

    monkeypatch.setattr(finalize, "ROW_GROUP_ROWS", 10)
    uris = []
    for i in range(25):  # a ledger part per batch: three rejected rows each
        path = tmp_path / f"part-{i:03d}.parquet"
        pq.write_table(pa.table({"key": [f"k{i:03d}_{j}" for j in range(3)], "reason": ["size:min_side: x"] * 3}), path)
        uris.append(str(path))
    target = tmp_path / "rejects.parquet"
    written = list(finalize._stream_parts(uris, str(target), pa.schema([("key", pa.string())])))
    assert sum(t.num_rows for t in written) == 75
    meta = pq.ParquetFile(target).metadata
    sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert sum(sizes) == 75 and all(size >= 10 for size in sizes[:-1]) and len(sizes) <= 8
    expected = sorted(f"k{i:03d}_{j}" for i in range(25) for j in range(3))
    assert sorted(pq.read_table(target).column("key").to_pylist()) == expected
