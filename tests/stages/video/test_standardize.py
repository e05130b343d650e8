"""standardize on generated media with known content: exact rate, size, length, colours; one decode per source."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError
from video_media import SCENES, colour_of, decode_clip, describe, table

from dataprep.columns import child_key
from dataprep.stages.video import encode
from dataprep.stages.video.plan import Geometry
from dataprep.stages.video.scene_split import SceneSplit
from dataprep.stages.video.standardize import Standardize, StandardizeParams

FAST = {"preset": "ultrafast", "min_seconds": 1.0, "max_seconds": 2.0}


def _scene_colour(t: float) -> str:
    start = 0.0
    for colour, seconds in SCENES:
        if start <= t < start + seconds:
            return colour
        start += seconds
    raise AssertionError(f"time {t} is past the video")


def _check_clip(row: dict, fps: int, sizes: set[tuple[int, int]]) -> dict:
    """The contract every clip keeps; returns the decoded clip."""
    assert row["_reject"] is None, row["_reject"]
    clip = decode_clip(row["media"])
    asked = row["clip_end"] - row["clip_start"]
    assert clip["rate"] == fps and row["fps"] == fps
    assert (clip["width"], clip["height"]) in sizes and (row["width"], row["height"]) == (clip["width"], clip["height"])
    assert clip["pix_fmt"] == "yuv420p"
    assert clip["decoded"] == clip["stated_frames"] == row["frame_count"] == math.floor(asked * fps + 1e-6)
    assert abs(row["duration"] - asked) < 1 / fps
    assert row["duration"] == pytest.approx(row["frame_count"] / fps)
    assert row["media_ext"] == "mp4" and clip["audio"] == 0 and row["has_audio"] is False
    assert (row["codec"], row["pix_fmt"], row["rotation"], row["size_bytes"]) == ("h264", "yuv420p", 0, len(row["media"]))
    return clip


@pytest.mark.parametrize("source", ["scenes_30fps", "scenes_ntsc", "scenes_25fps"])
def test_clips_are_exact_and_hold_one_scene(source: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(source)
    scenes = SceneSplit().process_batch(table([describe(path, "vid")]))
    out = Standardize(StandardizeParams(**FAST, fps=24, width=128, height=96)).process_batch(scenes)
    rows = out.to_pylist()
    # red 2.0 -> 1 clip; green 3.4 -> 2 s + 1.4 s; blue 2.6 -> 2 s (0.6 s rest < min); yellow 1.5 -> 1 clip
    assert [r["key"] for r in rows] == ["vid_c0000", child_key("vid_c0001", 0), child_key("vid_c0001", 1),
                                        child_key("vid_c0002", 0), "vid_c0003"]
    assert [r["parent_key"] for r in rows] == ["vid", "vid_c0001", "vid_c0001", "vid_c0002", "vid"]
    for row in rows:
        clip = _check_clip(row, 24, {(128, 96)})
        expected = _scene_colour(row["clip_start"] + 0.01)
        assert colour_of(clip["first"]) == expected and colour_of(clip["last"]) == expected, row["key"]
    assert out.schema.field("media").type == pa.large_binary()


def test_every_frame_of_every_clip_has_its_scene_colour(scenes_ntsc: Path) -> None:
    import io

    import av

    scenes = SceneSplit().process_batch(table([describe(scenes_ntsc, "vid")]))
    rows = Standardize(StandardizeParams(**FAST, fps=30, width=64, height=48)).process_batch(scenes).to_pylist()
    for row in rows:
        expected = _scene_colour(row["clip_start"] + 0.01)
        with av.open(io.BytesIO(row["media"])) as container:
            colours = {colour_of(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)}
        assert colours == {expected}, row["key"]


def test_one_ffmpeg_process_per_source(scenes_30fps: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    real = encode.run_ffmpeg

    def counting(argv: list[str], *, timeout: float) -> None:
        calls.append(argv)
        real(argv, timeout=timeout)

    monkeypatch.setattr("dataprep.stages.video.standardize.run_ffmpeg", counting)
    scenes = SceneSplit().process_batch(table([describe(scenes_30fps, "vid")]))
    rows = Standardize(StandardizeParams(**FAST, width=64, height=48)).process_batch(scenes).to_pylist()
    assert len(rows) == 5 and len(calls) == 1
    assert calls[0].count("-i") == 1 and calls[0][calls[0].index("-threads") + 1] == "1"
    calls.clear()
    params = StandardizeParams(**FAST, width=64, height=48, max_clips_per_run=2, threads=2)
    split_rows = Standardize(params).process_batch(scenes).to_pylist()
    assert len(calls) == 3  # 5 clips, 2 per run, each run decoding only its own span
    assert all(argv[argv.index("-threads") + 1] == "2" for argv in calls)
    assert sum("-ss" in argv for argv in calls) == 2  # later runs seek instead of decoding from the start
    for one, other in zip(rows, split_rows, strict=True):  # same clips, same frames, whichever way they were cut
        assert (one["key"], one["frame_count"]) == (other["key"], other["frame_count"])
        clip = _check_clip(other, 24, {(64, 48)})
        expected = _scene_colour(other["clip_start"] + 0.01)
        assert colour_of(clip["first"]) == colour_of(clip["last"]) == expected


def test_long_policies(scenes_30fps: Path) -> None:
    row = describe(scenes_30fps, "vid")  # no scene split: the whole 9.5 s video is one scene
    split = Standardize(StandardizeParams(**{**FAST, "max_seconds": 4.0}, width=64, height=48)).process_batch(table([row]))
    assert [(r["key"], r["clip_start"], r["clip_end"], r["frame_count"]) for r in split.to_pylist()] == [
        ("vid_c0000", 0.0, 4.0, 96), ("vid_c0001", 4.0, 8.0, 96), ("vid_c0002", 8.0, 9.5, 36)]
    truncate = Standardize(StandardizeParams(**{**FAST, "max_seconds": 4.0}, long_policy="truncate", width=64,
                                             height=48)).process_batch(table([row])).to_pylist()
    assert [(r["key"], r["frame_count"], r["_reject"]) for r in truncate] == [("vid", 96, None)]
    drop = Standardize(StandardizeParams(**{**FAST, "max_seconds": 4.0}, long_policy="drop")).process_batch(table([row]))
    assert drop.column("_reject").to_pylist() == ["clip:too_long: 9.500s > max_seconds 4.0s (long_policy=drop)"]
    short = Standardize(StandardizeParams(min_seconds=10.0, max_seconds=None)).process_batch(table([row]))
    assert short.column("_reject").to_pylist() == ["clip:too_short: 9.500s < min_seconds 10.0s"]


def test_buckets_send_each_clip_to_the_nearest_aspect(scenes_30fps: Path, portrait: Path) -> None:
    buckets = [(128, 96), (72, 128), (96, 96)]
    rows = [describe(scenes_30fps, "land"), describe(portrait, "port")]  # 4:3 and 9:16
    params = StandardizeParams(preset="ultrafast", min_seconds=1, max_seconds=2, buckets=buckets)
    out = Standardize(params).process_batch(table(rows)).to_pylist()
    by_key = {r["key"]: r for r in out}
    assert by_key["port_c0000"]["bucket"] == "72x128" and by_key["land_c0000"]["bucket"] == "128x96"
    for row in out:
        _check_clip(row, 24, set(buckets))
        assert row["bucket"] == f"{row['width']}x{row['height']}"


@pytest.mark.parametrize(("mode", "size"), [("pad", (128, 128)), ("fit", (96, 128)), ("crop", (128, 128))])
def test_resize_modes(portrait: Path, mode: str, size: tuple[int, int]) -> None:
    params = StandardizeParams(preset="ultrafast", min_seconds=1, max_seconds=2, width=128, height=128, resize_mode=mode)
    rows = Standardize(params).process_batch(table([describe(portrait, "p")])).to_pylist()
    assert rows
    for row in rows:
        clip = _check_clip(row, 24, {size} if mode != "fit" else {(72, 128)})
        if mode == "pad":  # blue picture with black bars left and right
            assert clip["first"][:, :20].mean() < 20 and colour_of(clip["first"][:, 40:88]) == "blue"


def test_audio_is_stripped_unless_asked(with_audio: Path) -> None:
    row = describe(with_audio, "a")
    plain = Standardize(StandardizeParams(preset="ultrafast", min_seconds=1)).process_batch(table([row])).to_pylist()
    assert decode_clip(plain[0]["media"])["audio"] == 0
    kept = Standardize(StandardizeParams(preset="ultrafast", min_seconds=1, max_seconds=1, keep_audio=True,
                                         width=64, height=48)).process_batch(table([row])).to_pylist()
    assert len(kept) == 3  # three 1 s clips, each with its own second of audio
    for r in kept:
        assert decode_clip(r["media"])["audio"] == 1 and r["has_audio"] is True


def test_source_fps_is_kept_when_fps_is_none(scenes_ntsc: Path) -> None:
    row = describe(scenes_ntsc, "n")
    out = Standardize(StandardizeParams(preset="ultrafast", fps=None, min_seconds=1, max_seconds=2,
                                        width=64, height=48)).process_batch(table([row])).to_pylist()
    from fractions import Fraction

    for r in out:
        clip = decode_clip(r["media"])
        assert clip["rate"] == Fraction(30000, 1001)
        assert clip["decoded"] == r["frame_count"] == math.floor((r["clip_end"] - r["clip_start"]) * 30000 / 1001 + 1e-6)


def test_images_pass_through_untouched() -> None:
    image = {"key": "img", "source": "/x/a.jpg", "media_type": "image", "width": 100, "height": 80}
    out = Standardize().process_batch(table([image])).to_pylist()
    assert len(out) == 1
    row = out[0]
    assert (row["key"], row["width"], row["height"], row["media"], row["_reject"]) == ("img", 100, 80, None, None)


@pytest.mark.parametrize(("options", "message"), [
    ({"max_seconds": -3}, "max_seconds"),
    ({"min_seconds": 5, "max_seconds": 2}, r"`min_seconds` \(5.0\) must be <= `max_seconds` \(2.0\)"),
    ({"width": 641}, "must be even"),
    ({"buckets": [(640, 360)], "width": 512}, "either `buckets` or `width`"),
    ({"buckets": [(640, 360)], "resize_mode": "fit"}, "cannot be used with `buckets`"),
    ({"buckets": [(641, 360)]}, "even"),
    ({"preset": "quick"}, "`preset` must be one of"),
    ({"crf": 60}, "crf"),
    ({"max_second": 3}, "extra"),
])
def test_params_fail_fast_naming_the_option(options: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        StandardizeParams(**options)


def test_nvenc_asked_without_a_gpu_fails_at_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dataprep.stages.video.standardize.nvenc_available", lambda: False)
    with pytest.raises(RuntimeError, match="h264_nvenc"):
        Standardize(StandardizeParams(encoder="h264_nvenc")).setup()
    stage = Standardize(StandardizeParams(encoder="auto"))
    stage.setup()
    assert stage._encoder().codec == "libx264"


def test_auto_encoder_takes_nvenc_when_it_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dataprep.stages.video.standardize.nvenc_available", lambda: True)
    stage = Standardize(StandardizeParams(encoder="auto", crf=23))
    stage.setup()
    encoder = stage._encoder()
    assert encoder.codec == "h264_nvenc"
    job = encode.ClipJob(0.0, 1.0, 24, Geometry(64, 48, "crop"), "/tmp/out.mp4")
    argv = encode.build_argv("/in.mp4", [job], stream=0, fps=Fraction(24), source_fps=24.0, encoder=encoder,
                             with_audio=False)
    codec_args = argv[argv.index("-c:v"):argv.index("-movflags")]
    assert codec_args[:2] == ["-c:v", "h264_nvenc"] and "-cq" in codec_args and "-crf" not in codec_args


@pytest.mark.parametrize(("device", "encoders", "expected"), [
    (False, "V..... h264_nvenc NVIDIA NVENC H.264 encoder", False),  # no GPU: never asks ffmpeg
    (True, "V..... libx264 libx264 H.264", False),  # a GPU, but this ffmpeg was built without NVENC
    (True, "V..... h264_nvenc NVIDIA NVENC H.264 encoder", True),
])
def test_nvenc_needs_both_a_device_and_an_ffmpeg_with_it(monkeypatch: pytest.MonkeyPatch, device: bool,
                                                         encoders: str, expected: bool) -> None:
    import subprocess

    asked = []

    def fake_run(argv, **kw):
        asked.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout=encoders, stderr="")

    encode.nvenc_available.cache_clear()
    monkeypatch.setattr(encode.os.path, "exists", lambda p: device if p == "/dev/nvidia0" else Path(p).exists())
    monkeypatch.setattr(encode.subprocess, "run", fake_run)
    try:
        assert encode.nvenc_available() is expected
        assert bool(asked) is device
    finally:
        encode.nvenc_available.cache_clear()


def test_stalled_input_is_stopped_after_timeout_seconds(tmp_path: Path) -> None:
    import os
    import time

    fifo = tmp_path / "stalled.mp4"
    os.mkfifo(fifo)  # a reader blocks on it forever: nothing ever writes
    row = {"key": "stalled", "source": str(fifo), "media_type": "video", "width": 64, "height": 48, "fps": 24.0,
           "duration": 2.0, "has_audio": False, "video_stream": 0}
    stage = Standardize(StandardizeParams(preset="ultrafast", min_seconds=1.0, width=64, height=48, timeout_seconds=2))
    started = time.monotonic()
    (out,) = stage.process_batch(pa.Table.from_pylist([row])).to_pylist()
    assert time.monotonic() - started < 15  # 2 s of waiting plus start-up, not the stall
    assert out["_reject"].startswith("error:FFmpegError") and "ran past 2s" in out["_reject"], out["_reject"]
