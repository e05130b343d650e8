"""configs/t2v.yaml end to end on Ray: ingest -> probe -> size_filter -> scene_split -> standardize -> frame_sample."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from video_media import colour_of, colour_scenes, decode_clip

from dataprep.config import load_config
from dataprep.plan import build_plan
from dataprep.registry import Registry
from dataprep.runner import run_plan

pytestmark = [pytest.mark.integration, pytest.mark.slow]
T2V = Path(__file__).resolve().parents[3] / "configs" / "t2v.yaml"
CUTTING = {"ingest", "probe", "size_filter", "scene_split", "letterbox", "standardize", "frame_sample"}
VIDEO_STAGES = ["dataprep.stages.video.scene_split", "dataprep.stages.video.standardize", "dataprep.stages.video.frames"]


def test_t2v_config_cuts_scenes_into_bucketed_clips(ray_session, tmp_path: Path) -> None:
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    colour_scenes(src / "scenes.mp4", [("red", 2.0), ("green", 3.4), ("blue", 2.6), ("yellow", 1.5)], size="480x272")
    colour_scenes(src / "phone.mp4", [("blue", 2.5)], size="272x480")
    Image.new("RGB", (300, 300), (0, 255, 0)).save(src / "still.png")
    out = tmp_path / "out"
    # The video stages are named as plugins too, so the test does not depend on a fresh `pip install -e .`.
    config = load_config(T2V, input=str(src), output=str(out))
    # Flat colour scenes are visual duplicates, blurless and static by design: the cutting is what is tested,
    # the filters and dedup are tested on real media and the sample set.
    config.stages = [s for s in config.stages if s.stage in CUTTING]
    config.sink.bucket_path = "{bucket}"
    plan = build_plan(config, Registry(VIDEO_STAGES))
    run_plan(plan, progress=False)

    manifest = {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    rejects = {r["key"]: r for r in pq.read_table(out / "rejects.parquet").to_pylist()}
    clips = {k: r for k, r in manifest.items() if r["media_type"] == "video"}
    assert len(clips) == 4 and len(manifest) == 4  # red, green, blue, the phone clip
    # The still is not a t2v sample (ingest's media_types): it is rejected, not put outside the buckets.
    assert sorted(r["reason"] for r in rejects.values()) == [
        "clip:too_short: 1.500s < min_seconds 2.0s",
        "input:media_type: image, this job takes video (ingest option `media_types`)"]
    assert {r["bucket"] for r in clips.values()} == {"640x360", "360x640"}

    import webdataset as wds

    seen = 0
    for tar in sorted((out / "shards").rglob("*.tar")):
        for sample in wds.WebDataset(str(tar), shardshuffle=False):
            if "mp4" not in sample:
                continue
            row = clips[sample["__key__"]]
            clip = decode_clip(sample["mp4"])
            assert clip["rate"] == 24 and f"{clip['width']}x{clip['height']}" == row["bucket"]
            assert colour_of(clip["first"]) == colour_of(clip["last"])
            seen += 1
    assert seen == 4
