"""PyAV helpers every reader of a video shares: which stream, where its clock starts, how long it is, tolerant decoding.

Probe, scene split, frame sampling and standardize must read the same video stream
of a file and agree on its clock, or a cut found at 2.0 s by one is not at 2.0 s for
another. The stream is the one ffmpeg maps when it is given no `-map`
(`default_video_index`); probe records its absolute index in the `video_stream`
column, and the later stages read that column, or choose again by the same rule when
no probe ran. Times are seconds from the container's start time (`origin_seconds`),
the convention of ffmpeg's input timestamps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

# The column where probe records the absolute index of the video stream every stage reads.
VIDEO_STREAM = "video_stream"

# ffmpeg's scores for choosing a video stream (fftools/ffmpeg_mux_init.c, `map_auto_video`).
_SAW_PACKETS = 100_000_000
_DEFAULT = 5_000_000
_ATTACHED_PIC = 1


class NoVideoStreamError(ValueError):
    """The container has no video stream (audio-only, data-only)."""


class NoFramesError(ValueError):
    """The video stream decodes to no frame at all."""


class CorruptVideoError(ValueError):
    """More packets of the video stream fail to decode than allowed."""


@dataclass(frozen=True)
class PacketScan:
    """What the packets of one stream tell without decoding."""

    packets: int  # packets with data, up to where the scan stopped
    last: float | None  # presentation time of the latest packet (s from the origin); None when none has one
    end: float  # where the latest packet stops showing (s from the origin); 0.0 when none has a time


def default_video_index(streams: Sequence[Any]) -> int | None:
    """The absolute index of the video stream ffmpeg maps by default, or None when there is no video stream.

    ffmpeg's rule (`map_auto_video` in fftools/ffmpeg_mux_init.c, ffmpeg_opt.c before 6.0): a
    stream scores width * height, plus 5,000,000 when its disposition is `default`, plus
    100,000,000 when the demuxer read packets of it while probing the file; an attached
    picture (cover art) scores 1. The highest score wins; on a tie the lowest index, as
    only a strictly higher score replaces the best. PyAV does not show the demuxer's
    "read packets" flag, so every stream gets it: that is what ffmpeg sees whenever all
    video streams start at the head of the file, as interleaved containers have them.
    """
    import av

    best, best_score = None, 0
    for stream in streams:
        if stream.type != "video":
            continue
        if stream.disposition & av.stream.Disposition.attached_pic:
            score = _ATTACHED_PIC
        else:
            context = stream.codec_context  # None when this PyAV has no decoder for the codec
            area = context.width * context.height if context is not None else 0
            score = _SAW_PACKETS + area + _DEFAULT * bool(stream.disposition & av.stream.Disposition.default)
        if score > best_score:
            best, best_score = stream.index, score
    return best


def video_stream(container: Any, index: int | None = None) -> Any:
    """The video stream at absolute `index` of an open container, or the one ffmpeg picks when `index` is None.

    Raises `NoVideoStreamError` when there is none.
    """
    if index is None:
        index = default_video_index(container.streams)
        if index is None:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise NoVideoStreamError(f"no video stream (streams: {', '.join(kinds)})")
    if not 0 <= index < len(container.streams) or container.streams[index].type != "video":
        raise NoVideoStreamError(f"stream {index} is not a video stream; fix: probe the source again")
    return container.streams[index]


def video_stream_index(path: str) -> int:
    """The absolute index of the video stream ffmpeg picks in the file at `path`."""
    import av

    with av.open(path) as container:
        return video_stream(container).index


def origin_seconds(container: Any) -> float:
    """The container's start time (s): ffmpeg's input timestamps count from it, and so do ours."""
    return container.start_time / 1_000_000 if container.start_time is not None else 0.0


def length_seconds(container: Any, stream: Any) -> float | None:
    """How long the stream lasts as its header states (s), else the container's; None when neither says."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def scan_packets(path: str, index: int | None = None, *, max_seconds: float | None = None) -> PacketScan:
    """Count the packets of the video stream at `index` (None: ffmpeg's pick) and find where it ends, without decoding.

    For containers that state no duration or frame count (a live-recorded webm). The scan
    stops after the first packet past `max_seconds`, when given.
    """
    import av

    count, last, end = 0, None, 0.0
    with av.open(path) as container:
        stream = video_stream(container, index)
        origin = origin_seconds(container)
        for packet in container.demux(stream):
            if packet.size == 0:  # the demuxer's empty flush packet
                continue
            count += 1
            if packet.pts is None or packet.time_base is None:
                continue
            t = float(packet.pts * packet.time_base) - origin
            last = t if last is None else max(last, t)
            end = max(end, t + float((packet.duration or 0) * packet.time_base))
            if max_seconds is not None and t > max_seconds:
                break
    return PacketScan(count, last, end)


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
