"""Each awkward or broken input is standardized correctly or rejected with a precise reason; none raises or stalls."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest
from video_media import colour_of, colour_scenes, decode_clip, describe, ffmpeg, raw_row, table

from dataprep.ffmpeg import ffmpeg_exe
from dataprep.stages.video.scene_split import SceneSplit, SceneSplitParams
from dataprep.stages.video.standardize import Standardize, StandardizeParams

PARAMS = StandardizeParams(preset="ultrafast", min_seconds=0.5, max_seconds=4, width=64, height=48, timeout_seconds=60)


def _pipeline(rows: list[dict], params: StandardizeParams = PARAMS) -> list[dict]:
    """scene_split then standardize, as a job runs them."""
    return Standardize(params).process_batch(SceneSplit().process_batch(table(rows))).to_pylist()


def _assert_clips_ok(rows: list[dict], size: tuple[int, int] = (64, 48)) -> list[dict]:
    assert rows and all(r["_reject"] is None for r in rows), [r["_reject"] for r in rows]
    clips = []
    for r in rows:
        clip = decode_clip(r["media"])
        assert (clip["width"], clip["height"]) == size and clip["rate"] == 24 and clip["pix_fmt"] == "yuv420p"
        assert clip["decoded"] == r["frame_count"]
        clips.append(clip)
    return clips


def test_zero_byte_file(media_dir: Path) -> None:
    path = media_dir / "zero.mp4"
    path.write_bytes(b"")
    (row,) = _pipeline([raw_row(path, "z")])
    assert row["_reject"].startswith("error:InvalidDataError:") and row["media"] is None
    # without scene split, standardize alone rejects it too: choosing the video stream opens the file
    (alone,) = Standardize(PARAMS).process_batch(table([raw_row(path, "z", duration=1.0, fps=25.0)])).to_pylist()
    assert alone["_reject"].startswith("error:InvalidDataError:") and alone["media"] is None


def test_truncated_mp4_without_moov(media_dir: Path) -> None:
    whole = colour_scenes(media_dir / "whole.mp4", [("red", 2.0)])  # moov is written last without faststart
    path = media_dir / "truncated.mp4"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (row,) = _pipeline([raw_row(path, "t")])
    assert row["_reject"].startswith("error:InvalidDataError:"), row["_reject"]


def test_audio_only_file(media_dir: Path) -> None:
    path = media_dir / "audio_only.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=2", "-c:a", "aac", str(path))
    (row,) = _pipeline([raw_row(path, "a")])
    assert row["_reject"] == "error:NoVideoStreamError: no video stream (streams: audio)"
    (alone,) = Standardize(PARAMS).process_batch(table([raw_row(path, "a", duration=2.0, fps=25.0)])).to_pylist()
    assert alone["_reject"] == "error:NoVideoStreamError: no video stream (streams: audio)"


def test_image_renamed_mp4(media_dir: Path) -> None:
    path = media_dir / "image.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x48", "-frames:v", "1", "-f", "image2", "-c:v", "png", str(path))
    # probe classifies by content: it is an image, and the video stages leave it alone
    (as_image,) = _pipeline([raw_row(path, "i", media_type="image", width=64, height=48)])
    assert (as_image["key"], as_image["media"], as_image["_reject"]) == ("i", None, None)
    # if it were ever labelled a video, it is one 40 ms frame: too short, not a crash
    (as_video,) = _pipeline([raw_row(path, "i", width=64, height=48, fps=25.0)])
    assert as_video["_reject"].startswith("clip:too_short: 0.040s < min_seconds 0.5s")


def test_variable_frame_rate(media_dir: Path) -> None:
    path = media_dir / "vfr.mp4"
    # 30 fps for 1.5 s, then every third frame only (10 fps): irregular timestamps
    ffmpeg("-f", "lavfi", "-i", "color=c=green:s=96x64:r=30:d=4", "-vf", "select='lt(n\\,45)+not(mod(n\\,3))'",
           "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))
    rows = _pipeline([describe(path, "vfr")])
    clips = _assert_clips_ok(rows)
    for r in rows:  # the last frame's display time is the container's guess, so allow a frame or two
        assert r["frame_count"] == int((r["clip_end"] - r["clip_start"]) * 24 + 1e-6)
    assert sum(r["frame_count"] for r in rows) == pytest.approx(4 * 24, abs=3)
    assert all(colour_of(c["first"]) == "green" for c in clips)


def test_odd_dimensions(media_dir: Path) -> None:
    path = media_dir / "odd.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=321x241:r=25:d=1.5", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv444p", str(path))
    _assert_clips_ok(_pipeline([describe(path, "odd")]))
    fit = StandardizeParams(preset="ultrafast", min_seconds=0.5, width=100, height=100, resize_mode="fit")
    (row,) = _pipeline([describe(path, "odd")], fit)
    assert row["_reject"] is None and (row["width"], row["height"]) == (100, 74)  # even, aspect kept


def test_ten_bit_source(media_dir: Path) -> None:
    path = media_dir / "ten_bit.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=25:d=1.5", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p10le", str(path))
    assert describe(path)["pix_fmt"] == "yuv420p10le"
    _assert_clips_ok(_pipeline([describe(path, "ten")]))


def test_sixteen_pixel_video(media_dir: Path) -> None:
    path = media_dir / "tiny.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=blue:s=16x16:r=25:d=1.5", "-c:v", "libx264", "-preset", "ultrafast",
           "-pix_fmt", "yuv420p", str(path))
    (row,) = _pipeline([describe(path, "tiny")])  # 64x48 by crop needs exactly 4.0x: the bound is inclusive
    assert colour_of(_assert_clips_ok([row], (64, 48))[0]["first"]) == "blue"
    just_under = StandardizeParams(preset="ultrafast", min_seconds=0.5, width=64, height=48, max_upscale=3.99)
    (rejected,) = _pipeline([describe(path, "tiny")], just_under)
    assert rejected["_reject"] == "clip:too_small: 16x16 needs 4.0x upscale to 64x48 > max_upscale 3.99"
    big = StandardizeParams(preset="ultrafast", min_seconds=0.5, width=128, height=128)
    (rejected,) = _pipeline([describe(path, "tiny")], big)
    assert rejected["_reject"] == "clip:too_small: 16x16 needs 8.0x upscale to 128x128 > max_upscale 4.0"
    anyway = StandardizeParams(preset="ultrafast", min_seconds=0.5, width=128, height=128, max_upscale=None)
    (row,) = _pipeline([describe(path, "tiny")], anyway)
    assert colour_of(_assert_clips_ok([row], (128, 128))[0]["first"]) == "blue"


@pytest.mark.parametrize("rotation", [90, 180])
def test_rotated_video_is_shown_upright(media_dir: Path, rotation: int) -> None:
    base = media_dir / "rot_base.mp4"
    if not base.exists():  # landscape 160x96, top half blue, bottom half red
        ffmpeg("-f", "lavfi", "-i", "color=c=red:s=160x96:r=25:d=1.5", "-vf", "drawbox=x=0:y=0:w=160:h=48:c=blue:t=fill",
               "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(base))
    path = media_dir / f"rot{rotation}.mp4"
    ffmpeg("-display_rotation:v:0", str(rotation), "-i", str(base), "-c", "copy", str(path))
    row = describe(path, f"r{rotation}")
    assert row["rotation"] in (rotation, 360 - rotation)
    fit = StandardizeParams(preset="ultrafast", min_seconds=0.5, width=160, height=160, resize_mode="fit")
    (out,) = _pipeline([row], fit)
    clip = decode_clip(out["media"])
    first = clip["first"]
    if rotation == 90:  # portrait stays portrait; the blue half is now on a side
        assert (clip["width"], clip["height"]) == (96, 160)
        sides = {colour_of(first[:, :40]), colour_of(first[:, -40:])}
        assert sides == {"blue", "red"}
    else:  # upside down: blue at the bottom
        assert (clip["width"], clip["height"]) == (160, 96)
        assert colour_of(first[:40]) == "red" and colour_of(first[-40:]) == "blue"


def test_two_video_streams_use_the_one_ffmpeg_picks(media_dir: Path) -> None:
    path = media_dir / "two_streams.mkv"
    # Neither stream marked default, so ffmpeg picks the larger picture: the second (see test_video_streams.py).
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=96x64:r=25:d=1.5", "-f", "lavfi", "-i", "color=c=blue:s=192x128:r=25:d=1.5",
           "-map", "0", "-map", "1", "-disposition:v:0", "0", "-disposition:v:1", "0", "-c:v", "libx264", "-preset",
           "ultrafast", "-pix_fmt", "yuv420p", str(path))
    row = describe(path, "two")
    assert (row["video_stream"], row["width"], row["height"]) == (1, 192, 128)
    (clip,) = _assert_clips_ok(_pipeline([row]))
    assert colour_of(clip["first"]) == colour_of(clip["last"]) == "blue"


def test_webm_without_duration(media_dir: Path) -> None:
    path = media_dir / "no_duration.webm"
    with path.open("wb") as f:  # written to a pipe, the muxer cannot go back to store a duration or cues
        subprocess.run([*_ffmpeg_argv(), "-f", "lavfi", "-i", "color=c=yellow:s=96x64:r=25:d=2", "-c:v", "libvpx-vp9",
                        "-deadline", "realtime", "-cpu-used", "8", "-f", "webm", "pipe:1"], stdout=f, check=True, timeout=60)
    row = describe(path, "w")
    assert row["duration"] is None
    (via_scenes,) = _pipeline([row])
    assert via_scenes["frame_count"] == 48 and via_scenes["_reject"] is None
    (alone,) = Standardize(PARAMS).process_batch(table([row])).to_pylist()  # length read from packet times
    assert alone["_reject"] is None and alone["frame_count"] == 48 and colour_of(decode_clip(alone["media"])["last"]) == "yellow"


def test_real_awkward_files(shared_data: Path) -> None:
    videos = shared_data / "videos"
    rows = [describe(videos / name, name.split(".")[0]) for name in
            ("moviepy_no_duration.webm", "decord_video_90.mov", "decord_corrupted.mp4", "mmaction2_test.avi")]
    out = _pipeline(rows, StandardizeParams(preset="ultrafast", min_seconds=0.5, width=64, height=64, fps=24))
    by_parent: dict[str, list[dict]] = {}
    for r in out:
        by_parent.setdefault(r["parent_key"] or r["key"], []).append(r)
    # 3 frames (0.1 s) is too short to be a clip
    assert by_parent["decord_video_90"][0]["_reject"].startswith("clip:too_short: 0.100s")
    for name in ("moviepy_no_duration", "mmaction2_test"):
        kept = [r for r in by_parent[name] if r["_reject"] is None]
        assert kept, [r["_reject"] for r in by_parent[name]]
        _assert_clips_ok(kept, (64, 64))
    # sample 30 of decord's corrupted.mp4 is overwritten: rejected by default, kept when a bad packet is allowed
    (corrupt,) = by_parent["decord_corrupted"]
    assert corrupt["_reject"].startswith("error:CorruptVideoError: video packet at 3.00s does not decode"), corrupt
    lenient = SceneSplit(SceneSplitParams(max_corrupt_packets=1)).process_batch(table([rows[2]]))
    assert lenient.num_rows >= 1 and lenient.column("_reject").null_count == lenient.num_rows


@pytest.mark.slow
def test_one_hour_video_in_bounded_memory(media_dir: Path) -> None:
    path = media_dir / "hour.mp4"
    # 1 h at 64x36, 5 fps, a new colour every 10 minutes: 6 scenes, 18000 frames
    colours = ["red", "green", "blue", "yellow", "white", "red"]
    inputs = [a for c in colours for a in ("-f", "lavfi", "-i", f"color=c={c}:s=64x36:r=5:d=600")]
    ffmpeg(*inputs, "-filter_complex", "".join(f"[{i}]" for i in range(6)) + "concat=n=6:v=1:a=0[v]", "-map", "[v]",
           "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p", str(path))
    # Peak memory of ffmpeg itself: ru_maxrss would count the forking Python's pages, /usr/bin/time does not.
    log = media_dir / "ffmpeg_rss.txt"
    wrapper = media_dir / "ffmpeg_timed.sh"
    if not Path("/usr/bin/time").exists():
        pytest.skip("needs /usr/bin/time to measure ffmpeg's peak memory")
    # Only the runs that cut clips are measured, not a `-version` query of the binary.
    wrapper.write_text(f'#!/bin/sh\ncase " $* " in *" -filter_complex "*) exec /usr/bin/time -a -o {log} -f %M '
                       f'{ffmpeg_exe()} "$@";; esac\nexec {ffmpeg_exe()} "$@"\n')
    wrapper.chmod(0o755)
    script = textwrap.dedent(f"""
        import json, sys, time
        sys.path[:0] = {sys.path!r}
        from video_media import describe, table
        from dataprep.stages.video.scene_split import SceneSplit
        from dataprep.stages.video.standardize import Standardize, StandardizeParams

        def peak_kb():  # this process's high-water mark since exec (ru_maxrss would include pytest's)
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])

        before = peak_kb()
        t0 = time.time()
        scenes = SceneSplit().process_batch(table([describe({str(path)!r}, "hour")]))
        t1 = time.time()
        params = StandardizeParams(preset="ultrafast", fps=5, width=64, height=36, min_seconds=1, max_seconds=60)
        out = Standardize(params).process_batch(scenes)
        print(json.dumps({{"scenes": scenes.num_rows, "clips": out.num_rows,
            "rejects": [r for r in out.column("_reject").to_pylist() if r],
            "frames": sum(out.column("frame_count").to_pylist()), "split_s": t1 - t0, "standardize_s": time.time() - t1,
            "python_peak_kb": peak_kb(), "python_after_imports_kb": before}}))
    """)
    env = {**os.environ, "DATAPREP_FFMPEG": str(wrapper)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    ffmpeg_peaks = [int(line) for line in log.read_text().split() if line.isdigit()]
    print(result, "ffmpeg runs:", len(ffmpeg_peaks), "ffmpeg peak kB:", max(ffmpeg_peaks))
    assert result["scenes"] == 6 and result["clips"] == 60 and not result["rejects"]
    assert result["frames"] == 3600 * 5
    assert len(ffmpeg_peaks) == 4  # 60 clips, 16 per run
    # Bounded: decoding 18000 frames adds little to the interpreter; 60 clips of 64x36 are tiny.
    assert result["python_peak_kb"] - result["python_after_imports_kb"] < 150_000
    assert max(ffmpeg_peaks) < 300_000


def _ffmpeg_argv() -> list[str]:
    return [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]


def test_rows_stay_aligned_when_some_fail(media_dir: Path, scenes_30fps: Path) -> None:
    empty = media_dir / "zero2.mp4"
    empty.write_bytes(b"")
    out = _pipeline([raw_row(empty, "bad"), describe(scenes_30fps, "good")])
    assert out[0]["key"] == "bad" and out[0]["_reject"].startswith("error:")
    assert all(r["parent_key"] in ("good", "good_c0001", "good_c0002") and r["_reject"] is None for r in out[1:])
    assert pa.Table.from_pylist(out).num_rows == len(out)


def test_container_with_a_late_start_time(media_dir: Path) -> None:
    # MPEG-TS starts its clock at 1.4 s; scene times and ffmpeg's trim must agree on the origin.
    path = colour_scenes(media_dir / "scenes.ts", [("red", 2.0), ("green", 3.4)], extra=("-f", "mpegts"))
    rows = _pipeline([describe(path, "ts")], StandardizeParams(preset="ultrafast", min_seconds=1, max_seconds=2,
                                                                width=64, height=48))
    assert [r["clip_start"] for r in rows] == pytest.approx([0.0, 2.0, 4.0])
    for row, colour in zip(rows, ["red", "green", "green"], strict=True):
        clip = _assert_clips_ok([row])[0]
        assert colour_of(clip["first"]) == colour_of(clip["last"]) == colour


def test_video_shorter_than_the_stated_duration(scenes_30fps: Path) -> None:
    # A container whose audio outlives the video states the longer duration; the clip says what it holds.
    row = {**describe(scenes_30fps, "long"), "duration": 11.5}
    params = StandardizeParams(preset="ultrafast", min_seconds=1, max_seconds=None, width=64, height=48)
    (out,) = Standardize(params).process_batch(table([row])).to_pylist()
    assert out["_reject"] is None and out["frame_count"] == decode_clip(out["media"])["decoded"] == 228  # 9.5 s at 24 fps
    assert out["clip_end"] == pytest.approx(9.5) and out["duration"] == pytest.approx(9.5)
