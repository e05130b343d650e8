"""Probe: metadata of real encodes, and a precise rejection for everything unreadable."""

from __future__ import annotations

import subprocess

import pyarrow as pa
import pytest

from dataprep.ffmpeg import ffmpeg_exe
from dataprep.stages.probe import Probe


def _ffmpeg(*args):
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


def _probe(*paths):
    batch = pa.table({"key": [f"k{i}" for i in range(len(paths))], "source": [str(p) for p in paths]})
    return Probe().process_batch(batch).to_pylist()


def test_video_metadata(tmp_path):
    path = tmp_path / "v.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x240:r=25:d=2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path))
    (row,) = _probe(path)
    assert row["_reject"] is None
    assert (row["media_type"], row["width"], row["height"], row["fps"], row["frame_count"]) == ("video", 320, 240, 25.0, 50)
    assert row["duration"] == pytest.approx(2.0, abs=0.05)
    assert row["codec"] == "h264" and row["pix_fmt"] == "yuv420p" and row["has_audio"] is False
    assert (row["video_streams"], row["video_stream"]) == (1, 0)


@pytest.mark.parametrize(("sizes", "dispositions"), [
    (("96x64", "192x128"), ("0", "0")),  # neither marked default: the larger picture
    (("192x128", "96x64"), ("0", "default")),  # default is worth 5,000,000 pixels: it beats the larger one
])
def test_several_video_streams_describe_the_one_ffmpeg_picks(tmp_path, sizes, dispositions):
    path = tmp_path / "two.mkv"  # mkv keeps the dispositions as given
    _ffmpeg("-f", "lavfi", "-i", f"testsrc2=s={sizes[0]}:r=25:d=1", "-f", "lavfi", "-i", f"testsrc2=s={sizes[1]}:r=10:d=2",
            "-map", "0", "-map", "1", "-disposition:v:0", dispositions[0], "-disposition:v:1", dispositions[1],
            "-c:v", "libx264", str(path))
    (row,) = _probe(path)
    width, height = map(int, sizes[1].split("x"))
    assert (row["video_streams"], row["video_stream"], row["width"], row["height"]) == (2, 1, width, height)
    assert (row["fps"], row["frame_count"]) == (10.0, 20)  # the second stream's rate and length, not the first's


def test_rotation_swaps_display_size(tmp_path):
    plain, rotated = tmp_path / "p.mp4", tmp_path / "r.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=320x180:r=10:d=1", "-c:v", "libx264", str(plain))
    _ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(rotated))
    (row,) = _probe(rotated)
    assert row["rotation"] in (90, 270) and (row["width"], row["height"]) == (180, 320)


def test_webm_without_duration_counts_frames(tmp_path):
    path = tmp_path / "live.webm"
    with open(path, "wb") as out:
        subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x48:r=10:d=2",
                        "-c:v", "libvpx-vp9", "-deadline", "realtime", "-f", "webm", "pipe:1"], stdout=out, check=True)
    (row,) = _probe(path)
    assert row["_reject"] is None and row["frame_count"] == 20
    assert row["duration"] == pytest.approx(2.0, abs=0.15)


def test_unreadable_inputs_are_rejected_with_reasons(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    audio = tmp_path / "audio.mp4"
    _ffmpeg("-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac", str(audio))
    whole = tmp_path / "whole.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=64x48:r=10:d=2", "-c:v", "libx264", str(whole))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 8)
    rows = _probe(empty, audio, truncated, garbage)
    reasons = [r["_reject"] for r in rows]
    assert reasons[0] == "error:EmptyFileError: file is empty (0 bytes)"
    assert reasons[1] == "error:NoVideoStreamError: no video stream (streams: audio)"
    assert reasons[2].startswith("error:InvalidDataError")
    assert reasons[3].startswith("error:")
    assert all(r["width"] is None for r in rows)


def test_image_renamed_mp4_is_an_image(tmp_path):
    path = tmp_path / "photo.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=s=200x100", "-frames:v", "1", "-f", "image2", "-c:v", "mjpeg", str(path))
    (row,) = _probe(path)
    assert row["_reject"] is None and row["media_type"] == "image" and (row["width"], row["height"]) == (200, 100)
    assert (row["video_streams"], row["video_stream"], row["fps"]) == (0, None, None)


def test_exif_orientation_gives_display_size(shared_data):
    (row,) = _probe(shared_data / "images" / "exif-orientation-examples_Landscape_6.jpg")
    assert row["rotation"] == 90 and (row["width"], row["height"]) == (1800, 1200)

