"""Facts about a video file that several video stages need: errors, time origin, length."""

from __future__ import annotations

from typing import Any


class NoVideoStreamError(ValueError):
    """The container has no video stream (audio-only, data-only)."""


class NoFramesError(ValueError):
    """The video stream decodes to no frame at all."""


def first_video_stream(container: Any) -> Any:
    """The first video stream of an open PyAV container; raises `NoVideoStreamError` if there is none."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise NoVideoStreamError(f"no video stream (streams: {', '.join(kinds)})")
    return container.streams.video[0]


def origin_seconds(container: Any) -> float:
    """The container's start time (s): ffmpeg's input timestamps count from it, and so do ours."""
    return container.start_time / 1_000_000 if container.start_time is not None else 0.0


def stream_end_seconds(path: str) -> float:
    """Where the first video stream ends (s from the origin), from packet times, without decoding.

    For containers that state no duration (a live-recorded webm).
    """
    import av

    with av.open(path) as container:
        stream = first_video_stream(container)
        origin = origin_seconds(container)
        end = 0.0
        for packet in container.demux(stream):
            if packet.pts is None or packet.time_base is None:
                continue
            end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base) - origin)
        return end
