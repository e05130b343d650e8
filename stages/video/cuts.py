"""Hard-cut detection on decoded, downscaled frames: the scene boundaries of one video stream.

The score of a frame is the mean absolute difference of its HSV pixels from the
previous frame's (the measure PySceneDetect's ContentDetector uses), computed on a
small copy of each frame, so memory stays constant whatever the length of the video.
Fades through black are found from the mean brightness, when asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import av.video.frame
    import numpy as np

from dataprep.stages.pyav import NoFramesError, decode_tolerant, origin_seconds, video_stream


@dataclass(frozen=True)
class Scene:
    """One shot: frames [start_frame, end_frame) shown from `start` to `end` seconds.

    Times are relative to the container's start time, the convention ffmpeg uses for
    its input timestamps, so they can be handed to ffmpeg's `trim` as they are.
    """

    start: float
    end: float
    start_frame: int
    end_frame: int


@dataclass(frozen=True)
class CutSettings:
    """How cuts are found; see `SceneSplitParams` for the meaning of each field."""

    threshold: float = 27.0
    min_scene_frames: int = 15
    analysis_width: int = 128
    fades: bool = False
    fade_threshold: float = 12.0
    threads: int = 1
    max_corrupt_packets: int = 0


def detect_scenes(path: str, settings: CutSettings, stream_index: int | None = None) -> list[Scene]:
    """Decode the video stream at `stream_index` of `path` (None: the one ffmpeg picks) once; its scenes in order."""
    import av

    with av.open(path) as container:
        stream = video_stream(container, stream_index)
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = max(1, settings.threads)
        # Deblocking only smooths block edges, invisible at analysis size; skipping it saves ~20% of decode time.
        stream.codec_context.options = {"skip_loop_filter": "all"}
        origin = origin_seconds(container)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fallback_step = 1.0 / float(rate) if rate else 1.0 / 25.0
        frames = decode_tolerant(container, stream, settings.max_corrupt_packets)
        return _scan(frames, settings, origin, fallback_step)


def _scan(frames: Iterator[av.video.frame.VideoFrame], s: CutSettings, origin: float, step: float) -> list[Scene]:
    """Walk the frames once, keeping only the previous small frame, and split at cuts."""
    import cv2

    boundaries: list[tuple[int, int, float, float]] = []  # (end_frame, next_start_frame, end_t, next_start_t)
    prev: np.ndarray | None = None
    last_cut = 0
    dark_since: tuple[int, float] | None = None
    index = -1
    time = 0.0
    first_time: float | None = None
    size: tuple[int, int] | None = None
    last_duration = step
    for index, frame in enumerate(frames):
        time = _frame_time(frame, origin, index, step, first_time)
        if first_time is None:
            first_time = time
        if frame.duration and frame.time_base:
            last_duration = float(frame.duration * frame.time_base)
        if size is None:
            w = min(s.analysis_width, frame.width)
            h = max(1, round(frame.height * w / frame.width))
            size = (w + w % 2, h + h % 2)
        hsv = _small_hsv(frame, size)
        if s.fades:
            brightness = float(hsv[:, :, 2].mean())
            if brightness < s.fade_threshold:
                if dark_since is None:
                    dark_since = (index, time)
            elif dark_since is not None:
                boundaries.append((dark_since[0], index, dark_since[1], time))
                last_cut = index
                dark_since = None
        if prev is not None and index - last_cut >= s.min_scene_frames:
            score = float(cv2.absdiff(hsv, prev).reshape(-1, 3).mean(axis=0).mean())
            if score >= s.threshold and dark_since is None:
                boundaries.append((index, index, time, time))
                last_cut = index
        prev = hsv
    if index < 0:
        raise NoFramesError("the video stream decodes to no frame")
    total = index + 1
    end_time = time + last_duration
    if dark_since is not None:  # ends in black: the last scene stops where the fade reached it
        boundaries.append((dark_since[0], total, dark_since[1], end_time))
    return _scenes(boundaries, total, first_time or 0.0, end_time)


def _small_hsv(frame: av.video.frame.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """The frame at `size` in HSV, (h, w, 3) uint8.

    Scaled in YUV and converted by OpenCV: swscale's own RGB output dithers, which
    turns near-black frames into hue noise that reads as cuts.
    """
    import cv2

    yuv = frame.reformat(width=size[0], height=size[1], format="yuv420p", interpolation="AREA").to_ndarray()
    return cv2.cvtColor(cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420), cv2.COLOR_BGR2HSV)


def _frame_time(frame: av.video.frame.VideoFrame, origin: float, index: int, step: float, first: float | None) -> float:
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base) - origin
    return (first or 0.0) + index * step


def _scenes(boundaries: list[tuple[int, int, float, float]], total: int, start_t: float, end_t: float) -> list[Scene]:
    scenes: list[Scene] = []
    start_frame, start_time = 0, start_t
    for end_frame, next_frame, end_time, next_time in boundaries:
        if end_frame > start_frame:
            scenes.append(Scene(start_time, end_time, start_frame, end_frame))
        start_frame, start_time = next_frame, next_time
    if total > start_frame:
        scenes.append(Scene(start_time, end_t, start_frame, total))
    return scenes
