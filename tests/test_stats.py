"""`dataprep stats`: numbers from committed shards only, reasons grouped by code, thresholds on their columns."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dataprep.cli import main
from dataprep.stats_view import build_view

# size_filter as the quickstart configures it; the report draws these on short_side, aspect and duration.
STAGES = [
    {"stage": "ingest", "options": {}},
    {"stage": "probe", "options": {}},
    {"stage": "size_filter", "options": {"min_side": 64, "min_seconds": 1.0, "max_aspect": 3.0}},
]
KEPT_COLOUR = (255, 0, 255)
REJECTED_COLOUR = (0, 200, 0)


def _jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


def _tar(path: Path, keys: list[str], captions: list[str]) -> None:
    image = _jpeg(KEPT_COLOUR)
    with tarfile.open(path, "w") as tar:
        for key, caption in zip(keys, captions, strict=True):
            for suffix, data in (("jpg", image), ("json", json.dumps({"key": key, "width": 640, "height": 360,
                                                                        "duration": 4.0}).encode()),
                                 ("txt", caption.encode())):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def fake_output(root: Path, *, shards: int = 3, rows_per_shard: int = 4, rejects_per_reason: int = 3,
                tar_samples: int | None = None, uncommitted: bool = False) -> Path:
    """An output folder as a job writes it, without summary.json or manifest.parquet (a job still running).

    Each tar holds `tar_samples` samples (all rows when None): the gallery reads only a shard's start.
    """
    out = root / "out"
    (out / "_work/manifest").mkdir(parents=True)
    (out / "_work/rejects").mkdir(parents=True)
    (out / "shards").mkdir()
    (out / "_work/job.json").write_text(json.dumps({"config": {"stages": STAGES, "plugins": []}}))
    rng = np.random.default_rng(0)
    for s in range(shards + int(uncommitted)):
        n = rows_per_shard
        keys = [f"k{s:04d}_{j:07d}" for j in range(n)]
        width = rng.integers(64, 1920, n)
        height = rng.integers(64, 1080, n)
        table = pa.table({
            "key": keys, "source": [f"/in/{k}.mp4" for k in keys],
            "caption": [f"caption {'x' * (j % 50)}" for j in range(n)],
            "media_type": ["video" if j % 2 else "image" for j in range(n)],
            "width": width, "height": height,
            "duration": pa.array([float(1 + j % 9) if j % 2 else None for j in range(n)], pa.float64()),
            "aesthetic": rng.random(n), "shard": [f"shards/shard-{s:06d}.tar"] * n,
        })
        pq.write_table(table, out / f"_work/manifest/shard-{s:06d}.parquet")
        sample_keys = keys if tar_samples is None else keys[:tar_samples]
        _tar(out / f"shards/shard-{s:06d}.tar", sample_keys, table.column("caption").to_pylist()[:len(sample_keys)])
        if s < shards:  # the last one, when `uncommitted`, has its tar and rows but no commit record yet
            (out / f"shards/shard-{s:06d}.stats.json").write_text(json.dumps(
                {"shard": f"shards/shard-{s:06d}.tar", "count": n, "bytes": 1000 * n, "keys": keys}))
    green = root / "green.jpg"
    green.write_bytes(_jpeg(REJECTED_COLOUR))
    (root / "broken.mp4").write_bytes(b"not a video")
    rejects = []
    for j in range(rejects_per_reason):
        rejects.append(("probe", 1, f"r_err_{j:06d}", str(root / "broken.mp4"), "error:ValueError: broken input", {}))
        side = 40 + j % 20
        rejects.append(("size_filter", 2, f"r_side_{j:06d}", str(green),
                        f"size:min_side: shorter side {side}px < 64px", {"width": side * 2, "height": side}))
    for stage_index in (1, 2):
        mine = [r for r in rejects if r[1] == stage_index]
        pq.write_table(pa.table({
            "key": [r[2] for r in mine], "source": [r[3] for r in mine], "parent_key": [None] * len(mine),
            "stage": [r[0] for r in mine], "stage_index": pa.array([r[1] for r in mine], pa.int32()),
            "reason": [r[4] for r in mine], "duplicate_of": [None] * len(mine),
            "scores": [json.dumps(r[5]) for r in mine],
        }), out / f"_work/rejects/{stage_index:03d}-part.parquet")
    return out


def test_stats_counts_only_committed_shards_while_a_job_runs(tmp_path):
    out = fake_output(tmp_path, shards=2, rows_per_shard=5, uncommitted=True)
    view = build_view(str(out))
    assert not (out / "summary.json").exists()
    assert view.totals["kept"] == 10 and view.totals["shards"] == 2 and view.totals["rejected"] == 6
    assert [s.shard for s in view.shards] == ["shards/shard-000000.tar", "shards/shard-000001.tar"]
    assert not view.finalized and "in progress" in view.notes[-1]
    widths = next(h for h in view.histograms if h.column == "width")
    assert widths.count == 10  # the uncommitted shard's rows are not read
    # hours of video: only video rows (odd j: durations 2, 4, 2 + 4... per shard), images have none
    assert view.totals["video_hours"] * 3600 == sum(1.0 + j % 9 for j in range(5) if j % 2) * 2


def test_reasons_are_grouped_by_code_and_keep_their_details(tmp_path):
    out = fake_output(tmp_path, rejects_per_reason=5)
    # A code may hold a space: `brightness:too dark` must not be cut to `brightness:too`.
    pq.write_table(pa.table({
        "key": ["dark1", "dark2"], "source": ["/in/d1.mp4", "/in/d2.mp4"], "parent_key": [None, None],
        "stage": ["size_filter"] * 2, "stage_index": pa.array([2, 2], pa.int32()),
        "reason": ["brightness:too dark: mean 3.1 < 16", "brightness:too dark: mean 2.0 < 16"],
        "duplicate_of": [None, None], "scores": ["{}", "{}"]}), out / "_work/rejects/002-dark.parquet")
    view = build_view(str(out))
    size = next(r for r in view.funnel if r["stage"] == "size_filter")
    assert size["reasons"] == {"brightness:too dark": 2, "size:min_side": 5}
    assert size["reason_details"]["size:min_side"][:2] == ["shorter side 40px < 64px", "shorter side 41px < 64px"]
    assert size["reason_details"]["brightness:too dark"] == ["mean 3.1 < 16", "mean 2.0 < 16"]
    assert [r["in"] for r in view.funnel] == [24, 24, 19] and view.funnel[-1]["out"] == 12


def test_histograms_carry_thresholds_and_the_rows_they_rejected(tmp_path):
    view = build_view(str(fake_output(tmp_path, rejects_per_reason=4)))
    by_column = {h.column: h for h in view.histograms}
    assert {"duration", "width", "short_side", "aspect", "caption_chars", "aesthetic"} <= set(by_column)
    short = by_column["short_side"]
    assert [(t.option, t.value, t.side) for t in short.thresholds] == [("min_side", 64.0, "min")]
    assert sum(short.rejected) == 4 and sum(short.kept) == 12
    assert short.edges[0] <= 40 and short.edges[-1] >= short.max  # kept and rejected values share one axis
    assert [t.option for t in by_column["aspect"].thresholds] == ["max_aspect"]
    assert by_column["duration"].nulls == 6  # images have no duration


def test_cli_stats_prints_tables_and_json(tmp_path, capsys):
    out = fake_output(tmp_path)
    assert main(["stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "size:min_side" in text and "shorter side 40px < 64px" in text and "shard-000002.tar" in text
    assert main(["stats", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["kept"] == 12 and data["shards"][0]["count"] == 4
    assert main(["stats", str(tmp_path / "nothing")]) == 2
