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
