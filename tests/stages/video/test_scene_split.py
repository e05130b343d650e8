"""scene_split on generated media: exact cut frames, keys, pass-through rows, fades."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError
from video_media import describe, ffmpeg, raw_row, table

from dataprep.columns import child_key
from dataprep.stages.video.scene_split import SceneSplit, SceneSplitParams


def test_cuts_land_on_the_first_frame_of_each_colour(scenes_30fps: Path) -> None:
    out = SceneSplit().process_batch(table([describe(scenes_30fps, "vid")]))
    rows = out.to_pylist()
    # red 2.0 s, green 3.4 s, blue 2.6 s, yellow 1.5 s at 30 fps
    assert [(r["scene_start_frame"], r["scene_end_frame"]) for r in rows] == [(0, 60), (60, 162), (162, 240), (240, 285)]
    assert [r["scene_start"] for r in rows] == pytest.approx([0.0, 2.0, 5.4, 8.0], abs=1e-6)
    assert rows[-1]["scene_end"] == pytest.approx(9.5, abs=1e-6)
    assert [r["key"] for r in rows] == [child_key("vid", i) for i in range(4)]
    assert {r["parent_key"] for r in rows} == {"vid"}
    assert all(r["_reject"] is None for r in rows)
    assert out.schema.field("scene_start_frame").type == pa.int64()


def test_images_pass_through_once() -> None:
    image = {"key": "img", "source": "/nowhere/x.jpg", "media_type": "image", "width": 10, "height": 10}
    out = SceneSplit().process_batch(table([image])).to_pylist()
    assert [(r["key"], r["parent_key"], r["scene_start"], r["_reject"]) for r in out] == [("img", None, None, None)]


def test_fades_stay_inside_their_scenes_by_default_and_are_cut_out_when_asked(media_dir: Path) -> None:
    path = media_dir / "fade.mp4"
    # 3 s of pattern fading out over its last second, 0.5 s black, 3 s fading in over its first second.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=30:d=3", "-f", "lavfi", "-i", "color=c=black:s=160x120:r=30:d=0.5",
           "-f", "lavfi", "-i", "mandelbrot=s=160x120:r=30,trim=duration=3",
           "-filter_complex", "[0]fade=t=out:st=2:d=1[a];[2]fade=t=in:st=0:d=1[c];[a][1][c]concat=n=3:v=1:a=0,format=yuv420p",
           "-c:v", "libx264", "-preset", "ultrafast", str(path))
    row = describe(path, "fade")
    plain = SceneSplit().process_batch(table([row])).to_pylist()
    # By default the gradual ramps are not cut: each stays whole inside its scene. The steps into and
    # out of pure black are (hue and saturation jump when the last faint pixels vanish), so the black
    # run (frames 90-104) is a short scene of its own, which standardize drops by `min_seconds`.
    spans = [(r["scene_start_frame"], r["scene_end_frame"]) for r in plain]
    assert len(spans) == 3, spans
    (start, out_end), (black_start, black_end), (in_start, end) = spans
    assert start == 0 and end == 195 and out_end == black_start and black_end == in_start
    assert abs(out_end - 90) <= 1 and abs(in_start - 105) <= 1, spans  # the ramps (60-90, 105-135) are not cut
    split = SceneSplit(SceneSplitParams(fades=True)).process_batch(table([row])).to_pylist()
    assert len(split) == 2
    first, second = split
    # the black frames (and the darkest ends of the fades) belong to no scene
    assert 60 < first["scene_end_frame"] <= 90 and 105 <= second["scene_start_frame"] < 130
    assert second["scene_end_frame"] == 195


def test_a_video_dark_throughout_is_rejected_when_fades_are_split(media_dir: Path) -> None:
    path = media_dir / "dark.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=96x64:r=25:d=1", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", str(path))
    row = describe(path, "dark")
    (plain,) = SceneSplit().process_batch(table([row])).to_pylist()
    assert (plain["key"], plain["scene_end_frame"], plain["_reject"]) == ("dark_c0000", 25, None)
    (faded,) = SceneSplit(SceneSplitParams(fades=True)).process_batch(table([row])).to_pylist()
    assert (faded["key"], faded["scene_start"]) == ("dark", None)
    assert faded["_reject"] == "scene:all_dark: every frame is darker than fade_threshold 12.0"


def test_params_are_checked_with_the_option_named() -> None:
    with pytest.raises(ValidationError, match="threshold"):
        SceneSplitParams(threshold=-3)
    with pytest.raises(ValidationError, match="extra"):
        SceneSplitParams(treshold=20)


def test_unreadable_video_is_rejected_not_raised(media_dir: Path) -> None:
    empty = media_dir / "empty_for_split.mp4"
    empty.write_bytes(b"")
    out = SceneSplit().process_batch(table([raw_row(empty, "e")])).to_pylist()
    assert len(out) == 1 and out[0]["_reject"].startswith("error:")
