"""Facts about a video file that several video stages need: errors, time origin, length."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class NoVideoStreamError(ValueError):
    """The container has no video stream (audio-only, data-only)."""


class NoFramesError(ValueError):
    """The video stream decodes to no frame at all."""


class CorruptVideoError(ValueError):
    """More packets of the video stream fail to decode than allowed."""


def decode_tolerant(container: Any, stream: Any, max_corrupt: int) -> Iterator[Any]:
    """The frames of `stream`, skipping up to `max_corrupt` packets the decoder refuses.

    Past that, raise `CorruptVideoError` naming where the first bad packet is.
    """
    import av

    bad: list[float] = []
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.error.InvalidDataError as exc:
            at = float(packet.pts * packet.time_base) - origin_seconds(container) if packet.pts is not None else -1.0
            bad.append(at)
            if len(bad) > max_corrupt:
                raise CorruptVideoError(f"video packet at {bad[0]:.2f}s does not decode ({len(bad)} bad, "
                                        f"max_corrupt_packets {max_corrupt}): {exc}") from exc


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
